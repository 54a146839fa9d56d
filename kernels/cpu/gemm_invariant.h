// Batch-invariant fp32 GEMM for decoding: y[M,N] = x[M,K] · w[N,K]^T where every y[m,n] is
// summed in the same order whatever M, the thread count or the tiling. Why: greedy Jacobi must
// reproduce greedy AR token for token, and a Jacobi block forwards M = n tokens where AR forwards
// M = 1. OpenBLAS switches kernels (and summation order) at M >= 13, so its results differ by
// ulps between the two, which can flip a near-tie argmax. Here each output is an 8-lane FMA dot
// product over K with a fixed final reduction; a weight tile stays in cache across all M tokens,
// so the weights are read from memory once per call (decoding is bound by that read).
#pragma once

namespace cllm::cpu {

void matmul_wt_invariant(const float* x, const float* w, float* y, int M, int N, int K);

}  // namespace cllm::cpu
