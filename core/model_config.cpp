// cllm::validate (declared in core/model_config.h): the loaders call it before returning a config.
#include <cmath>

#include "core/check.h"
#include "core/model_config.h"

namespace cllm {

void validate(const ModelConfig& c, const std::string& source) {
  const auto positive = [&](int v, const char* field) {
    CLLM_CHECK(v > 0, source << ": " << field << " must be positive, got " << v);
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.num_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.max_position_embeddings, "max_position_embeddings");
  CLLM_CHECK(c.num_heads % c.num_kv_heads == 0, source << ": num_attention_heads " << c.num_heads
                                                        << " is not a multiple of num_key_value_heads " << c.num_kv_heads);
  CLLM_CHECK(c.head_dim % 2 == 0, source << ": head_dim " << c.head_dim << " must be even (RoPE rotates pairs)");
  // The widths the model code computes in int: the fused q|k|v projection's and the fused gate|up's.
  CLLM_CHECK((static_cast<int64_t>(c.num_heads) + 2 * static_cast<int64_t>(c.num_kv_heads)) * c.head_dim <= INT32_MAX,
             source << ": (num_attention_heads " << c.num_heads << " + 2 x num_key_value_heads " << c.num_kv_heads
                    << ") x head_dim " << c.head_dim << " (the fused q|k|v width) overflows int32");
  CLLM_CHECK(2 * static_cast<int64_t>(c.intermediate_size) <= INT32_MAX,
             source << ": 2 x intermediate_size " << c.intermediate_size << " (the fused gate|up width) overflows int32");
  // An epsilon of 1 or more outweighs the mean square of any normalised activation (the models use
  // 1e-6..1e-5): such a value is a corrupted field, not a setting.
  CLLM_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0 && c.rms_norm_eps < 1,
             source << ": rms_norm_eps must be a number in (0, 1), got " << c.rms_norm_eps);
  CLLM_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0,
             source << ": rope_theta must be a positive number, got " << c.rope_theta);
  const RopeScaling& r = c.rope_scaling;
  CLLM_CHECK(r.type.empty() || r.type == "linear" || r.type == "llama3",
             source << ": rope_scaling type '" << r.type << "' is not supported (accepted: linear, llama3)");
  if (!r.type.empty())
    CLLM_CHECK(std::isfinite(r.factor) && r.factor > 0, source << ": rope_scaling factor must be positive, got " << r.factor);
  if (r.type == "llama3") {
    CLLM_CHECK(r.low_freq_factor > 0 && r.high_freq_factor > r.low_freq_factor,
               source << ": rope_scaling needs 0 < low_freq_factor < high_freq_factor, got " << r.low_freq_factor
                      << " and " << r.high_freq_factor);
    CLLM_CHECK(r.original_max_position_embeddings > 0, source << ": rope_scaling original_max_position_embeddings must be positive, got "
                                                              << r.original_max_position_embeddings);
  }
  CLLM_CHECK(c.sliding_window >= 0, source << ": sliding_window must be positive or 0 (none), got " << c.sliding_window);
  CLLM_CHECK(c.bos_token_id >= -1 && c.bos_token_id < c.vocab_size,
             source << ": bos_token_id " << c.bos_token_id << " is outside the vocabulary [0, " << c.vocab_size << ")");
  for (int id : c.eos_token_ids)
    CLLM_CHECK(id >= 0 && id < c.vocab_size,
               source << ": eos_token_id " << id << " is outside the vocabulary [0, " << c.vocab_size << ")");
}

}  // namespace cllm
