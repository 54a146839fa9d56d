// The LLaMA forward on the CPU in fp32: weights, KV cache and scratch for one sequence.
#pragma once
#include <vector>

#include "runtime/model.h"
#include "runtime/weights.h"

namespace cllm {

class CpuModel final : public Model {
 public:
  CpuModel(const ModelConfig& cfg, ModelWeights weights);
  const ModelConfig& config() const override { return cfg_; }
  void reset(int max_tokens) override;
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override;
  double step_bytes(int context) const override;

  // Blocks of at most this many tokens use the batch-invariant GEMM (see gemm_invariant.h), so
  // Jacobi blocks reproduce AR bit for bit; longer ones (prompt prefill) use OpenBLAS.
  static constexpr int kInvariantMaxTokens = 64;

 private:
  void linear(const float* x, const float* w, float* y, int n, int out, int in) const;
  void grow_scratch(int n);

  ModelConfig cfg_;
  ModelWeights w_;
  std::vector<float> inv_freq_;           // [head_dim / 2]
  int capacity_ = 0;                      // KV rows allocated per layer
  std::vector<std::vector<float>> k_, v_; // per layer [capacity, n_kv * head_dim]
  // Scratch for a block of n tokens.
  std::vector<float> x_, h_, q_, att_, gate_, up_, logits_;  // [n, d], [n, d], [n, q], [n, q], [n, ffn] x2, [n, vocab]
  std::vector<int32_t> positions_;
};

}  // namespace cllm
