// GGUF metadata key classification and check; see gguf_keys.h. The table covers the keys the
// gguf package defines (tests/fixtures/config/gguf_keys.json, checked by test_gguf_keys.cpp).
#include "loaders/gguf_keys.h"

#include <iostream>
#include <map>
#include <sstream>

#include "core/check.h"

namespace cllm {
namespace {

struct KeyRule {
  ConfigField use;
  // Refused keys: the value that changes nothing, as text ("0", "1", "false", "true", "" for an empty
  // string or array); nullptr when every value is refused. Unused for other kinds.
  const char* noop = nullptr;
  const char* why = "";
};

using F = ConfigField;

const std::map<std::string, KeyRule>& key_rules() {
  static const std::map<std::string, KeyRule> m = {
      {"general.architecture", {F::Used}},
      {"general.alignment", {F::Used}},
      {"general.type", {F::Refused, "model", "not a model file (an adapter, an importance matrix, ...)"}},
      {"llama.vocab_size", {F::Used}},
      {"llama.context_length", {F::Used}},
      {"llama.embedding_length", {F::Used}},
      {"llama.block_count", {F::Used}},
      {"llama.feed_forward_length", {F::Used}},
      {"llama.attention.head_count", {F::Used}},
      {"llama.attention.head_count_kv", {F::Used}},
      {"llama.attention.layer_norm_rms_epsilon", {F::Used}},
      {"llama.attention.key_length", {F::Used}},    // must equal the rotary dimension
      {"llama.attention.value_length", {F::Used}},  // must equal the head dimension
      {"llama.attention.sliding_window", {F::Used}},
      {"llama.rope.dimension_count", {F::Used}},
      {"llama.rope.freq_base", {F::Used}},
      {"llama.rope.scaling.type", {F::Used}},
      {"llama.rope.scaling.factor", {F::Used}},
      {"llama.rope.scale_linear", {F::Used}},  // the pre-2024 spelling of linear scaling
      {"tokenizer.ggml.model", {F::Used}},
      {"tokenizer.ggml.pre", {F::Used}},
      {"tokenizer.ggml.tokens", {F::Used}},
      {"tokenizer.ggml.token_type", {F::Used}},
      {"tokenizer.ggml.scores", {F::Used}},
      {"tokenizer.ggml.merges", {F::Used}},
      {"tokenizer.ggml.bos_token_id", {F::Used}},
      {"tokenizer.ggml.eos_token_id", {F::Used}},
      {"tokenizer.ggml.eot_token_id", {F::Used}},
      {"tokenizer.ggml.eom_token_id", {F::Used}},  // a stop token, as llama.cpp ends generation on it
      {"tokenizer.ggml.add_bos_token", {F::Used}},
      {"tokenizer.ggml.add_space_prefix", {F::Used}},  // sentencepiece's dummy "▁" at the start
      {"tokenizer.chat_template", {F::Used}},
      // Descriptive, or not read by a linear-scaled or unscaled RoPE: original_context_length and
      // finetuned describe how the scaling was trained. pooling_type is for embedding outputs;
      // tensor_data_layout names the converter's source, whose q/k layout is the same.
      {"llama.rope.scaling.original_context_length", {F::NoEffect}},
      {"llama.rope.scaling.finetuned", {F::NoEffect}},
      {"llama.pooling_type", {F::NoEffect}},
      {"llama.tensor_data_layout", {F::NoEffect}},
      {"llama.decoder_start_token_id", {F::NoEffect}},
      // Token ids greedy decoding never emits specially (unknown, padding, infill), and the
      // alternative chat templates (cllm applies tokenizer.chat_template).
      {"tokenizer.ggml.token_type_count", {F::NoEffect}},
      {"tokenizer.ggml.unknown_token_id", {F::NoEffect}},
      {"tokenizer.ggml.seperator_token_id", {F::NoEffect}},
      {"tokenizer.ggml.padding_token_id", {F::NoEffect}},
      {"tokenizer.ggml.mask_token_id", {F::NoEffect}},
      {"tokenizer.ggml.fim_pre_token_id", {F::NoEffect}},
      {"tokenizer.ggml.fim_suf_token_id", {F::NoEffect}},
      {"tokenizer.ggml.fim_mid_token_id", {F::NoEffect}},
      {"tokenizer.ggml.fim_pad_token_id", {F::NoEffect}},
      {"tokenizer.ggml.fim_rep_token_id", {F::NoEffect}},
      {"tokenizer.ggml.fim_sep_token_id", {F::NoEffect}},
      {"tokenizer.ggml.prefix_token_id", {F::NoEffect}},
      {"tokenizer.ggml.suffix_token_id", {F::NoEffect}},
      {"tokenizer.ggml.middle_token_id", {F::NoEffect}},
      {"tokenizer.chat_templates", {F::NoEffect}},
      {"tokenizer.huggingface.json", {F::NoEffect}},  // a copy of the tokenizer; the ggml keys are used
      {"split.no", {F::NoEffect}},
      {"split.tensors.count", {F::NoEffect}},
      // Refused unless at their no-op value.
      {"split.count", {F::Refused, "1", "a split GGUF (its tensors are spread over several files); merge it with "
                                        "llama.cpp's gguf-split --merge"}},
      {"tokenizer.ggml.add_eos_token", {F::Refused, "false", "prompts would end in EOS"}},
      {"tokenizer.ggml.add_sep_token", {F::Refused, "false", "prompts would end in a separator token"}},
      {"tokenizer.ggml.remove_extra_whitespaces", {F::Refused, "false", "cllm keeps runs of spaces"}},
      {"tokenizer.ggml.precompiled_charsmap", {F::Refused, "", "cllm applies no sentencepiece normalizer"}},
      {"tokenizer.rwkv.world", {F::Refused, nullptr, "an RWKV tokenizer"}},
      {"llama.expert_count", {F::Refused, "0", "a mixture-of-experts model"}},
      {"llama.expert_used_count", {F::Refused, "0", "a mixture-of-experts model"}},
      {"llama.expert_shared_count", {F::Refused, "0", "a mixture-of-experts model"}},
      {"llama.leading_dense_block_count", {F::Refused, "0", "a mixture-of-experts model"}},
      {"llama.use_parallel_residual", {F::Refused, "false", "parallel attention and MLP"}},
      {"llama.logit_scale", {F::Refused, "1", "scaled logits"}},
      {"llama.embedding_scale", {F::Refused, "1", "scaled embeddings"}},
      {"llama.residual_scale", {F::Refused, "1", "scaled residuals"}},
      {"llama.attention.causal", {F::Refused, "true", "non-causal attention"}},
      {"llama.attention.clamp_kqv", {F::Refused, "0", "clamped q/k/v"}},
      {"llama.attn_logit_softcapping", {F::Refused, "0", "soft-capped attention logits"}},
      {"llama.final_logit_softcapping", {F::Refused, "0", "soft-capped output logits"}},
  };
  return m;
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

KeyRule rule(const std::string& key) {
  const auto& m = key_rules();
  if (auto it = m.find(key); it != m.end()) return it->second;
  // The alternative named templates: tokenizer.chat_template.<name> (tool_use, rag, ...).
  if (starts_with(key, "tokenizer.chat_template.")) return {F::NoEffect};
  // Descriptive metadata (name, author, license, file_type, quantization_version, sources, ...) and
  // what llama.cpp's quantize records about its importance matrix.
  if (starts_with(key, "general.") || starts_with(key, "quantize.")) return {F::NoEffect};
  if (starts_with(key, "llama.")) return {F::Refused, nullptr, "a hyperparameter the LLaMA forward does not implement"};
  if (starts_with(key, "adapter.")) return {F::Refused, nullptr, "a LoRA adapter, not a model"};
  if (starts_with(key, "clip.")) return {F::Refused, nullptr, "a vision/audio projector, not a language model"};
  if (starts_with(key, "tokenizer.")) return {F::Refused, nullptr, "a tokenizer setting cllm does not implement"};
  if (starts_with(key, "imatrix.")) return {F::Refused, nullptr, "an importance-matrix file, not a model"};
  if (starts_with(key, "diffusion.")) return {F::Refused, nullptr, "a diffusion language model"};
  if (starts_with(key, "xielu.")) return {F::Refused, nullptr, "the xIELU activation, not SiLU"};
  return {F::Unknown};
}

// The value as text for the no-op comparison and messages; arrays by their size.
std::string value_text(const GgufFile& g, const std::string& key, const GgufValue& v) {
  switch (v.type) {
    case GgufType::BOOL: return v.i != 0 ? "true" : "false";
    case GgufType::F32:
    case GgufType::F64: {
      std::ostringstream os;
      os << v.f;
      return os.str();
    }
    case GgufType::STRING: return v.s;
    case GgufType::ARRAY: return v.array_size == 0 ? "" : "[" + std::to_string(v.array_size) + " elements]";
    default: return std::to_string(g.get_int(key));
  }
}

bool is_noop(const GgufValue& v, const std::string& text, const char* noop) {
  if (noop == nullptr) return false;
  if (v.type == GgufType::F32 || v.type == GgufType::F64) return v.f == std::stod(noop);
  return text == noop;
}

}  // namespace

ConfigField gguf_key_field(const std::string& key) { return rule(key).use; }

void check_gguf_keys(const GgufFile& g) {
  for (const auto& [key, v] : g.kv) {
    const KeyRule r = rule(key);
    if (r.use == F::Unknown) {
      std::cerr << "cllm: warning: " << g.filename << ": metadata key '" << printable(key)
                << "' is not one cllm knows; it is ignored\n";
      continue;
    }
    if (r.use != F::Refused) continue;
    const std::string text = value_text(g, key, v);
    CLLM_CHECK(is_noop(v, text, r.noop),
               g.filename << ": metadata key '" << key << "' = " << (text.empty() ? "\"\"" : text)
                          << " is not supported (" << r.why << ")"
                          << (r.noop ? std::string("; accepted only as ") + (*r.noop ? r.noop : "\"\"") : std::string()));
  }
}

}  // namespace cllm
