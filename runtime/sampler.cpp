#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace cllm {

Sampler::Sampler(const SamplingOptions& opts) : opts_(opts), rng_(opts.seed) {
  CLLM_CHECK(opts.temperature > 0, "sampling needs temperature > 0, got " << opts.temperature);
  CLLM_CHECK(opts.top_p > 0 && opts.top_p <= 1, "top_p must be in (0, 1], got " << opts.top_p);
}

TokenLogprob token_logprob(const float* logits, int vocab, int32_t token, int top) {
  CLLM_CHECK(token >= 0 && token < vocab, "token " << token << " is outside the vocabulary of " << vocab);
  const float max_logit = *std::max_element(logits, logits + vocab);
  double total = 0;
  for (int i = 0; i < vocab; ++i) total += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_z = max_logit + std::log(total);
  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(logits[token] - log_z);
  top = std::clamp(top, 0, vocab);
  if (top > 0) {
    std::vector<int32_t> ids(vocab);
    for (int i = 0; i < vocab; ++i) ids[i] = i;
    const auto better = [logits](int32_t a, int32_t b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; };
    std::partial_sort(ids.begin(), ids.begin() + top, ids.end(), better);
    for (int k = 0; k < top; ++k) out.top.push_back({ids[k], static_cast<float>(logits[ids[k]] - log_z)});
  }
  return out;
}

int32_t Sampler::sample(const float* logits, int vocab) {
  const float max_logit = *std::max_element(logits, logits + vocab);
  probs_.resize(vocab);
  double total = 0;
  for (int i = 0; i < vocab; ++i) {
    const float p = std::exp((logits[i] - max_logit) / opts_.temperature);
    probs_[i] = {p, i};
    total += p;
  }
  // Most probable first; ties by id, so the order (and thus the draw) does not depend on the sort.
  std::sort(probs_.begin(), probs_.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  size_t keep = 0;
  double kept = 0;
  while (keep < probs_.size() && (keep == 0 || kept < opts_.top_p * total)) kept += probs_[keep++].first;
  // A uniform draw in [0, kept) from 53 random bits: the same on every standard library,
  // unlike std::uniform_real_distribution.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * kept;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs_[i].first;
    if (u < acc) return probs_[i].second;
  }
  return probs_[keep - 1].second;
}

}  // namespace cllm
