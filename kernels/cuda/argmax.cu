// Two-stage argmax. Stage 1: grid (segments, rows); each block reduces one 4096-logit segment of one
// row to a (value, index) pair in the workspace. Stage 2: one warp per row reduces its segments.
// Splitting the vocab keeps many SMs busy at n = 1 (32000 logits -> 8 blocks, 256k -> 63).
#include <climits>

#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"

namespace cllm::cuda {
namespace {

constexpr int kSegLen = 4096;
constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // loads in flight per thread

struct Best {
  float v;
  int i;
};

// Strict order: larger value first, NaN above everything, then lower index.
__device__ __forceinline__ bool better(float v, int i, const Best& b) {
  const bool v_nan = isnan(v), b_nan = isnan(b.v);
  if (v_nan || b_nan) return v_nan && (!b_nan || i < b.i);
  return v > b.v || (v == b.v && i < b.i);
}

__device__ __forceinline__ Best warp_best(Best b) {
#pragma unroll
  for (int o = detail::kWarp / 2; o > 0; o /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, b.v, o);
    const int i = __shfl_xor_sync(0xffffffffu, b.i, o);
    if (better(v, i, b)) b = {v, i};
  }
  return b;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__global__ void __launch_bounds__(kThreads)
    argmax_segments_kernel(const T* __restrict__ logits, int vocab, int n_seg, float* __restrict__ seg_v,
                           int* __restrict__ seg_i) {
  detail::start_after_prior_grids();
  const int seg = blockIdx.x, row = blockIdx.y;
  const T* x = logits + static_cast<size_t>(row) * vocab;
  const int begin = seg * kSegLen, end = min(begin + kSegLen, vocab);
  Best b{-INFINITY, INT_MAX};  // loses to any real element, -inf included (index < INT_MAX)
  for (int base = begin + threadIdx.x; base < end; base += kUnroll * kThreads) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + u * kThreads;
      v[u] = j < end ? to_float(x[j]) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + u * kThreads;
      if (j < end && better(v[u], j, b)) b = {v[u], j};
    }
  }
  __shared__ Best warp_results[kThreads / detail::kWarp];
  b = warp_best(b);
  const int lane = threadIdx.x % detail::kWarp, warp = threadIdx.x / detail::kWarp;
  if (lane == 0) warp_results[warp] = b;
  __syncthreads();
  if (warp == 0) {
    b = lane < kThreads / detail::kWarp ? warp_results[lane] : Best{-INFINITY, INT_MAX};
    b = warp_best(b);
    if (lane == 0) {
      seg_v[row * n_seg + seg] = b.v;
      seg_i[row * n_seg + seg] = b.i;
    }
  }
}

__global__ void argmax_rows_kernel(const float* __restrict__ seg_v, const int* __restrict__ seg_i, int n_seg,
                                   int32_t* __restrict__ ids, float* __restrict__ values, int index_offset) {
  detail::start_after_prior_grids();
  const int row = blockIdx.x;
  Best b{-INFINITY, INT_MAX};
  for (int s = threadIdx.x; s < n_seg; s += detail::kWarp) {
    const float v = seg_v[row * n_seg + s];
    const int i = seg_i[row * n_seg + s];
    if (better(v, i, b)) b = {v, i};
  }
  b = warp_best(b);
  if (threadIdx.x == 0) {
    ids[row] = index_offset + b.i;
    if (values != nullptr) values[row] = b.v;
  }
}

int n_segments(int vocab) { return (vocab + kSegLen - 1) / kSegLen; }

template <typename T>
void launch_argmax(const T* logits, int rows, int vocab, int32_t* ids, float* values, int index_offset,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  CLLM_CHECK(vocab > 0, "argmax: vocab " << vocab << " must be positive");
  CLLM_CHECK(workspace_bytes >= argmax_workspace_bytes(rows, vocab),
             "argmax: workspace of " << workspace_bytes << " bytes < argmax_workspace_bytes(" << rows << ", " << vocab
                                     << ")");
  CLLM_CHECK(is_aligned(workspace, 4), "argmax: workspace must be 4-byte aligned");
  CLLM_CHECK(rows <= 65535, "argmax: rows " << rows << " > 65535 (grid y limit)");
  if (rows == 0) return;
  const int n_seg = n_segments(vocab);
  float* seg_v = static_cast<float*>(workspace);
  int* seg_i = reinterpret_cast<int*>(seg_v + static_cast<size_t>(rows) * n_seg);
  launch_overlapped(argmax_segments_kernel<T>, dim3(n_seg, rows), kThreads, 0, stream, logits, vocab, n_seg, seg_v,
                    seg_i);
  launch_overlapped(argmax_rows_kernel, rows, detail::kWarp, 0, stream, seg_v, seg_i, n_seg, ids, values,
                    index_offset);
}

}  // namespace

size_t argmax_workspace_bytes(int max_rows, int vocab) {
  return static_cast<size_t>(max_rows) * n_segments(vocab) * (sizeof(float) + sizeof(int));
}

void invoke_argmax(const __nv_bfloat16* logits, int rows, int vocab, int32_t* ids, float* values, int index_offset,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  launch_argmax(logits, rows, vocab, ids, values, index_offset, workspace, workspace_bytes, stream);
}

void invoke_argmax(const float* logits, int rows, int vocab, int32_t* ids, float* values, int index_offset,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  launch_argmax(logits, rows, vocab, ids, values, index_offset, workspace, workspace_bytes, stream);
}

}  // namespace cllm::cuda
