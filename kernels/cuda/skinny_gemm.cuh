// Bandwidth-bound bf16 GEMM for few rows (decoding, Jacobi blocks): y[M, N] = x[M, K] . W[N, K]^T,
// the layout of every linear layer (W row-major [out, in]), fp32 accumulation, bf16 output.
// At M <= kSkinnyGemmMaxM the time is the time to stream W once from HBM; this kernel is built for
// that (see skinny_gemm.cu). Larger M belong to cuBLASLt (GemmPlan, gemm.cuh).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace cllm::cuda {

// Largest M the skinny kernel takes.
constexpr int kSkinnyGemmMaxM = 32;

// True when invoke_skinny_gemm accepts the shape and pointers: 1 <= M <= kSkinnyGemmMaxM, N >= 1,
// K a positive multiple of 8, x and w 16-byte aligned (y needs 2-byte alignment only).
bool skinny_gemm_supported(int M, int N, int K, const void* x, const void* w);

// x: bf16 [M, K], w: bf16 [N, K], y: bf16 [M, N], row-major, contiguous. Neither allocates nor
// synchronises (CUDA-graph capture safe) and is deterministic: the same inputs give the same bits.
// Throws cllm::Error when skinny_gemm_supported() is false.
void invoke_skinny_gemm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
                        cudaStream_t stream);

}  // namespace cllm::cuda
