// config.json parsing/writing; see hf_config.h. Key names and defaults follow transformers'
// LlamaConfig (rms_norm_eps 1e-6, rope_theta 1e4, tie_word_embeddings false).
#include "loaders/hf_config.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"

namespace cllm {

namespace {

using nlohmann::json;

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    CLLM_FAIL(source << ": not valid JSON: " << e.what());
  }
}

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

int get_int(const json& j, const char* key, const std::string& source) {
  CLLM_CHECK(j.contains(key), source << ": missing required field '" << key << "'");
  const json& v = j[key];
  CLLM_CHECK(v.is_number_integer() && v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX,
             source << ": field '" << key << "' must be an integer, got " << v.dump());
  return v.get<int>();
}
int get_int(const json& j, const char* key, int fallback, const std::string& source) {
  return present(j, key) ? get_int(j, key, source) : fallback;
}
float get_float(const json& j, const char* key, float fallback, const std::string& source) {
  if (!present(j, key)) return fallback;
  CLLM_CHECK(j[key].is_number(), source << ": field '" << key << "' must be a number, got " << j[key].dump());
  return j[key].get<float>();
}
bool get_bool(const json& j, const char* key, bool fallback, const std::string& source) {
  if (!present(j, key)) return fallback;
  CLLM_CHECK(j[key].is_boolean(), source << ": field '" << key << "' must be true/false, got " << j[key].dump());
  return j[key].get<bool>();
}

// eos_token_id may be an int or a list of ints (Llama 3); appended without duplicates.
void add_eos(std::vector<int>& ids, const json& j, const std::string& source) {
  if (!present(j, "eos_token_id")) return;
  const json& v = j["eos_token_id"];
  std::vector<int> found;
  if (v.is_array()) {
    for (const auto& e : v) {
      CLLM_CHECK(e.is_number_integer(), source << ": field 'eos_token_id' list entry " << e.dump() << " is not an integer");
      found.push_back(e.get<int>());
    }
  } else {
    found.push_back(get_int(j, "eos_token_id", source));
  }
  for (int id : found)
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
}

// field: "rope_scaling" (transformers < 5) or "rope_parameters" (>= 5), for messages.
RopeScaling parse_rope_scaling(const json& rs, const std::string& source, const char* field) {
  const std::string where = source + ": field '" + field + "'";
  CLLM_CHECK(rs.is_object(), where << " must be an object or null, got " << rs.dump());
  const char* type_key = present(rs, "rope_type") ? "rope_type" : "type";
  CLLM_CHECK(present(rs, type_key) && rs[type_key].is_string(), where << " has no string 'rope_type' or 'type'");
  RopeScaling r;
  r.type = rs[type_key].get<std::string>();
  if (r.type == "default") return RopeScaling{};
  CLLM_CHECK(r.type == "llama3" || r.type == "linear",
             where << ": unsupported rope type '" << r.type << "' (accepted: llama3, linear, default)");
  CLLM_CHECK(present(rs, "factor"), where << ": missing 'factor'");
  r.factor = get_float(rs, "factor", 1.0f, source + " " + field);
  if (r.type == "llama3") {
    for (const char* k : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      CLLM_CHECK(present(rs, k), where << ": llama3 scaling needs '" << k << "'");
    r.low_freq_factor = get_float(rs, "low_freq_factor", 1.0f, source + " " + field);
    r.high_freq_factor = get_float(rs, "high_freq_factor", 4.0f, source + " " + field);
    r.original_max_position_embeddings = get_int(rs, "original_max_position_embeddings", source + " " + field);
  }
  return r;
}

// Shortest decimal that round-trips the float, so 1e-5f is written as 1e-05, not 9.99999974e-06.
double clean(float f) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), f);
  return std::stod(std::string(buf, res.ptr));
}

