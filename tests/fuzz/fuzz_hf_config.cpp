// libFuzzer harness for the config.json reader (loaders/hf_config.h): the text as config.json, then
// validated, then the same text merged as generation_config.json, as load_hf_config reads a
// checkpoint folder. A cllm::Error is a clean refusal. A config that validate() accepts must give
// every width the model code computes in int without overflow (the fused q|k|v width included).
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/check.h"
#include "core/model_config.h"
#include "loaders/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    cllm::ModelConfig c = cllm::parse_hf_config(text, "fuzz/config.json");
    cllm::validate(c, "fuzz/config.json");
    const int64_t qkv = (static_cast<int64_t>(c.num_heads) + 2 * static_cast<int64_t>(c.num_kv_heads)) * c.head_dim;
    if (qkv > INT_MAX || 2 * static_cast<int64_t>(c.intermediate_size) > INT_MAX) std::abort();
    cllm::merge_generation_config(c, text, "fuzz/generation_config.json");
  } catch (const cllm::Error&) {
  }
  return 0;
}
