// Failure-semantics driver for NcclComm, run under mpirun -np 2 by run.sh (expect_abort.sh checks
// the exit status, the time and the message):
//   cllm_gpu_mpi_fault skip|kill nccl|ipc DEADLINE_S
// Loops 10 "layers" of 8 KB bf16 all-reduces through the Comm interface path chosen. At layer 3
// rank 1 either skips the collective and sleeps (skip: rank 0 must print "rank 0: all-reduce in
// layer 3 attention timed out after DEADLINE_S s" and exit non-zero), or SIGKILLs itself (kill:
// rank 0 or mpirun must stop the job, non-zero, within the deadline).
#include <mpi.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "kernels/cuda/cuda_check.cuh"
#include "parallel/comm_nccl.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s skip|kill nccl|ipc DEADLINE_S\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  MPI_Init(&argc, &argv);
  cllm::NcclCommOptions o;
  o.path = cllm::parse_all_reduce_path(argv[2]);
  o.deadline_s = std::atof(argv[3]);
  int exit_code = 0;
  {
    cllm::NcclComm c(o);
    void* d = nullptr;
    const size_t count = 4096;  // bf16: 8 KB, one token's hidden state at hidden 4096
    CLLM_CUDA_CHECK(cudaMalloc(&d, count * 2));
    CLLM_CUDA_CHECK(cudaMemset(d, 0, count * 2));
    for (int layer = 0; layer < 10; ++layer) {
      if (layer == 3 && c.rank() == 1) {
        if (mode == "kill") std::raise(SIGKILL);
        std::fprintf(stderr, "rank 1: skipping the all-reduce of layer 3\n");
        std::this_thread::sleep_for(std::chrono::duration<double>(10 * o.deadline_s + 20));
        break;
      }
      c.all_reduce_sum_async(d, count, cllm::CommDType::bf16, c.stream(), {"attention", layer});
      c.wait(c.stream(), "all-reduce", {"attention", layer});
    }
    std::fprintf(stderr, "rank %d: finished all layers; a failure was expected\n", c.rank());
    exit_code = 3;
    cudaFree(d);
  }
  MPI_Finalize();
  return exit_code;
}
