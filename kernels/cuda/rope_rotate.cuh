// The RoPE rotation of one element, shared by invoke_rope_kv_write and the qkv GEMM's epilogue
// (skinny_gemm.cuh, SkinnyOutput::rope), which must give the same bits: products and sums through
// the _rn intrinsics, which the compiler never contracts into an fma (a plain x0 * c - x1 * s may
// or may not be, depending on the code around it).
#pragma once
#include <cuda_runtime.h>

namespace cllm::cuda::detail {

// The angle pos * inv_freq[d] of rotation pair d.
struct RopeAngle {
  float s, c;
};
__device__ __forceinline__ RopeAngle rope_angle(float pos, float inv_freq) {
  RopeAngle a;
  sincosf(pos * inv_freq, &a.s, &a.c);  // precise sincos: angles reach max_ctx radians
  return a;
}

// Element d (first: d < head_dim / 2) or d + head_dim / 2 of a rotation pair (x0, x1) at angle a:
// first -> x0 cos - x1 sin, else x1 cos + x0 sin. self is this element's value, partner the other's.
__device__ __forceinline__ float rope_rotated(float self, float partner, RopeAngle a, bool first) {
  const float p = __fmul_rn(self, a.c), q = __fmul_rn(partner, a.s);
  return first ? __fsub_rn(p, q) : __fadd_rn(p, q);
}

}  // namespace cllm::cuda::detail
