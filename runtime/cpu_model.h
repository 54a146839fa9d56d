// The LLaMA forward on the CPU in fp32: weights, KV cache and scratch for one sequence.
// Tensor parallel (parallel/shard_plan.h): a rank holds its slice of the weights and of the KV
// heads; forward() is then collective (every rank calls it with the same arguments) with one
// all-reduce after the embedding, after o and after down, and a max-loc for the LM-head argmax.
#pragma once
#include <vector>

#include "parallel/comm.h"
#include "parallel/shard_plan.h"
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
  // out_ids: the global argmax; logits (if not null): the full [n, vocab] on every rank.
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override;
  // This rank's bytes: its weight slices plus its KV heads.
  double step_bytes(int context) const override;

  // Blocks of at most this many tokens use the batch-invariant GEMM (see gemm_invariant.h), so
  // Jacobi blocks reproduce AR bit for bit; longer ones (prompt prefill) use OpenBLAS.
  static constexpr int kInvariantMaxTokens = 64;

 private:
  CpuModel(const ModelConfig& cfg, ModelWeights weights, const ShardPlan& plan, Comm* comm);
  void linear(const float* x, const float* w, float* y, int n, int out, int in) const;
  void grow_scratch(int n);
  void all_reduce(float* x, size_t count, const CommPhase& phase);
  // x[n, d] = rows of the embedding; a vocab shard contributes only the ids it holds.
  void embed(const int32_t* tokens, int n, float* x);
  // LM head over h[n, d]: out_ids = global argmax, logits (if not null) = full [n, vocab].
  void lm_head(const float* h, int n, int32_t* out_ids, float* logits);

  ModelConfig cfg_;
  ModelWeights w_;
  ShardPlan plan_;
  Comm* comm_ = nullptr;                  // nullptr: one rank, no collectives
  int qd_, kvd_, ffn_;                    // this rank's q, kv and FFN widths (floats per token)
  std::vector<float> inv_freq_;           // [head_dim / 2]
  int capacity_ = 0;                      // KV rows allocated per layer
  std::vector<std::vector<float>> k_, v_; // per layer [capacity, kvd_]
  // Scratch for a block of n tokens.
  std::vector<float> x_, h_, q_, att_, gate_, up_;  // [n, d], [n, d], [n, qd_] x2, [n, ffn_] x2
  std::vector<float> logits_;             // [n, plan_.vocab]: this rank's vocab shard
  std::vector<float> gathered_;           // [size, n, plan_.vocab]: every shard, when logits are asked for
  std::vector<ValueIndex> best_;          // [n]: per-token (max logit, id) for the max-loc
  std::vector<int32_t> positions_;
};

}  // namespace cllm
