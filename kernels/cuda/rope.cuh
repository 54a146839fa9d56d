// Rotary embedding on q and k, fused with the KV-cache write.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cllm::cuda {

// For token i at position positions[i] (HF rotate_half layout: dimension d pairs with d + head_dim/2,
// angle = positions[i] * inv_freq[d], computed in fp32):
//   q[i, h, :]                      rotated in place,            h < n_heads
//   k_cache[positions[i], h, :] =   rotate(k[i, h, :]),          h < n_kv
//   v_cache[positions[i], h, :] =   v[i, h, :]
// q, k, v: bf16 rows of n_heads*head_dim, n_kv*head_dim, n_kv*head_dim values, token i's row
//          starting at i*q_stride, i*k_stride, i*v_stride elements (so they can be slices of one
//          fused qkv GEMM output [n, (n_heads + 2*n_kv) * head_dim]); k and v are only read.
// k_cache, v_cache: bf16 [max_ctx, n_kv, head_dim] (one layer); positions: int32 [n_tok] on the
// device, each in [0, max_ctx) (not checked on the device); inv_freq: fp32 [head_dim/2] on the device.
// head_dim even.
void invoke_rope_kv_write(__nv_bfloat16* q, int q_stride, const __nv_bfloat16* k, int k_stride,
                          const __nv_bfloat16* v, int v_stride, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          const int32_t* positions, const float* inv_freq, int n_tok, int n_heads, int n_kv,
                          int head_dim, cudaStream_t stream);

// The same, writing token i's K and V to cache row cache_rows[i] instead of positions[i] (the angle
// still comes from positions[i]): with several sequences' KV slots in one cache of
// [slots * capacity, n_kv, head_dim], cache_rows[i] = slot * capacity + positions[i]. cache_rows:
// int32 [n_tok] on the device; nullptr means positions.
void invoke_rope_kv_write(__nv_bfloat16* q, int q_stride, const __nv_bfloat16* k, int k_stride,
                          const __nv_bfloat16* v, int v_stride, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          const int32_t* positions, const int32_t* cache_rows, const float* inv_freq, int n_tok,
                          int n_heads, int n_kv, int head_dim, cudaStream_t stream);

}  // namespace cllm::cuda
