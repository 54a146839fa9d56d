// KV row moves: one thread per (array, 16-byte column). A thread owns its column in every row, so
// it can walk the rows in memmove's order (forwards when moving down, backwards when moving up)
// and overlapping ranges need no scratch and no synchronisation between threads.
#include <algorithm>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/kv_move.cuh"
#include "kernels/cuda/launch.cuh"

namespace cllm::cuda {
namespace {

__global__ void kv_move_kernel(uint4* cache, size_t array_vecs, int arrays, int src, int dst, int n, int row_vecs) {
  detail::start_after_prior_grids();
  const size_t id = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= static_cast<size_t>(arrays) * row_vecs) return;
  const int col = static_cast<int>(id % row_vecs);
  uint4* array = cache + (id / row_vecs) * array_vecs + col;
  const bool down = dst < src;
  for (int k = 0; k < n; ++k) {
    const int i = down ? k : n - 1 - k;
    array[static_cast<size_t>(dst + i) * row_vecs] = array[static_cast<size_t>(src + i) * row_vecs];
  }
}

}  // namespace

void invoke_kv_move(__nv_bfloat16* cache, size_t array_stride, int arrays, int src, int dst, int n, int row_elems,
                    cudaStream_t stream) {
  CLLM_CHECK(row_elems > 0 && row_elems % 8 == 0 && array_stride % 8 == 0,
             "kv_move: row_elems " << row_elems << " and array_stride " << array_stride << " must be multiples of 8");
  CLLM_CHECK(is_aligned(cache, 16), "kv_move: the cache must be 16-byte aligned");
  CLLM_CHECK(arrays >= 0 && n >= 0 && src >= 0 && dst >= 0 &&
                 static_cast<size_t>(std::max(src, dst) + n) * row_elems <= array_stride,
             "kv_move: rows [" << src << ", " << src + n << ") -> [" << dst << ", " << dst + n << ") of " << row_elems
                               << " elements do not fit arrays of " << array_stride << " elements");
  if (n == 0 || arrays == 0 || src == dst) return;
  const int row_vecs = row_elems / 8;
  const size_t threads = static_cast<size_t>(arrays) * row_vecs;
  constexpr int kBlock = 256;
  launch_overlapped(kv_move_kernel, static_cast<int>((threads + kBlock - 1) / kBlock), kBlock, 0, stream,
                    reinterpret_cast<uint4*>(cache), array_stride / 8, arrays, src, dst, n, row_vecs);
}

}  // namespace cllm::cuda
