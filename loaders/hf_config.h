// Hugging Face config.json (+ generation_config.json) <-> cllm::ModelConfig, for
// LlamaForCausalLM / MistralForCausalLM checkpoints.
#pragma once
#include <string>

#include "core/model_config.h"

namespace cllm {

// Parses config.json text. `source` names the file in messages ("dir/config.json").
// Missing required fields or wrong JSON types throw naming `source` and the field.
// Does not call validate(); load_hf_config does.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);

// Merges generation_config.json text into cfg: its eos_token_id (int or list) is added to
// cfg.eos_token_ids (deduplicated) and its bos_token_id fills a missing one.
void merge_generation_config(ModelConfig& cfg, const std::string& json_text, const std::string& source);

// dir/config.json, then dir/generation_config.json if present, then validate().
ModelConfig load_hf_config(const std::string& dir);

// Writes dir/config.json and dir/generation_config.json that transformers' LlamaForCausalLM loads.
void write_hf_config(const ModelConfig& cfg, const std::string& dir);

// Whole file as a string; throws naming the path if it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace cllm
