// The tensor manifest (core/tensor_manifest.h) against lists written out by hand: names, order,
// full and local shapes, split axes and ranges at TP=1 and TP=3, and byte sums against a real
// checkpoint's tensors and the closed-form count of a LLaMA model's parameters.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/tensor_manifest.h"
#include "loaders/checkpoint.h"
#include "test_support.h"

namespace cllm {
namespace {

using Shape = std::vector<int64_t>;

// 6 heads of 4 over d = 16 (q_dim 24 != d, so [out, in] and [in, out] differ), 3 KV heads, FFN
// 24, vocab 48: every split divides by 3.
ModelConfig small(int kv_heads = 3, bool tied = false) {
  ModelConfig c;
  c.vocab_size = 48, c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 2;
  c.num_heads = 6, c.num_kv_heads = kv_heads, c.head_dim = 4, c.tie_word_embeddings = tied;
  return c;
}

struct Row {
  std::string name;
  Shape shape;
  SplitAxis split;
  int64_t begin, end;
  Shape local;
};

void expect_rows(const TensorManifest& m, const std::vector<Row>& want) {
  const std::vector<const TensorSpec*> all = m.all();
  ASSERT_EQ(all.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const TensorSpec& t = *all[i];
    const Row& w = want[i];
    EXPECT_EQ(t.name, w.name) << i;
    EXPECT_EQ(t.shape, w.shape) << w.name;
    EXPECT_EQ(split_axis_name(t.split), std::string(split_axis_name(w.split))) << w.name;
    EXPECT_EQ(t.begin, w.begin) << w.name;
    EXPECT_EQ(t.end, w.end) << w.name;
    EXPECT_EQ(t.local_shape, w.local) << w.name;
  }
}

// One layer's rows: q/o over query rows [q0, q1), k/v over KV rows [k0, k1), FFN units [f0, f1).
void add_layer(std::vector<Row>& r, int l, int64_t q0, int64_t q1, int64_t k0, int64_t k1, int64_t f0, int64_t f1) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  const int64_t d = 16, q = 24, kv = 12, f = 24;
  r.push_back({p + "input_layernorm.weight", {d}, SplitAxis::None, 0, d, {d}});
  r.push_back({p + "self_attn.q_proj.weight", {q, d}, SplitAxis::Rows, q0, q1, {q1 - q0, d}});
  r.push_back({p + "self_attn.k_proj.weight", {kv, d}, SplitAxis::Rows, k0, k1, {k1 - k0, d}});
  r.push_back({p + "self_attn.v_proj.weight", {kv, d}, SplitAxis::Rows, k0, k1, {k1 - k0, d}});
  r.push_back({p + "self_attn.o_proj.weight", {d, q}, SplitAxis::Cols, q0, q1, {d, q1 - q0}});
  r.push_back({p + "post_attention_layernorm.weight", {d}, SplitAxis::None, 0, d, {d}});
  r.push_back({p + "mlp.gate_proj.weight", {f, d}, SplitAxis::Rows, f0, f1, {f1 - f0, d}});
  r.push_back({p + "mlp.up_proj.weight", {f, d}, SplitAxis::Rows, f0, f1, {f1 - f0, d}});
  r.push_back({p + "mlp.down_proj.weight", {d, f}, SplitAxis::Cols, f0, f1, {d, f1 - f0}});
}

TEST(TensorManifest, WholeModelNamesShapesAndOrder) {
  std::vector<Row> want = {{"model.embed_tokens.weight", {48, 16}, SplitAxis::Vocab, 0, 48, {48, 16}}};
  for (int l = 0; l < 2; ++l) add_layer(want, l, 0, 24, 0, 12, 0, 24);
  want.push_back({"model.norm.weight", {16}, SplitAxis::None, 0, 16, {16}});
  want.push_back({"lm_head.weight", {48, 16}, SplitAxis::Vocab, 0, 48, {48, 16}});
  const TensorManifest m = make_tensor_manifest(small());
  expect_rows(m, want);
  EXPECT_TRUE(m.has_lm_head());
  EXPECT_EQ(m.layers[1].wo.dim(), 1);
  EXPECT_EQ(m.layers[1].w_up.dim(), 0);
  EXPECT_EQ(m.final_norm.dim(), -1);

  // Tied: no lm_head, the rest unchanged.
  const TensorManifest tied = make_tensor_manifest(small(3, true));
  EXPECT_FALSE(tied.has_lm_head());
  want.pop_back();
  expect_rows(tied, want);
}

TEST(TensorManifest, ThreeRanksTakeMegatronSlices) {
  // Rank 1 of 3: query heads 2-3 (rows 8-16), KV head 1 (rows 4-8), FFN units 8-16, vocab 16-32.
  std::vector<Row> want = {{"model.embed_tokens.weight", {48, 16}, SplitAxis::Vocab, 16, 32, {16, 16}}};
  for (int l = 0; l < 2; ++l) add_layer(want, l, 8, 16, 4, 8, 8, 16);
  want.push_back({"model.norm.weight", {16}, SplitAxis::None, 0, 16, {16}});
  want.push_back({"lm_head.weight", {48, 16}, SplitAxis::Vocab, 16, 32, {16, 16}});
  const ModelConfig c = small();
  expect_rows(make_tensor_manifest(c, make_shard_plan(c, 1, 3)), want);

  // One KV head, 3 ranks: KV is replicated, each rank holding the head its query heads read.
  const ModelConfig one_kv = small(1);
  const TensorManifest r2 = make_tensor_manifest(one_kv, make_shard_plan(one_kv, 2, 3));
  EXPECT_EQ(r2.layers[0].wk.shape, (Shape{4, 16}));
  EXPECT_EQ(r2.layers[0].wk.local_shape, (Shape{4, 16}));
  EXPECT_EQ(r2.layers[0].wv.begin, 0);
  EXPECT_EQ(r2.layers[0].wq.begin, 16);
}

TEST(TensorManifest, RanksCoverEveryTensorOnce) {
  // Over 3 ranks the split tensors add up to the whole; the norms are held by every rank.
  const ModelConfig c = small();
  const TensorManifest whole = make_tensor_manifest(c);
  int64_t norms = 0;
  for (const TensorSpec* t : whole.all())
    if (t->split == SplitAxis::None) norms += t->bytes(4);
  int64_t ranks = 0;
  for (int r = 0; r < 3; ++r) ranks += make_tensor_manifest(c, make_shard_plan(c, r, 3)).bytes(4);
  EXPECT_EQ(ranks, whole.bytes(4) + 2 * norms);
  EXPECT_EQ(whole.bytes(2) * 2, whole.bytes(4));
}

TEST(TensorManifest, BytesEqualTheCheckpointsTensors) {
  // SmolLM2-135M (tied embeddings, 9 heads, 3 KV heads): the manifest names every tensor the
  // checkpoint holds for it, with its shape, and its bytes are the closed-form parameter count.
  const std::unique_ptr<CheckpointReader> ckpt = open_checkpoint(test::smollm2_path());
  const ModelConfig& c = ckpt->config();
  const TensorManifest m = make_tensor_manifest(c);
  int64_t file_bytes = 0;
  for (const TensorSpec* t : m.all()) {
    ASSERT_TRUE(ckpt->has_tensor(t->name)) << t->name;
    int64_t n = 4;
    for (int64_t s : ckpt->shape(t->name)) n *= s;
    file_bytes += n;
  }
  EXPECT_EQ(m.bytes(4), file_bytes);
  const int64_t d = c.hidden_size, hd = c.head_dim;
  const int64_t layer = 2 * d + 2 * d * c.num_heads * hd + 2 * d * c.num_kv_heads * hd + 3 * d * c.intermediate_size;
  EXPECT_EQ(m.bytes(4), 4 * (layer * c.num_layers + int64_t{c.vocab_size} * d + d));  // tied: no lm_head
  EXPECT_EQ(m.bytes(4), 4 * int64_t{134515008});  // SmolLM2-135M's parameters

  // TP=3 slices: 9 heads, 3 KV heads, FFN 1536 and vocab 49152 all divide by 3.
  int64_t ranks = 0;
  for (int r = 0; r < 3; ++r) ranks += make_tensor_manifest(c, make_shard_plan(c, r, 3)).bytes(4);
  EXPECT_EQ(ranks, m.bytes(4) + 2 * 4 * d * (2 * c.num_layers + 1));  // norms on every rank
}

}  // namespace
}  // namespace cllm
