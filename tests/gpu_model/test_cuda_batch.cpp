// Continuous batching on the CUDA model (CudaModel::forward_batch, runtime/cuda/cuda_model.h):
//  (a) every sequence of a batch gets what it gets when run alone through forward(): a schedule of
//      1..8 sequences in distinct, shuffled KV slots (spare slots left unused), a batched prefill of
//      prompts of different lengths, then steps where a subset of the sequences advances by mixed
//      block sizes (1, 3, 7, 16, ...), and a step that re-runs a block at the same positions (a
//      Jacobi iteration rewriting its KV rows). The 8-sequence prefill has more than
//      CudaModel::kMaxRows rows, so it runs as several device forwards with a block cut between two.
//  (b) the same schedule through CUDA graphs and through eager launches: identical bits.
//  (c) a one-block batch on any slot is forward() on that slot, bit for bit.
//
// Bits for (a). With batch-invariant numerics in every forward (CudaModelOptions::invariant()) a
// row's logits do not depend on what shares its forward: the batch must give the single run's
// logits bit for bit. The same schedule also runs with CudaModelOptions::fast() against the tolerances below.
// Tolerances for (a) with CudaModelOptions::fast(). The batch runs its GEMMs at M = total rows, the
// single run at M = the block size, so cuBLASLt may pick other kernels and round differently in
// bf16; attention chunks the context differently too. Logits must agree within tol * S (S = max |logit| of the block, tol as
// the CPU comparisons: 2e-2 for the 2-layer model, 5e-2 for SmolLM2) and ids must be equal, except
// where the single run's own logits make the batch's id a near-argmax (within tol * S of the max:
// a near-tie that bf16 noise may flip). Such flips are printed and may not exceed 10% of the rows.
// SmolLM2 reads real text (peaked logits, as in use); the random model a pseudo-random id stream.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_model.h"
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
constexpr double kMaxFlipFraction = 0.10;

// The CUDA model three times: `single` runs one sequence at a time (the reference), `graph` and
// `eager` run the batches.
struct Models {
  std::unique_ptr<CheckpointReader> ckpt;
  std::unique_ptr<CudaModel> single, graph, eager;  // invariant in every forward
  std::unique_ptr<CudaModel> fast;                  // CudaModelOptions::fast(), batched
  std::vector<int32_t> text;  // token ids of real text (empty: a pseudo-random stream)
  int vocab() const { return ckpt->config().vocab_size; }
};

Models open_models(const std::string& path) {
  Models m;
  m.ckpt = open_checkpoint(path);
  // Every forward batch-invariant: batches must equal single runs bit for bit.
  CudaModelOptions graph = CudaModelOptions::invariant(), eager = graph;
  eager.use_graphs = false;
  m.single = cuda::make_cuda_model(*m.ckpt, {}, graph);
  m.graph = cuda::make_cuda_model(*m.ckpt, {}, graph);
  m.eager = cuda::make_cuda_model(*m.ckpt, {}, eager);
  m.fast = cuda::make_cuda_model(*m.ckpt, {}, CudaModelOptions::fast());
  return m;
}

// GQA (4 query heads on 2 KV heads), head_dim 64, 2 layers, llama3 RoPE scaling, vocab 320.
Models& random_gqa() {
  static Models m = [] {
    ModelConfig c = random_model_shape("tiny");
    c.hidden_size = 256;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    const std::string dir = std::string(CLLM_BINARY_DIR) + "/test_tmp/gpu_batch_random_gqa";
    RandomModelOptions opts;
    opts.seed = 17;
    write_random_model(c, dir, opts);
    return open_models(dir);
  }();
  return m;
}

Models& smollm2() {
  static Models m = [] {
    Models s = open_models(test::smollm2_path());
    const auto tok = make_tokenizer(s.ckpt->tokenizer());
    s.text = tok->encode(
        "The history of astronomy is a long story of careful observation. Ancient people watched the sky to keep "
        "track of seasons, and they noticed that a few bright points, the planets, wandered against the fixed "
        "stars. Later, telescopes revealed moons around Jupiter and phases of Venus, which showed that the Earth "
        "is not the center of everything. Photographs and spectra then told what the stars are made of, how far "
        "away they are and how they move, and radio dishes found the cold glow left over from the early universe.",
        false);
    return s;
  }();
  return m;
}

