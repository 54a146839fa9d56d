// Block attention over a bf16 KV cache: n queries at positions p0 .. p0+n-1 (a Jacobi block, or
// n = 1 for plain decoding), grouped-query heads, causal inside the block; and the batched form,
// where several such blocks (one per sequence, each in its own KV slot) run in one launch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cllm::cuda {

// Bytes of scratch that invoke_block_attention needs for blocks of up to max_n queries: the split-K
// partial results (fp32 accumulators, running max and sum per chunk). Allocate once, up front, so
// the launch stays free of allocation (CUDA-graph capture).
size_t block_attention_workspace_bytes(int max_n, int n_heads, int head_dim);

// out[i, h, :] = softmax_t(q[i, h, :] . k_cache[t, h/g, :] / sqrt(head_dim)) . v_cache[t, h/g, :]
// over cache rows t = 0 .. p0+i, with g = n_heads / n_kv; with window > 0 (a sliding window, e.g.
// Mistral's sliding_window) only over the last `window` of them, t = p0+i-window+1 .. p0+i.
// q: bf16, query i's row [n_heads, head_dim] starting at element i*q_stride (a slice of the fused
//    qkv output is fine); k_cache, v_cache: bf16 [>= p0+n, n_kv, head_dim], rows 0 .. p0+n-1 written
//    (this block's rows by invoke_rope_kv_write), later rows never read;
// out: bf16 [n, n_heads, head_dim]; workspace: device memory of workspace_bytes >=
//    block_attention_workspace_bytes(n, n_heads, head_dim).
// head_dim is 64 or 128; n_heads % n_kv == 0; k_cache, v_cache 16-byte aligned, out 4-byte (all checked).
void invoke_block_attention(const __nv_bfloat16* q, int q_stride, const __nv_bfloat16* k_cache,
                            const __nv_bfloat16* v_cache, __nv_bfloat16* out, void* workspace,
                            size_t workspace_bytes, int n, int p0, int n_heads, int n_kv, int head_dim,
                            cudaStream_t stream, int window = 0);

// ---- batched form (continuous batching) ---------------------------------------------------------
//
// A batch is `count` blocks; block b owns query rows q_row .. q_row+n-1 of the q/out arrays, sits
// at positions pos .. pos+n-1 and attends to KV slot `slot`, whose cache rows start at element
// slot * slot_stride of k_cache / v_cache. Query row q_row+i sees that slot's keys 0 .. pos+i.
// Key t is cache row t below `base` and cache row t + shift from `base` on (runtime/row_runs.h): a
// lookahead branch is a block at its logical positions whose own rows were written `shift` rows
// further on. shift 0 (the default): key t is cache row t, a plain causal block. Chunks, masks and
// windows all count keys, never cache rows, so a branch row gets the bits of the plain row at its
// position over the same keys.
struct AttnBlock {
  int32_t q_row = 0, pos = 0, n = 0, slot = 0;
  int32_t base = 0, shift = 0;
};

// The device form of one block, as the kernels read it (48 bytes). chunk_len: keys per split-K
// chunk (a multiple of 64); n_chunks = ceil((pos + n) / chunk_len); part_base: first partial-result
// slot of the block in the workspace (used when n_chunks > 1); base, shift: as AttnBlock.
struct AttnBlockDesc {
  int32_t q_row, pos, n, slot, chunk_len, n_chunks, part_base, base, shift, pad[3];
};
static_assert(sizeof(AttnBlockDesc) == 48, "the planner packs descriptors at 16-byte multiples");

// Host-side plan of one batched call: how the work is cut (one chunk length for all blocks, sized so
// that about two CTAs per SM exist in total, and so the partial results fit the workspace), and the
// tables the kernels read, packed into one device buffer (`table`) that the caller uploads, for
// example in the same copy as the step's token ids, so a CUDA graph replays it by a memcpy node.
// What of a plan reaches the kernels by value (grids, template choice, table offsets); everything
// else is in the table. Two plans with equal shapes launch the same kernels with the same
// arguments, so a CUDA graph captured with one replays the other once its table is uploaded.
struct AttentionLaunchShape {
  int n_heads = 0, n_kv = 0, head_dim = 0, window = 0, count = 0, rows = 0, items = 0;
  bool combine = false;
  size_t work_offset = 0, row_block_offset = 0;
  bool operator==(const AttentionLaunchShape& o) const {  // (the CUDA sources are C++17: no defaulted ==)
    return n_heads == o.n_heads && n_kv == o.n_kv && head_dim == o.head_dim && window == o.window && count == o.count &&
           rows == o.rows &&
           items == o.items && combine == o.combine &&
           work_offset == o.work_offset && row_block_offset == o.row_block_offset;
  }
};

