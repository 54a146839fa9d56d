// GGUF quantized types against the gguf package (fixtures from make_gguf_quant_fixtures.py, written
// fresh by the ctest fixture gguf_quant_fixtures):
// - every block type decodes bit for bit like gguf.quants.dequantize, whole rows and column ranges
//   that start and end inside a block;
// - random LLaMA files quantized as llama.cpp's Q4_K_M / Q5_K_M / Q6_K schemes (mixed tensor types)
//   load, and their logits equal those of the same model stored as the package's float32
//   dequantization. With bit-exact weights the two forwards are the same computation, so the
//   tolerance is 0; the float32 GGUF path itself is held to transformers by test_logits.cpp;
// - SmolLM2's weights requantized as Q4_K_M and as Q8_0 (requantize_gguf.py) decode sensibly: the
//   Q4_K_M file's greedy output against the Q8_0 file's, and the KL divergence of its next-token
//   distributions from the Q8_0 file's along the Q8_0 greedy text.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/tensor_manifest.h"
#include "kernels/cpu/gemm_quant.h"
#include "loaders/checkpoint.h"
#include "loaders/gguf.h"
#include "loaders/mapped_file.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "runtime/weights.h"
#include "logit_fixture.h"

namespace cllm {
namespace {

std::string fixture(const std::string& name) { return std::string(CLLM_GGUF_QUANT_DIR) + "/" + name; }

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(GgufDequant, EveryBlockTypeBitExactVsGgufPackage) {
  const MappedFile f(fixture("dequant.gguf"));
  const GgufFile g = parse_gguf(f.data(), f.size(), f.path());
  std::printf("fixture seed %lld\n", static_cast<long long>(g.get_int("cllm.seed")));
  std::set<std::string> seen;
  for (const auto& t : g.tensors) {
    if (t.dtype == DType::F32) continue;
    const GgufTensorInfo* want = g.find_tensor(t.name + ".expected");
    ASSERT_NE(want, nullptr) << t.name;
    ASSERT_EQ(want->ne, t.ne) << t.name;
    seen.insert(dtype_name(t.dtype));
    const int64_t cols = t.ne[0], be = dtype_block_elems(t.dtype);
    const uint64_t row_bytes = dtype_row_bytes(t.dtype, cols, t.name);
    const float* ref = reinterpret_cast<const float*>(f.data() + want->offset);
    std::vector<float> row(cols);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < t.rows(); ++r) {
      const uint8_t* src = f.data() + t.offset + r * row_bytes;
      dequantize_row(t.dtype, src, 0, cols, row.data());
      for (int64_t c = 0; c < cols; ++c)
        if (bits(row[c]) != bits(ref[r * cols + c]) && mismatches++ < 5)
          ADD_FAILURE() << t.name << " row " << r << " col " << c << ": cllm " << row[c] << " gguf "
                        << ref[r * cols + c];
      // A column range starting and ending mid-block (a tensor-parallel slice) is the same slice.
      const int64_t c0 = be / 2 + 3, c1 = cols - be / 4 - 1;
      dequantize_row(t.dtype, src, c0, c1, row.data());
      for (int64_t c = c0; c < c1; ++c)
        if (bits(row[c - c0]) != bits(ref[r * cols + c]) && mismatches++ < 5)
          ADD_FAILURE() << t.name << " row " << r << " range col " << c;
    }
    EXPECT_EQ(mismatches, 0) << t.name << ": " << mismatches << " values differ";
  }
  const std::set<std::string> all = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K",
                                     "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"};
  EXPECT_EQ(seen, all);
}

// Logits of a 40-token prompt (ids from a fixed LCG, 0 and vocab-1 included) at every position.
std::vector<float> logits_of(const std::string& path, std::vector<int32_t>* argmax) {
  auto ckpt = open_checkpoint(path);
  auto model = make_model(*ckpt, Device::Cpu);
  const int V = model->config().vocab_size, n = 40;
  std::vector<int32_t> ids(n);
  uint32_t s = 12345;
  for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((s = s * 1664525u + 1013904223u) >> 8) % V;
  ids[5] = 0;
  ids[17] = V - 1;
  std::vector<float> logits(static_cast<size_t>(n) * V);
  argmax->assign(n, 0);
  model->reset(n);
  model->forward(ids.data(), n, 0, argmax->data(), logits.data());
  return logits;
}

