// The one order in which CUDA kernels sum a row's squares for RMSNorm.
//
// A row's norm is computed in two places that must agree bit for bit (batch invariance: whether a
// forward takes the fused path depends on its row count): invoke_add_rmsnorm (norm.cuh), and the
// prologue of a small-M GEMM that normalises the fp32 residual as it loads it, from partials that
// the GEMM before it wrote in its epilogue (skinny_gemm.cuh, the fused layer boundary). Both use:
//  1. segments of kRmsSegment consecutive elements; segment s's partial is an fma chain from 0 over
//     its elements in order (the last segment may be shorter);
//  2. the row's total: lane L of one warp adds partials L, L + 32, L + 64, ... in order from 0, then
//     the warp's xor butterfly (each step adds a commutative pair: every lane ends with the same bits).
// inv_rms = rsqrtf(total / dim + eps); an element's output is bf16((x * inv_rms) * weight).
#pragma once
#include <cuda_runtime.h>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/norm.cuh"

namespace cllm::cuda::detail {

// Step 1 for one segment of n <= kRmsSegment elements (any address space).
__device__ __forceinline__ float rms_segment_partial(const float* x, int n) {
  float acc = 0.f;
  for (int j = 0; j < n; ++j) acc = __fmaf_rn(x[j], x[j], acc);
  return acc;
}

// Step 2: called by all 32 lanes of one warp; every lane returns the row's inverse rms.
__device__ __forceinline__ float rms_inv_from_partials(const float* parts, int dim, float eps) {
  const int count = rms_segments(dim), lane = threadIdx.x % kWarp;
  float acc = 0.f;
  for (int s = lane; s < count; s += kWarp) acc += parts[s];
  return rsqrtf(warp_sum(acc) / static_cast<float>(dim) + eps);
}

}  // namespace cllm::cuda::detail
