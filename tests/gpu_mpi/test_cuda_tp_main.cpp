// main() of the GPU tensor-parallel tests (test_cuda_tp.cpp): the host communicator (MPI under
// mpirun), gtest, teardown. Unlike test_main.cpp it builds no NcclComm up front, so it runs with
// several ranks on one GPU (the host-staged all-reduce). Rank 0 prints gtest's report; other
// ranks print only their failures, prefixed with the rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "parallel/comm.h"
#include "tests/rank_report.h"

namespace cllm::test {
namespace {
std::unique_ptr<Comm> g_world;


}  // namespace

Comm& tp_world() { return *g_world; }
}  // namespace cllm::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  cllm::test::g_world = cllm::init_comm_from_environment();
  cllm::Comm& c = *cllm::test::g_world;
  c.set_deadline_seconds(120);
  cllm::test::report_failures_only_unless_rank0(c.rank());
  int32_t status = RUN_ALL_TESTS();
  // A test failing on one rank only must fail the run on every rank.
  std::vector<int32_t> all(c.size());
  c.all_gather(&status, sizeof status, all.data(), {"test status"});
  status = *std::max_element(all.begin(), all.end());
  cllm::test::g_world.reset();  // finalizes MPI
  return status;
}
