// The sharding plan on real shapes (no MPI needed), and the sharded CpuModel at one rank: the
// collectives are identities there, so it must reproduce the plain model bit for bit.
#include <gtest/gtest.h>

#include "core/check.h"
#include "core/shard_plan.h"
#include "mpi_support.h"
#include "runtime/cpu_model.h"
#include "runtime/random_model.h"

namespace cllm {
namespace {

std::string refusal(const ModelConfig& c, int size) {
  try {
    make_shard_plan(c, 0, size);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ShardPlan, SmolLM2SplitsOverThreeNotTwo) {
  const ModelConfig c = random_model_shape("135m");  // SmolLM2: 9 heads, 3 KV heads
  EXPECT_NE(refusal(c, 2).find("attention heads (9) to be a multiple of 2"), std::string::npos) << refusal(c, 2);
  for (int r = 0; r < 3; ++r) {
    const ShardPlan p = make_shard_plan(c, r, 3);
    EXPECT_EQ(p.head_begin, 3 * r);
    EXPECT_EQ(p.heads, 3);
    EXPECT_EQ(p.kv_head_begin, r);
    EXPECT_EQ(p.kv_heads, 1);
    EXPECT_EQ(p.ffn_begin, 512 * r);
    EXPECT_EQ(p.vocab_begin, 16384 * r);
  }
}

TEST(ShardPlan, ReplicatesKvHeadsBeyondTheirCount) {
  const ModelConfig c = random_model_shape("70b");  // 64 heads, 8 KV heads: 8 query heads per KV head
  const ShardPlan split = make_shard_plan(c, 5, 8);
  EXPECT_EQ(split.kv_head_begin, 5);
  EXPECT_EQ(split.kv_heads, 1);
  for (int r = 0; r < 16; ++r) {  // 4 query heads per rank: two ranks share each KV head
    const ShardPlan p = make_shard_plan(c, r, 16);
    EXPECT_EQ(p.heads, 4);
    EXPECT_EQ(p.kv_heads, 1);
    EXPECT_EQ(p.kv_head_begin, r / 2);
  }
}

TEST(ShardPlan, RefusesUnevenSplitsNamingTheNumbers) {
  ModelConfig c = random_model_shape("tiny");  // 4 heads, 2 KV heads, FFN 160, vocab 320
  EXPECT_NE(refusal(c, 3).find("heads (4)"), std::string::npos);
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.intermediate_size = 162;
  EXPECT_NE(refusal(c, 4).find("FFN width (162)"), std::string::npos) << refusal(c, 4);
  c.intermediate_size = 160;
  c.vocab_size = 322;
  EXPECT_NE(refusal(c, 4).find("vocabulary (322)"), std::string::npos) << refusal(c, 4);
  c.vocab_size = 320;
  c.num_heads = 12;
  c.num_kv_heads = 6;  // neither divides nor is divided by 4
  EXPECT_NE(refusal(c, 4).find("KV heads (6)"), std::string::npos) << refusal(c, 4);
}

TEST(ShardPlan, OneRankShardedModelIsThePlainModel) {
  auto ckpt = open_checkpoint(test::mpi_model_dir("kv4"));
  const ModelConfig& cfg = ckpt->config();
  std::unique_ptr<Comm> one = make_single_comm();
  CpuModel plain(cfg, load_weights_f32(*ckpt, {}));
  CpuModel sharded(cfg, load_weights_f32(*ckpt, make_shard_plan(cfg, 0, 1), {}), make_shard_plan(cfg, 0, 1), *one);
  const std::vector<int32_t> tokens = {3, 141, 59, 265, 35, 89, 79};
  const int n = static_cast<int>(tokens.size());
  std::vector<float> a(static_cast<size_t>(n) * cfg.vocab_size), b(a.size());
  std::vector<int32_t> ia(n), ib(n);
  plain.reset(n);
  sharded.reset(n);
  plain.forward(tokens.data(), n, 0, ia.data(), a.data());
  sharded.forward(tokens.data(), n, 0, ib.data(), b.data());
  EXPECT_EQ(ia, ib);
  EXPECT_EQ(a, b);  // bit for bit
}

}  // namespace
}  // namespace cllm