// One step of the schedule: sequence `seq` forwards n tokens at `pos`.
struct Block {
  int seq, pos, n;
};
using Step = std::vector<Block>;

struct Output {
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [n, vocab]
};

// Sequence s's token at position t: a fixed function, so any schedule can feed any block and the
// single run sees the same tokens. From `text` (cycled, each sequence at its own offset) when given,
// else a pseudo-random stream.
int32_t token_of(const Models& m, int s, int t) {
  if (!m.text.empty()) return m.text[(static_cast<size_t>(t) + 61u * s) % m.text.size()];
  return static_cast<int32_t>((static_cast<uint64_t>(t) * 7919u + static_cast<uint64_t>(s) * 104729u + 13u) %
                              m.vocab());
}

std::vector<int32_t> tokens_of(const Models& m, const Block& b) {
  std::vector<int32_t> t(b.n);
  for (int i = 0; i < b.n; ++i) t[i] = token_of(m, b.seq, b.pos + i);
  return t;
}

// A schedule over `count` sequences: a batched prefill of prompts of different lengths, then five
// steps of mixed block sizes in which some sequences sit out, then a step that repeats the
// previous step's blocks at the same positions (their KV rows are rewritten with the same values).
std::vector<Step> make_schedule(int count, int prompt_base, std::mt19937& rng) {
  std::vector<int> pos(count);
  std::vector<Step> steps(1);
  for (int s = 0; s < count; ++s) {
    const int len = prompt_base + 29 * s % 97 + (s % 3 == 0 ? 60 : 0);
    steps[0].push_back({s, 0, len});
    pos[s] = len;
  }
  const int sizes[] = {1, 3, 7, 16, 1, 2, 16, 5};
  for (int k = 0; k < 5; ++k) {
    Step st;
    for (int s = 0; s < count; ++s) {
      if (count > 1 && (s + k) % 4 == 3) continue;  // this sequence sits out this step
      const int n = sizes[(s + 2 * k) % 8];
      st.push_back({s, pos[s], n});
      pos[s] += n;
    }
    std::shuffle(st.begin(), st.end(), rng);  // the batch order is not the slot or sequence order
    steps.push_back(st);
  }
  steps.push_back(steps.back());
  return steps;
}

int max_rows_of(const std::vector<Step>& steps, int count) {
  std::vector<int> end(count, 0);
  for (const Step& st : steps)
    for (const Block& b : st) end[b.seq] = std::max(end[b.seq], b.pos + b.n);
  return *std::max_element(end.begin(), end.end());
}

// The reference: each sequence alone through forward() on a one-slot model. out[step][seq].
std::vector<std::vector<Output>> run_single(const Models& m, CudaModel& model, const std::vector<Step>& steps,
                                            int count, int capacity) {
  const int vocab = m.vocab();
  std::vector<std::vector<Output>> out(steps.size(), std::vector<Output>(count));
  model.reset(capacity, 1);
  for (int s = 0; s < count; ++s)
    for (size_t k = 0; k < steps.size(); ++k)
      for (const Block& b : steps[k]) {
        if (b.seq != s) continue;
        Output& o = out[k][s];
        const std::vector<int32_t> t = tokens_of(m, b);
        o.ids.resize(b.n);
        o.logits.resize(static_cast<size_t>(b.n) * vocab);
        model.forward(t.data(), b.n, b.pos, o.ids.data(), o.logits.data());
      }
  return out;
}

