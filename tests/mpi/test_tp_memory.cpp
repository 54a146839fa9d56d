// Each rank reads only its slice of the checkpoint: at TP=4 a rank's peak memory (VmHWM) grows by
// well under the fp32 size of the whole model while it loads. The checkpoint (make_models.sh,
// "mem") is f16 on disk and dominated by its linear weights; the bound leaves room for the file
// pages the loader maps (mmap: an o/down column slice touches every page of its rows), but a
// rank that loaded every tensor whole would need the full fp32 size in heap alone.
// Runs in its own process (ctest mpi_memory_tp4): VmHWM is a high-water mark for the process.
#include <gtest/gtest.h>

#include <cstdio>

#include "mpi_support.h"
#include "parallel/tp_model.h"

namespace cllm {
namespace {

TEST(TpMemory, RankPeakIsAboutItsShard) {
  Comm& comm = test::world();
  if (!test::world_size_in({4})) GTEST_SKIP() << "runs at 4 ranks";
  auto ckpt = open_checkpoint(test::mpi_model_dir("mem"));
  const ModelConfig& c = ckpt->config();
  const double d = c.hidden_size;
  const double full = 4.0 * (c.num_layers * (2 * d * c.q_dim() + 2 * d * c.kv_dim() + 3 * d * c.intermediate_size) +
                             2.0 * c.vocab_size * d);  // fp32 bytes of the linear weights and tables
  const double before = peak_rss_bytes();
  std::unique_ptr<Model> shard = make_sharded_model(*ckpt, Device::Cpu, comm);
  const double growth = peak_rss_bytes() - before;
  std::fprintf(stderr, "rank %d: peak memory grew by %.1f MB while loading; shard %.1f MB, whole model %.1f MB\n",
               comm.rank(), growth / 1e6, shard->step_bytes(0) / 1e6, full / 1e6);
  EXPECT_NEAR(shard->step_bytes(0), full / 4, 0.01 * full);
  EXPECT_LT(growth, 0.6 * full);
}

}  // namespace
}  // namespace cllm
