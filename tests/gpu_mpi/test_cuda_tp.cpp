// Tensor parallelism on the GPU: the sharded CudaModel (parallel/cuda/cuda_tp_model.h) at TP = N
// against the one-rank CudaModel on rank 0, under mpirun -np N (tests/gpu_mpi/run.sh):
//   - logits and ids of a prompt and of blocks of 1, 7 and 16 tokens;
//   - continuous batching: forward_batch of three sequences in KV slots 1..3 (a batched prefill of
//     prompts of different lengths, then a step of mixed block sizes);
//   - greedy AR generation, token for token.
// Every rank makes the same calls (the sharded forward is collective); rank 0 also runs the
// reference and compares. Each case runs once per all-reduce: host (staged over MPI; ranks may
// share one GPU, so this runs on any machine) always, nccl and ipc when the node has a GPU per rank
// (otherwise they are skipped, and the log says so).
//
// Models and sizes (core/shard_plan.h rules): a random GQA model with 8 heads and 4 KV heads
// (KV split at TP 2 and 4), one with 8 heads and 2 KV heads and a tied head (KV split at TP 2,
// replicated at TP 4), both at -np 2 and 4; SmolLM2 (9 heads, 3 KV heads) at -np 3 only.
//
// Tolerances. The shards round their partial o and down outputs to bf16 before the sum, which the
// one-rank model never does, and split the GEMMs differently: logits agree within tol * S (S = the
// block's max |logit|; 2e-2 for the random models, 5e-2 for SmolLM2's 30 layers) and ids agree
// except at near-ties (the TP id within tol * S of the reference row's max), at most 5% of rows. AR
// tokens must be equal up to the first near-tie, whose reference top-2 margin is printed and must
// be within tol * S.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "parallel/comm.h"
#include "parallel/cuda/cuda_tp_model.h"
#include "runtime/cuda/cuda_model.h"
#include "runtime/generate.h"
#include "runtime/random_model.h"
#include "runtime/tokenizer.h"
#include "tests/unit/test_support.h"

namespace cllm::test {
Comm& tp_world();  // test_cuda_tp_main.cpp
}

