// The CUDA Model (runtime/cuda/cuda_model.h) on the GPU:
//  (a) its logits against the fp32 CPU model on a random checkpoint and on SmolLM2, after a prompt
//      (itself longer than one device block) and for blocks of n = 1, 7, 64;
//  (b) CUDA-graph replay against eager launches: identical ids and logits, bit for bit, over steps
//      whose positions, block sizes and KV buffer change;
//  (c) greedy Jacobi against greedy AR on the GPU, token for token.
//
// Tolerances. The GPU rounds weights, activations, the KV cache and the logits to bf16 (8-bit
// mantissa, relative step 2^-8); the CPU model is fp32 throughout. Logit error is measured relative
// to the logit scale S = max |cpu logit| of the compared block:
//   max |gpu - cpu| <= kTolRandom * S (2 layers) or kTolSmol * S (30 layers);
//   the GPU's argmax id must be a near-argmax on the CPU: cpu[id] >= max(cpu row) - tol * S.
// (c): with batch-invariant numerics every kernel computes a row the same way whatever the block
// size, so Jacobi must equal AR token for token. Without them, where the two pick different tokens
// the CPU top-2 margin at that position must be within kMarginFrac * S (a near-tie that bf16 noise
// may flip); a larger margin is a bug.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <utility>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_model.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/random_model.h"
#include "runtime/tokenizer.h"
#include "test_support.h"

