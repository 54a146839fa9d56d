// Each rank reads only its slice of the checkpoint. At TP=4, while a rank loads:
//   heap peak  = VmHWM growth - file pages mapped (RssFile growth) stays near the shard (1/4 of
//                the fp32 model); loading a tensor whole, even briefly, would show here;
//   whole peak = VmHWM growth stays well under the fp32 model (TP=1 needs 1.5x: all of it in
//                heap plus the f16 file's pages).
// File pages count because checkpoints are read through mmap: an o/down column slice touches
// every page of its rows. The checkpoint (make_models.sh, "mem") is f16 on disk and dominated by
// linear weights. Runs in its own process (ctest mpi_memory_tp4): VmHWM is the process's peak.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "mpi_support.h"
#include "parallel/tp_model.h"

namespace cllm {
namespace {

double status_bytes(const std::string& key) {  // a "Key:  1234 kB" line of /proc/self/status
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) * 1024.0;
  ADD_FAILURE() << "/proc/self/status has no " << key;
  return 0;
}

TEST(TpMemory, RankPeakIsAboutItsShard) {
  Comm& comm = test::world();
  if (!test::world_size_in({4})) GTEST_SKIP() << "runs at 4 ranks";
  auto ckpt = open_checkpoint(test::mpi_model_dir("mem"));
  const ModelConfig& c = ckpt->config();
  const double d = c.hidden_size;
  const double full = 4.0 * (c.num_layers * (2 * d * c.q_dim() + 2 * d * c.kv_dim() + 3 * d * c.intermediate_size) +
                             2.0 * c.vocab_size * d);  // fp32 bytes of the linear weights and tables
  const double peak_before = peak_rss_bytes(), file_before = status_bytes("RssFile");
  std::unique_ptr<Model> shard = make_sharded_model(*ckpt, Device::Cpu, comm);
  const double growth = peak_rss_bytes() - peak_before, file_pages = status_bytes("RssFile") - file_before;
  std::fprintf(stderr, "rank %d: peak memory grew by %.1f MB while loading (%.1f MB of it file pages); "
               "shard %.1f MB, whole model %.1f MB\n", comm.rank(), growth / 1e6, file_pages / 1e6,
               shard->step_bytes(0) / 1e6, full / 1e6);
  EXPECT_NEAR(shard->step_bytes(0), full / 4, 0.01 * full);
  EXPECT_LT(growth - file_pages, 0.35 * full);
  EXPECT_LT(growth, 0.75 * full);
}

}  // namespace
}  // namespace cllm
