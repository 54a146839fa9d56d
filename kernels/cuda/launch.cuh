// Kernel launches that overlap the kernel before them (programmatic dependent launch, sm_90+).
//
// A decode step is ~10 small kernels a layer; each waits for the one before it to finish, drain and
// flush, then its own CTAs are scheduled and only then issue their first loads: a few microseconds
// of an idle GPU per kernel, a tenth of a 7B step and most of a 135M one. Launched through
// launch_overlapped, a kernel's CTAs are scheduled as soon as every CTA of the kernel before it has
// started (each calls detail::allow_dependents() first thing), run whatever does not depend on
// earlier kernels (a GEMM prefetches its weights into L2), and then block in detail::wait_prior_grids()
// until the kernel before has completed and its writes are visible. The rule for every kernel
// launched this way: nothing but reads of constant inputs (weights) before wait_prior_grids(), in
// every CTA that reads or writes anything else. Kernels of other libraries (cuBLASLt, NCCL) and
// copies keep the stream's full ordering, before and after. Results are unchanged: only when the
// kernel starts moves, never what it computes.
//
// set_launch_overlap(false) launches them as plain kernels instead (for A/B timings: whether the
// overlap pays on a given GPU). Process-wide, because kernels take no model handle; set it before
// any launch or graph capture, as CudaModel's constructor does from CudaModelOptions.
#pragma once
#include <cuda_runtime.h>

#include <atomic>

#include "kernels/cuda/cuda_check.cuh"

namespace cllm::cuda {

namespace detail {
inline std::atomic<bool> launch_overlap{true};
}  // namespace detail
inline void set_launch_overlap(bool on) { detail::launch_overlap.store(on, std::memory_order_relaxed); }
inline bool launch_overlap() { return detail::launch_overlap.load(std::memory_order_relaxed); }

template <typename... Params, typename... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = launch_overlap() ? 1 : 0;
  CLLM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
  CLLM_CUDA_LAUNCH_CHECK(stream);
}

}  // namespace cllm::cuda
