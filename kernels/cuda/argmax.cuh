// Greedy token choice: per-row argmax of the logits, on the device (no host copy of the logits).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cllm::cuda {

// Scratch bytes invoke_argmax needs for up to max_rows rows of `vocab` logits (one (value, index)
// per 4096-logit segment). Allocate once, up front.
size_t argmax_workspace_bytes(int max_rows, int vocab);

// ids[r] = index_offset + argmax_j logits[r, j]; values[r] = that logit as fp32 (values may be
// nullptr). logits: [rows, vocab] row-major on the device. Ties give the lowest index; NaN counts as
// the largest value (as torch.argmax). index_offset turns a vocab shard's local index into a global
// id, and values lets vocab-parallel ranks pick the global (max, id) pair. vocab <= 2^31 - 1.
void invoke_argmax(const __nv_bfloat16* logits, int rows, int vocab, int32_t* ids, float* values, int index_offset,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream);
void invoke_argmax(const float* logits, int rows, int vocab, int32_t* ids, float* values, int index_offset,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cllm::cuda
