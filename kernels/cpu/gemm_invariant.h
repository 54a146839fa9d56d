// Batch-invariant fp32 GEMM for decoding: y[M,N] = x[M,K] · w[N,K]^T where every y[m,n] is
// summed in the same order whatever M, the thread count or the tiling. Why: greedy Jacobi must
// reproduce greedy AR token for token, and a Jacobi block forwards M = n tokens where AR forwards
// M = 1. OpenBLAS switches kernels (and summation order) at M >= 13, so its results differ by
// ulps between the two, which can flip a near-tie argmax. Here each output is an 8-lane FMA dot
// product over K with a fixed final reduction; a weight tile stays in cache across a block of
// tokens, so for decode-sized M the weights are read from memory once per call (decoding is bound
// by that read). Any M works: a continuous batch (hundreds of rows of many sequences) gets each
// row bit for bit as if computed alone, at ~85% of OpenBLAS's speed there (2-core CPU, M = 512).
#pragma once

namespace cllm::cpu {

void matmul_wt_invariant(const float* x, const float* w, float* y, int M, int N, int K);

}  // namespace cllm::cpu