class GgufQuantModel : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufQuantModel, LogitsEqualFloat32Twin) {
  const std::string scheme = GetParam();
  const std::string qpath = fixture("tiny_" + scheme + ".gguf");
  {  // the file really mixes types, as llama.cpp writes them
    const MappedFile f(qpath);
    const GgufFile g = parse_gguf(f.data(), f.size(), qpath);
    std::set<std::string> types;
    for (const auto& t : g.tensors)
      if (t.dtype != DType::F32) types.insert(dtype_name(t.dtype));
    if (scheme == "Q4_K_M") EXPECT_EQ(types, (std::set<std::string>{"Q4_K", "Q6_K"}));
    if (scheme == "Q5_K_M") EXPECT_EQ(types, (std::set<std::string>{"Q5_K", "Q6_K"}));
    if (scheme == "Q6_K") EXPECT_EQ(types, (std::set<std::string>{"Q6_K"}));
    if (scheme == "legacy_mix") EXPECT_GE(types.size(), 5u);
  }
  std::vector<int32_t> am_q, am_f;
  const auto lq = logits_of(qpath, &am_q);
  const auto lf = logits_of(fixture("tiny_f32_" + scheme + ".gguf"), &am_f);
  ASSERT_EQ(lq.size(), lf.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < lq.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(lq[i] - lf[i])));
    scale = std::max(scale, static_cast<double>(std::abs(lf[i])));
  }
  std::printf("%s: max |logit| %.3g, max |quantized - float32 twin| %.3g\n", scheme.c_str(), scale, worst);
  EXPECT_GT(scale, 0.1) << "degenerate random model";
  EXPECT_EQ(worst, 0.0);
  EXPECT_EQ(am_q, am_f);
}

// Native weights (--weights native, and so --weights auto on one rank) on a GGUF file: every Q8_0,
// Q4_0 and Q4_1 matrix stays in its blocks (Q4_0 as Q4_1 with minimum -8 d) and dequantizes to
// exactly the fp32 loader's values; the other types (the k-quants among them) are fp32 in both.
// Returns the types kept in blocks.
std::set<std::string> check_native_weights(const std::string& path) {
  const auto ckpt = open_checkpoint(path);
  const ModelWeights native = load_weights_native(*ckpt, {}), f32 = load_weights_f32(*ckpt, {});
  const TensorManifest m = make_tensor_manifest(ckpt->config(), ShardPlan::whole(ckpt->config()));
  std::set<std::string> kept;
  auto check = [&](const TensorSpec& t, const LinearWeight& a, const LinearWeight& b) {
    const DType dt = ckpt->stored_dtype(t.name);
    const bool blocks = dt == DType::Q8_0 || dt == DType::Q4_0 || dt == DType::Q4_1;
    ASSERT_EQ(a.quantized(), blocks) << t.name << " (" << dtype_name(dt) << ")";
    if (!blocks) {
      EXPECT_EQ(a.f32, b.f32) << t.name;
      return;
    }
    kept.insert(dtype_name(dt));
    const int rows = static_cast<int>(t.shape[0]), cols = static_cast<int>(t.shape[1]);
    std::vector<float> row(cols);
    for (int r = 0; r < rows; ++r) {
      cpu::dequantize_quant_row(a.q, r, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), b.f32.data() + static_cast<size_t>(r) * cols, cols * sizeof(float)))
          << t.name << " (" << dtype_name(dt) << ") row " << r;
    }
  };
  check(m.embed, native.embed, f32.embed);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const LayerTensors& t = m.layers[l];
    const LayerWeights &a = native.layers[l], &b = f32.layers[l];
    check(t.wq, a.wq, b.wq);
    check(t.wk, a.wk, b.wk);
    check(t.wv, a.wv, b.wv);
    check(t.wo, a.wo, b.wo);
    check(t.w_gate, a.w_gate, b.w_gate);
    check(t.w_up, a.w_up, b.w_up);
    check(t.w_down, a.w_down, b.w_down);
  }
  if (m.has_lm_head()) check(m.lm_head, native.lm_head, f32.lm_head);
  return kept;
}

TEST(GgufNative, LegacyMatricesKeptInBlocksDequantizeExactly) {
  const std::set<std::string> kept = check_native_weights(fixture("tiny_legacy_mix.gguf"));
  EXPECT_TRUE(kept.count("Q4_0") && kept.count("Q4_1") && kept.count("Q8_0")) << "the mix lacks a legacy type";
}