struct BatchedAttentionPlan {
  int n_heads = 0, n_kv = 0, head_dim = 0;  // the shape it was planned for
  int window = 0;            // keys each query sees, its own included (0: all earlier keys)
  int count = 0, rows = 0;   // blocks; query rows (1 + the last row any block covers)
  int items = 0;             // CTAs per KV head: (block, chunk, row tile) triples, padded to a power
                             // of two with no-op items when the table has room
  int chunk_len = 0;         // keys per chunk, all blocks
  size_t partials = 0;       // partial-result slots in the workspace: (head_dim + 2) floats each
  bool combine = false;      // some block has more than one chunk
  std::vector<uint8_t> table;  // descs [count] | work items uint32 [items] | row -> block int32 [rows]
  size_t work_offset = 0, row_block_offset = 0;  // byte offsets inside table

  AttentionLaunchShape launch_shape() const {
    return {n_heads, n_kv, head_dim, window, count, rows, items, combine, work_offset, row_block_offset};
  }
};

// Bytes of the device table of a batch of up to max_rows query rows in up to max_blocks blocks,
// with room for splitting the context into chunks (the planner never needs more).
size_t batched_attention_table_bytes(int max_rows, int max_blocks, int n_heads, int n_kv);

// Keys per split-K chunk of the batch-invariant plan (a multiple of 64) of a model with
// `model_kv_heads` KV heads. With it, chunk c of every block covers keys [c * L, (c + 1) * L)
// whatever else is in the batch, so a query row's output depends on its position and its keys
// only, never on its block's size or the other blocks; the adaptive plan (chunk_keys = 0) sizes
// chunks to the batch instead, which is faster for some batches but lets a token's bits change with
// what shares its forward. The length is the model's, never the batch's: a model with many KV heads
// has CTAs enough (KV heads x chunks x row tiles) with longer chunks, and fewer partial results to
// merge (1x H100, random weights: 256 keys took 2-4% off the LLaMA-2-7B shape's 16-token step
// against 128; SmolLM2's 3 KV heads did best with 128). The count of the whole model, not of a
// tensor-parallel rank's share, so every TP degree cuts the same chunks.
constexpr int kInvariantChunkKeysMin = 128;
constexpr int invariant_chunk_keys(int model_kv_heads) {
  return model_kv_heads >= 16 ? 2 * kInvariantChunkKeysMin : kInvariantChunkKeysMin;
}

// Fills `plan` for blocks[0..count). chunk_keys > 0 (a multiple of 64): that chunk length for every
// block; the plan then needs what it needs, and the caller sizes the workspace (plan.partials slots
// of (head_dim + 2) floats) and the table (plan.table.size()) after planning; workspace_bytes and
// table_bytes are not consulted. chunk_keys = 0 (adaptive): the chunk length starts at the value that
// gives about two CTAs per SM over the whole batch and doubles until the partial results fit
// workspace_bytes and the table fits table_bytes (at worst one chunk per block, which needs no
// workspace); throws when even that table does not fit. Either way throws when a block is empty, or
// rows overlap the limits of the packing (blocks < 4096, n * n_heads / n_kv <= 16384, 1024 chunks).
// window > 0: every query sees only the last `window` keys up to its own (invoke_block_attention).
void plan_batched_attention(const AttnBlock* blocks, int count, int n_heads, int n_kv, int head_dim,
                            size_t workspace_bytes, size_t table_bytes, int chunk_keys, BatchedAttentionPlan& plan,
                            int window = 0);

// Bytes of workspace a plan with `partials` partial-result slots needs.
size_t attention_partials_bytes(size_t partials, int head_dim);

// Every block of `plan` (whose table is at table_dev on the device, uploaded by the caller before
// this launch on the same stream) at once:
//   out[q_row+i, h, :] = softmax_t(q[q_row+i, h, :] . K_slot[t, h/g, :] / sqrt(hd)) . V_slot[t, h/g, :]
// over t = 0 .. pos+i (the last plan.window of them when the plan has a window), with
// K_slot = k_cache + slot * slot_stride (likewise V). Shapes and
// alignment as invoke_block_attention; slot_stride (elements) a multiple of 8; rows not covered by a
// block are left untouched. A one-block plan gives the same numbers as invoke_block_attention only
// when both pick the same chunk length (not guaranteed): call that one for single sequences.
void invoke_batched_attention(const __nv_bfloat16* q, int q_stride, const __nv_bfloat16* k_cache,
                              const __nv_bfloat16* v_cache, size_t slot_stride, __nv_bfloat16* out,
                              void* workspace, size_t workspace_bytes, const BatchedAttentionPlan& plan,
                              const void* table_dev, int n_heads, int n_kv, int head_dim, cudaStream_t stream);

}  // namespace cllm::cuda
