// One thread per work item, all items independent: item (token i, head slot hs, d < head_dim/2) is
// the rotation pair (d, d + head_dim/2) of q head hs (hs < n_heads, in place) or of k head
// hs - n_heads (written to the cache), or the copy of v elements d and d + head_dim/2 into the cache.
// The kernel moves n_tok * (n_heads + 2 n_kv) * head_dim values, tiny next to the GEMMs around it, so
// it is latency-bound: a grid of one item per thread puts every load in flight at once (the former
// one-block-per-token loop issued ~30 dependent rounds of loads per thread at n = 1: 19 us).
// Element-wise bf16 accesses, adjacent threads on adjacent d: coalesced.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/rope_rotate.cuh"

namespace cllm::cuda {
namespace {

// x[d], x[d + half] <- (x[d] cos - x[d+half] sin, x[d+half] cos + x[d] sin); src and dst may alias.
__device__ __forceinline__ void rotate_pair(const __nv_bfloat16* src, __nv_bfloat16* dst, int d, int half,
                                            float pos, const float* inv_freq) {
  const float x0 = __bfloat162float(src[d]), x1 = __bfloat162float(src[d + half]);
  const detail::RopeAngle a = detail::rope_angle(pos, inv_freq[d]);
  dst[d] = __float2bfloat16_rn(detail::rope_rotated(x0, x1, a, true));
  dst[d + half] = __float2bfloat16_rn(detail::rope_rotated(x1, x0, a, false));
}

__global__ void rope_kv_write_kernel(__nv_bfloat16* __restrict__ q, int q_stride, const __nv_bfloat16* __restrict__ k,
                                     int k_stride, const __nv_bfloat16* __restrict__ v, int v_stride,
                                     __nv_bfloat16* __restrict__ k_cache, __nv_bfloat16* __restrict__ v_cache,
                                     const int32_t* __restrict__ positions, const int32_t* __restrict__ cache_rows,
                                     const float* __restrict__ inv_freq, int n_tok, int n_heads, int n_kv,
                                     int head_dim) {
  detail::start_after_prior_grids();
  const int half = head_dim / 2;
  const int per_tok = (n_heads + 2 * n_kv) * half;
  const size_t item = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (item >= static_cast<size_t>(n_tok) * per_tok) return;
  const int i = static_cast<int>(item / per_tok), r = static_cast<int>(item % per_tok);
  const int hs = r / half, d = r % half;
  const int pos = positions[i];
  const size_t cache_row = static_cast<size_t>(cache_rows != nullptr ? cache_rows[i] : pos) * n_kv * head_dim;
  if (hs < n_heads) {
    __nv_bfloat16* qh = q + static_cast<size_t>(i) * q_stride + hs * head_dim;
    rotate_pair(qh, qh, d, half, static_cast<float>(pos), inv_freq);
  } else if (hs < n_heads + n_kv) {
    const int h = hs - n_heads;
    rotate_pair(k + static_cast<size_t>(i) * k_stride + h * head_dim, k_cache + cache_row + h * head_dim, d, half,
                static_cast<float>(pos), inv_freq);
  } else {
    const int h = hs - n_heads - n_kv;
    const __nv_bfloat16* vh = v + static_cast<size_t>(i) * v_stride + h * head_dim;
    __nv_bfloat16* ch = v_cache + cache_row + h * head_dim;
    ch[d] = vh[d];
    ch[d + half] = vh[d + half];
  }
}

}  // namespace

void invoke_rope_kv_write(__nv_bfloat16* q, int q_stride, const __nv_bfloat16* k, int k_stride,
                          const __nv_bfloat16* v, int v_stride, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          const int32_t* positions, const float* inv_freq, int n_tok, int n_heads, int n_kv,
                          int head_dim, cudaStream_t stream) {
  invoke_rope_kv_write(q, q_stride, k, k_stride, v, v_stride, k_cache, v_cache, positions, nullptr, inv_freq, n_tok,
                       n_heads, n_kv, head_dim, stream);
}

void invoke_rope_kv_write(__nv_bfloat16* q, int q_stride, const __nv_bfloat16* k, int k_stride,
                          const __nv_bfloat16* v, int v_stride, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          const int32_t* positions, const int32_t* cache_rows, const float* inv_freq, int n_tok,
                          int n_heads, int n_kv, int head_dim, cudaStream_t stream) {
  CLLM_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim " << head_dim << " must be even");
  CLLM_CHECK(q_stride >= n_heads * head_dim && k_stride >= n_kv * head_dim && v_stride >= n_kv * head_dim,
             "rope: row strides smaller than the rows");
  if (n_tok == 0) return;
  constexpr int kThreads = 256;
  const size_t items = static_cast<size_t>(n_tok) * (n_heads + 2 * n_kv) * (head_dim / 2);
  const unsigned blocks = static_cast<unsigned>((items + kThreads - 1) / kThreads);
  launch_overlapped(rope_kv_write_kernel, blocks, kThreads, 0, stream, q, q_stride, k, k_stride, v, v_stride, k_cache,
                    v_cache, positions, cache_rows, inv_freq, n_tok, n_heads, n_kv, head_dim);
}

}  // namespace cllm::cuda