// The k-quant files under native weights: every matrix falls back to fp32, and the model gives the
// fp32 loader's logits exactly.
TEST(GgufNative, KQuantMatricesFallBackToFloat32) {
  for (const std::string scheme : {"Q4_K_M", "Q5_K_M", "Q6_K"}) {
    const std::string path = fixture("tiny_" + scheme + ".gguf");
    EXPECT_TRUE(check_native_weights(path).empty()) << scheme;
    const auto ckpt = open_checkpoint(path);
    ModelOptions native_opts;
    native_opts.cpu_native_weights = true;
    auto native = make_model(*ckpt, Device::Cpu, {}, native_opts), f32 = make_model(*ckpt, Device::Cpu);
    const int V = ckpt->config().vocab_size, n = 12;
    std::vector<int32_t> ids(n), am_n(n), am_f(n);
    for (int i = 0; i < n; ++i) ids[i] = (i * 37 + 5) % V;
    std::vector<float> ln(static_cast<size_t>(n) * V), lf(ln.size());
    native->reset(n);
    f32->reset(n);
    native->forward(ids.data(), n, 0, am_n.data(), ln.data());
    f32->forward(ids.data(), n, 0, am_f.data(), lf.data());
    EXPECT_TRUE(ln == lf) << scheme;
    EXPECT_EQ(am_n, am_f) << scheme;
  }
}

// Mean over positions of KL(p || q) in nats for logits rows of V floats (float64 softmax).
double mean_kl(const std::vector<float>& p_logits, const std::vector<float>& q_logits, int V) {
  const size_t rows = p_logits.size() / V;
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* p = p_logits.data() + r * V;
    const float* q = q_logits.data() + r * V;
    double pm = p[0], qm = q[0];
    for (int i = 1; i < V; ++i) pm = std::max(pm, double(p[i])), qm = std::max(qm, double(q[i]));
    double ps = 0, qs = 0;
    for (int i = 0; i < V; ++i) ps += std::exp(p[i] - pm), qs += std::exp(q[i] - qm);
    const double plse = pm + std::log(ps), qlse = qm + std::log(qs);
    double kl = 0;
    for (int i = 0; i < V; ++i) {
      const double lp = p[i] - plse, lq = q[i] - qlse;
      kl += std::exp(lp) * (lp - lq);
    }
    total += kl;
  }
  return total / static_cast<double>(rows);
}

struct Agreement {
  int same_outputs = 0;         // prompts whose greedy continuation is identical
  int tokens_before_diff = 0;   // greedy tokens equal before the first difference, summed
  int top1_agree = 0, top1_n = 0;  // argmax equal along the reference's text (teacher-forced)
  double kl = 0;                // mean over prompts of the mean KL(reference || candidate), nats/token
  // Per prompt: the first greedy token that differs (new_tokens when none), and at that step the
  // reference's logit of its own pick minus its logit of the candidate's pick (its top-2 margin
  // when the candidate took its second choice; -1 when the outputs are identical).
  std::vector<int> first_diff;
  std::vector<double> ref_margin;
};

// "prompt: first difference at token k (reference's margin m)" for each prompt, and how many of the
// differences are near-ties (margin below `near`).
void print_divergence(const Agreement& g, const std::vector<std::string>& prompts, double near) {
  int ties = 0, diffs = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (g.ref_margin[i] < 0) {
      std::printf("  %-42s identical\n", ("'" + prompts[i] + "'").c_str());
      continue;
    }
    ++diffs;
    ties += g.ref_margin[i] < near;
    std::printf("  %-42s first difference at token %2d, reference's margin there %.3f\n", ("'" + prompts[i] + "'").c_str(),
                g.first_diff[i], g.ref_margin[i]);
  }
  std::printf("  %d of %d differences are near-ties (margin below %.2f)\n", ties, diffs, near);
}

