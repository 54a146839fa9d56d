#include "runtime/rope.h"

#include <cmath>

#include "core/check.h"

namespace cllm {

std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int half = cfg.head_dim / 2;
  std::vector<float> inv(half);
  // HF: 1 / base ** (arange(0, dim, 2).float() / dim), evaluated in fp32.
  for (int i = 0; i < half; ++i)
    inv[i] = 1.0f / std::pow(cfg.rope_theta, static_cast<float>(2 * i) / static_cast<float>(cfg.head_dim));

  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type.empty() || rs.type == "default") return inv;
  if (rs.type == "linear") {
    for (float& f : inv) f /= rs.factor;
    return inv;
  }
  CLLM_CHECK(rs.type == "llama3", "rope_scaling type '" << rs.type << "' is not supported (expected llama3 or linear)");
  // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth blend between.
  const float old_ctx = static_cast<float>(rs.original_max_position_embeddings);
  const float low_wavelen = old_ctx / rs.low_freq_factor;
  const float high_wavelen = old_ctx / rs.high_freq_factor;
  for (float& f : inv) {
    const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      f = f / rs.factor;
    } else {
      const float smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      f = (1.0f - smooth) * f / rs.factor + smooth * f;
    }
  }
  return inv;
}

}  // namespace cllm
