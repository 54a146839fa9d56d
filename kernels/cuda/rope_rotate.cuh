// The RoPE rotation of one element, shared by invoke_rope_kv_write and the qkv GEMM's epilogue
// (skinny_gemm.cuh, SkinnyOutput::rope), which must give the same bits: products and sums through
// the _rn intrinsics, which the compiler never contracts into an fma (a plain x0 * c - x1 * s may
// or may not be, depending on the code around it).
#pragma once
#include <cuda_runtime.h>

namespace cllm::cuda::detail {

// Element d (first: d < head_dim / 2) or d + head_dim / 2 of a rotation pair (x0, x1) at angle
// pos * inv_freq[d]: first -> x0 cos - x1 sin, else x1 cos + x0 sin. self is this element's value,
// partner the other's.
__device__ __forceinline__ float rope_rotated(float self, float partner, float pos, float inv_freq, bool first) {
  float s, c;
  sincosf(pos * inv_freq, &s, &c);  // precise sincos: angles reach max_ctx radians
  const float a = __fmul_rn(self, c), b = __fmul_rn(partner, s);
  return first ? __fsub_rn(a, b) : __fadd_rn(a, b);
}

}  // namespace cllm::cuda::detail
