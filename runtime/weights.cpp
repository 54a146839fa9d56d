#include "runtime/weights.h"

#include <cstring>

#include "core/check.h"
#include "core/tensor_manifest.h"

namespace cllm {
namespace {

// Q8_0 / Q4_0 / Q4_1 rows of the file (dequant.h layouts: fp16 d [, fp16 m], then the quants)
// split into quants and scales widened to fp32 (exact), then packed for kernels/cpu/gemm_quant.h.
// Q4_0 ((nib - 8) d) becomes Q4_1 with minimum -8 d: the same nibbles, and -8 d is exact.
cpu::QuantMatrix repack_blocks(DType t, const uint8_t* rows, int n_rows, int cols) {
  const size_t blocks = static_cast<size_t>(n_rows) * (cols / cpu::kQuantBlock);
  const size_t bbytes = static_cast<size_t>(dtype_block_bytes(t)), header = t == DType::Q4_1 ? 4 : 2;
  const size_t qbytes = bbytes - header;  // 32 (Q8_0) or 16 (Q4_0, Q4_1)
  const bool nibbles = t != DType::Q8_0;
  std::vector<uint8_t> qs(blocks * qbytes);
  std::vector<float> d(blocks), m(nibbles ? blocks : 0);
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* p = rows + b * bbytes;
    d[b] = fp16_to_f32(static_cast<uint16_t>(p[0] | p[1] << 8));
    if (t == DType::Q4_1) m[b] = fp16_to_f32(static_cast<uint16_t>(p[2] | p[3] << 8));
    if (t == DType::Q4_0) m[b] = -8.0f * d[b];
    std::memcpy(qs.data() + b * qbytes, p + header, qbytes);
  }
  return cpu::pack_quant(nibbles ? cpu::QuantFormat::Q4_1 : cpu::QuantFormat::Q8_0, n_rows, cols, qs.data(), d.data(),
                         nibbles ? m.data() : nullptr);
}

// Reads this rank's slices of the manifest's tensors, checking each full shape first.
class TensorLoader {
 public:
  TensorLoader(const CheckpointReader& ckpt, const LoadProgress& progress, double total_bytes, bool native)
      : ckpt_(ckpt), progress_(progress), total_(total_bytes), native_(native) {}

  std::vector<float> read(const TensorSpec& t) {
    check_shape(ckpt_, t);
    std::vector<float> out(static_cast<size_t>(t.local_elements()));
    ckpt_.read_f32(t.name, slice_range(t), out.data());
    done(t);
    return out;
  }

  // Native: a whole Q8_0 / Q4_0 / Q4_1 matrix stays in its blocks; anything else is read as fp32.
  LinearWeight matrix(const TensorSpec& t) {
    LinearWeight w;
    const DType dt = ckpt_.stored_dtype(t.name);
    if (!native_ || (dt != DType::Q8_0 && dt != DType::Q4_0 && dt != DType::Q4_1)) {
      w.f32 = read(t);
      return w;
    }
    check_shape(ckpt_, t);
    CLLM_CHECK(t.local_elements() == t.shape[0] * t.shape[1],
               t.name << ": native weights hold whole tensors only (one rank)");
    const int rows = static_cast<int>(t.shape[0]), cols = static_cast<int>(t.shape[1]);
    std::vector<uint8_t> raw(static_cast<size_t>(rows) * dtype_row_bytes(dt, cols, t.name));
    ckpt_.read_blocks(t.name, 0, rows, raw.data());
    w.q = repack_blocks(dt, raw.data(), rows, cols);
    done(t);
    return w;
  }

 private:
  void done(const TensorSpec& t) {
    done_ += static_cast<double>(t.bytes(sizeof(float)));
    if (progress_) progress_(done_, total_, t.name);
  }

  const CheckpointReader& ckpt_;
  const LoadProgress& progress_;
  double total_;
  bool native_;
  double done_ = 0;
};

ModelWeights load(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress, bool native) {
  const TensorManifest m = make_tensor_manifest(ckpt.config(), plan);
  TensorLoader load(ckpt, progress, static_cast<double>(m.bytes(sizeof(float))), native);
  ModelWeights w;
  w.embed = load.matrix(m.embed);
  w.layers.resize(m.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerTensors& t = m.layers[i];
    LayerWeights& l = w.layers[i];
    l.attn_norm = load.read(t.attn_norm);
    l.wq = load.matrix(t.wq);
    l.wk = load.matrix(t.wk);
    l.wv = load.matrix(t.wv);
    l.wo = load.matrix(t.wo);
    l.ffn_norm = load.read(t.ffn_norm);
    l.w_gate = load.matrix(t.w_gate);
    l.w_up = load.matrix(t.w_up);
    l.w_down = load.matrix(t.w_down);
  }
  w.final_norm = load.read(m.final_norm);
  if (m.has_lm_head()) w.lm_head = load.matrix(m.lm_head);
  return w;
}

}  // namespace

size_t ModelWeights::bytes() const {
  size_t n = embed.bytes() + (final_norm.size() * sizeof(float)) + lm_head.bytes();
  for (const LayerWeights& l : layers)
    n += (l.attn_norm.size() + l.ffn_norm.size()) * sizeof(float) + l.wq.bytes() + l.wk.bytes() + l.wv.bytes() +
         l.wo.bytes() + l.w_gate.bytes() + l.w_up.bytes() + l.w_down.bytes();
  return n;
}

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const LoadProgress& progress) {
  return load(ckpt, ShardPlan::whole(ckpt.config()), progress, false);
}

ModelWeights load_weights_native(const CheckpointReader& ckpt, const LoadProgress& progress) {
  return load(ckpt, ShardPlan::whole(ckpt.config()), progress, true);
}

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress) {
  return load(ckpt, plan, progress, false);
}

}  // namespace cllm