namespace cllm {
namespace {

using cuda::CudaModel;
using cuda::CudaModelOptions;

constexpr double kTolRandom = 2e-2;
constexpr double kTolSmol = 5e-2;
constexpr double kMarginFrac = 0.05;

// A checkpoint with both backends on it: the fp32 CPU reference, the CUDA model with graphs and one
// launching eagerly.
struct Models {
  std::unique_ptr<CheckpointReader> ckpt;
  std::unique_ptr<Model> cpu;
  std::unique_ptr<CudaModel> graph, eager;
  int vocab() const { return ckpt->config().vocab_size; }
};

Models open_models(const std::string& path) {
  Models m;
  m.ckpt = open_checkpoint(path);
  m.cpu = make_model(*m.ckpt, Device::Cpu);
  m.graph = cuda::make_cuda_model(*m.ckpt, {}, CudaModelOptions{true});
  m.eager = cuda::make_cuda_model(*m.ckpt, {}, CudaModelOptions{false});
  return m;
}

// The "tiny" random shape (GQA, llama3 RoPE scaling, untied head) widened to head_dim 64, the
// smallest head the CUDA attention takes: d 128, 2 heads, 1 KV head, 2 layers, vocab 320.
ModelConfig tiny_hd64() {
  ModelConfig c = random_model_shape("tiny");
  c.hidden_size = 128;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 64;
  return c;
}

// A random checkpoint of shape c with weights from `seed`, written under the build's test_tmp/name.
Models write_and_open(const ModelConfig& c, const std::string& name, uint64_t seed) {
  const std::string dir = std::string(CLLM_BINARY_DIR) + "/test_tmp/" + name;
  RandomModelOptions opts;
  opts.seed = seed;
  write_random_model(c, dir, opts);
  return open_models(dir);
}

Models& random_models() {
  static Models m = write_and_open(tiny_hd64(), "gpu_model_random_hd64", 7);
  return m;
}

// The same random shape as a Mistral checkpoint with a sliding window of `window` keys (the CPU
// model's window is checked against transformers in test_logits.cpp).
Models open_window_models(int window) {
  ModelConfig c = tiny_hd64();
  c.sliding_window = window;  // > 0: written as MistralForCausalLM
  Models m = write_and_open(c, "gpu_model_window" + std::to_string(window), 7);
  EXPECT_EQ(m.ckpt->config().sliding_window, window);
  return m;
}

Models& smollm2() {
  static Models m = open_models(test::smollm2_path());
  return m;
}

// `count` ids of real text (a paragraph, repeated as needed), so SmolLM2's logits are peaked.
std::vector<int32_t> text_ids(const Models& m, size_t count) {
  static const char* kText =
      "The history of astronomy is a long story of careful observation. Ancient people watched the sky to keep "
      "track of seasons, and they noticed that a few bright points, the planets, wandered against the fixed "
      "stars. Later, telescopes revealed moons around Jupiter and phases of Venus, which showed that the Earth "
      "is not the center of everything. ";
  const auto tok = make_tokenizer(m.ckpt->tokenizer());
  std::vector<int32_t> ids;
  while (ids.size() < count) {
    const std::vector<int32_t> more = tok->encode(kText, false);
    ids.insert(ids.end(), more.begin(), more.end());
  }
  ids.resize(count);
  return ids;
}

std::vector<int32_t> synthetic_ids(int vocab, size_t count, int salt) {
  std::vector<int32_t> ids(count);
  for (size_t i = 0; i < count; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13 * salt + 5) % vocab);
  return ids;
}

struct Output {
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [n, vocab]
};

Output run(Model& model, const std::vector<int32_t>& tokens, int pos, int vocab) {
  Output o;
  o.ids.resize(tokens.size());
  o.logits.resize(tokens.size() * static_cast<size_t>(vocab));
  model.forward(tokens.data(), static_cast<int>(tokens.size()), pos, o.ids.data(), o.logits.data());
  return o;
}

// GPU logits and ids against the CPU's for one block (see the header comment for the bounds).
void expect_close(const Output& gpu, const Output& cpu, int vocab, double tol, const std::string& what) {
  const size_t n = gpu.ids.size();
  double scale = 0, max_err = 0, sq_err = 0;
  for (size_t i = 0; i < cpu.logits.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(cpu.logits[i])));
    const double e = std::fabs(static_cast<double>(gpu.logits[i]) - cpu.logits[i]);
    ASSERT_TRUE(std::isfinite(gpu.logits[i])) << what << ": non-finite GPU logit at " << i;
    max_err = std::max(max_err, e);
    sq_err += e * e;
  }
  const double rms_err = std::sqrt(sq_err / cpu.logits.size());
  std::printf("[ logits   ] %-34s n=%-4zu scale %7.3f  max err %.4f (%.4f of scale)  rms err %.5f\n", what.c_str(), n,
              scale, max_err, max_err / scale, rms_err);
  EXPECT_LE(max_err, tol * scale) << what << ": max |gpu - cpu| " << max_err << " > " << tol << " * scale " << scale;
  int ids_differ = 0;
  for (size_t r = 0; r < n; ++r) {
    const float* g = gpu.logits.data() + r * vocab;
    const float* c = cpu.logits.data() + r * vocab;
    // The id the GPU returned is the argmax of the logits it returned (lowest index on ties).
    EXPECT_EQ(gpu.ids[r], static_cast<int32_t>(std::max_element(g, g + vocab) - g)) << what << " row " << r;
    const float cmax = *std::max_element(c, c + vocab);
    EXPECT_GE(c[gpu.ids[r]], cmax - tol * scale)
        << what << " row " << r << ": GPU picked " << gpu.ids[r] << " (cpu logit " << c[gpu.ids[r]]
        << "), CPU max is " << cmax << " at " << cpu.ids[r];
    ids_differ += gpu.ids[r] != cpu.ids[r];
  }
  if (ids_differ > 0) std::printf("[ logits   ] %-34s %d of %zu argmax ids differ (near-ties)\n", what.c_str(), ids_differ, n);
}

// The GPU output for one block, run twice at the same position (rewriting the same KV rows): the
// first run of a block size is eager, the second a graph launch; both must agree bit for bit.
Output run_gpu_twice(CudaModel& gpu, const std::vector<int32_t>& tokens, int pos, int vocab) {
  const Output first = run(gpu, tokens, pos, vocab);
  Output second = run(gpu, tokens, pos, vocab);
  EXPECT_EQ(first.ids, second.ids) << "n=" << tokens.size() << " pos=" << pos;
  EXPECT_TRUE(first.logits == second.logits) << "n=" << tokens.size() << " pos=" << pos;
  return second;
}

// (a) A prompt of `prompt` tokens, then blocks of n = 1, 7, 64 at the next position.
void compare_with_cpu(Models& m, const std::vector<int32_t>& ids, int prompt, double tol, const std::string& name) {
  const int V = m.vocab();
  m.cpu->reset(prompt + 64);
  m.graph->reset(prompt + 64);
  const std::vector<int32_t> head(ids.begin(), ids.begin() + prompt);
  expect_close(run_gpu_twice(*m.graph, head, 0, V), run(*m.cpu, head, 0, V), V, tol, name + " prompt");
  for (int n : {1, 7, 64}) {
    const std::vector<int32_t> block(ids.begin() + prompt, ids.begin() + prompt + n);
    expect_close(run_gpu_twice(*m.graph, block, prompt, V), run(*m.cpu, block, prompt, V), V, tol,
                 name + " block at " + std::to_string(prompt));
  }
}

