// Block attention over a bf16 KV cache: n queries at positions p0 .. p0+n-1 (a Jacobi block, or
// n = 1 for plain decoding), grouped-query heads, causal inside the block.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace cllm::cuda {

// Bytes of scratch that invoke_block_attention needs for blocks of up to max_n queries: the split-K
// partial results (fp32 accumulators, running max and sum per chunk). Allocate once, up front, so
// the launch stays free of allocation (CUDA-graph capture).
size_t block_attention_workspace_bytes(int max_n, int n_heads, int head_dim);

// out[i, h, :] = softmax_t(q[i, h, :] . k_cache[t, h/g, :] / sqrt(head_dim)) . v_cache[t, h/g, :]
// over cache rows t = 0 .. p0+i, with g = n_heads / n_kv.
// q: bf16, query i's row [n_heads, head_dim] starting at element i*q_stride (a slice of the fused
//    qkv output is fine); k_cache, v_cache: bf16 [>= p0+n, n_kv, head_dim], rows 0 .. p0+n-1 written
//    (this block's rows by invoke_rope_kv_write), later rows never read;
// out: bf16 [n, n_heads, head_dim]; workspace: device memory of workspace_bytes >=
//    block_attention_workspace_bytes(n, n_heads, head_dim).
// head_dim is 64 or 128; n_heads % n_kv == 0; k_cache, v_cache 16-byte aligned, out 4-byte (all checked).
void invoke_block_attention(const __nv_bfloat16* q, int q_stride, const __nv_bfloat16* k_cache,
                            const __nv_bfloat16* v_cache, __nv_bfloat16* out, void* workspace,
                            size_t workspace_bytes, int n, int p0, int n_heads, int n_kv, int head_dim,
                            cudaStream_t stream);

}  // namespace cllm::cuda