// The batches: sequence s lives in slot slot_of[s]. out[step][seq].
std::vector<std::vector<Output>> run_batched(const Models& m, CudaModel& model, const std::vector<Step>& steps,
                                             const std::vector<int>& slot_of, int slots, int capacity) {
  const int vocab = m.vocab();
  std::vector<std::vector<Output>> out(steps.size(), std::vector<Output>(slot_of.size()));
  model.reset(capacity, slots);
  for (size_t k = 0; k < steps.size(); ++k) {
    std::vector<int32_t> tokens;
    std::vector<SeqBlock> blocks;
    for (const Block& b : steps[k]) {
      const std::vector<int32_t> t = tokens_of(m, b);
      tokens.insert(tokens.end(), t.begin(), t.end());
      blocks.push_back({slot_of[b.seq], b.pos, b.n});
    }
    std::vector<int32_t> ids(tokens.size());
    std::vector<float> logits(tokens.size() * static_cast<size_t>(vocab));
    model.forward_batch(tokens.data(), blocks.data(), static_cast<int>(blocks.size()), ids.data(), logits.data());
    size_t row = 0;
    for (const Block& b : steps[k]) {
      Output& o = out[k][b.seq];
      o.ids.assign(ids.begin() + row, ids.begin() + row + b.n);
      o.logits.assign(logits.begin() + row * vocab, logits.begin() + (row + b.n) * vocab);
      row += b.n;
    }
  }
  return out;
}

struct Agreement {
  int rows = 0, flips = 0;
  double worst = 0;  // max |batch - single| / S over blocks
};

