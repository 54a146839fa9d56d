// LLaMA-family model configuration: plain data, filled by the loaders (config.json or GGUF metadata).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cllm {

struct RopeScaling {
  std::string type;  // "" (none), "llama3", "linear"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture = "llama";
  int vocab_size = 0;
  int hidden_size = 0;          // d_model
  int intermediate_size = 0;    // FFN width
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;         // GQA: num_heads % num_kv_heads == 0
  int head_dim = 0;             // usually hidden_size / num_heads
  int max_position_embeddings = 2048;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  int sliding_window = 0;       // Mistral: a query at position p sees keys p-sliding_window+1 .. p; 0 = all
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;  // config.json + generation_config.json, deduplicated

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
};

// Throws cllm::Error naming `source` and the offending field when the config is inconsistent.
void validate(const ModelConfig& cfg, const std::string& source);

}  // namespace cllm