// Greedy continuations of `prompts` by `ref` and `cand`, and both models' distributions along
// ref's text (prompt + continuation).
Agreement compare_models(Model& ref, Model& cand, const Tokenizer& tok, bool add_bos,
                         const std::vector<std::string>& prompts, int new_tokens, bool print) {
  const int V = ref.config().vocab_size;
  Agreement g;
  for (const auto& text : prompts) {
    const std::vector<int32_t> ids = tok.encode(text, add_bos);
    GenerateOptions gen;
    gen.max_new_tokens = new_tokens;
    ref.reset(kv_rows_needed(static_cast<int>(ids.size()), new_tokens, 1));
    cand.reset(kv_rows_needed(static_cast<int>(ids.size()), new_tokens, 1));
    const auto a = generate_ar(ref, ids, gen).tokens, b = generate_ar(cand, ids, gen).tokens;
    g.same_outputs += a == b;
    int k = 0;
    while (k < new_tokens && a[k] == b[k]) ++k;
    g.tokens_before_diff += k;
    std::vector<int32_t> seq = ids;
    seq.insert(seq.end(), a.begin(), a.end());
    const int n = static_cast<int>(seq.size());
    std::vector<float> lp(static_cast<size_t>(n) * V), lq(lp.size());
    std::vector<int32_t> ap(n), aq(n);
    ref.reset(n);
    ref.forward(seq.data(), n, 0, ap.data(), lp.data());
    cand.reset(n);
    cand.forward(seq.data(), n, 0, aq.data(), lq.data());
    g.kl += mean_kl(lp, lq, V) / static_cast<double>(prompts.size());
    for (int i = static_cast<int>(ids.size()) - 1; i < n; ++i) g.top1_agree += ap[i] == aq[i], ++g.top1_n;
    g.first_diff.push_back(k);
    if (k < new_tokens) {
      // Both prefixes are equal up to token k, so ref's logits along its own text at that position
      // are those it picked a[k] from.
      const float* row = lp.data() + (ids.size() - 1 + k) * V;
      g.ref_margin.push_back(double(row[a[k]]) - double(row[b[k]]));
    } else {
      g.ref_margin.push_back(-1);
    }
    if (print)
      std::printf("%-45s ref:  %s\n%-45s cand: %s\n", ("'" + text + "'").c_str(), tok.decode(a).c_str(), "",
                  tok.decode(b).c_str());
  }
  return g;
}

// SmolLM2 requantized as Q4_K_M against the same weights as Q8_0, with the same weights as plain
// Q4_0 (the package's quantizer) as the yardstick: a 4-bit 135M model parts ways with Q8_0 within
// a few greedy tokens, so the bar is being closer to Q8_0 than Q4_0 is, and a top-1 agreement of
// at least 85% along the Q8_0 text.
// The prompts of the quantization-quality comparisons (also in tests/reference/quant_agreement.py
// and llamacpp_quant_check.py).
const std::vector<std::string> kQualityPrompts = {
    "The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
    "The three primary colors are", "To make a cup of tea, first", "import numpy as np\n",
    "Water boils at a temperature of", "The largest planet in the solar system is"};

TEST(SmolLM2Requantized, Q4KMDecodesLikeQ8_0) {
  const std::vector<std::string>& prompts = kQualityPrompts;
  const int new_tokens = 16;
  auto q8_ckpt = open_checkpoint(fixture("smollm2_Q8_0.gguf"));
  auto q4km_ckpt = open_checkpoint(fixture("smollm2_Q4_K_M.gguf"));
  auto q40_ckpt = open_checkpoint(fixture("smollm2_Q4_0.gguf"));
  auto tok = make_tokenizer(q8_ckpt->tokenizer());
  const bool bos = q8_ckpt->tokenizer().add_bos;
  auto q8 = make_model(*q8_ckpt, Device::Cpu);
  auto q4km = make_model(*q4km_ckpt, Device::Cpu);
  auto q40 = make_model(*q40_ckpt, Device::Cpu);
  const Agreement k = compare_models(*q8, *q4km, *tok, bos, prompts, new_tokens, true);
  const Agreement base = compare_models(*q8, *q40, *tok, bos, prompts, new_tokens, false);
  for (const auto& [name, g] : {std::pair{"Q4_K_M", k}, std::pair{"Q4_0", base}}) {
    std::printf("%-15s vs Q8_0: identical %d-token greedy output on %d of %zu prompts, %d of %zu greedy tokens before "
                "the first difference, top-1 agreement along the Q8_0 text %.3f (%d positions), mean KL(Q8_0 || it) "
                "%.4f nats/token\n",
                name, new_tokens, g.same_outputs, prompts.size(), g.tokens_before_diff, prompts.size() * new_tokens,
                double(g.top1_agree) / g.top1_n, g.top1_n, g.kl);
  }
  print_divergence(k, prompts, 0.5);
  RecordProperty("q4_k_m_kl_nats", std::to_string(k.kl));
  RecordProperty("q4_k_m_top1", std::to_string(double(k.top1_agree) / k.top1_n));
  EXPECT_GE(double(k.top1_agree) / k.top1_n, 0.85) << "Q4_K_M's argmax differs from Q8_0's too often";
  EXPECT_LT(k.kl, base.kl) << "Q4_K_M is further from Q8_0 than plain Q4_0";
}

