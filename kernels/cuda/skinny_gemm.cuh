// Batch-invariant bf16 GEMM, built for few rows (decoding, Jacobi blocks): y[M, N] = x[M, K] . W[N, K]^T,
// the layout of every linear layer (W row-major [out, in]), fp32 accumulation, bf16 output.
// At small M the time is the time to stream W once from HBM; the kernel is built for that (see
// skinny_gemm.cu). It takes any M: each output element is reduced over K in one fixed order whatever
// M is, so row i of y has the same bits whether x has 1 row or 1024 (cuBLASLt, gemm.cuh, gives no
// such promise: its algorithm and split-K change with M). Large M run well below cuBLASLt's speed.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace cllm::cuda {

// Largest M and N the kernel takes (int32 element offsets inside an M tile and a W tile).
constexpr int kSkinnyGemmMaxM = 4096;
constexpr int kSkinnyGemmMaxN = 1 << 20;

// True when invoke_skinny_gemm accepts the shape and pointers: 1 <= M <= kSkinnyGemmMaxM, 1 <= N <= kSkinnyGemmMaxN,
// K a positive multiple of 8, x and w 16-byte aligned (y needs 2-byte alignment only).
bool skinny_gemm_supported(int M, int N, int K, const void* x, const void* w);

// x: bf16 [M, K], w: bf16 [N, K], y: bf16 [M, N], row-major, contiguous. Neither allocates nor
// synchronises (CUDA-graph capture safe) and is deterministic: the same inputs give the same bits.
// Throws cllm::Error when skinny_gemm_supported() is false.
void invoke_skinny_gemm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
                        cudaStream_t stream);

// The SwiGLU down projection with its activation fused: y[M, N] = a . W[N, K]^T where a = silu(gate) * up,
// gate_up bf16 [M, 2K] (each row: gate, then up), a rounded to bf16 as it is loaded. The bits equal
// invoke_silu_mul into [M, K] followed by invoke_skinny_gemm, without the [M, K] round trip and its
// kernel. For the few-row forwards only: at most kSkinnyGatedMaxM rows.
constexpr int kSkinnyGatedMaxM = 64;
bool skinny_gemm_gated_supported(int M, int N, int K, const void* gate_up, const void* w);
void invoke_skinny_gemm_gated(const __nv_bfloat16* gate_up, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N,
                              int K, cudaStream_t stream);

}  // namespace cllm::cuda
