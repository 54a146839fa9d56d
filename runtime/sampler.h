// Seeded temperature + nucleus (top-p) sampling for AR decoding at temperature > 0.
// Jacobi decoding is greedy only (its fixed point is the greedy sequence), so the server decodes
// sampled requests one token per iteration with this sampler. A given (seed, logits) sequence
// always yields the same tokens, so a sampled request is reproducible alone or under load.
#pragma once
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace cllm {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy (the caller decodes with Jacobi instead)
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;
};

// The model's log-probability of `token` at one position: the log-softmax of the raw logits (no
// temperature, no top_p), reduced in double; and the `top` most probable ids, best first (ties by
// id). What the server reports as logprobs / top_logprobs.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};
TokenLogprob token_logprob(const float* logits, int vocab, int32_t token, int top);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opts);
  // logits: [vocab] of one position. Returns the sampled id.
  int32_t sample(const float* logits, int vocab);

 private:
  SamplingOptions opts_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> probs_;  // scratch: (probability, id)
};

}  // namespace cllm
