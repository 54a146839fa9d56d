// One block per token; each thread takes rotation pairs (d, d + head_dim/2) of q and k heads, then
// copies v. Element-wise bf16 accesses: this kernel moves n_tok * (n_heads + 2 n_kv) * head_dim
// values, tiny next to the GEMMs around it, so it favours plainness over vector width.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/rope.cuh"

namespace cllm::cuda {
namespace {

// x[d], x[d + half] <- (x[d] cos - x[d+half] sin, x[d+half] cos + x[d] sin); src and dst may alias.
__device__ __forceinline__ void rotate_pair(const __nv_bfloat16* src, __nv_bfloat16* dst, int d, int half,
                                            float pos, const float* inv_freq) {
  float s, c;
  sincosf(pos * inv_freq[d], &s, &c);  // precise sincos: angles reach max_ctx radians
  const float x0 = __bfloat162float(src[d]), x1 = __bfloat162float(src[d + half]);
  dst[d] = __float2bfloat16_rn(x0 * c - x1 * s);
  dst[d + half] = __float2bfloat16_rn(x1 * c + x0 * s);
}

__global__ void rope_kv_write_kernel(__nv_bfloat16* __restrict__ q, int q_stride, const __nv_bfloat16* __restrict__ k,
                                     int k_stride, const __nv_bfloat16* __restrict__ v, int v_stride,
                                     __nv_bfloat16* __restrict__ k_cache, __nv_bfloat16* __restrict__ v_cache,
                                     const int32_t* __restrict__ positions, const float* __restrict__ inv_freq,
                                     int n_heads, int n_kv, int head_dim) {
  const int i = blockIdx.x;
  const int pos = positions[i];
  const int half = head_dim / 2;
  const float fpos = static_cast<float>(pos);
  __nv_bfloat16* q_row = q + static_cast<size_t>(i) * q_stride;
  const __nv_bfloat16* k_row = k + static_cast<size_t>(i) * k_stride;
  const __nv_bfloat16* v_row = v + static_cast<size_t>(i) * v_stride;
  const size_t cache_row = static_cast<size_t>(pos) * n_kv * head_dim;

  for (int p = threadIdx.x; p < n_heads * half; p += blockDim.x) {
    const int h = p / half, d = p % half;
    __nv_bfloat16* qh = q_row + h * head_dim;
    rotate_pair(qh, qh, d, half, fpos, inv_freq);
  }
  for (int p = threadIdx.x; p < n_kv * half; p += blockDim.x) {
    const int h = p / half, d = p % half;
    rotate_pair(k_row + h * head_dim, k_cache + cache_row + h * head_dim, d, half, fpos, inv_freq);
  }
  for (int e = threadIdx.x; e < n_kv * head_dim; e += blockDim.x) v_cache[cache_row + e] = v_row[e];
}

}  // namespace

void invoke_rope_kv_write(__nv_bfloat16* q, int q_stride, const __nv_bfloat16* k, int k_stride,
                          const __nv_bfloat16* v, int v_stride, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          const int32_t* positions, const float* inv_freq, int n_tok, int n_heads, int n_kv,
                          int head_dim, cudaStream_t stream) {
  CLLM_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim " << head_dim << " must be even");
  CLLM_CHECK(q_stride >= n_heads * head_dim && k_stride >= n_kv * head_dim && v_stride >= n_kv * head_dim,
             "rope: row strides smaller than the rows");
  if (n_tok == 0) return;
  rope_kv_write_kernel<<<n_tok, 256, 0, stream>>>(q, q_stride, k, k_stride, v, v_stride, k_cache, v_cache, positions,
                                                  inv_freq, n_heads, n_kv, head_dim);
  CLLM_CUDA_LAUNCH_CHECK(stream);
}

}  // namespace cllm::cuda
