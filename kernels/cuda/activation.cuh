// SwiGLU activation of the LLaMA MLP.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace cllm::cuda {

// out[r, j] = silu(gate_up[r, j]) * gate_up[r, ffn + j], silu(x) = x / (1 + e^-x), in fp32.
// gate_up: bf16 [rows, 2*ffn]: each row is the gate projection followed by the up projection, the
// output of one GEMM over the weights stacked as [W_gate; W_up] ([2*ffn, dim]; per rank, each of the
// two stacked halves is that rank's column shard). out: bf16 [rows, ffn].
// ffn % 8 == 0, pointers 16-byte aligned (checked).
void invoke_silu_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int rows, int ffn, cudaStream_t stream);

}  // namespace cllm::cuda
