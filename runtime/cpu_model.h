// The LLaMA forward on the CPU in fp32 (weights fp32 or in Q8_0/Q4_1 blocks, runtime/weights.h): the KV cache of `slots` sequences, and scratch.
// forward_batch runs the blocks of several sequences in one pass (continuous batching): the
// embedding, the norms, every linear layer and the LM head run over all rows of the batch at
// once, so each weight is read once per step; RoPE takes per-row positions and attention runs
// per block over that block's own KV slot. Results of a block do not depend on the rest of the
// batch (batch-invariant GEMM, per-row kernels), so a request decodes the same alone or batched.
// Tensor parallel (core/shard_plan.h): a rank holds its slice of the weights and of the KV
// heads; forwards are then collective (every rank calls them with the same arguments) with one
// all-reduce over all rows after the embedding, after o and after down, and a max-loc for the
// LM-head argmax.
#pragma once
#include <memory>
#include <vector>

#include "core/comm.h"
#include "core/shard_plan.h"
#include "kernels/cpu/gemm_quant.h"
#include "kernels/cpu/ops.h"
#include "runtime/model.h"
#include "runtime/weights.h"

namespace cllm {

class CpuModel final : public Model {
 public:
  // One rank, the whole model.
  CpuModel(const ModelConfig& cfg, ModelWeights weights);
  // One rank of a tensor-parallel group: `weights` holds the slices of `plan`; comm outlives this.
  CpuModel(const ModelConfig& cfg, ModelWeights weights, const ShardPlan& plan, Comm& comm);
  const ModelConfig& config() const override { return cfg_; }
  void reset(int max_tokens, int slots = 1) override;
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override;
  // Branch rows attend through cpu::AttentionBlock::layout; a verified row is bit-identical to the
  // same token forwarded causally after its accepted prefix.
  void forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                    const KvMove* moves, int32_t* out_ids, float* logits) override;
  bool verifies_branches() const override { return true; }
  // out_ids: the global argmax; logits (if not null): the full [n, vocab] on every rank.
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override;
  // This rank's bytes: its weight slices plus its KV heads.
  double step_bytes(int context) const override;
  // Rows x columns of every linear layer and of the LM head kept in int8 blocks.
  double step_int8_macs() const override;

 private:
  CpuModel(const ModelConfig& cfg, ModelWeights weights, const ShardPlan& plan, Comm* comm);
  // y[n, r1 - r0] = x[n, in] · w[r0:r1]^T, on w's fp32 values or its blocks. xq: x quantized
  // (quantize_for), read instead of quantizing x again where w is kept in blocks; or null.
  void linear(const float* x, const cpu::QuantActivations* xq, const LinearWeight& w, float* y, int n, int r0, int r1,
              int in) const;
  // x[n, in] quantized into xq_ when w is kept in blocks (for every layer that reads x: q, k and v
  // read one input, gate and up another); null otherwise.
  const cpu::QuantActivations* quantize_for(const float* x, int n, int in, const LinearWeight& w);
  void grow_scratch(int n);
  void all_reduce(float* x, size_t count, const CommPhase& phase);
  // x[n, d] = rows of the embedding; a vocab shard contributes only the ids it holds.
  void embed(const int32_t* tokens, int n, float* x);
  // LM head over h[n, d]: out_ids = global argmax, logits (if not null) = full [n, vocab].
  void lm_head(const float* h, int n, int32_t* out_ids, float* logits);
  // First float of KV row `pos` of `slot` in a layer's cache.
  size_t kv_offset(int slot, int pos) const {
    return (static_cast<size_t>(slot) * capacity_ + static_cast<size_t>(pos)) * kvd_;
  }

  ModelConfig cfg_;
  ModelWeights w_;
  ShardPlan plan_;
  Comm* comm_ = nullptr;                  // nullptr: one rank, no collectives
  int qd_, kvd_, ffn_;                    // this rank's q, kv and FFN widths (floats per token)
  std::vector<float> inv_freq_;           // [head_dim / 2]
  int capacity_ = 0;                      // KV rows per slot (allocated)
  int slots_ = 0;                         // KV slots (allocated)
  int limit_tokens_ = 0, limit_slots_ = 0;  // the last reset's sizes: what forwards are checked against
  // Per layer [slots_, capacity_, kvd_], left uninitialised: the OS commits the pages of the rows
  // that are written, so idle slots of a large --max-batch x --max-context cost no memory.
  std::vector<std::unique_ptr<float[]>> k_, v_;
  bool blas_ = false;                     // this forward uses OpenBLAS (a lone block over kMaxBlockRows)
  // Scratch for a batch of n rows.
  std::vector<float> x_, h_, q_, att_, gate_, up_;  // [n, d], [n, d], [n, qd_] x2, [n, ffn_] x2
  std::vector<float> k_new_, v_new_;      // [n, kvd_]: the batch's keys and values before they go to their slots
  std::vector<float> logits_;             // [n, vocab chunk], or [n, plan_.vocab] when logits are asked for
  cpu::QuantActivations xq_;              // a linear input quantized once for the layers that share it
  std::vector<float> gathered_;           // [size, n, plan_.vocab]: every shard, when logits are asked for
  std::vector<ValueIndex> best_;          // [n]: per-token (max logit, id) for the max-loc
  std::vector<int32_t> positions_;        // [n]
  std::vector<int32_t> layout_;           // [n][2]: (logical position, base) per row, for branch layouts
  std::vector<cpu::AttentionBlock> attn_blocks_;
};

}  // namespace cllm
