// Token embedding lookup (bf16).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cllm::cuda {

// out[i, :] = table[ids[i] - row_begin, :] when row_begin <= ids[i] < row_begin + rows, else 0.
// table: [rows, dim] (a vocab shard: rows = its size, row_begin = its first id; 0 and vocab for the
// whole table); ids: [n] on the device; out: [n, dim]. The zero rows let vocab-parallel ranks sum
// their outputs with one all-reduce. dim % 8 == 0 and 16-byte aligned table/out (checked).
void invoke_embedding(const __nv_bfloat16* table, const int32_t* ids, __nv_bfloat16* out, int n, int dim,
                      int row_begin, int rows, cudaStream_t stream);

}  // namespace cllm::cuda