void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  std::ofstream out(path, std::ios::trunc);
  CLLM_CHECK(out, "cannot create " << path);
  out << j.dump(2) << "\n";
  out.close();
  CLLM_CHECK(out, "write to " << path << " failed");
}

// Every top-level field of transformers' LlamaConfig and MistralConfig (5.x, plus the pre-5
// spellings rope_theta, rope_scaling and torch_dtype) and of PreTrainedConfig; see hf_config.h.
const std::map<std::string, ConfigField>& config_fields() {
  using F = ConfigField;
  static const std::map<std::string, ConfigField> m = {
      {"architectures", F::Used}, {"model_type", F::Used}, {"vocab_size", F::Used}, {"hidden_size", F::Used},
      {"intermediate_size", F::Used}, {"num_hidden_layers", F::Used}, {"num_attention_heads", F::Used},
      {"num_key_value_heads", F::Used}, {"head_dim", F::Used}, {"hidden_act", F::Used},
      {"max_position_embeddings", F::Used}, {"rms_norm_eps", F::Used}, {"bos_token_id", F::Used},
      {"eos_token_id", F::Used}, {"tie_word_embeddings", F::Used}, {"rope_parameters", F::Used},
      {"rope_theta", F::Used}, {"rope_scaling", F::Used}, {"sliding_window", F::Used},
      {"attention_bias", F::Refused}, {"mlp_bias", F::Refused}, {"quantization_config", F::Refused},
      {"is_encoder_decoder", F::Refused}, {"layer_types", F::Refused},
      // Training, output and bookkeeping settings: no effect on a greedy forward. pretraining_tp
      // split the matmuls in old transformers versions without changing what they compute;
      // dropout is off at inference; cllm picks its own compute dtype (fp32 CPU, bf16 CUDA).
      {"initializer_range", F::NoEffect}, {"use_cache", F::NoEffect}, {"pad_token_id", F::NoEffect},
      {"pretraining_tp", F::NoEffect}, {"attention_dropout", F::NoEffect}, {"dtype", F::NoEffect},
      {"torch_dtype", F::NoEffect}, {"transformers_version", F::NoEffect}, {"_name_or_path", F::NoEffect},
      {"output_hidden_states", F::NoEffect}, {"output_attentions", F::NoEffect}, {"return_dict", F::NoEffect},
      {"chunk_size_feed_forward", F::NoEffect}, {"id2label", F::NoEffect}, {"label2id", F::NoEffect},
      {"problem_type", F::NoEffect}, {"use_bfloat16", F::NoEffect}, {"tokenizer_class", F::NoEffect}};
  return m;
}

// Refused fields: each passes only with its no-op value (absent, null, false or default);
// layer_types is checked against the parsed sliding window in parse_hf_config.
void check_refused_fields(const json& j, const std::string& source) {
  CLLM_CHECK(!get_bool(j, "attention_bias", false, source), source << ": field 'attention_bias' = true is not supported");
  CLLM_CHECK(!get_bool(j, "mlp_bias", false, source), source << ": field 'mlp_bias' = true is not supported");
  CLLM_CHECK(!get_bool(j, "is_encoder_decoder", false, source),
             source << ": field 'is_encoder_decoder' = true is not supported (decoder-only LLaMA family)");
  if (!present(j, "quantization_config")) return;
  const json& q = j["quantization_config"];  // its method named when it says one (any JSON may stand here)
  const std::string method = q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
                                 ? q["quant_method"].get<std::string>()
                                 : "?";
  CLLM_FAIL(source << ": field 'quantization_config' (a " << method
                   << "-quantized checkpoint) is not supported; use the unquantized checkpoint or a GGUF file");
}

}  // namespace

ConfigField hf_config_field(const std::string& key) {
  const auto it = config_fields().find(key);
  return it == config_fields().end() ? ConfigField::Unknown : it->second;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CLLM_CHECK(in, "cannot read " << path);
  std::ostringstream ss;
  ss << in.rdbuf();
  CLLM_CHECK(!in.bad(), "error reading " << path);
  return ss.str();
}

