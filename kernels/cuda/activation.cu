// Grid-stride over 8-element vectors of the output: each reads one 16-byte vector of gate and one
// of up, and writes one of out.
#include <algorithm>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"

namespace cllm::cuda {
namespace {

using detail::Bf16x8;

__global__ void silu_mul_kernel(const Bf16x8* __restrict__ gate_up, Bf16x8* __restrict__ out, int vecs_per_row,
                                size_t total_vecs) {
  detail::start_after_prior_grids();
  for (size_t v = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; v < total_vecs;
       v += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = v / vecs_per_row, c = v % vecs_per_row;
    float g[8], u[8], y[8];
    detail::bf16x8_to_float(gate_up[r * 2 * vecs_per_row + c], g);
    detail::bf16x8_to_float(gate_up[r * 2 * vecs_per_row + vecs_per_row + c], u);
#pragma unroll
    for (int e = 0; e < 8; ++e) y[e] = detail::silu_times(g[e], u[e]);
    out[v] = detail::float_to_bf16x8(y);
  }
}

}  // namespace

void invoke_silu_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int rows, int ffn, cudaStream_t stream) {
  CLLM_CHECK(ffn > 0 && ffn % 8 == 0, "silu_mul: ffn " << ffn << " must be a positive multiple of 8");
  CLLM_CHECK(is_aligned(gate_up, 16) && is_aligned(out, 16), "silu_mul: pointers must be 16-byte aligned");
  if (rows == 0) return;
  const size_t total = static_cast<size_t>(rows) * (ffn / 8);
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + kThreads - 1) / kThreads, 4096));
  launch_overlapped(silu_mul_kernel, blocks, kThreads, 0, stream, reinterpret_cast<const Bf16x8*>(gate_up),
                    reinterpret_cast<Bf16x8*>(out), ffn / 8, total);
}

}  // namespace cllm::cuda
