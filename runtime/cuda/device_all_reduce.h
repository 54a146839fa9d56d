// The tensor-parallel sum a sharded CudaModel issues after the embedding, after o and after down
// (design.md, "Tensor parallelism"): in place, on the model's stream, in bf16 (the sublayer
// outputs; the sum itself runs in fp32, rounded once). Implementations:
//   - host-staged (here): D2H, Comm::all_reduce_sum over any host communicator (MPI), H2D. It
//     synchronises the stream, so it cannot be captured into a CUDA graph (the model runs eagerly),
//     but it works for ranks that share one GPU, which NCCL refuses: the way TP is tested on one GPU.
//   - NCCL or the one-shot CUDA-IPC kernel (parallel/cuda/cuda_tp_model.h): enqueue only, capturable.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "core/comm.h"
#include "runtime/cuda/device_buffer.h"

namespace cllm::cuda {

class DeviceAllReduce {
 public:
  virtual ~DeviceAllReduce() = default;
  // In-place sum over ranks of `count` bf16 elements of device memory, ordered on `stream`. Every
  // rank calls it with the same count in the same order (a collective).
  virtual void sum_bf16(__nv_bfloat16* data, size_t count, cudaStream_t stream, const CommPhase& phase) = 0;
  // True when sum_bf16 only enqueues work (it may then be recorded into a CUDA graph).
  virtual bool capturable() const = 0;
  // Waits until `stream` has drained, with the communicator's failure semantics (a deadline, every
  // rank stopped on an error); plain cudaStreamSynchronize by default.
  virtual void wait(cudaStream_t stream, const CommPhase& phase);
  // "host", "nccl", "ipc", ... for messages and benchmark output.
  virtual const char* name() const = 0;
};

// The host-staged sum over `comm` (host pointers; MPI or the single-rank one), which must outlive it.
std::unique_ptr<DeviceAllReduce> make_host_staged_all_reduce(Comm& comm);

}  // namespace cllm::cuda
