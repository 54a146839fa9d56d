// Which slice of every weight a tensor-parallel rank holds (Megatron split, design.md):
//   q, k, v, gate, up   column-parallel: rows of the [out, in] weight (heads / FFN units)
//   o, down             row-parallel: columns of the [out, in] weight; one all-reduce after each
//   embedding, LM head  vocab-parallel: rows of the [vocab, d] table
//   norms               replicated
// KV heads are split when n_kv >= tp and replicated when tp > n_kv: then each rank holds the one
// KV head that its query heads read. Plain data; make_shard_plan validates and fills it.
#pragma once
#include "core/model_config.h"

namespace cllm {

struct ShardPlan {
  int rank = 0, size = 1;
  int head_begin = 0, heads = 0;        // query heads [head_begin, head_begin + heads)
  int kv_head_begin = 0, kv_heads = 0;  // KV heads held (replicated when size > n_kv)
  int ffn_begin = 0, ffn = 0;           // FFN units [ffn_begin, ffn_begin + ffn)
  int vocab_begin = 0, vocab = 0;       // embedding / LM-head rows [vocab_begin, vocab_begin + vocab)

  // The one-rank plan: every slice is the whole tensor.
  static ShardPlan whole(const ModelConfig& c) {
    return {0, 1, 0, c.num_heads, 0, c.num_kv_heads, 0, c.intermediate_size, 0, c.vocab_size};
  }
};

// The plan of `rank` among `size`. Refuses, naming the numbers, a split that does not divide:
// heads % size, intermediate_size % size, vocab_size % size, and KV heads that neither divide
// nor are divided by size.
ShardPlan make_shard_plan(const ModelConfig& cfg, int rank, int size);

}  // namespace cllm
