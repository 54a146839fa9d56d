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

// How cllm treats a top-level config.json field of LlamaConfig / MistralConfig (and the
// PreTrainedConfig fields every config.json carries):
//   Used        read into ModelConfig and honoured by every backend (values it cannot honour,
//               e.g. hidden_act other than silu, are refused naming the field);
//   NoEffect    cannot change a greedy forward pass (training, output and bookkeeping settings,
//               e.g. initializer_range, use_cache, dtype), so accepted whatever its value;
//   Refused     refused naming the field unless it holds its no-op value (e.g. quantization_config);
//   Unknown     not a field cllm knows: parse_hf_config warns on stderr naming it.
enum class ConfigField { Used, NoEffect, Refused, Unknown };
ConfigField hf_config_field(const std::string& key);

// Whole file as a string; throws naming the path if it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace cllm
