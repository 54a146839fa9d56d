#include "core/tensor_manifest.h"

#include <sstream>

#include "core/check.h"

namespace cllm {
namespace {

// A tensor of full `shape`, of which this rank holds [begin, end) along split's dimension.
TensorSpec spec(std::string name, std::vector<int64_t> shape, SplitAxis split = SplitAxis::None, int64_t begin = 0,
                int64_t end = -1) {
  TensorSpec t{std::move(name), std::move(shape), split, begin, end, {}};
  const int d = t.dim() < 0 ? 0 : t.dim();
  if (t.split == SplitAxis::None) t.end = t.shape[0];
  CLLM_CHECK(0 <= t.begin && t.begin <= t.end && t.end <= t.shape[d],
             "tensor " << t.name << " " << shape_str(t.shape) << ": slice [" << t.begin << ", " << t.end
                       << ") of dimension " << d << " is out of bounds");
  t.local_shape = t.shape;
  t.local_shape[d] = t.end - t.begin;
  return t;
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

}  // namespace

const char* split_axis_name(SplitAxis a) {
  switch (a) {
    case SplitAxis::None: return "none";
    case SplitAxis::Rows: return "rows";
    case SplitAxis::Cols: return "cols";
    case SplitAxis::Vocab: return "vocab";
  }
  return "?";
}

int64_t TensorSpec::elements() const { return product(shape); }
int64_t TensorSpec::local_elements() const { return product(local_shape); }

std::vector<const TensorSpec*> TensorManifest::all() const& {
  std::vector<const TensorSpec*> t = {&embed};
  for (const LayerTensors& l : layers)
    for (const TensorSpec* s : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down})
      t.push_back(s);
  t.push_back(&final_norm);
  if (has_lm_head()) t.push_back(&lm_head);
  return t;
}

int64_t TensorManifest::bytes(int element_bytes) const {
  int64_t b = 0;
  for (const TensorSpec* t : all()) b += t->bytes(element_bytes);
  return b;
}

TensorManifest make_tensor_manifest(const ModelConfig& c, const ShardPlan& p) {
  const int64_t V = c.vocab_size, d = c.hidden_size, f = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  const int64_t hd = c.head_dim;
  // Column-parallel weights take rows, row-parallel ones take columns (core/shard_plan.h).
  const int64_t q0 = p.head_begin * hd, q1 = q0 + p.heads * hd;
  const int64_t kv0 = p.kv_head_begin * hd, kv1 = kv0 + p.kv_heads * hd;
  const int64_t f0 = p.ffn_begin, f1 = f0 + p.ffn;
  const int64_t v0 = p.vocab_begin, v1 = v0 + p.vocab;
  TensorManifest m;
  m.embed = spec("model.embed_tokens.weight", {V, d}, SplitAxis::Vocab, v0, v1);
  m.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string n = "model.layers." + std::to_string(i) + ".";
    LayerTensors& l = m.layers[i];
    l.attn_norm = spec(n + "input_layernorm.weight", {d});
    l.wq = spec(n + "self_attn.q_proj.weight", {q, d}, SplitAxis::Rows, q0, q1);
    l.wk = spec(n + "self_attn.k_proj.weight", {kv, d}, SplitAxis::Rows, kv0, kv1);
    l.wv = spec(n + "self_attn.v_proj.weight", {kv, d}, SplitAxis::Rows, kv0, kv1);
    l.wo = spec(n + "self_attn.o_proj.weight", {d, q}, SplitAxis::Cols, q0, q1);
    l.ffn_norm = spec(n + "post_attention_layernorm.weight", {d});
    l.w_gate = spec(n + "mlp.gate_proj.weight", {f, d}, SplitAxis::Rows, f0, f1);
    l.w_up = spec(n + "mlp.up_proj.weight", {f, d}, SplitAxis::Rows, f0, f1);
    l.w_down = spec(n + "mlp.down_proj.weight", {d, f}, SplitAxis::Cols, f0, f1);
  }
  m.final_norm = spec("model.norm.weight", {d});
  if (!c.tie_word_embeddings) m.lm_head = spec("lm_head.weight", {V, d}, SplitAxis::Vocab, v0, v1);
  return m;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

}  // namespace cllm
