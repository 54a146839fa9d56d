// Fused residual add + RMSNorm.
//
// The residual stream is fp32 [rows, dim]: summing 2 * n_layers bf16 sublayer outputs into a bf16
// stream would round at every add; fp32 keeps it exact to within one rounding per add. The layer
// inputs (norm outputs) are bf16, as the GEMMs want them. Start of the forward: memset the residual
// to 0 and pass the bf16 embedding output as x.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace cllm::cuda {

// The RMS sum runs over segments of this many elements (kernels/cuda/rms_sum.cuh: the one order
// every kernel uses); 16, the small-M GEMM's row tile, so one CTA owns whole segments of its output.
constexpr int kRmsSegment = 16;
__host__ __device__ constexpr int rms_segments(int dim) { return (dim + kRmsSegment - 1) / kRmsSegment; }

// residual[r, :] += x[r, :]  (skipped when x == nullptr)
// out[r, :] = bf16(residual[r, :] / sqrt(mean(residual[r, :]^2) + eps) * weight[:])
// residual: fp32 [rows, dim]; x, out: bf16 [rows, dim]; weight: bf16 [dim]. All math in fp32.
// dim % 8 == 0, pointers 16-byte aligned (checked).
void invoke_add_rmsnorm(float* residual, const __nv_bfloat16* x, const __nv_bfloat16* weight,
                        __nv_bfloat16* out, int rows, int dim, float eps, cudaStream_t stream);

}  // namespace cllm::cuda
