// random_checkpoint (`--model random:SHAPE`): the weights computed on read are exactly those that
// write_random_model stores (F32), for whole tensors and for the row / column / element ranges
// tensor parallelism reads; the model decodes the same tokens from either; the tokenizer streams
// text for ids past the bytes.
#include <gtest/gtest.h>

#include "runtime/generate.h"
#include "runtime/random_model.h"
#include "runtime/tokenizer.h"
#include "test_support.h"

namespace cllm {
namespace {

// A shape whose vocabulary cannot hold the byte-level tokenizer is refused before any file is
// written: no weights left behind without a tokenizer (or beside an earlier run's).
TEST(RandomCheckpoint, TooSmallVocabularyWritesNothing) {
  const std::string dir = test::temp_dir("random_small_vocab").string() + "/model";
  ModelConfig c = random_model_shape("tiny");
  c.vocab_size = 10;
  EXPECT_THROW(write_random_model(c, dir, RandomModelOptions{}), std::exception);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(RandomCheckpoint, EqualsTheWrittenOne) {
  auto file = open_checkpoint(test::random_model_dir("tiny", 7));
  auto mem = random_checkpoint(random_model_shape("tiny"), 7);
  const std::vector<std::pair<std::string, TensorRange>> reads = {
      {"model.embed_tokens.weight", {}},
      {"model.layers.1.self_attn.k_proj.weight", {}},
      {"model.layers.0.mlp.down_proj.weight", {3, 40, 10, 150}},  // rows and columns (TP slices)
      {"model.layers.1.post_attention_layernorm.weight", {5, 33, 0, -1}},  // 1-D: elements 5..33
      {"lm_head.weight", {100, -1, 0, -1}},
  };
  for (const auto& [name, range] : reads) {
    ASSERT_TRUE(mem->has_tensor(name)) << name;
    const std::vector<int64_t> shape = file->shape(name);
    EXPECT_EQ(mem->shape(name), shape) << name;
    const bool two_d = shape.size() == 2;
    const int64_t rows = two_d ? (range.row_end < 0 ? shape[0] : range.row_end) - range.row_begin : 1;
    const int64_t cols = two_d ? (range.col_end < 0 ? shape[1] : range.col_end) - range.col_begin
                               : (range.row_end < 0 ? shape[0] : range.row_end) - range.row_begin;
    std::vector<float> a(static_cast<size_t>(rows * cols)), b(a.size());
    file->read_f32(name, range, a.data());
    mem->read_f32(name, range, b.data());
    EXPECT_EQ(a, b) << name;
  }
  EXPECT_FALSE(mem->has_tensor("no.such.tensor"));

  auto m_file = make_model(*file, Device::Cpu);
  auto m_mem = make_model(*mem, Device::Cpu);
  const std::vector<int32_t> prompt = {0, 72, 105, 33};
  GenerateOptions gen;
  gen.max_new_tokens = 12;
  m_file->reset(32);
  m_mem->reset(32);
  EXPECT_EQ(generate_ar(*m_mem, prompt, gen).tokens, generate_ar(*m_file, prompt, gen).tokens);

  // Ids past the 256 bytes decode to their names rather than to nothing.
  auto tok = make_tokenizer(mem->tokenizer());
  EXPECT_EQ(tok->decode({300}), "<|unused_42|>");
  EXPECT_EQ(tok->encode("Hi", false), (std::vector<int32_t>{2 + 'H', 2 + 'i'}));
}

// What random-model accepts in its --out directory: every file a random checkpoint is written as,
// sharded or not, and nothing another checkpoint brings.
TEST(RandomCheckpoint, KnowsItsOwnFiles) {
  for (const char* name : {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors",
                           "model.safetensors.index.json", "model-1-of-3.safetensors"})
    EXPECT_TRUE(is_random_model_file(name)) << name;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                           "pytorch_model.bin", "model-1-of-3.bin", "notes.txt"})
    EXPECT_FALSE(is_random_model_file(name)) << name;
}

}  // namespace
}  // namespace cllm