TEST(CudaModel, RandomCheckpointMatchesCpu) {
  Models& m = random_models();
  compare_with_cpu(m, synthetic_ids(m.vocab(), 40 + 64, 1), 40, kTolRandom, "random");
}

// A prompt longer than one device block: 1100 tokens run as blocks of 1024, 64 and 12 rows (256 at
// most under batch-invariant numerics), each over the KV the ones before wrote.
TEST(CudaModel, RandomLongPromptMatchesCpu) {
  ModelConfig c = tiny_hd64();
  c.max_position_embeddings = 1400;
  Models m = write_and_open(c, "gpu_model_random_long", 11);
  compare_with_cpu(m, synthetic_ids(m.vocab(), 1100 + 64, 5), 1100, kTolRandom, "1100-token prompt");
}

// Sliding-window attention: a prompt of 180 positions (several key tiles and, for blocks of up to
// 16 rows, several 128-key chunks), then blocks past it. Windows of 8 (inside one tile), 100 (across
// tiles and chunks) and 200 (wider than the prompt: full attention until the blocks pass it).
TEST(CudaModel, RandomSlidingWindowMatchesCpu) {
  for (int window : {8, 100, 200}) {
    Models m = open_window_models(window);
    compare_with_cpu(m, synthetic_ids(m.vocab(), 180 + 64, 3), 180, kTolRandom, "window " + std::to_string(window));
  }
  // The window changes the output: the CPU model with window 8 differs from full attention there.
  Models full = open_window_models(0), w8 = open_window_models(8);
  const std::vector<int32_t> ids = synthetic_ids(full.vocab(), 60, 3);
  full.cpu->reset(60);
  w8.cpu->reset(60);
  EXPECT_NE(run(*full.cpu, ids, 0, full.vocab()).logits, run(*w8.cpu, ids, 0, w8.vocab()).logits);
}

TEST(CudaModel, SmolLM2MatchesCpu) {
  Models& m = smollm2();
  // 300 > 256: the prompt runs as two device blocks (256 + 44).
  compare_with_cpu(m, text_ids(m, 300 + 64), 300, kTolSmol, "SmolLM2");
}

// (b) The same steps through the graph and the eager model: every id and logit equal.
// a and b give the same ids and logits bits on the same steps. Positions advance by uneven amounts
// and blocks change size (1 to 64 rows); the second half runs after a reset that reallocates the KV
// cache, so graphs must pick up the new buffer.
void expect_same_outputs(CudaModel& a, CudaModel& b, const std::vector<int32_t>& ids, const std::string& what) {
  const int V = a.config().vocab_size;
  struct Step {
    int n, pos;
  };
  const std::vector<Step> steps = {{37, 0}, {1, 37}, {1, 38}, {7, 39}, {7, 41}, {7, 47}, {64, 50},
                                   {16, 60}, {1, 76}, {1, 77}, {64, 78}, {7, 100}};
  for (int capacity : {160, 400}) {
    a.reset(capacity);
    b.reset(capacity);
    for (const Step& s : steps) {
      const std::vector<int32_t> block(ids.begin() + s.pos, ids.begin() + s.pos + s.n);
      const Output g = run(a, block, s.pos, V), e = run(b, block, s.pos, V);
      ASSERT_EQ(g.ids, e.ids) << what << ": capacity " << capacity << " n=" << s.n << " pos=" << s.pos;
      ASSERT_TRUE(g.logits == e.logits) << what << ": capacity " << capacity << " n=" << s.n << " pos=" << s.pos;
    }
  }
}