// One block's batched output against the single run's (see the header comment for the bounds).
void compare_block(const Output& batch, const Output& single, int vocab, double tol, bool invariant,
                   const std::string& what, Agreement& a) {
  ASSERT_EQ(batch.ids.size(), single.ids.size()) << what;
  if (invariant) {
    a.rows += static_cast<int>(single.ids.size());
    ASSERT_EQ(batch.ids, single.ids) << what << ": batch-invariant numerics, yet the batch's ids differ";
    ASSERT_TRUE(batch.logits == single.logits) << what << ": batch-invariant numerics, yet the batch's logits differ";
    return;
  }
  double scale = 0, max_err = 0;
  for (size_t i = 0; i < single.logits.size(); ++i) {
    ASSERT_TRUE(std::isfinite(batch.logits[i])) << what << ": non-finite batched logit at " << i;
    scale = std::max(scale, std::fabs(static_cast<double>(single.logits[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(batch.logits[i]) - single.logits[i]));
  }
  a.worst = std::max(a.worst, max_err / scale);
  EXPECT_LE(max_err, tol * scale) << what << ": max |batch - single| " << max_err << " > " << tol << " * scale "
                                  << scale;
  for (size_t r = 0; r < single.ids.size(); ++r) {
    ++a.rows;
    if (batch.ids[r] == single.ids[r]) continue;
    ++a.flips;
    const float* row = single.logits.data() + r * vocab;
    const float top = *std::max_element(row, row + vocab);
    EXPECT_GE(row[batch.ids[r]], top - tol * scale)
        << what << " row " << r << ": batch picked " << batch.ids[r] << " (single-run logit " << row[batch.ids[r]]
        << "), the single run picked " << single.ids[r] << " (logit " << top << "): not a near-tie";
  }
}

void expect_batches_match_single(Models& m, double tol, int prompt_base, const std::string& name) {
  const int V = m.vocab();
  std::mt19937 rng(1234);
  for (int count : {1, 2, 3, 5, 8}) {
    const std::vector<Step> steps = make_schedule(count, prompt_base, rng);
    const int capacity = max_rows_of(steps, count) + 3;
    const int slots = count + 2;  // two slots stay unused
    std::vector<int> slot_of(slots);
    std::iota(slot_of.begin(), slot_of.end(), 0);
    std::shuffle(slot_of.begin(), slot_of.end(), rng);
    slot_of.resize(count);

    const auto single = run_single(m, *m.single, steps, count, capacity);
    const auto graph = run_batched(m, *m.graph, steps, slot_of, slots, capacity);
    const auto eager = run_batched(m, *m.eager, steps, slot_of, slots, capacity);
    const auto fast = run_batched(m, *m.fast, steps, slot_of, slots, capacity);
    Agreement fast_agreement;
    Agreement a;
    int prefill_rows = 0;
    for (const Block& b : steps[0]) prefill_rows += b.n;
    for (size_t k = 0; k < steps.size(); ++k)
      for (const Block& b : steps[k]) {
        const std::string what = name + " count=" + std::to_string(count) + " step " + std::to_string(k) + " seq " +
                                  std::to_string(b.seq) + " (slot " + std::to_string(slot_of[b.seq]) + ", pos " +
                                  std::to_string(b.pos) + ", n " + std::to_string(b.n) + ")";
        // (b) graphs against eager launches: the same bits.
        ASSERT_EQ(graph[k][b.seq].ids, eager[k][b.seq].ids) << what << ": graph and eager ids differ";
        ASSERT_TRUE(graph[k][b.seq].logits == eager[k][b.seq].logits) << what << ": graph and eager logits differ";
        compare_block(graph[k][b.seq], single[k][b.seq], V, tol, true, what, a);
        compare_block(fast[k][b.seq], single[k][b.seq], V, tol, false, what + " (fast numerics)", fast_agreement);
      }
    std::printf("[ batch    ] %-8s %d sequences, %zu steps (prefill %d rows): %d rows bit-identical; fast numerics: max "
                "err %.4f of scale, %d near-tie id flips\n",
                name.c_str(), count, steps.size(), prefill_rows, a.rows, fast_agreement.worst, fast_agreement.flips);
    EXPECT_LE(fast_agreement.flips, kMaxFlipFraction * fast_agreement.rows)
        << name << " count=" << count << ": too many id flips";
  }
  const cuda::CudaGraphStats& st = m.graph->graph_stats();
  std::printf("[ graphs   ] %s batches: captures %d, updates %d, instantiations %d, replays %d\n", name.c_str(),
              st.captures, st.updates, st.instantiations, st.replays);
  EXPECT_GT(st.updates + st.replays, 0) << "no batch reused a cached graph";
  EXPECT_EQ(st.captures, st.updates + st.instantiations);
}

TEST(CudaBatch, RandomGqaMatchesSingleSequences) {
  Models& m = random_gqa();
  // 8 prompts of 100..256 tokens: the prefill has more than kMaxRows (1024) rows.
  expect_batches_match_single(m, kTolRandom, 100, "random");
}

TEST(CudaBatch, SmolLM2MatchesSingleSequences) {
  Models& m = smollm2();
  expect_batches_match_single(m, kTolSmol, 100, "SmolLM2");
}

// (c) A batch of one block on slot 2 is forward() on slot 0: the same path, the same bits.
TEST(CudaBatch, OneBlockBatchIsForwardOnItsSlot) {
  Models& m = random_gqa();
  const int V = m.vocab();
  const Block prompt{0, 0, 300}, step{0, 300, 7};
  m.single->reset(320, 1);
  m.graph->reset(320, 4);
  for (const Block& b : {prompt, step}) {
    const std::vector<int32_t> t = tokens_of(m, b);
    Output one, batch;
    one.ids.resize(b.n);
    batch.ids.resize(b.n);
    one.logits.resize(static_cast<size_t>(b.n) * V);
    batch.logits.resize(one.logits.size());
    m.single->forward(t.data(), b.n, b.pos, one.ids.data(), one.logits.data());
    const SeqBlock sb{2, b.pos, b.n};
    m.graph->forward_batch(t.data(), &sb, 1, batch.ids.data(), batch.logits.data());
    EXPECT_EQ(one.ids, batch.ids) << "pos " << b.pos << " n " << b.n;
    EXPECT_TRUE(one.logits == batch.logits) << "pos " << b.pos << " n " << b.n;
  }
}

// Refused batches name the problem (checked before any device work).
TEST(CudaBatch, BadBatchesAreRefused) {
  Models& m = random_gqa();
  m.graph->reset(64, 2);
  const int32_t t[4] = {1, 2, 3, 4};
  int32_t ids[4];
  const SeqBlock same_slot[2] = {{1, 0, 2}, {1, 0, 2}};
  EXPECT_THROW(m.graph->forward_batch(t, same_slot, 2, ids, nullptr), Error);
  const SeqBlock bad_slot[1] = {{2, 0, 4}};
  EXPECT_THROW(m.graph->forward_batch(t, bad_slot, 1, ids, nullptr), Error);
  const SeqBlock too_far[2] = {{0, 62, 2}, {1, 63, 2}};
  EXPECT_THROW(m.graph->forward_batch(t, too_far, 2, ids, nullptr), Error);
}

}  // namespace
}  // namespace cllm
