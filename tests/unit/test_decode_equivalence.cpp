// Greedy Jacobi must reproduce greedy AR token for token on real and random checkpoints, for
// every block size and both window modes (design.md, the Jacobi contract). On the CPU this
// holds bit for bit: the decode GEMM is batch-invariant (kernels/cpu/gemm_invariant.h).
#include <gtest/gtest.h>

#include <memory>
#include <tuple>

#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "test_support.h"

namespace cllm {
namespace {

struct Loaded {
  std::unique_ptr<CheckpointReader> ckpt;
  std::unique_ptr<Model> model;
};

Loaded& smollm2() {
  static Loaded m = [] {
    Loaded l;
    l.ckpt = open_checkpoint(test::smollm2_path());
    l.model = make_model(*l.ckpt, Device::Cpu);
    return l;
  }();
  return m;
}

void expect_jacobi_equals_ar(Model& model, const std::vector<int32_t>& prompt, int max_new) {
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  model.reset(kv_rows_needed(static_cast<int>(prompt.size()), max_new, 64));
  const GenerateResult ar = generate_ar(model, prompt, gen);
  ASSERT_EQ(static_cast<int>(ar.tokens.size()), max_new);
  EXPECT_EQ(ar.stats.iterations, max_new);
  for (int n : {1, 2, 4, 16, 32}) {
    for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
      JacobiOptions jac;
      jac.block = n;
      jac.window = w;
      jac.seed = 42;
      const GenerateResult jr = generate_jacobi(model, prompt, gen, jac);
      EXPECT_EQ(jr.tokens, ar.tokens) << "n=" << n << (w == JacobiWindow::Sliding ? " sliding" : " blockwise");
      if (n == 1) {
        EXPECT_EQ(jr.stats.iterations, jr.stats.tokens);
      }
      EXPECT_LE(jr.stats.iterations, ar.stats.iterations);
    }
  }
  // Lookahead (design.md, "More tokens per forward"): candidates from the pool beside the block.
  for (auto [n, candidates, ngram, w] : {std::tuple{1, 4, 4, JacobiWindow::Sliding}, std::tuple{4, 6, 5, JacobiWindow::Sliding},
                                         std::tuple{8, 3, 3, JacobiWindow::Blockwise}}) {
    JacobiOptions jac;
    jac.block = n;
    jac.window = w;
    jac.candidates = candidates;
    jac.ngram = ngram;
    const GenerateResult jr = generate_jacobi(model, prompt, gen, jac);
    EXPECT_EQ(jr.tokens, ar.tokens) << "lookahead n=" << n << " candidates " << candidates << " ngram " << ngram;
    EXPECT_EQ(jr.stats.fast_forwarded, jr.stats.accepted_block + jr.stats.accepted_pool + jr.stats.accepted_recycled);
  }
}

TEST(DecodeEquivalence, SmolLM2ChatPrompt) {
  Loaded& m = smollm2();
  auto tok = make_tokenizer(m.ckpt->tokenizer());
  const std::string text = apply_chat_template(m.ckpt->tokenizer().chat_template,
                                               {{"user", "List three prime numbers and explain why they are prime."}}, true);
  expect_jacobi_equals_ar(*m.model, tok->encode(text, m.ckpt->tokenizer().add_bos), 40);
}

TEST(DecodeEquivalence, SmolLM2CodePrompt) {
  Loaded& m = smollm2();
  auto tok = make_tokenizer(m.ckpt->tokenizer());
  expect_jacobi_equals_ar(*m.model, tok->encode("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", false), 40);
}

TEST(DecodeEquivalence, TinyRandomModels) {
  for (uint64_t seed : {1, 2, 3}) {
    auto ckpt = open_checkpoint(test::random_model_dir("tiny", seed));
    auto model = make_model(*ckpt, Device::Cpu);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 11; ++i) prompt.push_back(static_cast<int32_t>((i * 37 + seed) % ckpt->config().vocab_size));
    expect_jacobi_equals_ar(*model, prompt, 48);
  }
}

// Sliding-window attention (Mistral, window 8 over a 59-token decode): a row's attention does not
// depend on its block, so Jacobi still equals AR token for token.
TEST(DecodeEquivalence, TinyMistralSlidingWindow) {
  auto ckpt = open_checkpoint(test::random_model_with_config(
      "tiny", 1, "decode_mistral_sw8", R"({"architectures": ["MistralForCausalLM"], "sliding_window": 8})"));
  ASSERT_EQ(ckpt->config().sliding_window, 8);
  auto model = make_model(*ckpt, Device::Cpu);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 11; ++i) prompt.push_back(static_cast<int32_t>((i * 37 + 1) % ckpt->config().vocab_size));
  expect_jacobi_equals_ar(*model, prompt, 48);
}

// --weights native (Q4_1 / Q8_0 blocks, kernels/cpu/gemm_quant.h) is batch-invariant too: a
// 16-token Jacobi block reproduces AR bit for bit. Kept short (one block size) for CI time.
TEST(DecodeEquivalence, SmolLM2NativeWeights) {
  const std::unique_ptr<CheckpointReader> ckpt = open_checkpoint(test::smollm2_path());
  ModelOptions opts;
  opts.cpu_native_weights = true;
  const std::unique_ptr<Model> model = make_model(*ckpt, Device::Cpu, {}, opts);
  EXPECT_LT(model->step_bytes(0), 0.25 * make_model(*ckpt, Device::Cpu)->step_bytes(0));  // vs fp32
  auto tok = make_tokenizer(ckpt->tokenizer());
  const std::vector<int32_t> prompt = tok->encode("def fibonacci(n):\n", false);
  GenerateOptions gen;
  gen.max_new_tokens = 32;
  model->reset(kv_rows_needed(static_cast<int>(prompt.size()), gen.max_new_tokens, 64));
  const GenerateResult ar = generate_ar(*model, prompt, gen);
  for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
    JacobiOptions jac;
    jac.block = 16;
    jac.window = w;
    jac.seed = 42;
    EXPECT_EQ(generate_jacobi(*model, prompt, gen, jac).tokens, ar.tokens)
        << (w == JacobiWindow::Sliding ? "sliding" : "blockwise");
  }
}

}  // namespace
}  // namespace cllm
