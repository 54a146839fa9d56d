// Tensor parallelism from cllm's HDF5 checkpoint (make_h5_models.sh converts make_models.sh's
// random checkpoints). Each rank reads only its hyperslabs of the .h5:
//   - at TP=2 and TP=4 the logits equal the one-rank model's within 1e-4 of the row's largest
//     logit, and greedy AR and Jacobi tokens are the same;
//   - at TP=4 a rank's peak memory grows by about its shard while loading. HDF5 reads with pread
//     (no mapping), so the growth is the fp32 shard plus transient chunk buffers: one f16 chunk
//     in HDF5 and its uint16 copy in the reader, a few MB here.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "mpi_support.h"
#include "parallel/coordinator.h"
#include "parallel/tp_model.h"
#include "runtime/generate.h"

namespace cllm {
namespace {

std::string h5_model(const std::string& name) {
  const std::string path = std::string(CLLM_BINARY_DIR) + "/test_tmp/mpi_models/" + name + ".h5";
  if (!std::filesystem::exists(path))
    ADD_FAILURE() << path << " is missing: the ctest fixture mpi_h5_models (tests/mpi/make_h5_models.sh) writes it";
  return path;
}

void check_h5(const std::string& path, int len, int max_new) {
  test::compare_with_one_rank(path, [&](Model& ref, Model& tp) {
    const int vocab = ref.config().vocab_size;
    std::vector<int32_t> prompt;
    for (int i = 0; i < len; ++i) prompt.push_back(static_cast<int32_t>((i * 37 + 5) % vocab));

    std::vector<float> ref_logits(static_cast<size_t>(len) * vocab), tp_logits(ref_logits.size());
    std::vector<int32_t> ref_ids(len), tp_ids(len);
    ref.reset(len);
    tp.reset(len);
    ref.forward(prompt.data(), len, 0, ref_ids.data(), ref_logits.data());
    tp.forward(prompt.data(), len, 0, tp_ids.data(), tp_logits.data());
    EXPECT_LE(test::max_relative_row_error(ref_logits, tp_logits, len, vocab), 1e-4);
    EXPECT_EQ(ref_ids, tp_ids);

    GenerateOptions gen;
    gen.max_new_tokens = max_new;
    const int rows = kv_rows_needed(len, max_new, 8);
    ref.reset(rows);
    tp.reset(rows);
    const GenerateResult want = generate_ar(ref, prompt, gen);
    ASSERT_EQ(static_cast<int>(want.tokens.size()), max_new);
    EXPECT_EQ(generate_ar(tp, prompt, gen).tokens, want.tokens) << "AR";
    JacobiOptions jac;
    jac.block = 8;
    jac.seed = 7;
    EXPECT_EQ(generate_jacobi(tp, prompt, gen, jac).tokens, want.tokens) << "Jacobi n=8";
  });
}

// 8 heads, 4 KV heads: KV heads split at TP=2 and TP=4.
TEST(H5Tp, SplitKvEqualsOneRank) {
  if (!test::world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  check_h5(h5_model("kv4"), 13, 24);
}

// 8 heads, 2 KV heads, tied head: KV split at TP=2, replicated at TP=4.
TEST(H5Tp, ReplicatedKvTiedHeadEqualsOneRank) {
  if (!test::world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  check_h5(h5_model("kv2_tied"), 9, 24);
}

TEST(H5Tp, RankPeakIsAboutItsShard) {
  Comm& comm = test::world();
  if (!test::world_size_in({4})) GTEST_SKIP() << "runs at 4 ranks";
  auto ckpt = open_checkpoint(h5_model("mem"));
  const ModelConfig& c = ckpt->config();
  const double d = c.hidden_size;
  const double full = 4.0 * (c.num_layers * (2 * d * c.q_dim() + 2 * d * c.kv_dim() + 3 * d * c.intermediate_size) +
                             2.0 * c.vocab_size * d);  // fp32 bytes of the linear weights and tables
  const double before = peak_rss_bytes();
  std::unique_ptr<Model> shard = make_sharded_model(*ckpt, Device::Cpu, comm);
  const double growth = peak_rss_bytes() - before;
  std::fprintf(stderr, "rank %d: peak memory grew by %.1f MB while loading from .h5; shard %.1f MB, whole model %.1f MB\n",
               comm.rank(), growth / 1e6, shard->step_bytes(0) / 1e6, full / 1e6);
  EXPECT_NEAR(shard->step_bytes(0), full / 4, 0.01 * full);
  EXPECT_LT(growth, 0.30 * full);  // the shard is 0.25
}

}  // namespace
}  // namespace cllm