// transformers reads the same Q4_K_M file (from_pretrained(gguf_file=...), dequantizing with the
// gguf package): logits as for the shipped Q4_1 file. requantize_gguf.py is deterministic, so the
// committed fixture (made by make_logit_fixtures.py; it records the file's sha256) fits the file
// the ctest fixture writes.
TEST(SmolLM2Requantized, Q4KMLogitsMatchTransformers) {
  std::ifstream fx(std::string(CLLM_SOURCE_DIR) + "/tests/fixtures/logits/smollm2_q4_k_m_requantized.json");
  std::ifstream sha(fixture("smollm2_Q4_K_M.gguf.sha256"));
  std::string want, got;
  sha >> got;
  want = nlohmann::json::parse(fx)["model_sha256"]["smollm2_Q4_K_M.gguf"];
  ASSERT_EQ(got, want) << "requantize_gguf.py wrote other bytes than the fixture was made from (another numpy or "
                          "gguf version?): regenerate it with make_logit_fixtures.py (tests/reference/README.md)";
  test::check_fixture("smollm2_q4_k_m_requantized.json", fixture("smollm2_Q4_K_M.gguf"), 2e-3);
}

// llama.cpp's own Q4_K_M and Q8_0 of SmolLM2's weights and llama.cpp's logits on them, written by
// tests/reference/llamacpp_quant_check.py into the directory CLLM_LLAMACPP_DIR names (llama.cpp is
// built from source for it, so these run by hand, not in CI; without the variable they skip).
std::string llamacpp_dir() {
  const char* d = std::getenv("CLLM_LLAMACPP_DIR");
  return d ? d : "";
}

// cllm's logits on each file llama.cpp wrote (and on the float32 file it quantized) against
// llama.cpp's logits on the same file and tokens. llama.cpp multiplies quantized weights by
// activations it quantizes to 8 bits (Q8_0/Q8_K) and cllm by float32 activations, so the two differ by
// that rounding: the float32 file, where neither rounds, is the floor. A decoder that misreads a
// block (a wrong scale, a nibble order) moves logits by whole units and flips argmaxes wholesale.
TEST(LlamaCppQuant, DecoderMatchesLlamaCppLogits) {
  const std::string dir = llamacpp_dir();
  if (dir.empty()) GTEST_SKIP() << "CLLM_LLAMACPP_DIR is not set (tests/reference/llamacpp_quant_check.py)";
  const auto meta = nlohmann::json::parse(std::ifstream(dir + "/llamacpp_logits.json"));
  for (const std::string name : {"F32", "Q8_0", "Q4_K_M"}) {
    const auto& file = meta["files"][name];
    auto ckpt = open_checkpoint(dir + "/" + file["gguf"].get<std::string>());
    auto model = make_model(*ckpt, Device::Cpu);
    const int V = model->config().vocab_size;
    double worst = 0, kl = 0, scale = 0;
    int rows = 0, argmax_same = 0, flips_beyond_tie = 0;
    for (const auto& p : file["prompts"]) {
      std::vector<int32_t> seq = p["ids"].get<std::vector<int32_t>>();
      for (int t : p["greedy"]) seq.push_back(t);
      const int n = static_cast<int>(seq.size());
      ASSERT_EQ(p["rows"].get<int>(), n);
      ASSERT_EQ(p["vocab"].get<int>(), V);
      std::vector<float> ref(static_cast<size_t>(n) * V), got(ref.size());
      std::ifstream raw(dir + "/" + p["logits"].get<std::string>(), std::ios::binary);
      raw.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)));
      ASSERT_TRUE(raw) << p["logits"];
      std::vector<int32_t> am(n);
      model->reset(n);
      model->forward(seq.data(), n, 0, am.data(), got.data());
      kl += mean_kl(ref, got, V) * n;
      for (int r = 0; r < n; ++r, ++rows) {
        const float* a = ref.data() + static_cast<size_t>(r) * V;
        const float* b = got.data() + static_cast<size_t>(r) * V;
        int best = 0;
        for (int i = 0; i < V; ++i) {
          worst = std::max(worst, double(std::abs(a[i] - b[i])));
          scale = std::max(scale, double(std::abs(a[i])));
          if (a[i] > a[best]) best = i;
        }
        argmax_same += am[r] == best;
        // A flip is allowed only where llama.cpp's own margin is within the measured difference.
        if (am[r] != best && a[best] - a[am[r]] > 0.5) ++flips_beyond_tie;
      }
    }
    kl /= rows;
    std::printf("%-7s cllm vs llama.cpp on %s: max |logit diff| %.4f (logits up to %.1f), argmax equal at %d of %d "
                "positions, mean KL(llama.cpp || cllm) %.2e nats/token\n",
                name.c_str(), file["gguf"].get<std::string>().c_str(), worst, scale, argmax_same, rows, kl);
    RecordProperty(name + "_max_logit_diff", std::to_string(worst));
    RecordProperty(name + "_kl", std::to_string(kl));
    EXPECT_EQ(flips_beyond_tie, 0) << name << ": argmax differs where llama.cpp's margin exceeds 0.5";
    EXPECT_LT(kl, 1e-3) << name;
    EXPECT_LT(worst, 0.5) << name;
  }
}

