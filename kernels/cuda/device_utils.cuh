// Device helpers shared by the kernel .cu files (not a launcher API): 16-byte bf16 vectors,
// warp/block reductions, alignment checks for the launchers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cllm::cuda::detail {

constexpr int kWarp = 32;

// 8 bf16 = 16 bytes: the unit of every vectorised load/store in these kernels.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 h[4];
};

__device__ __forceinline__ void bf16x8_to_float(const Bf16x8& v, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(v.h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__device__ __forceinline__ Bf16x8 float_to_bf16x8(const float (&f)[8]) {
  Bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return v;
}

// SwiGLU's gate: silu(g) * u, in fp32. The one definition, so that the down projection that computes
// it while loading its input (invoke_skinny_gemm_gated) gives the bits of invoke_silu_mul.
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + __expf(-g)) * u; }

// c += A . B on the tensor cores: mma.sync m16n8k16, bf16 inputs, fp32 accumulators. Lane (g =
// lane/4, t = lane%4) holds A rows g, g+8 at k = 2t, 2t+1 (a0: row g, a1: row g+8) and k = 2t+8, 2t+9
// (a2, a3); B column g at k = 2t, 2t+1 (b0) and 2t+8, 2t+9 (b1); C rows g (c0, c1) and g+8 (c2, c3)
// at columns 2t, 2t+1. Each element of C depends on its own row of A and column of B only.
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without a register stop (cp.async); valid = false writes zeros and
// reads nothing. Commit closes the group of copies issued so far; wait_all waits for all groups,
// wait_all_but<N> for all but the N most recently committed.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
// The "memory" clobbers keep the compiler from moving shared-memory reads of the copied data above
// the wait (a kernel that reads back only its own copies has no barrier that would).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_all_but() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Programmatic dependent launch (kernels/cuda/launch.cuh): wait_prior_grids() returns once the kernel
// launched before this one has completed and its memory is visible; allow_dependents() lets the
// kernel launched after this one be scheduled (it then waits in its own wait_prior_grids()). Both
// are no-ops for a kernel launched without the attribute and on GPUs before sm_90.
__device__ __forceinline__ void wait_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Both, for a kernel whose every input may come from the kernel before it.
__device__ __forceinline__ void start_after_prior_grids() {
  allow_dependents();
  wait_prior_grids();
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Sum over the whole block; every thread gets the result. blockDim.x must be a multiple of 32
// (at most 1024). Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_sum(float x) {
  __shared__ float partial[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int n_warps = blockDim.x / kWarp;
  x = warp_sum(x);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  x = lane < n_warps ? partial[lane] : 0.f;
  return warp_sum(x);
}

}  // namespace cllm::cuda::detail

namespace cllm::cuda {
// True when p may be accessed with `bytes`-wide vector loads.
inline bool is_aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}
}  // namespace cllm::cuda
