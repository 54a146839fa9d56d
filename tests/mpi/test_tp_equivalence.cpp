// Tensor parallelism changes where the sums happen, not what is computed: at TP=N the tokens of
// greedy AR and of Jacobi (n = 1, 4, 16) equal those of the one-rank model, and the logits agree
// within 1e-4 of the row's largest logit. Run under mpirun -np 2, 3 and 4 (tests/mpi/CMakeLists.txt);
// rank 0 drives a CoordinatorModel exactly as `cllm generate` does and the others serve it.
#include <gtest/gtest.h>

#include <memory>

#include "mpi_support.h"
#include "parallel/coordinator.h"
#include "parallel/tp_model.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/tokenizer.h"

namespace cllm {
namespace {


void expect_same_logits(Model& ref, Model& tp, const std::vector<int32_t>& prompt) {
  const int n = static_cast<int>(prompt.size()), vocab = ref.config().vocab_size;
  std::vector<float> ref_logits(static_cast<size_t>(n) * vocab), tp_logits(ref_logits.size());
  std::vector<int32_t> ref_ids(n), tp_ids(n);
  ref.reset(n);
  tp.reset(n);
  ref.forward(prompt.data(), n, 0, ref_ids.data(), ref_logits.data());
  tp.forward(prompt.data(), n, 0, tp_ids.data(), tp_logits.data());
  EXPECT_LE(test::max_relative_row_error(ref_logits, tp_logits, n, vocab), 1e-4);
  EXPECT_EQ(ref_ids, tp_ids);
}

void expect_same_tokens(Model& ref, Model& tp, const std::vector<int32_t>& prompt, int max_new) {
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  const int rows = kv_rows_needed(static_cast<int>(prompt.size()), max_new, 16);
  ref.reset(rows);
  tp.reset(rows);
  const GenerateResult want = generate_ar(ref, prompt, gen);
  ASSERT_EQ(static_cast<int>(want.tokens.size()), max_new);
  EXPECT_EQ(generate_ar(tp, prompt, gen).tokens, want.tokens) << "AR";
  for (int n : {1, 4, 16}) {
    for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
      JacobiOptions jac;
      jac.block = n;
      jac.window = w;
      jac.seed = 7;
      EXPECT_EQ(generate_jacobi(tp, prompt, gen, jac).tokens, want.tokens)
          << "Jacobi n=" << n << (w == JacobiWindow::Sliding ? " sliding" : " blockwise");
    }
  }
  // Lookahead: the branch layout and KV moves travel with the batch; the vote covers the branch.
  for (int n : {1, 4}) {
    JacobiOptions jac;
    jac.block = n;
    jac.candidates = (16 - n) / 3;
    jac.ngram = 4;
    EXPECT_EQ(generate_jacobi(tp, prompt, gen, jac).tokens, want.tokens) << "lookahead n=" << n;
  }
  // Multi-block: the later blocks ride in the main run; the vote covers paths that run into them.
  for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
    const JacobiOptions jac{.block = 4, .window = w, .seed = 7, .candidates = 2, .ngram = 3, .blocks = 2};
    EXPECT_EQ(generate_jacobi(tp, prompt, gen, jac).tokens, want.tokens)
        << "multi-block" << (w == JacobiWindow::Sliding ? " sliding" : " blockwise");
  }
}

// The whole comparison on rank 0 (the one-rank reference lives there only); the workers serve.
void check_checkpoint(const std::string& path, const std::vector<int32_t>& prompt, int max_new) {
  test::compare_with_one_rank(path, [&](Model& ref, Model& tp) {
    expect_same_logits(ref, tp, prompt);
    expect_same_tokens(ref, tp, prompt, max_new);
  });
}

std::vector<int32_t> synthetic_prompt(int vocab, int len) {
  std::vector<int32_t> p;
  for (int i = 0; i < len; ++i) p.push_back(static_cast<int32_t>((i * 37 + 5) % vocab));
  return p;
}

// 8 heads, 4 KV heads: KV heads split at TP=2 and TP=4.
TEST(TpEquivalence, RandomSplitKv) {
  if (!test::world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  check_checkpoint(test::mpi_model_dir("kv4"), synthetic_prompt(512, 13), 32);
}

// 8 heads, 2 KV heads, tied head: KV split at TP=2, replicated at TP=4.
TEST(TpEquivalence, RandomReplicatedKvTiedHead) {
  if (!test::world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  check_checkpoint(test::mpi_model_dir("kv2_tied"), synthetic_prompt(512, 9), 32);
}

// SmolLM2: 9 heads, 3 KV heads, so TP=3 (one KV head per rank).
TEST(TpEquivalence, SmolLM2) {
  if (!test::world_size_in({3})) GTEST_SKIP() << "runs at 3 ranks";
  const std::string path = test::smollm2_path();
  auto ckpt = open_checkpoint(path);
  const std::string text = apply_chat_template(ckpt->tokenizer().chat_template,
                                               {{"user", "Name three colours of the rainbow."}}, true);
  check_checkpoint(path, make_tokenizer(ckpt->tokenizer())->encode(text, ckpt->tokenizer().add_bos), 24);
}

}  // namespace
}  // namespace cllm
