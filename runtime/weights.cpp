#include "runtime/weights.h"

#include "core/tensor_manifest.h"

namespace cllm {
namespace {

// Reads this rank's slices of the manifest's tensors, checking each full shape first.
class TensorLoader {
 public:
  TensorLoader(const CheckpointReader& ckpt, const LoadProgress& progress, double total_bytes)
      : ckpt_(ckpt), progress_(progress), total_(total_bytes) {}

  std::vector<float> read(const TensorSpec& t) {
    check_shape(ckpt_, t);
    std::vector<float> out(static_cast<size_t>(t.local_elements()));
    ckpt_.read_f32(t.name, slice_range(t), out.data());
    done_ += static_cast<double>(t.bytes(sizeof(float)));
    if (progress_) progress_(done_, total_, t.name);
    return out;
  }

 private:
  const CheckpointReader& ckpt_;
  const LoadProgress& progress_;
  double total_;
  double done_ = 0;
};

}  // namespace

size_t ModelWeights::bytes() const {
  size_t n = embed.size() + final_norm.size() + lm_head.size();
  for (const LayerWeights& l : layers)
    n += l.attn_norm.size() + l.wq.size() + l.wk.size() + l.wv.size() + l.wo.size() + l.ffn_norm.size() +
         l.w_gate.size() + l.w_up.size() + l.w_down.size();
  return n * sizeof(float);
}

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const LoadProgress& progress) {
  return load_weights_f32(ckpt, ShardPlan::whole(ckpt.config()), progress);
}

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress) {
  const TensorManifest m = make_tensor_manifest(ckpt.config(), plan);
  TensorLoader load(ckpt, progress, static_cast<double>(m.bytes(sizeof(float))));
  ModelWeights w;
  w.embed = load.read(m.embed);
  w.layers.resize(m.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerTensors& t = m.layers[i];
    LayerWeights& l = w.layers[i];
    l.attn_norm = load.read(t.attn_norm);
    l.wq = load.read(t.wq);
    l.wk = load.read(t.wk);
    l.wv = load.read(t.wv);
    l.wo = load.read(t.wo);
    l.ffn_norm = load.read(t.ffn_norm);
    l.w_gate = load.read(t.w_gate);
    l.w_up = load.read(t.w_up);
    l.w_down = load.read(t.w_down);
  }
  w.final_norm = load.read(m.final_norm);
  if (m.has_lm_head()) w.lm_head = load.read(m.lm_head);
  return w;
}

}  // namespace cllm