void expect_graph_equals_eager(Models& m, const std::vector<int32_t>& ids) {
  expect_same_outputs(*m.graph, *m.eager, ids, "graph vs eager");
  const cuda::CudaGraphStats& st = m.graph->graph_stats();
  std::printf("[ graphs   ] captures %d, updates %d, instantiations %d, replays %d\n", st.captures, st.updates,
              st.instantiations, st.replays);
  // {1, 37} -> {1, 38} and {1, 76} -> {1, 77} change nothing but the uploaded inputs. (Updates of a
  // cached graph happen once a row count has seen more keys than it keeps: maybe not here.)
  EXPECT_GT(st.replays, 0) << "no step replayed a cached graph without capture";
  EXPECT_EQ(st.captures, st.updates + st.instantiations);
}

TEST(CudaModel, GraphEqualsEagerRandom) {
  Models& m = random_models();
  expect_graph_equals_eager(m, synthetic_ids(m.vocab(), 160, 2));
}

TEST(CudaModel, GraphEqualsEagerSmolLM2) {
  Models& m = smollm2();
  expect_graph_equals_eager(m, text_ids(m, 160));
}

// The fused kernels (silu(gate) * up in the gate|up GEMM; residual add, RMSNorm, RoPE and the KV
// write in the small-M GEMMs) give the separate kernels' bits, in every forward of the steps above
// (the fused layer at every row count its kernels take, not only the default's), in each combination.
CudaModelOptions with_fusions(bool layer, bool swiglu) {
  CudaModelOptions o;
  o.fused_layer_rows = layer ? cuda::kSkinnyFusedMaxM : 0;  // every forward the fused kernels take
  o.fuse_swiglu = swiglu;
  return o;
}
CudaModelOptions all_fused() { return with_fusions(true, true); }

void expect_fusions_equal_separate(Models& m, const std::vector<int32_t>& ids) {
  const auto separate = cuda::make_cuda_model(*m.ckpt, {}, with_fusions(false, false));
  for (const auto& [layer, swiglu] : {std::pair{true, false}, std::pair{false, true}, std::pair{true, true}}) {
    const auto fused = cuda::make_cuda_model(*m.ckpt, {}, with_fusions(layer, swiglu));
    expect_same_outputs(*fused, *separate, ids,
                        std::string("fused") + (layer ? " layer" : "") + (swiglu ? " swiglu" : "") + " vs separate");
  }
}

TEST(CudaModel, FusedEqualsSeparateRandom) {
  Models& m = random_models();
  expect_fusions_equal_separate(m, synthetic_ids(m.vocab(), 160, 2));
}

TEST(CudaModel, FusedEqualsSeparateSmolLM2) {
  Models& m = smollm2();
  expect_fusions_equal_separate(m, text_ids(m, 160));
}

// (c) GPU Jacobi against GPU AR. Forwards of up to CudaModelOptions::invariant_max_rows rows run
// the batch-invariant kernels, which compute a token the same way whatever shares its forward, so
// Jacobi blocks within that limit must give AR's tokens exactly, in both windows. Larger blocks may
// round differently: where the two pick different tokens, the CPU model (when given) must show a
// near-tie there.
void expect_jacobi_equals_ar(CudaModel& gpu, Model* cpu, const std::vector<int32_t>& prompt, int max_new,
                             const std::string& name) {
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  gpu.reset(kv_rows_needed(static_cast<int>(prompt.size()), max_new, 64));
  const GenerateResult ar = generate_ar(gpu, prompt, gen);
  ASSERT_EQ(static_cast<int>(ar.tokens.size()), max_new);
  for (int n : {1, 4, 16, 64}) {
    for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
      JacobiOptions jac;
      jac.block = n;
      jac.window = w;
      jac.seed = 42;
      const GenerateResult jr = generate_jacobi(gpu, prompt, gen, jac);
      std::ostringstream tag;
      tag << name << " n=" << n << (w == JacobiWindow::Sliding ? " sliding" : " blockwise");
      size_t k = 0;
      while (k < jr.tokens.size() && k < ar.tokens.size() && jr.tokens[k] == ar.tokens[k]) ++k;
      std::printf("[ jacobi   ] %-32s %.2f tokens/iteration, %zu of %zu tokens equal to AR's\n", tag.str().c_str(),
                  jr.stats.tokens_per_iteration(), k, ar.tokens.size());
      if (jr.tokens == ar.tokens) continue;
      ASSERT_GT(n, gpu.options().invariant_max_rows)
          << tag.str() << ": batch-invariant forwards must give AR's tokens exactly; first difference at token " << k
          << " (AR " << (k < ar.tokens.size() ? ar.tokens[k] : -1) << ", Jacobi "
          << (k < jr.tokens.size() ? jr.tokens[k] : -1) << ")";
      ASSERT_LT(k, std::min(jr.tokens.size(), ar.tokens.size())) << tag.str() << ": outputs differ in length";
      if (cpu == nullptr) continue;
      std::vector<int32_t> context = prompt;
      context.insert(context.end(), ar.tokens.begin(), ar.tokens.begin() + k);
      cpu->reset(static_cast<int>(context.size()));
      const int vocab = gpu.config().vocab_size;
      const Output out = run(*cpu, context, 0, vocab);
      const float* row = out.logits.data() + (context.size() - 1) * vocab;
      std::vector<float> sorted(row, row + vocab);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      double scale = 0;
      for (int j = 0; j < vocab; ++j) scale = std::max(scale, std::fabs(static_cast<double>(row[j])));
      const double margin = sorted[0] - sorted[1];
      std::printf("[ jacobi   ] %-32s differs from AR at token %zu (AR %d, Jacobi %d): CPU top-2 margin %.4f = %.4f of "
                  "scale %.3f\n",
                  tag.str().c_str(), k, ar.tokens[k], jr.tokens[k], margin, margin / scale, scale);
      EXPECT_LE(margin, kMarginFrac * scale)
          << tag.str() << ": Jacobi and AR differ at generated token " << k << " (AR " << ar.tokens[k] << ", Jacobi "
          << jr.tokens[k] << ") where the CPU top-2 margin " << margin << " exceeds " << kMarginFrac << " * scale "
          << scale;
    }
  }
}

