// Continuous batching under tensor parallelism (run at -np 1, 2 and 4), always against the
// one-rank model run without batching: a batched forward over the TP group (CoordinatorModel
// broadcasts the batch, every rank runs forward_batch, the vote covers every block) gives the ids
// of the one-rank model forwarding each block alone, and its logits within 1e-4 of the row's
// largest logit (bit for bit at one rank, where the comparison is batched against unbatched);
// each block's ids equal those of the same block forwarded alone through the group; and the
// Scheduler over the group with 3 slots decodes what the Scheduler over the one-rank model decodes
// with one slot (one sequence at a time).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>

#include "mpi_support.h"
#include "parallel/coordinator.h"
#include "parallel/tp_model.h"
#include "runtime/scheduler.h"

namespace cllm {
namespace {


struct Batch {
  std::vector<SeqBlock> blocks;
  std::vector<int32_t> tokens;
};

// Three steps over 4 slots: prefills of several sizes (one of 64 rows), then decode blocks of
// 1..16 rows beside a second prompt chunk; sequences sit in slots 2, 0, 3, 1.
std::vector<Batch> batches(int vocab) {
  const int slot[] = {2, 0, 3, 1};
  const std::vector<std::vector<std::pair<int, int>>> steps = {
      {{0, 9}, {1, 64}, {2, 3}},            // (sequence, rows)
      {{0, 16}, {1, 20}, {2, 1}, {3, 40}},  // sequence 1's second chunk; 3 joins
      {{3, 4}, {0, 1}, {2, 8}, {1, 16}},
  };
  std::map<int, int> pos;
  std::vector<Batch> out;
  for (const auto& step : steps) {
    Batch b;
    for (const auto& [seq, n] : step) {
      b.blocks.push_back({slot[seq], pos[seq], n});
      for (int i = 0; i < n; ++i) b.tokens.push_back(static_cast<int32_t>((seq * 131 + (pos[seq] + i) * 37) % vocab));
      pos[seq] += n;
    }
    out.push_back(std::move(b));
  }
  return out;
}

void expect_batches_match(Model& ref, Model& tp, bool exact) {
  const int vocab = ref.config().vocab_size;
  const std::vector<Batch> steps = batches(vocab);
  ref.reset(128, 4);
  tp.reset(128, 4);
  for (const Batch& b : steps) {
    const int rows = static_cast<int>(b.tokens.size()), count = static_cast<int>(b.blocks.size());
    std::vector<int32_t> ref_ids(rows), tp_ids(rows), plain_ids(rows);
    std::vector<float> ref_logits(static_cast<size_t>(rows) * vocab), tp_logits(ref_logits.size());
    for (int k = 0, row = 0; k < count; row += b.blocks[k++].n)  // each block alone: a batch of one
      ref.forward_batch(b.tokens.data() + row, &b.blocks[k], 1, ref_ids.data() + row,
                        ref_logits.data() + static_cast<size_t>(row) * vocab);
    tp.forward_batch(b.tokens.data(), b.blocks.data(), count, tp_ids.data(), tp_logits.data());
    EXPECT_EQ(ref_ids, tp_ids);
    EXPECT_LE(test::max_relative_row_error(ref_logits, tp_logits, rows, vocab), 1e-4);
    if (exact) {
      EXPECT_EQ(0, std::memcmp(ref_logits.data(), tp_logits.data(), ref_logits.size() * sizeof(float)));
    }
  }
  // Each sequence alone through the group (slot 0, its blocks in order) predicts what it did in
  // the batches, bit for bit: the all-reduce sums each element in rank order whatever its size.
  std::vector<std::vector<int32_t>> batched_ids(steps.size());
  tp.reset(128, 4);
  for (size_t s = 0; s < steps.size(); ++s) {
    const Batch& b = steps[s];
    batched_ids[s].resize(b.tokens.size());
    tp.forward_batch(b.tokens.data(), b.blocks.data(), static_cast<int>(b.blocks.size()), batched_ids[s].data(),
                     nullptr);
  }
  for (int32_t slot = 0; slot < 4; ++slot) {
    tp.reset(128, 1);
    for (size_t s = 0; s < steps.size(); ++s) {
      const Batch& b = steps[s];
      for (size_t k = 0, row = 0; k < b.blocks.size(); row += b.blocks[k++].n) {
        if (b.blocks[k].slot != slot) continue;
        std::vector<int32_t> ids(b.blocks[k].n);
        tp.forward(b.tokens.data() + row, b.blocks[k].n, b.blocks[k].pos, ids.data(), nullptr);
        EXPECT_EQ(ids, std::vector<int32_t>(batched_ids[s].begin() + row, batched_ids[s].begin() + row + ids.size()))
            << "slot " << slot << " step " << s;
      }
    }
  }
}

// Greedy Jacobi, AR and one sampled sequence through the Scheduler, `slots` slots for 5 sequences.
std::map<uint64_t, std::vector<int32_t>> schedule(Model& model, int slots) {
  Scheduler sched(model, {slots, 8, 160});
  const int vocab = model.config().vocab_size;
  const int prompt_len[] = {5, 70, 12, 3, 30}, block[] = {4, 16, 1, 8, 2};
  for (int i = 0; i < 5; ++i) {
    SequenceSpec s;
    for (int t = 0; t < prompt_len[i]; ++t) s.prompt.push_back((t * 29 + i * 7 + 1) % vocab);
    s.gen.max_new_tokens = 12 + i;
    s.jacobi.block = block[i];
    s.jacobi.seed = static_cast<uint64_t>(i);
    if (i == 2) s.sampling = {0.8f, 0.9f, 5};
    sched.submit(static_cast<uint64_t>(i + 1), s);
  }
  std::map<uint64_t, std::vector<int32_t>> out;
  for (int steps = 0; !sched.idle() && steps < 500; ++steps)
    sched.step([&](const SequenceEvent& ev) {
      out[ev.id].insert(out[ev.id].end(), ev.tokens.begin(), ev.tokens.end());
      return true;
    });
  return out;
}

void check(const std::string& path) {
  test::compare_with_one_rank(path, [](Model& ref, Model& tp) {
    expect_batches_match(ref, tp, test::world().size() == 1);
    const auto want = schedule(ref, 1);
    ASSERT_EQ(want.size(), 5u);
    EXPECT_EQ(schedule(tp, 3), want);
  });
}

TEST(TpBatch, RandomSplitKv) {
  if (!test::world_size_in({1, 2, 4})) GTEST_SKIP() << "runs at 1, 2 or 4 ranks";
  check(test::mpi_model_dir("kv4"));
}

TEST(TpBatch, RandomReplicatedKvTiedHead) {
  if (!test::world_size_in({1, 2, 4})) GTEST_SKIP() << "runs at 1, 2 or 4 ranks";
  check(test::mpi_model_dir("kv2_tied"));
}

}  // namespace
}  // namespace cllm
