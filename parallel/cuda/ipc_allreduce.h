// Host side of the one-shot all-reduce over CUDA IPC peer memory (kernel: comm_kernels.cuh).
// For small messages between the GPUs of one node, where NCCL costs tens of microseconds a call.
// Construction is collective over an MPI communicator whose ranks all share this node; each rank
// must already have made its GPU current (cudaSetDevice).
#pragma once
#include <cuda_runtime.h>
#include <mpi.h>

#include <cstddef>
#include <string>

#include "parallel/cuda/comm_kernels.cuh"

namespace cllm {

class IpcAllReduce {
 public:
  // Allocates a signal block (4.5 KB of step flags) plus two halves of max_bytes (rounded up to 16) on this GPU,
  // exchanges cudaIpcMemHandle over `comm` (MPI_Allgather) and opens every peer's allocation.
  // Throws cllm::Error, on every rank alike, when a pair of GPUs has no peer access
  // (cudaDeviceCanAccessPeer), when the ranks span nodes, or when there are more than
  // kIpcMaxRanks ranks.
  IpcAllReduce(MPI_Comm comm, size_t max_bytes);
  // Collective: waits for this GPU, then for every rank (MPI_Barrier), so that no peer still reads
  // this rank's buffer when it is freed. Destroy before MPI_Finalize.
  ~IpcAllReduce();
  IpcAllReduce(const IpcAllReduce&) = delete;
  IpcAllReduce& operator=(const IpcAllReduce&) = delete;

  // Whether construction could succeed on these ranks (collective over comm; never throws for a
  // missing peer link): "" when yes, else the reason.
  static std::string unavailable_reason(MPI_Comm comm);

  size_t max_bytes() const { return args_.half_bytes; }

  // Enqueues the in-place sum over ranks of `count` elements of device memory `data` on `stream`
  // (capture-safe). bytes <= max_bytes(). A block that waits longer than timeout_s for a peer
  // gives up, leaving `data` partly summed, and failed_peer() then names that peer.
  void enqueue(void* data, size_t count, CommDType dtype, cudaStream_t stream, double timeout_s);

  // -1, or the rank a kernel gave up waiting for. Read after the stream has drained.
  int failed_peer() const { return *error_host_ - 1; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;  // a duplicate of the constructor's communicator
  IpcKernelArgs args_;
  char* mine_ = nullptr;          // this rank's allocation (signal block + two halves)
  int* error_host_ = nullptr;     // pinned, mapped: args_.error's host side
};

}  // namespace cllm