namespace cllm {
namespace {

using cuda::CudaModel;

constexpr double kTolRandom = 2e-2;
constexpr double kTolSmol = 5e-2;
constexpr double kMaxFlipFraction = 0.05;

void barrier(Comm& c) {
  int32_t x = 0;
  std::vector<int32_t> all(c.size());
  c.all_gather(&x, sizeof x, all.data(), {"test barrier"});
}

// The all-reduces this machine can run at this world size (the same answer on every rank).
std::vector<CudaAllReduce> all_reduces(Comm& c) {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;
  std::vector<CudaAllReduce> out = {CudaAllReduce::host};
  const int32_t mine = gpus >= c.local_size() ? 1 : 0;
  std::vector<int32_t> all(c.size());
  c.all_gather(&mine, sizeof mine, all.data(), {"GPU count"});
  if (std::all_of(all.begin(), all.end(), [](int32_t v) { return v == 1; })) {
    out.push_back(CudaAllReduce::nccl);
    out.push_back(CudaAllReduce::ipc);
  } else if (c.rank() == 0) {
    std::printf("[ tp       ] nccl and ipc skipped: %d GPU(s) for %d ranks on this node (they need one per rank)\n",
                gpus, c.local_size());
  }
  return out;
}

// A random checkpoint written by rank 0, visible to all ranks on return.
std::string random_checkpoint(const std::string& name, int kv_heads, bool tied, uint64_t seed) {
  Comm& c = test::tp_world();
  const std::string dir = std::string(CLLM_BINARY_DIR) + "/test_tmp/gpu_tp_" + name;
  if (c.rank() == 0) {
    ModelConfig cfg = random_model_shape("tiny");
    cfg.vocab_size = 512;
    cfg.hidden_size = 512;
    cfg.intermediate_size = 1024;
    cfg.num_layers = 2;
    cfg.num_heads = 8;
    cfg.num_kv_heads = kv_heads;
    cfg.head_dim = 64;
    cfg.tie_word_embeddings = tied;
    RandomModelOptions opts;
    opts.seed = seed;
    write_random_model(cfg, dir, opts);
  }
  barrier(c);
  return dir;
}

struct Output {
  std::vector<int32_t> ids;
  std::vector<float> logits;
};

struct Agreement {
  int rows = 0, flips = 0;
  double worst = 0;
};

// Rank 0: one block's TP output against the reference's.
void compare(const Output& tp, const Output& ref, int vocab, double tol, const std::string& what, Agreement& a) {
  ASSERT_EQ(tp.ids.size(), ref.ids.size()) << what;
  double scale = 0, max_err = 0;
  for (size_t i = 0; i < ref.logits.size(); ++i) {
    ASSERT_TRUE(std::isfinite(tp.logits[i])) << what << ": non-finite TP logit at " << i;
    scale = std::max(scale, std::fabs(static_cast<double>(ref.logits[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(tp.logits[i]) - ref.logits[i]));
  }
  a.worst = std::max(a.worst, max_err / scale);
  EXPECT_LE(max_err, tol * scale) << what << ": max |tp - ref| " << max_err << " > " << tol << " * scale " << scale;
  for (size_t r = 0; r < ref.ids.size(); ++r) {
    ++a.rows;
    const float* row = ref.logits.data() + r * vocab;
    // The TP id is the argmax of the TP logits (lowest index on ties): the max-loc picked the global pair.
    const float* trow = tp.logits.data() + r * vocab;
    EXPECT_EQ(tp.ids[r], static_cast<int32_t>(std::max_element(trow, trow + vocab) - trow)) << what << " row " << r;
    if (tp.ids[r] == ref.ids[r]) continue;
    ++a.flips;
    const float top = *std::max_element(row, row + vocab);
    EXPECT_GE(row[tp.ids[r]], top - tol * scale) << what << " row " << r << ": TP picked " << tp.ids[r]
                                                 << ", the reference " << ref.ids[r] << ": not a near-tie";
  }
}

Output forward(Model& m, const std::vector<int32_t>& tokens, int pos) {
  Output o;
  o.ids.resize(tokens.size());
  o.logits.resize(tokens.size() * static_cast<size_t>(m.config().vocab_size));
  m.forward(tokens.data(), static_cast<int>(tokens.size()), pos, o.ids.data(), o.logits.data());
  return o;
}

Output forward_batch(Model& m, const std::vector<int32_t>& tokens, const std::vector<SeqBlock>& blocks) {
  Output o;
  o.ids.resize(tokens.size());
  o.logits.resize(tokens.size() * static_cast<size_t>(m.config().vocab_size));
  m.forward_batch(tokens.data(), blocks.data(), static_cast<int>(blocks.size()), o.ids.data(), o.logits.data());
  return o;
}

std::vector<int32_t> slice(const std::vector<int32_t>& v, size_t begin, size_t n) {
  return std::vector<int32_t>(v.begin() + begin, v.begin() + begin + n);
}

// The whole comparison for one checkpoint and one all-reduce. ids: at least 200 token ids.
void check_tp(const std::string& path, const std::vector<int32_t>& ids, double tol, CudaAllReduce how,
              const std::string& name) {
  Comm& c = test::tp_world();
  const bool lead = c.rank() == 0;
  auto ckpt = open_checkpoint(path);
  const int V = ckpt->config().vocab_size;
  CudaTpOptions opts;
  opts.all_reduce = how;
  std::unique_ptr<CudaModel> tp = make_cuda_sharded_model(*ckpt, c, opts);
  std::unique_ptr<CudaModel> ref;
  if (lead) ref = cuda::make_cuda_model(*ckpt, {}, cuda::CudaModelOptions{});
  const std::string tag = name + " tp=" + std::to_string(c.size()) + " " + cuda_all_reduce_name(how);
  Agreement a;

  // Single sequence: a prompt of 40, then blocks of 1, 7, 16.
  const int cap = 256;
  tp->reset(cap, 4);
  if (lead) ref->reset(cap, 4);
  int pos = 0;
  for (int n : {40, 1, 7, 16}) {
    const std::vector<int32_t> block = slice(ids, pos, n);
    const Output t = forward(*tp, block, pos);
    if (lead) compare(t, forward(*ref, block, pos), V, tol, tag + " forward n=" + std::to_string(n), a);
    pos += n;
  }

  // A batch: three sequences in slots 3, 1, 2, prompts of 23, 57 and 9, then blocks of 16, 1 and 5.
  const int starts[3] = {0, 60, 130}, lens[3] = {23, 57, 9}, steps[3] = {16, 1, 5}, slots[3] = {3, 1, 2};
  for (int k = 0; k < 2; ++k) {
    std::vector<int32_t> tokens;
    std::vector<SeqBlock> blocks;
    for (int s = 0; s < 3; ++s) {
      const int p = k == 0 ? 0 : lens[s], n = k == 0 ? lens[s] : steps[s];
      const std::vector<int32_t> t = slice(ids, starts[s] + p, n);
      tokens.insert(tokens.end(), t.begin(), t.end());
      blocks.push_back({slots[s], p, n});
    }
    const Output t = forward_batch(*tp, tokens, blocks);
    if (lead) compare(t, forward_batch(*ref, tokens, blocks), V, tol, tag + " batch step " + std::to_string(k), a);
  }

  // Greedy AR: equal tokens up to a near-tie.
  const std::vector<int32_t> prompt = slice(ids, 0, 24);
  GenerateOptions gen;
  gen.max_new_tokens = 32;
  const int rows = kv_rows_needed(static_cast<int>(prompt.size()), gen.max_new_tokens, 1);
  tp->reset(rows);
  const GenerateResult got = generate_ar(*tp, prompt, gen);
  if (lead) {
    ref->reset(rows);
    const GenerateResult want = generate_ar(*ref, prompt, gen);
    size_t k = 0;
    while (k < got.tokens.size() && k < want.tokens.size() && got.tokens[k] == want.tokens[k]) ++k;
    if (k < std::min(got.tokens.size(), want.tokens.size())) {
      std::vector<int32_t> context = prompt;
      context.insert(context.end(), want.tokens.begin(), want.tokens.begin() + k);
      ref->reset(static_cast<int>(context.size()));
      const Output o = forward(*ref, context, 0);
      const float* row = o.logits.data() + (context.size() - 1) * V;
      std::vector<float> sorted(row, row + V);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      double scale = 0;
      for (int j = 0; j < V; ++j) scale = std::max(scale, std::fabs(static_cast<double>(row[j])));
      const double margin = sorted[0] - sorted[1];
      std::printf("[ tp       ] %s: AR differs at generated token %zu (ref %d, tp %d), reference top-2 margin %.4f "
                  "= %.4f of scale\n",
                  tag.c_str(), k, want.tokens[k], got.tokens[k], margin, margin / scale);
      EXPECT_LE(margin, tol * scale) << tag << ": AR tokens differ at " << k << " without a near-tie";
    } else {
      EXPECT_EQ(got.tokens.size(), want.tokens.size()) << tag << ": AR outputs differ in length";
    }
    std::printf("[ tp       ] %-34s %d rows, max err %.4f of scale, %d near-tie id flips, AR %zu/%zu tokens equal, "
                "graphs %s\n",
                tag.c_str(), a.rows, a.worst, a.flips, k, want.tokens.size(), tp->uses_graphs() ? "on" : "off");
    EXPECT_LE(a.flips, kMaxFlipFraction * a.rows) << tag << ": too many id flips";
  }
  barrier(c);
}

std::vector<int32_t> synthetic_ids(int vocab, int count) {
  std::vector<int32_t> ids(count);
  for (int i = 0; i < count; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % vocab);
  return ids;
}

bool world_size_in(std::initializer_list<int> sizes) {
  const int n = test::tp_world().size();
  return std::find(sizes.begin(), sizes.end(), n) != sizes.end();
}

TEST(CudaTp, RandomSplitKv) {
  if (!world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  const std::string path = random_checkpoint("kv4", 4, false, 21);
  for (CudaAllReduce how : all_reduces(test::tp_world())) check_tp(path, synthetic_ids(512, 256), kTolRandom, how, "kv4");
}

TEST(CudaTp, RandomReplicatedKvTiedHead) {
  if (!world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  const std::string path = random_checkpoint("kv2_tied", 2, true, 22);
  for (CudaAllReduce how : all_reduces(test::tp_world()))
    check_tp(path, synthetic_ids(512, 256), kTolRandom, how, "kv2_tied");
}

// SmolLM2: 9 heads and 3 KV heads split over 3 ranks only.
TEST(CudaTp, SmolLM2) {
  if (!world_size_in({3})) GTEST_SKIP() << "runs at 3 ranks (9 heads, 3 KV heads)";
  const std::string path = test::smollm2_path();
  auto ckpt = open_checkpoint(path);
  const auto tok = make_tokenizer(ckpt->tokenizer());
  std::vector<int32_t> ids;
  while (ids.size() < 256) {
    const std::vector<int32_t> more = tok->encode(
        "The history of astronomy is a long story of careful observation. Ancient people watched the sky to keep "
        "track of seasons, and they noticed that a few bright points, the planets, wandered against the stars. ",
        false);
    ids.insert(ids.end(), more.begin(), more.end());
  }
  for (CudaAllReduce how : all_reduces(test::tp_world())) check_tp(path, ids, kTolSmol, how, "SmolLM2");
}

// Shapes that do not split are refused on every rank alike, before any GPU work.
TEST(CudaTp, UnsplittableShapeIsRefused) {
  if (!world_size_in({2, 4})) GTEST_SKIP() << "runs at 2 or 4 ranks";
  Comm& c = test::tp_world();
  const std::string dir = std::string(CLLM_BINARY_DIR) + "/test_tmp/gpu_tp_heads6";
  if (c.rank() == 0) {
    ModelConfig cfg = random_model_shape("tiny");
    cfg.hidden_size = 384;
    cfg.num_heads = 6;  // not a multiple of 4
    cfg.num_kv_heads = 3;  // neither a multiple nor a divisor of 2
    cfg.head_dim = 64;
    cfg.intermediate_size = 168;
    write_random_model(cfg, dir, RandomModelOptions{});
  }
  barrier(c);
  auto ckpt = open_checkpoint(dir);
  CudaTpOptions opts;
  opts.all_reduce = CudaAllReduce::host;
  // TP 2: KV heads 3 neither divide nor are divided by 2; TP 4: heads 6 % 4 != 0.
  EXPECT_THROW(make_cuda_sharded_model(*ckpt, c, opts), Error);
  barrier(c);
}

}  // namespace
}  // namespace cllm
