#include "runtime/weights.h"

#include <string>

#include "kernels/check.h"

namespace cllm {
namespace {

// Reads one whole tensor, checking its shape against what the config implies.
class TensorLoader {
 public:
  TensorLoader(const CheckpointReader& ckpt, const LoadProgress& progress, double total_bytes)
      : ckpt_(ckpt), progress_(progress), total_(total_bytes) {}

  std::vector<float> read(const std::string& name, std::vector<int64_t> expected) {
    const std::vector<int64_t> actual = ckpt_.shape(name);
    CLLM_CHECK(actual == expected, ckpt_.source() << ": tensor " << name << " has shape " << str(actual)
                                                  << ", config implies " << str(expected));
    size_t count = 1;
    for (int64_t d : expected) count *= static_cast<size_t>(d);
    std::vector<float> out(count);
    ckpt_.read_f32(name, TensorRange{}, out.data());
    done_ += static_cast<double>(count) * sizeof(float);
    if (progress_) progress_(done_, total_, name);
    return out;
  }

 private:
  static std::string str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }
  const CheckpointReader& ckpt_;
  const LoadProgress& progress_;
  double total_;
  double done_ = 0;
};

double expected_f32_bytes(const ModelConfig& c) {
  const double d = c.hidden_size;
  const double per_layer = 2 * d + d * c.q_dim() * 2 + 2.0 * d * c.kv_dim() + 3.0 * d * c.intermediate_size;
  const double emb = static_cast<double>(c.vocab_size) * d * (c.tie_word_embeddings ? 1 : 2);
  return 4.0 * (per_layer * c.num_layers + emb + d);
}

}  // namespace

size_t ModelWeights::bytes() const {
  size_t n = embed.size() + final_norm.size() + lm_head.size();
  for (const LayerWeights& l : layers)
    n += l.attn_norm.size() + l.wq.size() + l.wk.size() + l.wv.size() + l.wo.size() + l.ffn_norm.size() +
         l.w_gate.size() + l.w_up.size() + l.w_down.size();
  return n * sizeof(float);
}

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const LoadProgress& progress) {
  const ModelConfig& c = ckpt.config();
  const int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  TensorLoader load(ckpt, progress, expected_f32_bytes(c));
  ModelWeights w;
  w.embed = load.read("model.embed_tokens.weight", {c.vocab_size, d});
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights& l = w.layers[i];
    l.attn_norm = load.read(p + "input_layernorm.weight", {d});
    l.wq = load.read(p + "self_attn.q_proj.weight", {q, d});
    l.wk = load.read(p + "self_attn.k_proj.weight", {kv, d});
    l.wv = load.read(p + "self_attn.v_proj.weight", {kv, d});
    l.wo = load.read(p + "self_attn.o_proj.weight", {d, q});
    l.ffn_norm = load.read(p + "post_attention_layernorm.weight", {d});
    l.w_gate = load.read(p + "mlp.gate_proj.weight", {f, d});
    l.w_up = load.read(p + "mlp.up_proj.weight", {f, d});
    l.w_down = load.read(p + "mlp.down_proj.weight", {d, f});
  }
  w.final_norm = load.read("model.norm.weight", {d});
  if (!c.tie_word_embeddings) w.lm_head = load.read("lm_head.weight", {c.vocab_size, d});
  return w;
}

}  // namespace cllm
