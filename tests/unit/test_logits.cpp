// Whole-model logits against Hugging Face transformers (fp32, eager), from fixtures made by
// tests/reference/make_logit_fixtures.py on the same weights (comparison rules in logit_fixture.h):
// atol = 2e-3 for SmolLM2 (30 layers; HF's own spread between its cached and uncached forwards is
// 1e-4, see the fixture's "noise") and 1e-4 for the tiny random models.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "logit_fixture.h"
#include "test_support.h"

namespace cllm {
namespace {

using test::check_fixture;

TEST(LogitsVsTransformers, SmolLM2Gguf) { check_fixture("smollm2_q4_1.json", test::smollm2_path(), 2e-3); }

// The issue's "SmolLM2 converted to safetensors": `cllm convert` writes an HF directory
// (dequantized F32 safetensors + config.json + tokenizer.json) that must give the same logits.
TEST(LogitsVsTransformers, SmolLM2ConvertedToSafetensors) {
  const std::filesystem::path out = test::temp_dir("smollm2_hf");
  const std::string cmd = std::string(CLLM_BINARY_DIR) + "/cllm convert --model " + test::smollm2_path() +
                          " --out " + (out / "hf").string() + " > " + (out / "convert.log").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  check_fixture("smollm2_q4_1.json", (out / "hf").string(), 2e-3);
}

TEST(LogitsVsTransformers, TinyRandomGqaLlama3Rope) {
  check_fixture("tiny_random_seed1.json", test::random_model_dir("tiny", 1), 1e-4);
}

// The tiny Mistral (sliding_window 8) and tied-config variants of the tiny random model.
constexpr const char* kTinyMistral = R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
  "sliding_window": 8, "attention_bias": null, "mlp_bias": null})";

// Mistral with sliding_window 8: the 40-token prompt and the greedy steps after it attend past
// the window (HF's logits there differ from full attention's by up to 0.42).
TEST(LogitsVsTransformers, MistralSlidingWindow) {
  const std::string dir = test::random_model_with_config("tiny", 1, "tiny_mistral_sw8", kTinyMistral);
  check_fixture("tiny_mistral_sliding_window8.json", dir, 1e-4);
}

// tie_word_embeddings: true but the file has its own lm_head.weight: transformers uses the file's
// head ("we will NOT tie them"), so the logits are those of the untied model.
TEST(LogitsVsTransformers, TiedConfigWithOwnLmHeadUsesTheFileHead) {
  const std::string dir =
      test::random_model_with_config("tiny", 1, "tiny_tied_own_head", R"({"tie_word_embeddings": true})");
  check_fixture("tiny_tied_config_own_lm_head.json", dir, 1e-4);
}

}  // namespace
}  // namespace cllm
