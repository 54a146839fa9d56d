// Moves a run of KV-cache rows inside every layer's K and V at once: a verified lookahead branch's
// KV goes to the positions its tokens were accepted at (core/types.h, KvMove).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace cllm::cuda {

// For each array a in 0..arrays-1 (array a starts at element a * array_stride of `cache`): rows
// [src, src + n) are copied to rows [dst, dst + n), rows of row_elems bf16 elements, as memmove
// does: the ranges may overlap. One launch for every layer's K and V (arrays = 2 * layers).
// row_elems % 8 == 0, array_stride % 8 == 0, cache 16-byte aligned (checked).
void invoke_kv_move(__nv_bfloat16* cache, size_t array_stride, int arrays, int src, int dst, int n, int row_elems,
                    cudaStream_t stream);

}  // namespace cllm::cuda
