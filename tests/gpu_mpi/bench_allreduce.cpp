// All-reduce latency, NCCL vs the IPC one-shot, at the sizes models use (bf16, n x hidden x 2
// bytes for n in {1,16,32,64} and hidden in {4096,5120,8192}, then 8 MB), under mpirun -np N:
//   eager: 20 warm-up calls, then 200 back-to-back calls timed with CUDA events, per call;
//   graph: 100 back-to-back calls captured into one CUDA graph, 10 replays timed, per call.
// Times are the maximum over ranks (the slowest rank bounds a TP step). Buffers hold zeros so
// repeated in-place sums stay finite. Prints one table on rank 0.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "kernels/cuda/cuda_check.cuh"
#include "parallel/comm_nccl.h"

namespace {

using cllm::AllReducePath;

// Microseconds per call of `calls` all-reduces of `count` bf16 elements on `path`.
double time_eager(cllm::NcclComm& c, AllReducePath path, void* d, size_t count, cudaStream_t s) {
  const cllm::CommPhase ph{"bench eager"};
  for (int i = 0; i < 20; ++i) c.all_reduce_sum_via(path, d, count, cllm::CommDType::bf16, s, ph);
  c.wait(s, "all-reduce", ph);
  MPI_Barrier(MPI_COMM_WORLD);
  cudaEvent_t a, b;
  CLLM_CUDA_CHECK(cudaEventCreate(&a));
  CLLM_CUDA_CHECK(cudaEventCreate(&b));
  constexpr int kCalls = 200;
  CLLM_CUDA_CHECK(cudaEventRecord(a, s));
  for (int i = 0; i < kCalls; ++i) c.all_reduce_sum_via(path, d, count, cllm::CommDType::bf16, s, ph);
  CLLM_CUDA_CHECK(cudaEventRecord(b, s));
  c.wait(s, "all-reduce", ph);
  float ms = 0;
  CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms * 1000.0 / kCalls;
}

double time_graph(cllm::NcclComm& c, AllReducePath path, void* d, size_t count, cudaStream_t s) {
  const cllm::CommPhase ph{"bench graph"};
  constexpr int kPerGraph = 100, kReplays = 10;
  cudaGraph_t g;
  cudaGraphExec_t e;
  CLLM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kPerGraph; ++i) c.all_reduce_sum_via(path, d, count, cllm::CommDType::bf16, s, ph);
  CLLM_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CLLM_CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
  CLLM_CUDA_CHECK(cudaGraphLaunch(e, s));  // warm-up
  c.wait(s, "graph replay", ph);
  MPI_Barrier(MPI_COMM_WORLD);
  cudaEvent_t a, b;
  CLLM_CUDA_CHECK(cudaEventCreate(&a));
  CLLM_CUDA_CHECK(cudaEventCreate(&b));
  CLLM_CUDA_CHECK(cudaEventRecord(a, s));
  for (int r = 0; r < kReplays; ++r) CLLM_CUDA_CHECK(cudaGraphLaunch(e, s));
  CLLM_CUDA_CHECK(cudaEventRecord(b, s));
  c.wait(s, "graph replay", ph);
  float ms = 0;
  CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  return ms * 1000.0 / (kPerGraph * kReplays);
}

double max_over_ranks(double v) {
  double m = 0;
  MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    cllm::NcclCommOptions o;
    o.path = AllReducePath::ipc;  // refuse clearly when IPC is unavailable: the bench compares both
    cllm::NcclComm c(o);
    std::vector<size_t> counts;
    for (size_t n : {1, 16, 32, 64})
      for (size_t h : {4096, 5120, 8192}) counts.push_back(n * h);
    counts.push_back(o.ipc_max_bytes / 2);
    void* d = nullptr;
    CLLM_CUDA_CHECK(cudaMalloc(&d, o.ipc_max_bytes));
    CLLM_CUDA_CHECK(cudaMemset(d, 0, o.ipc_max_bytes));
    cudaStream_t s;
    CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (c.rank() == 0)
      std::printf("all-reduce latency, bf16, %d ranks, us per call (max over ranks)\n"
                  "%10s %8s %12s %12s %12s %12s\n",
                  c.size(), "bytes", "elems", "NCCL eager", "IPC eager", "NCCL graph", "IPC graph");
    for (size_t n : counts) {
      const double ne = max_over_ranks(time_eager(c, AllReducePath::nccl, d, n, s));
      const double ie = max_over_ranks(time_eager(c, AllReducePath::ipc, d, n, s));
      const double ng = max_over_ranks(time_graph(c, AllReducePath::nccl, d, n, s));
      const double ig = max_over_ranks(time_graph(c, AllReducePath::ipc, d, n, s));
      if (c.rank() == 0) std::printf("%10zu %8zu %12.2f %12.2f %12.2f %12.2f\n", n * 2, n, ne, ie, ng, ig);
    }
    cudaStreamDestroy(s);
    cudaFree(d);
  }
  MPI_Finalize();
  return 0;
}
