// Continuous batching (Model::forward_batch): the blocks of several sequences in one pass must give
// every sequence bit for bit the ids and logits it gets alone, whatever else is in the batch:
// mixed prefill chunks, Jacobi blocks and AR tokens, in any order and any KV slots, with a slot
// reused by a new sequence after another left. That is what lets the server batch requests
// without changing any of them (runtime/scheduler.h).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>

#include "core/check.h"
#include "runtime/model.h"
#include "test_support.h"

namespace cllm {
namespace {

// One sequence's block in a step: n tokens of its stream at its current position, after which
// the position moves by `advance` (less than n for a Jacobi block of which only part is accepted:
// the next block then rewrites the KV rows that were not).
struct Block {
  int seq, n, advance;
};
using Schedule = std::vector<std::vector<Block>>;  // steps

struct Result {
  std::vector<int32_t> ids;
  std::vector<float> logits;
};
using Results = std::map<std::pair<int, int>, Result>;  // (step, seq)

// The token stream of sequence k: a prompt followed by arbitrary continuation tokens.
std::vector<int32_t> stream(int k, int vocab) {
  std::vector<int32_t> s;
  for (int i = 0; i < 200; ++i) s.push_back(static_cast<int32_t>((i * 37 + k * 101 + (i * i) % 13) % vocab));
  return s;
}

// Every sequence alone on `model` (slot 0, a reset before each sequence): its blocks in order.
Results run_alone(Model& model, const Schedule& sched, int capacity) {
  const int vocab = model.config().vocab_size;
  std::map<int, int> pos;
  Results out;
  std::map<int, std::vector<std::pair<int, Block>>> per_seq;
  for (int step = 0; step < static_cast<int>(sched.size()); ++step)
    for (const Block& b : sched[step]) per_seq[b.seq].push_back({step, b});
  for (const auto& [seq, blocks] : per_seq) {
    model.reset(capacity);
    const std::vector<int32_t> toks = stream(seq, vocab);
    int p = 0;
    for (const auto& [step, b] : blocks) {
      Result& r = out[{step, seq}];
      r.ids.resize(b.n);
      r.logits.resize(static_cast<size_t>(b.n) * vocab);
      model.forward(toks.data() + p, b.n, p, r.ids.data(), r.logits.data());
      p += b.advance;
    }
  }
  return out;
}

// The same schedule with each step as one forward_batch: blocks in reverse order of the
// schedule, sequence k in slot slot_of[k]; logits asked for on odd steps only (the argmax
// without logits runs the LM head in vocabulary chunks: its ids must not change).
Results run_batched(Model& model, const Schedule& sched, int capacity, int slots, const std::map<int, int>& slot_of) {
  const int vocab = model.config().vocab_size;
  model.reset(capacity, slots);
  std::map<int, int> pos;
  Results out;
  for (int step = 0; step < static_cast<int>(sched.size()); ++step) {
    std::vector<Block> blocks(sched[step].rbegin(), sched[step].rend());
    std::vector<SeqBlock> sb;
    std::vector<int32_t> tokens;
    for (const Block& b : blocks) {
      const std::vector<int32_t> toks = stream(b.seq, vocab);
      sb.push_back({slot_of.at(b.seq), pos[b.seq], b.n});
      tokens.insert(tokens.end(), toks.begin() + pos[b.seq], toks.begin() + pos[b.seq] + b.n);
    }
    const bool with_logits = step % 2 == 1;
    std::vector<int32_t> ids(tokens.size());
    std::vector<float> logits(with_logits ? tokens.size() * vocab : 0);
    model.forward_batch(tokens.data(), sb.data(), static_cast<int>(sb.size()), ids.data(),
                        with_logits ? logits.data() : nullptr);
    size_t row = 0;
    for (const Block& b : blocks) {
      Result& r = out[{step, b.seq}];
      r.ids.assign(ids.begin() + row, ids.begin() + row + b.n);
      if (with_logits)
        r.logits.assign(logits.begin() + row * vocab, logits.begin() + (row + b.n) * vocab);
      row += b.n;
      pos[b.seq] += b.advance;
    }
  }
  return out;
}

void expect_same(const Results& alone, const Results& batched) {
  ASSERT_EQ(alone.size(), batched.size());
  for (const auto& [key, b] : batched) {
    const Result& a = alone.at(key);
    EXPECT_EQ(a.ids, b.ids) << "step " << key.first << " sequence " << key.second;
    if (!b.logits.empty()) {
      ASSERT_EQ(a.logits.size(), b.logits.size());
      EXPECT_EQ(0, std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)))
          << "logits differ at step " << key.first << " sequence " << key.second;
    }
  }
}

