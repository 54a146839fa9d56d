// main() of the GPU communicator tests: MPI first, then one NcclComm (path auto) shared by the
// tests, gtest, and teardown in reverse. Rank 0 prints gtest's report; other ranks print only
// their failures, prefixed with the rank.
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/rank_report.h"
#include "test_support.h"

namespace cllm::test {
namespace {
std::unique_ptr<NcclComm> g_comm;


}  // namespace

NcclComm& gpu_comm() { return *g_comm; }
}  // namespace cllm::test

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int status = 1;
  {
    cllm::NcclCommOptions o;
    o.deadline_s = 60;
    cllm::test::g_comm = std::make_unique<cllm::NcclComm>(o);
    const int rank = cllm::test::g_comm->rank();
    cllm::test::report_failures_only_unless_rank0(rank);
    status = RUN_ALL_TESTS();
    // A test failing on one rank only must fail the run on every rank (mpirun reports the first).
    int worst = 0;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    status = worst;
    cllm::test::g_comm.reset();
  }
  MPI_Finalize();
  return status;
}
