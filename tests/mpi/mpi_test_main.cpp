// main() of the tensor-parallel tests: one process per rank under mpirun (or a single process).
// Rank 0 prints gtest's usual report; the other ranks print only their failures, prefixed with
// the rank, so that a failure on a worker is still seen.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>

#include "kernels/cpu/ops.h"

#include "mpi_support.h"
#include "tests/rank_report.h"

namespace cllm::test {
namespace {

std::unique_ptr<Comm> g_world;



}  // namespace

Comm& world() { return *g_world; }

}  // namespace cllm::test

int main(int argc, char** argv) {
  cllm::test::g_world = cllm::init_comm_from_environment();
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = cllm::test::g_world->rank();
  // The node's cores shared among its ranks, as `cllm` does (launch/cli_common.h).
  const int local = cllm::test::g_world->local_size();
  if (local > 1) cllm::cpu::set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local));
  cllm::test::report_failures_only_unless_rank0(rank);
  const int status = RUN_ALL_TESTS();
  cllm::test::g_world.reset();  // MPI_Finalize
  return status;
}