// cllm's greedy output on llama.cpp's Q4_K_M file against that on llama.cpp's Q8_0 file (same
// weights), per prompt with the first difference and whether it is a near-tie, and cllm's greedy
// output on each file against llama.cpp's own on it.
TEST(LlamaCppQuant, Q4KMDecodesLikeQ8_0) {
  const std::string dir = llamacpp_dir();
  if (dir.empty()) GTEST_SKIP() << "CLLM_LLAMACPP_DIR is not set (tests/reference/llamacpp_quant_check.py)";
  const auto meta = nlohmann::json::parse(std::ifstream(dir + "/llamacpp_logits.json"));
  const int new_tokens = meta["new_tokens"];
  auto q8_ckpt = open_checkpoint(dir + "/" + meta["files"]["Q8_0"]["gguf"].get<std::string>());
  auto q4_ckpt = open_checkpoint(dir + "/" + meta["files"]["Q4_K_M"]["gguf"].get<std::string>());
  auto tok = make_tokenizer(q8_ckpt->tokenizer());
  const bool bos = q8_ckpt->tokenizer().add_bos;
  auto q8 = make_model(*q8_ckpt, Device::Cpu);
  auto q4 = make_model(*q4_ckpt, Device::Cpu);
  for (const auto& [name, model] : {std::pair{"Q8_0", q8.get()}, std::pair{"Q4_K_M", q4.get()}}) {
    int same = 0;
    for (const auto& p : meta["files"][name]["prompts"]) {
      const std::vector<int32_t> ids = tok->encode(p["prompt"].get<std::string>(), bos);
      ASSERT_EQ(ids, p["ids"].get<std::vector<int32_t>>()) << "cllm tokenizes '" << p["prompt"] << "' otherwise";
      GenerateOptions gen;
      gen.max_new_tokens = new_tokens;
      model->reset(kv_rows_needed(static_cast<int>(ids.size()), new_tokens, 1));
      same += generate_ar(*model, ids, gen).tokens == p["greedy"].get<std::vector<int32_t>>();
    }
    std::printf("%-7s cllm's greedy output equals llama.cpp's on %d of %zu prompts\n", name, same, kQualityPrompts.size());
    EXPECT_GE(same, static_cast<int>(kQualityPrompts.size()) - 1) << name;
  }
  const Agreement g = compare_models(*q8, *q4, *tok, bos, kQualityPrompts, new_tokens, true);
  std::printf("llama.cpp's Q4_K_M vs its Q8_0, decoded by cllm: identical %d-token greedy output on %d of %zu prompts, "
              "top-1 agreement along the Q8_0 text %.3f (%d positions), mean KL(Q8_0 || Q4_K_M) %.4f nats/token\n",
              new_tokens, g.same_outputs, kQualityPrompts.size(), double(g.top1_agree) / g.top1_n, g.top1_n, g.kl);
  print_divergence(g, kQualityPrompts, 0.5);
  std::printf("llama.cpp's own decoding of the same files: identical on %d prompts, first differences at %s\n",
              meta["llamacpp_q4_k_m_vs_q8_0"]["identical"].get<int>(),
              meta["llamacpp_q4_k_m_vs_q8_0"]["first_difference"].dump().c_str());
  RecordProperty("llamacpp_q4_k_m_kl_nats", std::to_string(g.kl));
  RecordProperty("llamacpp_q4_k_m_top1", std::to_string(double(g.top1_agree) / g.top1_n));
  EXPECT_GE(double(g.top1_agree) / g.top1_n, 0.85);
}

INSTANTIATE_TEST_SUITE_P(Schemes, GgufQuantModel, ::testing::Values("Q4_K_M", "Q5_K_M", "Q6_K", "legacy_mix"));

}  // namespace
}  // namespace cllm
