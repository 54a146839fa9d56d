// Every config.json field of transformers' LlamaConfig and MistralConfig (defaults dumped by
// tests/reference/make_config_key_fixture.py) is either honoured or refused by name:
// - each is known to hf_config_field (no field falls through as "unknown");
// - a Used field, changed, changes the parsed ModelConfig (or is refused naming the field when
//   cllm cannot honour the new value);
// - a Refused field with a value that would change the forward is refused naming the field;
// - NoEffect fields change nothing, whatever their value.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loaders/hf_config.h"
#include "loader_test_util.h"
#include "test_support.h"

namespace cllm {
namespace {

using nlohmann::json;
using loader_test::expect_error;

json transformers_defaults() {
  std::ifstream in(test::fixture_path("config/transformers_config_keys.json"));
  EXPECT_TRUE(in) << "missing tests/fixtures/config/transformers_config_keys.json";
  return json::parse(in);
}

// Every ModelConfig field, for comparing two parses.
std::string summary(const ModelConfig& c) {
  std::ostringstream os;
  os << c.architecture << " " << c.vocab_size << " " << c.hidden_size << " " << c.intermediate_size << " " << c.num_layers
     << " " << c.num_heads << " " << c.num_kv_heads << " " << c.head_dim << " " << c.max_position_embeddings << " "
     << c.rms_norm_eps << " " << c.rope_theta << " " << c.rope_scaling.type << " " << c.rope_scaling.factor << " "
     << c.tie_word_embeddings << " " << c.sliding_window << " " << c.bos_token_id;
  for (int e : c.eos_token_ids) os << " eos" << e;
  return os.str();
}

ModelConfig parse(const json& j) { return parse_hf_config(j.dump(), "config.json"); }

// A changed value for each Used field; refused values go in kRefusedValues.
json changed_value(const std::string& key, const json& cur) {
  if (key == "rope_parameters") return json{{"rope_type", "default"}, {"rope_theta", 500000.0}};
  if (key == "rope_scaling") return json{{"rope_type", "linear"}, {"factor", 2.0}};
  if (key == "rope_theta") return 123456.0;
  if (key == "tie_word_embeddings") return !cur.get<bool>();
  if (key == "rms_norm_eps") return 1e-3;
  if (key == "eos_token_id") return json::array({7, 9});
  if (cur.is_number_integer()) return cur.get<int>() == 64 ? 32 : 64;
  return nullptr;
}

TEST(ConfigFields, EveryTransformersFieldHonouredOrRefused) {
  const json all = transformers_defaults();
  for (const std::string arch : {"LlamaForCausalLM", "MistralForCausalLM"}) {
    SCOPED_TRACE(arch);
    const json base = all.at(arch);
    const std::string ref = summary(parse(base));
    for (auto it = base.begin(); it != base.end(); ++it) {
      const std::string key = it.key();
      SCOPED_TRACE(key);
      const ConfigField f = hf_config_field(key);
      ASSERT_NE(f, ConfigField::Unknown) << "field '" << key << "' of " << arch << " is neither honoured nor refused";
      if (f == ConfigField::NoEffect) {
        json j = base;
        j[key] = it->is_number() ? json(it->get<double>() + 3) : json(nullptr);
        EXPECT_EQ(summary(parse(j)), ref);
      } else if (f == ConfigField::Used && key != "architectures" && key != "model_type" && key != "hidden_act") {
        json j = base;
        j[key] = changed_value(key, *it);
        ASSERT_FALSE(j[key].is_null());
        EXPECT_NE(summary(parse(j)), ref) << "changing '" << key << "' did not change the parsed config";
      }
    }
  }
}

TEST(ConfigFields, UnsupportedValuesRefusedByName) {
  const json base = transformers_defaults().at("MistralForCausalLM");
  const std::vector<std::pair<std::string, json>> refused = {
      {"attention_bias", true},
      {"mlp_bias", true},
      {"is_encoder_decoder", true},
      {"quantization_config", json{{"quant_method", "gptq"}, {"bits", 4}}},
      {"quantization_config", 2},  // not an object: still refused by name (found by fuzzing)
      {"quantization_config", json{{"quant_method", 4}}},
      {"layer_types", json::array({"sliding_attention", "full_attention"})},
      {"hidden_act", "gelu"},
      {"model_type", "qwen2"},
      {"architectures", json::array({"Qwen2ForCausalLM"})},
      {"rope_parameters", json{{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 1e4}}},
  };
  for (const auto& [key, value] : refused) {
    json j = base;
    j[key] = value;
    expect_error([&] { parse(j); }, {"config.json", key});
  }
  // Every Refused field of the table is exercised above.
  for (const char* k : {"attention_bias", "mlp_bias", "is_encoder_decoder", "quantization_config", "layer_types"})
    EXPECT_EQ(hf_config_field(k), ConfigField::Refused) << k;
  // A uniform layer_types agrees with sliding_window and is accepted.
  json j = base;
  j["layer_types"] = json::array({"sliding_attention", "sliding_attention"});
  EXPECT_EQ(parse(j).sliding_window, 4096);
  j.erase("sliding_window");  // MistralConfig's default window: still sliding for every layer
  EXPECT_EQ(parse(j).sliding_window, 4096);
  j["sliding_window"] = nullptr;  // no window: the layers must say full attention
  expect_error([&] { parse(j); }, {"layer_types", "full_attention"});
}

TEST(ConfigFields, SlidingWindowAsTransformersReadsIt) {
  const json all = transformers_defaults();
  json m = all.at("MistralForCausalLM");
  m["sliding_window"] = 32;
  EXPECT_EQ(parse(m).sliding_window, 32);
  m["sliding_window"] = nullptr;  // null: full attention
  EXPECT_EQ(parse(m).sliding_window, 0);
  m.erase("sliding_window");  // absent: MistralConfig's default
  EXPECT_EQ(parse(m).sliding_window, 4096);
  json l = all.at("LlamaForCausalLM");
  l["sliding_window"] = 32;  // LlamaForCausalLM has no window: transformers ignores the field
  EXPECT_EQ(parse(l).sliding_window, 0);
  m["sliding_window"] = -1;
  expect_error([&] { parse(m); }, {"sliding_window"});
}

// The config.json files Mistral published: v0.1 (window 4096 at 32768 positions) and
// Instruct-v0.2 (sliding_window null, rope_theta 1e6).
TEST(ConfigFields, MistralPublishedConfigs) {
  const json v01 = json::parse(R"({"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0",
    "use_cache": true, "vocab_size": 32000})");
  const ModelConfig a = parse(v01);
  EXPECT_EQ(a.sliding_window, 4096);
  EXPECT_EQ(a.num_kv_heads, 8);
  EXPECT_EQ(a.head_dim, 128);
  EXPECT_EQ(a.max_position_embeddings, 32768);
  json v02 = v01;
  v02["sliding_window"] = nullptr;
  v02["rope_theta"] = 1000000.0;
  const ModelConfig b = parse(v02);
  EXPECT_EQ(b.sliding_window, 0);
  EXPECT_EQ(b.rope_theta, 1e6f);
}

}  // namespace
}  // namespace cllm
