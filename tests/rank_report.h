// gtest output under mpirun, shared by the MPI test mains (tests/mpi, tests/gpu_mpi): rank 0 keeps
// gtest's usual report; every other rank prints only its failures, prefixed with the rank, so that
// a failure on a worker is still seen without N interleaved reports.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>

namespace cllm::test {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "rank %d: %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                   r.message());
  }

 private:
  int rank_;
};

// Call after InitGoogleTest, before RUN_ALL_TESTS.
inline void report_failures_only_unless_rank0(int rank) {
  if (rank == 0) return;
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new RankFailurePrinter(rank));
}

}  // namespace cllm::test