// Sequences 0-3 start together (prefills of one chunk, a 100-token prompt in two chunks of 64 +
// 36 beside the others' decoding), decode with Jacobi blocks of 1..16 partly accepted; sequence 0
// leaves after step 3 and sequence 4 takes its slot with a fresh prefill.
Schedule mixed_schedule() {
  return {
      {{0, 5, 5}, {1, 64, 64}, {2, 17, 17}},
      {{0, 1, 1}, {1, 36, 36}, {2, 16, 5}, {3, 40, 40}},
      {{0, 8, 3}, {1, 4, 4}, {2, 16, 16}, {3, 1, 1}},
      {{0, 8, 8}, {1, 1, 1}, {2, 2, 1}, {3, 16, 7}},
      {{4, 30, 30}, {1, 16, 2}, {2, 1, 1}, {3, 16, 16}},
      {{4, 16, 9}, {1, 16, 16}, {3, 3, 3}},
  };
}

const std::map<int, int> kSlots = {{0, 3}, {1, 0}, {2, 4}, {3, 1}, {4, 3}};  // 4 reuses 0's slot

TEST(BatchForward, TinyRandomEqualsAlone) {
  for (uint64_t seed : {7, 8}) {
    auto ckpt = open_checkpoint(test::random_model_dir("tiny", seed));
    auto alone = make_model(*ckpt, Device::Cpu);
    auto batched = make_model(*ckpt, Device::Cpu);
    const Schedule sched = mixed_schedule();
    expect_same(run_alone(*alone, sched, 160), run_batched(*batched, sched, 160, 5, kSlots));
  }
}

TEST(BatchForward, SmolLM2EqualsAlone) {
  auto ckpt = open_checkpoint(test::smollm2_path());
  auto alone = make_model(*ckpt, Device::Cpu);
  auto batched = make_model(*ckpt, Device::Cpu);
  const Schedule sched = {
      {{0, 7, 7}, {1, 64, 64}, {2, 3, 3}},
      {{0, 16, 4}, {1, 20, 20}, {2, 1, 1}, {3, 12, 12}},
      {{0, 16, 16}, {1, 8, 3}, {3, 4, 4}, {4, 9, 9}},
  };
  const std::map<int, int> slots = {{0, 2}, {1, 0}, {2, 1}, {3, 3}, {4, 1}};  // 4 reuses 2's slot
  expect_same(run_alone(*alone, sched, 128), run_batched(*batched, sched, 128, 4, slots));
}

TEST(BatchForward, RefusesBadBatches) {
  auto ckpt = open_checkpoint(test::random_model_dir("tiny", 7));
  auto model = make_model(*ckpt, Device::Cpu);
  model->reset(32, 2);
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  std::vector<int32_t> ids(4);
  const SeqBlock same_slot[] = {{0, 0, 2}, {0, 5, 2}};
  EXPECT_THROW(model->forward_batch(tokens.data(), same_slot, 2, ids.data(), nullptr), Error);
  const SeqBlock bad_slot[] = {{2, 0, 4}};
  EXPECT_THROW(model->forward_batch(tokens.data(), bad_slot, 1, ids.data(), nullptr), Error);
  const SeqBlock past_end[] = {{1, 30, 4}};
  EXPECT_THROW(model->forward_batch(tokens.data(), past_end, 1, ids.data(), nullptr), Error);
  const SeqBlock ok[] = {{1, 0, 1}, {0, 0, 3}};
  EXPECT_NO_THROW(model->forward_batch(tokens.data(), ok, 2, ids.data(), nullptr));
}

}  // namespace
}  // namespace cllm
