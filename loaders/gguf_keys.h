// GGUF metadata keys of a `llama` file: how cllm treats each, as hf_config.h does for config.json.
// llama.cpp's converters write more keys than the LLaMA forward reads (MoE experts, soft-capping,
// scales, split files, LoRA adapters, ...); one that would change the output is refused by name
// instead of being ignored.
#pragma once
#include <string>

#include "loaders/gguf.h"
#include "loaders/hf_config.h"

namespace cllm {

// How cllm treats a metadata key (ConfigField's meanings):
//   Used      read into ModelConfig / TokenizerSpec (config_from_gguf, tokenizer_from_gguf);
//   NoEffect  descriptive or unused by greedy decoding (general.name, padding and FIM token ids, ...);
//   Refused   refused naming the key unless it holds its no-op value (llama.expert_count 0,
//             tokenizer.ggml.add_eos_token false, split.count 1, ...); every `llama.` key that is
//             not Used or NoEffect is Refused, since it is a hyperparameter of the forward;
//   Unknown   any other key: a warning on stderr names it.
ConfigField gguf_key_field(const std::string& key);

// Refuses the first Refused key whose value is not its no-op value, naming the file, key, value
// and why; warns on stderr about Unknown keys.
void check_gguf_keys(const GgufFile& g);

}  // namespace cllm