ModelConfig parse_hf_config(const std::string& json_text, const std::string& source) {
  const json j = parse_json(json_text, source);
  CLLM_CHECK(j.is_object(), source << ": top level is not a JSON object");
  if (present(j, "architectures")) {
    const json& a = j["architectures"];
    CLLM_CHECK(a.is_array() && !a.empty() && a[0].is_string(),
               source << ": field 'architectures' must be a list of strings, got " << a.dump());
    const std::string arch = a[0].get<std::string>();
    CLLM_CHECK(arch == "LlamaForCausalLM" || arch == "MistralForCausalLM",
               source << ": field 'architectures': unsupported architecture '" << arch
                      << "' (accepted: LlamaForCausalLM, MistralForCausalLM)");
  }
  if (present(j, "model_type"))
    CLLM_CHECK(j["model_type"] == "llama" || j["model_type"] == "mistral",
               source << ": field 'model_type' = " << j["model_type"].dump() << " is not supported (accepted: llama, mistral)");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (hf_config_field(it.key()) == ConfigField::Unknown)
      std::cerr << "cllm: warning: " << source << ": field '" << it.key() << "' is unknown to cllm and ignored\n";
  // Biases and other activations change the forward pass; refuse rather than mis-serve.
  check_refused_fields(j, source);
  if (present(j, "hidden_act"))
    CLLM_CHECK(j["hidden_act"] == "silu", source << ": field 'hidden_act' = " << j["hidden_act"].dump()
                                                 << " is not supported (expected \"silu\")");

  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = get_int(j, "vocab_size", source);
  c.hidden_size = get_int(j, "hidden_size", source);
  c.intermediate_size = get_int(j, "intermediate_size", source);
  c.num_layers = get_int(j, "num_hidden_layers", source);
  c.num_heads = get_int(j, "num_attention_heads", source);
  c.num_kv_heads = get_int(j, "num_key_value_heads", c.num_heads, source);
  c.head_dim = get_int(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0, source);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", 1e-6f, source);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, source);
  c.bos_token_id = get_int(j, "bos_token_id", -1, source);
  add_eos(c.eos_token_ids, j, source);
  // As transformers: MistralForCausalLM reads sliding_window (null: full attention; absent: its
  // default 4096); LlamaForCausalLM has no window and ignores the field.
  const bool mistral = (present(j, "architectures") && j["architectures"][0] == "MistralForCausalLM") ||
                       (present(j, "model_type") && j["model_type"] == "mistral");
  if (mistral) {
    c.sliding_window = !j.contains("sliding_window") ? 4096 : get_int(j, "sliding_window", 0, source);
    CLLM_CHECK(c.sliding_window >= 0, source << ": field 'sliding_window' must be positive or null, got " << c.sliding_window);
  } else if (present(j, "sliding_window")) {
    std::cerr << "cllm: warning: " << source << ": field 'sliding_window' is ignored for LlamaForCausalLM "
              << "(as transformers does); set architectures to MistralForCausalLM to use it\n";
  }
  if (present(j, "layer_types")) {
    // One attention type for every layer is what sliding_window (or its absence) already says;
    // alternating types (Ministral-style) are not implemented.
    const json& lt = j["layer_types"];
    const std::string want = c.sliding_window > 0 ? "sliding_attention" : "full_attention";
    bool uniform = lt.is_array();
    if (uniform)
      for (const auto& t : lt) uniform = uniform && t == want;
    CLLM_CHECK(uniform, source << ": field 'layer_types' = " << lt.dump().substr(0, 120) << " is not supported (only every "
                               << "layer \"" << want << "\", as sliding_window implies)");
  }

  // transformers >= 5 nests RoPE settings in rope_parameters; older files use top-level keys.
  if (present(j, "rope_parameters")) {
    const json& rp = j["rope_parameters"];
    CLLM_CHECK(rp.is_object(), source << ": field 'rope_parameters' must be an object, got " << rp.dump());
    c.rope_theta = get_float(rp, "rope_theta", 10000.0f, source + " rope_parameters");
    c.rope_scaling = parse_rope_scaling(rp, source, "rope_parameters");
  } else {
    c.rope_theta = get_float(j, "rope_theta", 10000.0f, source);
    if (present(j, "rope_scaling")) c.rope_scaling = parse_rope_scaling(j["rope_scaling"], source, "rope_scaling");
  }
  return c;
}

