#include "runtime/weights.h"

#include <string>

#include "core/check.h"

namespace cllm {
namespace {

// Reads tensors or slices of them, checking shapes against what the config implies.
class TensorLoader {
 public:
  TensorLoader(const CheckpointReader& ckpt, const LoadProgress& progress, double total_bytes)
      : ckpt_(ckpt), progress_(progress), total_(total_bytes) {}

  // Reads `range` of tensor `name` after checking its full shape against `expected`.
  std::vector<float> read(const std::string& name, std::vector<int64_t> expected, const TensorRange& range = {}) {
    const std::vector<int64_t> actual = ckpt_.shape(name);
    CLLM_CHECK(actual == expected, ckpt_.source() << ": tensor " << name << " has shape " << str(actual)
                                                  << ", config implies " << str(expected));
    const int64_t rows = (range.row_end < 0 ? expected[0] : range.row_end) - range.row_begin;
    const int64_t cols = expected.size() < 2 ? 1 : (range.col_end < 0 ? expected[1] : range.col_end) - range.col_begin;
    std::vector<float> out(static_cast<size_t>(rows * cols));
    ckpt_.read_f32(name, range, out.data());
    done_ += static_cast<double>(out.size()) * sizeof(float);
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

// fp32 bytes of the slices of plan p.
double expected_f32_bytes(const ModelConfig& c, const ShardPlan& p) {
  const double d = c.hidden_size, hd = c.head_dim;
  const double per_layer = 2 * d + 2 * d * p.heads * hd + 2.0 * d * p.kv_heads * hd + 3.0 * d * p.ffn;
  const double emb = static_cast<double>(p.vocab) * d * (c.tie_word_embeddings ? 1 : 2);
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
  return load_weights_f32(ckpt, ShardPlan::whole(ckpt.config()), progress);
}

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress) {
  const ModelConfig& c = ckpt.config();
  const int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size, hd = c.head_dim;
  // Column-parallel weights take rows, row-parallel ones take columns (see shard_plan.h).
  const int64_t q0 = plan.head_begin * hd, q1 = q0 + plan.heads * hd;
  const int64_t kv0 = plan.kv_head_begin * hd, kv1 = kv0 + plan.kv_heads * hd;
  const int64_t f0 = plan.ffn_begin, f1 = f0 + plan.ffn;
  const int64_t v0 = plan.vocab_begin, v1 = v0 + plan.vocab;
  const TensorRange q_rows{q0, q1}, kv_rows{kv0, kv1}, ffn_rows{f0, f1}, vocab_rows{v0, v1};
  const TensorRange q_cols{0, -1, q0, q1}, ffn_cols{0, -1, f0, f1};
  TensorLoader load(ckpt, progress, expected_f32_bytes(c, plan));
  ModelWeights w;
  w.embed = load.read("model.embed_tokens.weight", {c.vocab_size, d}, vocab_rows);
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights& l = w.layers[i];
    l.attn_norm = load.read(p + "input_layernorm.weight", {d});
    l.wq = load.read(p + "self_attn.q_proj.weight", {q, d}, q_rows);
    l.wk = load.read(p + "self_attn.k_proj.weight", {kv, d}, kv_rows);
    l.wv = load.read(p + "self_attn.v_proj.weight", {kv, d}, kv_rows);
    l.wo = load.read(p + "self_attn.o_proj.weight", {d, q}, q_cols);
    l.ffn_norm = load.read(p + "post_attention_layernorm.weight", {d});
    l.w_gate = load.read(p + "mlp.gate_proj.weight", {f, d}, ffn_rows);
    l.w_up = load.read(p + "mlp.up_proj.weight", {f, d}, ffn_rows);
    l.w_down = load.read(p + "mlp.down_proj.weight", {d, f}, ffn_cols);
  }
  w.final_norm = load.read("model.norm.weight", {d});
  if (!c.tie_word_embeddings) w.lm_head = load.read("lm_head.weight", {c.vocab_size, d}, vocab_rows);
  return w;
}

}  // namespace cllm