// 1100 generated tokens: long enough to cross many attention chunk boundaries.
constexpr int kLongGeneration = 1100;

// The default options (blocks of up to 16 exact, 64 within the near-tie rule).
TEST(CudaModel, JacobiEqualsArSmolLM2Prose) {
  Models& m = smollm2();
  expect_jacobi_equals_ar(*m.graph, m.cpu.get(), text_ids(m, 48), kLongGeneration, "prose");
}

// Every forward invariant, with the fused kernels (forwards of up to 64 rows take them, larger ones
// the separate ones): every block size exact.
TEST(CudaModel, JacobiEqualsArSmolLM2FusedInvariant) {
  Models& m = smollm2();
  CudaModelOptions o = all_fused();
  o.invariant_max_rows = CudaModelOptions::invariant().invariant_max_rows;
  const auto gpu = cuda::make_cuda_model(*m.ckpt, {}, o);
  expect_jacobi_equals_ar(*gpu, m.cpu.get(), text_ids(m, 48), kLongGeneration, "prose, fused, invariant");
}

// Every forward invariant: every block size exact.
TEST(CudaModel, JacobiEqualsArSmolLM2InvariantEverywhere) {
  Models& m = smollm2();
  const auto gpu = cuda::make_cuda_model(*m.ckpt, {}, CudaModelOptions::invariant());
  const auto tok = make_tokenizer(m.ckpt->tokenizer());
  expect_jacobi_equals_ar(*gpu, m.cpu.get(), text_ids(m, 48), kLongGeneration, "prose, invariant");
  expect_jacobi_equals_ar(*gpu, m.cpu.get(),
                          tok->encode("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", false),
                          kLongGeneration, "code, invariant");
}

// The LLaMA-2-7B shape with random bf16 weights, when CLLM_GPU_7B_MODEL names its checkpoint (the
// GPU test script writes one with `cllm random-model --shape 7b --dtype bf16`): GPU only, no CPU copy.
TEST(CudaModel, JacobiEqualsArRandom7B) {
  const char* path = std::getenv("CLLM_GPU_7B_MODEL");
  if (path == nullptr || *path == '\0') GTEST_SKIP() << "CLLM_GPU_7B_MODEL is not set";
  const auto ckpt = open_checkpoint(path);
  const auto gpu = cuda::make_cuda_model(*ckpt, {}, CudaModelOptions::invariant());
  std::vector<int32_t> prompt(40);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(1 + (i * 7919) % 31000);
  expect_jacobi_equals_ar(*gpu, nullptr, prompt, kLongGeneration, "random 7B, invariant");
}

}  // namespace
}  // namespace cllm