void merge_generation_config(ModelConfig& cfg, const std::string& json_text, const std::string& source) {
  const json j = parse_json(json_text, source);
  CLLM_CHECK(j.is_object(), source << ": top level is not a JSON object");
  if (cfg.bos_token_id < 0) cfg.bos_token_id = get_int(j, "bos_token_id", -1, source);
  add_eos(cfg.eos_token_ids, j, source);
}

ModelConfig load_hf_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  ModelConfig cfg = parse_hf_config(read_text_file(path), path);
  validate(cfg, path);
  const std::string gen = (std::filesystem::path(dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen)) {
    merge_generation_config(cfg, read_text_file(gen), gen);
    validate(cfg, gen);  // what generation_config.json added is blamed on it
  }
  return cfg;
}

void write_hf_config(const ModelConfig& cfg, const std::string& dir) {
  validate(cfg, "write_hf_config");
  nlohmann::ordered_json c;
  // LlamaForCausalLM has no sliding window; MistralForCausalLM reads the same fields plus it.
  const bool mistral = cfg.sliding_window > 0;
  c["architectures"] = {mistral ? "MistralForCausalLM" : "LlamaForCausalLM"};
  c["model_type"] = mistral ? "mistral" : "llama";
  c["vocab_size"] = cfg.vocab_size;
  c["hidden_size"] = cfg.hidden_size;
  c["intermediate_size"] = cfg.intermediate_size;
  c["num_hidden_layers"] = cfg.num_layers;
  c["num_attention_heads"] = cfg.num_heads;
  c["num_key_value_heads"] = cfg.num_kv_heads;
  c["head_dim"] = cfg.head_dim;
  c["hidden_act"] = "silu";
  c["max_position_embeddings"] = cfg.max_position_embeddings;
  c["rms_norm_eps"] = clean(cfg.rms_norm_eps);
  c["rope_theta"] = clean(cfg.rope_theta);
  if (cfg.rope_scaling.type.empty()) {
    c["rope_scaling"] = nullptr;
  } else {
    nlohmann::ordered_json rs;
    rs["rope_type"] = cfg.rope_scaling.type;
    rs["factor"] = clean(cfg.rope_scaling.factor);
    if (cfg.rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = clean(cfg.rope_scaling.low_freq_factor);
      rs["high_freq_factor"] = clean(cfg.rope_scaling.high_freq_factor);
      rs["original_max_position_embeddings"] = cfg.rope_scaling.original_max_position_embeddings;
    }
    c["rope_scaling"] = rs;
  }
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  c["tie_word_embeddings"] = cfg.tie_word_embeddings;
  if (mistral) c["sliding_window"] = cfg.sliding_window;
  nlohmann::ordered_json gen;
  for (auto* j : {&c, &gen}) {
    if (cfg.bos_token_id >= 0) (*j)["bos_token_id"] = cfg.bos_token_id;
    if (cfg.eos_token_ids.size() == 1) (*j)["eos_token_id"] = cfg.eos_token_ids[0];
    else if (!cfg.eos_token_ids.empty()) (*j)["eos_token_id"] = cfg.eos_token_ids;
  }
  std::filesystem::create_directories(dir);
  write_json((std::filesystem::path(dir) / "config.json").string(), c);
  write_json((std::filesystem::path(dir) / "generation_config.json").string(), gen);
}

}  // namespace cllm
