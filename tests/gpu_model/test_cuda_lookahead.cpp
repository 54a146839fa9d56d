// Lookahead verification on the CUDA model (CudaModel::forward_rows):
//  (a) branch rows give bit for bit the logits of the same tokens forwarded causally, and a KV move
//      puts a verified branch's KV where AR would have written it (the CPU model's check, run on the
//      GPU with batch-invariant numerics, on a random checkpoint and on SmolLM2);
//  (b) a batch of two sequences, one with branches, gives each the bits it gets alone;
//  (c) greedy Jacobi with lookahead candidates and with several blocks in flight equals greedy AR on
//      the GPU, token for token, with every forward invariant and with the default numerics when the
//      rows fit their limit.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "lookahead_check.h"
#include "runtime/cuda/cuda_model.h"
#include "runtime/generate.h"
#include "runtime/random_model.h"
#include "runtime/tokenizer.h"
#include "test_support.h"

namespace cllm {
namespace {

using cuda::CudaModel;
using cuda::CudaModelOptions;

// The "tiny" random shape widened to head_dim 64 (the smallest head the CUDA attention takes); with
// window > 0, as a Mistral checkpoint with that sliding window.
std::string random_hd64_dir(int window = 0) {
  ModelConfig c = random_model_shape("tiny");
  c.hidden_size = 128;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 64;
  c.sliding_window = window;
  const std::string dir =
      std::string(CLLM_BINARY_DIR) + "/test_tmp/gpu_lookahead_random_hd64_window" + std::to_string(window);
  RandomModelOptions opts;
  opts.seed = 11;
  write_random_model(c, dir, opts);
  return dir;
}

void check_branches_on_gpu(const std::string& path) {
  const auto ckpt = open_checkpoint(path);
  const auto model = cuda::make_cuda_model(*ckpt, {}, CudaModelOptions::invariant());
  const auto reference = cuda::make_cuda_model(*ckpt, {}, CudaModelOptions::invariant());
  ASSERT_TRUE(model->verifies_branches());
  test::check_branches(*model, *reference);
}

TEST(CudaLookahead, BranchRowsEqualCausalRowsRandom) { check_branches_on_gpu(random_hd64_dir()); }

TEST(CudaLookahead, BranchRowsEqualCausalRowsSmolLM2) { check_branches_on_gpu(test::smollm2_path()); }

// A sliding window (40 keys: the 70-token prompt and the branches reach past it) counts a branch
// row's logical keys, as the plain row's.
TEST(CudaLookahead, BranchRowsEqualCausalRowsSlidingWindow) { check_branches_on_gpu(random_hd64_dir(40)); }

// (b) Slot 0: a block of 3 and two branches of 2 rows after a 40-token prompt; slot 1: a plain block
// of 4 after a 25-token prompt. Batched, each sequence's logits equal its own forward's bits.
TEST(CudaLookahead, BranchesInABatchEqualAlone) {
  const auto ckpt = open_checkpoint(random_hd64_dir());
  const auto model = cuda::make_cuda_model(*ckpt, {}, CudaModelOptions::invariant());
  const int vocab = ckpt->config().vocab_size;
  std::vector<int32_t> prompt_a(40), prompt_b(25);
  for (size_t i = 0; i < prompt_a.size(); ++i) prompt_a[i] = static_cast<int32_t>((i * 13 + 5) % vocab);
  for (size_t i = 0; i < prompt_b.size(); ++i) prompt_b[i] = static_cast<int32_t>((i * 29 + 3) % vocab);
  const std::vector<int32_t> rows_a = {7, 8, 9, 21, 22, 31, 32};
  const std::vector<RowSpec> spec_a = {{40, 0}, {41, 0}, {42, 0}, {41, 41}, {42, 41}, {41, 41}, {42, 41}};
  const std::vector<int32_t> rows_b = {1, 2, 3, 4};
  std::vector<int32_t> ids(64);
  std::vector<float> alone_a(rows_a.size() * vocab), alone_b(rows_b.size() * vocab);

  auto prefill = [&](int slot, const std::vector<int32_t>& prompt) {
    const SeqBlock block{slot, 0, static_cast<int>(prompt.size())};
    model->forward_batch(prompt.data(), &block, 1, ids.data(), nullptr);
  };
  model->reset(128, 2);
  prefill(0, prompt_a);
  prefill(1, prompt_b);
  const SeqBlock block_a{0, 40, 7}, block_b{1, 25, 4};
  model->forward_rows(rows_a.data(), &block_a, 1, spec_a.data(), nullptr, ids.data(), alone_a.data());
  model->forward_rows(rows_b.data(), &block_b, 1, nullptr, nullptr, ids.data(), alone_b.data());

  model->reset(128, 2);
  prefill(0, prompt_a);
  prefill(1, prompt_b);
  std::vector<int32_t> tokens = rows_a;
  tokens.insert(tokens.end(), rows_b.begin(), rows_b.end());
  std::vector<RowSpec> spec = spec_a;
  for (int i = 0; i < 4; ++i) spec.push_back({25 + i, 0});
  const SeqBlock blocks[2] = {block_a, block_b};
  std::vector<float> both(tokens.size() * vocab);
  model->forward_rows(tokens.data(), blocks, 2, spec.data(), nullptr, ids.data(), both.data());
  EXPECT_EQ(0, std::memcmp(both.data(), alone_a.data(), alone_a.size() * sizeof(float))) << "slot 0 (branches)";
  EXPECT_EQ(0, std::memcmp(both.data() + alone_a.size(), alone_b.data(), alone_b.size() * sizeof(float)))
      << "slot 1 (plain)";
}

// (c) Settings (block, blocks in flight, candidates, n-gram) against AR on one model, token for token.
struct Setting {
  int block, blocks, candidates, ngram;
};

void expect_lookahead_equals_ar(CudaModel& gpu, const std::vector<int32_t>& prompt, int max_new,
                                const std::vector<Setting>& settings, const std::string& name) {
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  gpu.reset(static_cast<int>(kv_rows_needed(static_cast<int>(prompt.size()), max_new, kMaxBlockRows)));
  const GenerateResult ar = generate_ar(gpu, prompt, gen);
  for (const Setting& s : settings) {
    JacobiOptions jac;
    jac.block = s.block;
    jac.blocks = s.blocks;
    jac.candidates = s.candidates;
    jac.ngram = s.ngram;
    ASSERT_LE(jac.rows(), gpu.options().invariant_max_rows)
        << "a setting whose rows run outside the invariant kernels cannot be held to AR's tokens";
    const GenerateResult jr = generate_jacobi(gpu, prompt, gen, jac);
    size_t k = 0;
    while (k < jr.tokens.size() && k < ar.tokens.size() && jr.tokens[k] == ar.tokens[k]) ++k;
    std::printf("[ lookahead] %-20s %d block(s) of %2d, %d x %d-grams: %.2f tokens/iteration (block %d, later blocks %d, "
                "pool %d, recycled %d), %zu of %zu tokens equal to AR's\n",
                name.c_str(), s.blocks, s.block, s.candidates, s.ngram, jr.stats.tokens_per_iteration(),
                jr.stats.accepted_block, jr.stats.accepted_later, jr.stats.accepted_pool, jr.stats.accepted_recycled, k,
                ar.tokens.size());
    EXPECT_EQ(jr.tokens, ar.tokens) << name << ": " << s.blocks << " block(s) of " << s.block << ", " << s.candidates
                                    << " x " << s.ngram << "-grams: first difference at token " << k;
    if (s.candidates > 0)
      EXPECT_GT(jr.stats.accepted_pool + jr.stats.accepted_recycled, 0)
          << name << ": no candidate was ever accepted, so the branch rows went untested";
  }
}

std::vector<int32_t> code_prompt(const CheckpointReader& ckpt) {
  const auto tok = make_tokenizer(ckpt.tokenizer());
  return tok->encode(
      "def parse_config(path):\n    \"\"\"Read a key = value file into a dict.\"\"\"\n    config = {}\n"
      "    with open(path) as f:\n        for line in f:\n            line = line.strip()\n",
      false);
}

// Every forward invariant: settings of up to 64 rows.
TEST(CudaLookahead, EqualsArSmolLM2InvariantEverywhere) {
  const auto ckpt = open_checkpoint(test::smollm2_path());
  const auto gpu = cuda::make_cuda_model(*ckpt, {}, CudaModelOptions::invariant());
  expect_lookahead_equals_ar(*gpu, code_prompt(*ckpt), 600,
                             {{1, 1, 4, 4}, {4, 1, 6, 5}, {16, 1, 8, 4}, {8, 3, 0, 4}, {4, 2, 4, 4}}, "code, invariant");
}

// The default numerics (forwards of up to 16 rows invariant): settings that fit.
TEST(CudaLookahead, EqualsArSmolLM2Default) {
  const auto ckpt = open_checkpoint(test::smollm2_path());
  const auto gpu = cuda::make_cuda_model(*ckpt, {}, CudaModelOptions{});
  expect_lookahead_equals_ar(*gpu, code_prompt(*ckpt), 600, {{1, 1, 2, 3}, {1, 1, 5, 4}, {4, 1, 4, 4}, {4, 2, 0, 4}},
                             "code, default");
}

}  // namespace
}  // namespace cllm
