// The GPU communicator: NCCL for every collective, plus the one-shot all-reduce over CUDA IPC peer
// memory (parallel/cuda/ipc_allreduce.h) for small messages inside a node.
//
// Every pointer given to it is DEVICE memory of this rank's GPU. The Comm interface calls are
// issued on stream() and return when that stream has drained; the *_async calls only enqueue on
// the stream given (capture-safe: they can be recorded into a CUDA graph) and wait() completes them.
//
// Construction (collective over the MPI communicator in the options; MPI must be initialised and
// is not finalised by this object):
//   local rank = rank in MPI_Comm_split_type(MPI_COMM_TYPE_SHARED); cudaSetDevice(local rank);
//   rank 0's ncclGetUniqueId is broadcast over MPI; ncclCommInitRankConfig with config.blocking = 0
//   (a non-blocking communicator, so that no NCCL call can hang the host).
// Failure semantics (design.md): after issuing, wait() polls ncclCommGetAsyncError and
// cudaStreamQuery until done; on an NCCL or CUDA error, a peer that never arrived, or when the
// deadline (default 60 s) passes, it prints "rank R: <op> in <phase> ..." and stops every rank
// (ncclCommAbort, then MPI_Abort: exit status non-zero).
//
// Summation order: the IPC path sums in rank order with fp32 accumulation (the Comm contract:
// bitwise the same on every rank and for any row count). NCCL picks its own order by size; with
// 2 ranks that is the same bits (a + b == b + a), with more ranks it may differ in the last bits.
#pragma once
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "core/comm.h"
#include "parallel/cuda/ipc_allreduce.h"

namespace cllm {

// Which all-reduce a call takes: automatic = IPC when available and bytes <= ipc_max_bytes.
enum class AllReducePath { automatic, nccl, ipc };
// "auto" | "nccl" | "ipc" (the CLI flag's values); throws cllm::Error on anything else.
AllReducePath parse_all_reduce_path(const std::string& text);
const char* all_reduce_path_name(AllReducePath p);

struct NcclCommOptions {
  MPI_Comm mpi = MPI_COMM_WORLD;  // bootstrap; duplicated, so the caller may free theirs
  cudaStream_t stream = nullptr;  // stream of the Comm-interface calls; null: a new non-blocking one
  AllReducePath path = AllReducePath::automatic;
  size_t ipc_max_bytes = size_t{8} << 20;  // IPC buffer size per half; above it, NCCL
  double deadline_s = 60.0;
};

class NcclComm final : public Comm {
 public:
  // Collective. Throws cllm::Error (before any collective could hang) when this node has fewer
  // GPUs than ranks, and, with path = ipc, when the IPC all-reduce is unavailable (its reason).
  explicit NcclComm(const NcclCommOptions& options = {});
  // Collective (the IPC buffers are freed behind a barrier). Destroy before MPI_Finalize.
  ~NcclComm() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // Whether the IPC all-reduce was set up (path auto on one node with peer access, or path ipc).
  bool ipc_available() const { return ipc_ != nullptr; }
  // The path an all-reduce of `bytes` takes under the configured option.
  AllReducePath path_for(size_t bytes) const;

  // Comm interface: device pointers, on stream(), blocking until done or the deadline.
  void all_reduce_sum(float* data, size_t count, const CommPhase& phase) override;
  void all_reduce_max_loc(ValueIndex* data, size_t count, const CommPhase& phase) override;
  void broadcast(void* data, size_t bytes, int root, const CommPhase& phase) override;
  void all_gather(const void* send, size_t bytes, void* recv, const CommPhase& phase) override;

  // In-place sum of `count` elements of `data` over ranks, enqueued on `stream`, by the configured
  // path for its size. The _via form forces a path (ipc: bytes <= ipc_max_bytes, IPC available).
  void all_reduce_sum_async(void* data, size_t count, CommDType dtype, cudaStream_t stream, const CommPhase& phase);
  void all_reduce_sum_via(AllReducePath path, void* data, size_t count, CommDType dtype, cudaStream_t stream,
                          const CommPhase& phase);
  // Max-loc of `count` device (value, index) pairs, enqueued on `stream`: an NCCL all-gather of
  // every rank's pairs into a scratch buffer, then a per-row pick (lowest index on ties). The
  // scratch grows with cudaMalloc: make the largest call once before capturing a graph.
  void all_reduce_max_loc_async(ValueIndex* data, size_t count, cudaStream_t stream, const CommPhase& phase);
  // Polls until `stream` has drained; stops every rank on an error, a missing peer or the deadline.
  void wait(cudaStream_t stream, const char* op, const CommPhase& phase);

 protected:
  void stop_all_ranks(const std::string& message) override;

 private:
  // Completes an NCCL call on a non-blocking communicator (ncclInProgress -> poll) or stops all.
  void nccl_issued(ncclResult_t r, const char* op, const CommPhase& phase);
  void* scratch(size_t bytes);

  MPI_Comm mpi_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, device_ = 0;
  AllReducePath path_ = AllReducePath::automatic;
  size_t ipc_max_bytes_ = 0;
  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  std::unique_ptr<IpcAllReduce> ipc_;
  void* scratch_ = nullptr;  // max-loc gather buffer, grown on demand
  size_t scratch_bytes_ = 0;
};

}  // namespace cllm
