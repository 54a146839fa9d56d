#include "core/shard_plan.h"

#include "core/check.h"

namespace cllm {

ShardPlan make_shard_plan(const ModelConfig& c, int rank, int size) {
  CLLM_CHECK(size >= 1 && rank >= 0 && rank < size, "rank " << rank << " outside a world of " << size);
  CLLM_CHECK(c.num_heads % size == 0, "tensor parallelism over " << size << " ranks needs the attention heads ("
                                          << c.num_heads << ") to be a multiple of " << size
                                          << "; this model can run on a number of ranks that divides " << c.num_heads);
  CLLM_CHECK(c.num_kv_heads % size == 0 || size % c.num_kv_heads == 0,
             "tensor parallelism over " << size << " ranks needs the KV heads (" << c.num_kv_heads
                                        << ") to be a multiple or a divisor of " << size);
  CLLM_CHECK(c.intermediate_size % size == 0, "tensor parallelism over " << size << " ranks needs the FFN width ("
                                                  << c.intermediate_size << ") to be a multiple of " << size);
  CLLM_CHECK(c.vocab_size % size == 0, "tensor parallelism over " << size << " ranks needs the vocabulary ("
                                           << c.vocab_size << ") to be a multiple of " << size);
  ShardPlan p;
  p.rank = rank;
  p.size = size;
  p.heads = c.num_heads / size;
  p.head_begin = rank * p.heads;
  if (c.num_kv_heads >= size) {
    p.kv_heads = c.num_kv_heads / size;
    p.kv_head_begin = rank * p.kv_heads;
  } else {
    // Query head h reads KV head h / (heads / n_kv); a rank's heads all fall in one group
    // because (heads / n_kv) is a multiple of (heads / size) when size % n_kv == 0.
    p.kv_heads = 1;
    p.kv_head_begin = p.head_begin / (c.num_heads / c.num_kv_heads);
  }
  p.ffn = c.intermediate_size / size;
  p.ffn_begin = rank * p.ffn;
  p.vocab = c.vocab_size / size;
  p.vocab_begin = rank * p.vocab;
  return p;
}

}  // namespace cllm
