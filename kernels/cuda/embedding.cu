// Embedding gather: one block per token, each thread moves 16-byte vectors of the row.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/embedding.cuh"

namespace cllm::cuda {
namespace {

// Rows move as uint4: 16 bytes = 8 bf16.
__global__ void embedding_kernel(const uint4* __restrict__ table, const int32_t* __restrict__ ids,
                                 uint4* __restrict__ out, int vecs_per_row, int row_begin, int rows) {
  detail::start_after_prior_grids();
  const int i = blockIdx.x;
  const int row = ids[i] - row_begin;
  const bool in_shard = row >= 0 && row < rows;
  uint4* dst = out + static_cast<size_t>(i) * vecs_per_row;
  const uint4* src = table + static_cast<size_t>(in_shard ? row : 0) * vecs_per_row;
  for (int c = threadIdx.x; c < vecs_per_row; c += blockDim.x) dst[c] = in_shard ? src[c] : make_uint4(0, 0, 0, 0);
}

}  // namespace

void invoke_embedding(const __nv_bfloat16* table, const int32_t* ids, __nv_bfloat16* out, int n, int dim,
                      int row_begin, int rows, cudaStream_t stream) {
  CLLM_CHECK(dim > 0 && dim % 8 == 0, "embedding: dim " << dim << " must be a positive multiple of 8");
  CLLM_CHECK(is_aligned(table, 16) && is_aligned(out, 16), "embedding: table/out must be 16-byte aligned");
  if (n == 0) return;
  const int vecs = dim / 8;
  const int threads = vecs >= 256 ? 256 : ((vecs + 31) / 32) * 32;
  launch_overlapped(embedding_kernel, n, threads, 0, stream, reinterpret_cast<const uint4*>(table), ids,
                    reinterpret_cast<uint4*>(out), vecs, row_begin, rows);
}

}  // namespace cllm::cuda
