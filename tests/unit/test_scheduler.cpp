// The continuous-batching scheduler: one forward_batch per step over every active sequence (each
// in its own KV slot, long prompts prefilled in chunks beside the others' decoding); a
// sequence's output must not depend on what else runs beside it, greedy outputs must equal
// generate_ar, and admission, cancellation and the sink's "stop" must free slots for reuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "runtime/generate.h"
#include "runtime/scheduler.h"
#include "test_support.h"

namespace cllm {
namespace {

struct Tiny {
  std::unique_ptr<CheckpointReader> ckpt;
  std::unique_ptr<Model> model;
};

Tiny& tiny() {
  static Tiny t = [] {
    Tiny l;
    l.ckpt = open_checkpoint(test::random_model_dir("tiny", 7));
    l.model = make_model(*l.ckpt, Device::Cpu);
    return l;
  }();
  return t;
}

SequenceSpec spec(int prompt_len, int salt, int max_new, int block, float temperature = 0) {
  SequenceSpec s;
  const int vocab = tiny().model->config().vocab_size;
  for (int i = 0; i < prompt_len; ++i) s.prompt.push_back((i * 31 + salt * 17 + 3) % vocab);
  s.gen.max_new_tokens = max_new;
  s.jacobi.block = block;
  s.jacobi.seed = static_cast<uint64_t>(salt);
  s.sampling.temperature = temperature;
  s.sampling.top_p = 0.9f;
  s.sampling.seed = static_cast<uint64_t>(salt);
  return s;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string finish;
  int events = 0;
  int accepted_pool = 0;  // tokens verified candidates gave (text or recycled)
};

// Runs specs[i] as id i + 1 through one scheduler until all finish.
std::map<uint64_t, Outcome> run_all(const std::vector<SequenceSpec>& specs, SchedulerLimits limits,
                                    const std::function<bool(Scheduler&, const SequenceEvent&)>& hook = {},
                                    Model& model = *tiny().model) {
  Scheduler sched(model, limits);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_TRUE(sched.submit(i + 1, specs[i]));
  std::map<uint64_t, Outcome> out;
  for (int steps = 0; !sched.idle(); ++steps) {
    EXPECT_LE(sched.active(), limits.max_batch);
    sched.step([&](const SequenceEvent& ev) {
      Outcome& o = out[ev.id];
      o.tokens.insert(o.tokens.end(), ev.tokens.begin(), ev.tokens.end());
      ++o.events;
      o.accepted_pool += ev.accepted_pool + ev.accepted_recycled;
      if (ev.done) o.finish = ev.finish_reason;
      return hook ? hook(sched, ev) : true;
    });
    // Prefill gets what decoding leaves of the budget, or one chunk (at most the budget) if more.
    const StepStats& st = sched.last_step();
    if (limits.max_step_rows > 0)
      EXPECT_LE(st.prefill_rows, std::max(std::min(kMaxBlockRows, limits.max_step_rows),
                                          limits.max_step_rows - (st.rows - st.prefill_rows)))
          << "prefill past the step budget";
    EXPECT_LT(steps, 1000) << "the scheduler does not finish";
    if (steps >= 1000) break;
  }
  return out;
}

SchedulerLimits limits(int batch, int queue = 64, int step_rows = 0) { return {batch, queue, 256, step_rows}; }

// The row budget every planner shares: decoding first, then prefill chunks in order, at least one
// chunk's worth, cut to what is left, and nothing once it is spent.
TEST(PrefillBudget, DecodingFirstThenChunksCutToWhatIsLeft) {
  PrefillBudget unlimited(0, 5000);
  EXPECT_EQ(unlimited.take(1000), kMaxBlockRows);
  EXPECT_EQ(unlimited.take(7), 7);

  PrefillBudget b(512, 400);  // 112 rows left beside the blocks
  EXPECT_EQ(b.take(1000), kMaxBlockRows);
  EXPECT_EQ(b.take(30), 30);
  EXPECT_EQ(b.take(1000), 18);
  EXPECT_EQ(b.take(1), 0) << "spent: later chunks wait";

  PrefillBudget full(512, 512);  // decoding fills the budget: one chunk still runs
  EXPECT_EQ(full.take(1000), kMaxBlockRows);
  EXPECT_EQ(full.take(10), 0);

  PrefillBudget small(8, 100);  // a budget below one chunk: all of it
  EXPECT_EQ(small.take(1000), 8);
  EXPECT_EQ(small.take(1000), 0);
  EXPECT_EQ(PrefillBudget(512, 0).take(0), 0) << "nothing left to prefill";
}

TEST(Scheduler, ConcurrentOutputsEqualAloneAndAr) {
  // Prompts past kMaxBlockRows exercise chunked prefill (over several steps, beside the others).
  std::vector<SequenceSpec> specs = {spec(5, 1, 20, 4),  spec(11, 2, 17, 16), spec(70, 3, 12, 8),
                                     spec(3, 4, 25, 1),  spec(9, 5, 15, 16, 0.8f), spec(130, 6, 9, 32),
                                     spec(20, 7, 14, 2)};
  // Lookahead: candidates verified beside the block (branch rows and KV moves in the batch).
  for (auto [salt, block, candidates] : {std::tuple{8, 4, 3}, std::tuple{9, 1, 5}}) {
    specs.push_back(spec(24, salt, 30, block));
    specs.back().jacobi.candidates = candidates;
    specs.back().jacobi.ngram = 4;
  }
  const auto together = run_all(specs, limits(3));
  EXPECT_GT(together.at(specs.size() - 1).accepted_pool + together.at(specs.size()).accepted_pool, 0)
      << "no candidate was verified: the test does not exercise lookahead";
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto alone = run_all({specs[i]}, limits(1));
    const Outcome& t = together.at(i + 1);
    EXPECT_EQ(t.tokens, alone.at(1).tokens) << "sequence " << i;
    EXPECT_EQ(t.finish, "length");
    EXPECT_EQ(static_cast<int>(t.tokens.size()), specs[i].gen.max_new_tokens);
    if (specs[i].sampling.temperature == 0 && specs[i].prompt.size() <= kMaxBlockRows) {
      // Greedy Jacobi = greedy AR (a prompt within one invariant chunk prefills identically).
      GenerateOptions gen = specs[i].gen;
      Model& m = *tiny().model;
      m.reset(256);
      EXPECT_EQ(t.tokens, generate_ar(m, specs[i].prompt, gen).tokens) << "sequence " << i;
    }
  }
}

TEST(Scheduler, SampledDependsOnSeed) {
  const auto a = run_all({spec(9, 5, 15, 16, 1.5f)}, limits(1));
  SequenceSpec other = spec(9, 5, 15, 16, 1.5f);
  other.sampling.seed = 99;
  const auto b = run_all({other}, limits(1));
  EXPECT_NE(a.at(1).tokens, b.at(1).tokens);
}

TEST(Scheduler, StopIdCutsBeforeIt) {
  SequenceSpec s = spec(7, 3, 20, 8);
  const auto free_run = run_all({s}, limits(1));
  s.gen.stop_ids = {free_run.at(1).tokens[5]};
  const auto stopped = run_all({s}, limits(1));
  const auto& full = free_run.at(1).tokens;
  const size_t first = std::find(full.begin(), full.end(), s.gen.stop_ids[0]) - full.begin();
  EXPECT_EQ(stopped.at(1).finish, "stop");
  EXPECT_EQ(stopped.at(1).tokens, std::vector<int32_t>(full.begin(), full.begin() + first));
}

TEST(Scheduler, CancelAndSinkStopFreeSlots) {
  std::vector<SequenceSpec> specs = {spec(5, 1, 30, 4), spec(6, 2, 30, 4), spec(7, 3, 12, 4), spec(8, 4, 12, 4)};
  // Sequence 1 is cancelled after its first event, sequence 2 refused by the sink; 3 and 4 were
  // queued behind them (batch 2) and must still run, unchanged.
  const auto out = run_all(specs, limits(2), [](Scheduler& s, const SequenceEvent& ev) {
    if (ev.id == 1) s.cancel(1);
    return ev.id != 2;
  });
  EXPECT_EQ(out.at(1).events, 1);
  EXPECT_EQ(out.at(2).events, 1);
  for (uint64_t id : {3, 4}) EXPECT_EQ(out.at(id).tokens, run_all({specs[id - 1]}, limits(1)).at(1).tokens);
}

TEST(Scheduler, AdmissionLimits) {
  Scheduler sched(*tiny().model, {1, 2, 64});
  EXPECT_EQ(sched.check(spec(0, 1, 4, 4)), "the prompt is empty");
  EXPECT_NE(sched.check(spec(40, 1, 20, 8)), "");  // 40 + 20 + 8 > 64
  EXPECT_EQ(sched.check(spec(30, 1, 20, 8)), "");
  EXPECT_NE(sched.check(spec(5, 1, 4, 65)), "");
  // 5 + INT32_MAX + 4 rows: counted in 64 bits, so it is refused, not wrapped to a negative count.
  EXPECT_NE(sched.check(spec(5, 1, INT32_MAX, 4)).find("2147483647"), std::string::npos);
  EXPECT_THROW(sched.submit(1, spec(40, 1, 20, 8)), std::exception);
  // Room is the free slot (taken at the next step) plus the queue of 2, as the engine counts it.
  EXPECT_TRUE(sched.submit(1, spec(5, 1, 4, 4)));
  EXPECT_TRUE(sched.submit(2, spec(5, 2, 4, 4)));
  EXPECT_TRUE(sched.submit(3, spec(5, 3, 4, 4)));
  EXPECT_FALSE(sched.submit(4, spec(5, 4, 4, 4)));  // slot and queue taken
  sched.step([](const SequenceEvent&) { return true; });
  EXPECT_EQ(sched.active(), 1);
  EXPECT_EQ(sched.waiting(), 2);
  EXPECT_EQ(sched.kv_rows_in_use(), 6);  // prompt + the first token
  EXPECT_FALSE(sched.submit(4, spec(5, 4, 4, 4)));
  sched.cancel(1);  // frees the slot: room for one more
  EXPECT_TRUE(sched.submit(4, spec(5, 4, 4, 4)));
}

TEST(Scheduler, NoQueueStillAdmitsIntoFreeSlots) {
  // --max-queue 0: the engine admits max_batch requests; the scheduler must take them all.
  Scheduler sched(*tiny().model, {2, 0, 64});
  EXPECT_TRUE(sched.submit(1, spec(5, 1, 4, 4)));
  EXPECT_TRUE(sched.submit(2, spec(5, 2, 4, 4)));
  EXPECT_FALSE(sched.submit(3, spec(5, 3, 4, 4)));
  sched.step([](const SequenceEvent&) { return true; });
  EXPECT_EQ(sched.active(), 2);
}

// A Model that records every call and predicts a fixed function of (token, position).
class CountingModel final : public Model {
 public:
  explicit CountingModel(const ModelConfig& cfg) : cfg_(cfg) {}
  const ModelConfig& config() const override { return cfg_; }
  void reset(int max_tokens, int slots) override {
    resets.push_back({max_tokens, slots});
    written.assign(slots, 0);
  }
  void forward(const int32_t*, int, int, int32_t*, float*) override { ++plain_forwards; }
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override {
    calls.emplace_back(blocks, blocks + count);
    const int rows = check_batch_args(cfg_, tokens, blocks, count, resets.back().first, resets.back().second);
    for (int b = 0; b < count; ++b) {  // a block needs KV for [0, pos): no position skipped
      EXPECT_LE(blocks[b].pos, written[blocks[b].slot]) << "slot " << blocks[b].slot;
      written[blocks[b].slot] = blocks[b].pos + blocks[b].n;
    }
    for (int b = 0, row = 0; b < count; row += blocks[b++].n)
      for (int i = 0; i < blocks[b].n; ++i)
        out_ids[row + i] = (tokens[row + i] * 7 + blocks[b].pos + i + 1) % cfg_.vocab_size;
    if (logits) std::fill(logits, logits + static_cast<size_t>(rows) * cfg_.vocab_size, 0.0f);
  }
  double step_bytes(int) const override { return 0; }

  std::vector<std::pair<int, int>> resets;     // (max_tokens, slots)
  std::vector<std::vector<SeqBlock>> calls;    // forward_batch calls
  std::vector<int> written;                    // per slot: KV rows written so far (the last block's end)
  int plain_forwards = 0;

 private:
  ModelConfig cfg_;
};

TEST(Scheduler, OneForwardPerStepWithEverySequence) {
  CountingModel model(tiny().model->config());
  const SchedulerLimits lim = limits(4);
  Scheduler sched(model, lim);
  ASSERT_EQ(model.resets, (std::vector<std::pair<int, int>>{{lim.max_context, lim.max_batch}}));
  // A 150-token prompt prefills in chunks of 64, 64 and 22 beside the others; one samples.
  const std::vector<SequenceSpec> specs = {spec(150, 1, 6, 8), spec(3, 2, 20, 4), spec(9, 3, 5, 1, 0.7f),
                                           spec(20, 4, 7, 16), spec(5, 5, 9, 2), spec(70, 6, 4, 8)};
  for (size_t i = 0; i < specs.size(); ++i) ASSERT_TRUE(sched.submit(i + 1, specs[i]));
  std::map<uint64_t, int> events;
  std::set<int32_t> slots_used;
  for (int steps = 0; !sched.idle(); ++steps) {
    ASSERT_LT(steps, 200);
    const int expected = std::min(lim.max_batch, sched.active() + sched.waiting());
    const size_t calls = model.calls.size();
    sched.step([&](const SequenceEvent& ev) {
      ++events[ev.id];
      return true;
    });
    ASSERT_EQ(model.calls.size(), calls + 1) << "step " << steps;
    const std::vector<SeqBlock>& batch = model.calls.back();
    EXPECT_EQ(static_cast<int>(batch.size()), expected) << "step " << steps;
    EXPECT_EQ(sched.last_step().sequences, expected);
    int rows = 0;
    for (const SeqBlock& b : batch) {
      EXPECT_LE(b.n, kMaxBlockRows);
      rows += b.n;
      slots_used.insert(b.slot);
    }
    EXPECT_EQ(sched.last_step().rows, rows);
    if (steps == 0) {
      // Admission order; sequence 1's first prompt chunk, the others' whole prompts.
      EXPECT_EQ(batch[0].n, 64);
      EXPECT_EQ(batch[0].pos, 0);
      EXPECT_EQ(batch[1].n, 3);
      EXPECT_EQ(sched.last_step().prefill_rows, 64 + 3 + 9 + 20);
    }
    if (steps == 1) {
      EXPECT_EQ(batch[0].pos, 64);
    }
    if (steps == 2) {
      EXPECT_EQ(batch[0].n, 150 - 128);
    }
  }
  EXPECT_EQ(model.plain_forwards, 0);
  EXPECT_EQ(slots_used, (std::set<int32_t>{0, 1, 2, 3}));  // 6 sequences over 4 slots: reused
  EXPECT_EQ(events.size(), specs.size());
  EXPECT_EQ(sched.last_step().sequences, 1);  // the last step ran the last sequence alone
}

TEST(Scheduler, LongPrefillDoesNotHoldOthersBack) {
  CountingModel model(tiny().model->config());
  Scheduler sched(model, limits(2));
  ASSERT_TRUE(sched.submit(1, spec(200, 1, 4, 4)));
  ASSERT_TRUE(sched.submit(2, spec(4, 2, 3, 1)));
  std::map<uint64_t, std::vector<int>> event_steps;
  for (int step = 0; step < 4; ++step)
    sched.step([&](const SequenceEvent& ev) {
      event_steps[ev.id].push_back(step);
      return true;
    });
  // Sequence 2 decodes one token per step from the first step; sequence 1 needs 4 chunks
  // (64 x 3 + 8) before its first token.
  EXPECT_EQ(event_steps[2], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(event_steps[1], (std::vector<int>{3}));
}

TEST(Scheduler, StepBudgetDecodeFirstThenPrefillInOrder) {
  CountingModel model(tiny().model->config());
  const SchedulerLimits lim = limits(4, 64, 100);
  // Sequence 1 decodes (8 rows a step) while long prompts arrive; 5 waits for a slot.
  const std::vector<SequenceSpec> specs = {spec(3, 1, 60, 8),       spec(150, 2, 5, 8), spec(130, 3, 6, 16),
                                           spec(90, 4, 5, 4, 0.7f), spec(70, 5, 5, 8)};
  Scheduler sched(model, lim);
  for (size_t i = 0; i < specs.size(); ++i) ASSERT_TRUE(sched.submit(i + 1, specs[i]));
  std::set<uint64_t> decoding;  // had their first token, not done
  std::map<uint64_t, Outcome> out;
  int prefill_total = 0, deferred_steps = 0;
  for (int steps = 0; !sched.idle(); ++steps) {
    ASSERT_LT(steps, 200);
    const int admitted = std::min(lim.max_batch, sched.active() + sched.waiting());
    const int prefilling = admitted - static_cast<int>(decoding.size());
    std::set<uint64_t> advanced;
    sched.step([&](const SequenceEvent& ev) {
      advanced.insert(ev.id);
      Outcome& o = out[ev.id];
      o.tokens.insert(o.tokens.end(), ev.tokens.begin(), ev.tokens.end());
      if (ev.done) o.finish = ev.finish_reason;
      return true;
    });
    const StepStats& st = sched.last_step();
    // Decode rows (at most 8 + 8 + 16 + 1 here) stay under the budget: the whole step does.
    EXPECT_LE(st.rows, lim.max_step_rows) << "step " << steps;
    for (uint64_t id : decoding) EXPECT_TRUE(advanced.count(id)) << "decoding sequence " << id << " skipped, step " << steps;
    if (prefilling > 0) EXPECT_GT(st.prefill_rows, 0) << "prefill stalled, step " << steps;
    // A deferred prompt means the budget was used up: a chunk was shortened or did not fit.
    if (st.prefill_deferred > 0) {
      ++deferred_steps;
      EXPECT_EQ(st.rows, lim.max_step_rows) << "step " << steps;
    }
    for (const SeqBlock& b : model.calls.back()) EXPECT_LE(b.n, kMaxBlockRows);
    prefill_total += st.prefill_rows;
    for (uint64_t id : advanced) {
      if (out[id].finish.empty()) decoding.insert(id);
      else decoding.erase(id);
    }
  }
  EXPECT_GT(deferred_steps, 0) << "the budget never bound: the test does not test it";
  int prompts = 0;
  for (const SequenceSpec& sp : specs) prompts += static_cast<int>(sp.prompt.size());
  EXPECT_EQ(prefill_total, prompts);  // every prompt row forwarded exactly once
  for (size_t i = 0; i < specs.size(); ++i) {
    CountingModel alone_model(tiny().model->config());
    EXPECT_EQ(out.at(i + 1).tokens, run_all({specs[i]}, limits(1), {}, alone_model).at(1).tokens) << "sequence " << i;
    EXPECT_EQ(out.at(i + 1).finish, "length");
  }
}

TEST(Scheduler, StepBudgetBelowDecodeRowsStillPrefills) {
  CountingModel model(tiny().model->config());
  Scheduler sched(model, limits(2, 64, 4));
  ASSERT_TRUE(sched.submit(1, spec(3, 1, 6, 8)));
  ASSERT_TRUE(sched.submit(2, spec(20, 2, 3, 4)));
  std::map<uint64_t, std::vector<int>> event_steps;
  std::vector<StepStats> stats;
  for (int step = 0; !sched.idle(); ++step) {
    ASSERT_LT(step, 100);
    sched.step([&](const SequenceEvent& ev) {
      event_steps[ev.id].push_back(step);
      return true;
    });
    stats.push_back(sched.last_step());
  }
  // Step 0: both prefill, sequence 2's chunk shortened to the 1 row that 3 leaves of 4.
  EXPECT_EQ(stats[0].rows, 4);
  EXPECT_EQ(stats[0].prefill_rows, 4);
  EXPECT_EQ(model.calls[0][1].n, 1);
  // Sequence 1 then decodes 8 rows a step, over the budget of 4: it runs every step, and sequence
  // 2 still prefills the budget's 4 rows beside it (19 rows left: 4, 4, 4, 4, 3), so its first
  // token comes at step 5 instead of after sequence 1 is done.
  ASSERT_GE(event_steps[1].size(), 6u);
  for (int step = 0; step < 6; ++step) EXPECT_EQ(event_steps[1][step], step);
  for (int step = 1; step < 5; ++step) {
    EXPECT_EQ(stats[step].prefill_rows, 4) << "step " << step;
    EXPECT_EQ(stats[step].rows, 12) << "step " << step;
  }
  EXPECT_EQ(stats[5].prefill_rows, 3);
  EXPECT_EQ(event_steps[2].front(), 5);
  CountingModel alone_model(tiny().model->config());
  EXPECT_EQ(static_cast<int>(event_steps[2].size()),
            run_all({spec(20, 2, 3, 4)}, limits(1), {}, alone_model).at(1).events);
}

TEST(Scheduler, StepBudgetKeepsOutputsExact) {
  // The real model: prefill chunks cut short by the budget (at positions that depend on what
  // else runs) must give the same tokens, bit for bit, as running alone in chunks of 64.
  const std::vector<SequenceSpec> specs = {spec(5, 1, 20, 4),  spec(11, 2, 17, 16), spec(70, 3, 12, 8),
                                           spec(3, 4, 25, 1),  spec(9, 5, 15, 16, 0.8f), spec(130, 6, 9, 32),
                                           spec(20, 7, 14, 2)};
  std::vector<std::vector<int32_t>> alone;
  for (const SequenceSpec& sp : specs) alone.push_back(run_all({sp}, limits(1)).at(1).tokens);
  for (int budget : {1, 7, 45, 100}) {
    const auto together = run_all(specs, limits(3, 64, budget));
    for (size_t i = 0; i < specs.size(); ++i)
      EXPECT_EQ(together.at(i + 1).tokens, alone[i]) << "budget " << budget << ", sequence " << i;
    // Alone with a budget under one chunk: the 130-token prompt prefills `budget` rows a step.
    EXPECT_EQ(run_all({specs[5]}, limits(1, 64, budget)).at(1).tokens, alone[5]) << "budget " << budget;
  }
}

TEST(Scheduler, AdaptiveBlocksVaryAndOutputsEqualAr) {
  // --block auto: every step the policy picks each adaptive sequence's block for the whole batch
  // (frozen cost model: each extra row costs 5% of a step). Pinned, AR and sampled sequences run
  // beside them. The sizes change from step to step; greedy outputs still equal generate_ar.
  std::vector<SequenceSpec> specs = {spec(5, 1, 30, 16), spec(11, 2, 27, 16), spec(70, 3, 22, 16),
                                     spec(3, 4, 25, 1),  spec(9, 5, 15, 16, 0.8f), spec(20, 7, 24, 16)};
  for (int i : {0, 1, 2, 5}) specs[i].jacobi.adaptive = true;
  StepCostModel cost;
  for (int n = 1; n <= 8192; n *= 2) cost.set_knot(n, 1.0 + 0.05 * (n - 1));
  cost.set_learning_rate(0);
  for (int step_rows : {0, 40}) {
    Scheduler sched(*tiny().model, limits(4, 64, step_rows), cost);
    for (size_t i = 0; i < specs.size(); ++i) ASSERT_TRUE(sched.submit(i + 1, specs[i]));
    std::map<uint64_t, std::vector<int32_t>> out;
    std::set<int> sizes;
    for (int steps = 0; !sched.idle() && steps < 1000; ++steps) {
      sched.step([&](const SequenceEvent& ev) {
        out[ev.id].insert(out[ev.id].end(), ev.tokens.begin(), ev.tokens.end());
        return true;
      });
      for (int n = 0; n <= kMaxBlockRows; ++n)
        if (sched.last_step().decode_blocks[n]) sizes.insert(n);
    }
    EXPECT_TRUE(sched.idle());
    std::string seen;
    for (int n : sizes) seen += " " + std::to_string(n);
    // Fixed blocks would be 1 and 16 only (the caps): the policy picked at least two others.
    EXPECT_GE(std::count_if(sizes.begin(), sizes.end(), [](int n) { return n != 1 && n != 16; }), 2)
        << "step rows " << step_rows << ", sizes" << seen;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].sampling.temperature > 0) continue;
      Model& m = *tiny().model;
      m.reset(256);
      EXPECT_EQ(out[i + 1], generate_ar(m, specs[i].prompt, specs[i].gen).tokens)
          << "sequence " << i << ", step rows " << step_rows;
    }
    sched.cancel(0);
  }
}

}  // namespace
}  // namespace cllm

namespace cllm {
namespace {

TEST(Scheduler, LogprobsOfSampledTokens) {
  SequenceSpec s = spec(9, 5, 12, 1, 1.5f);
  s.logprobs = 0;
  Scheduler sched(*tiny().model, limits(1));
  ASSERT_TRUE(sched.submit(1, s));
  size_t seen = 0;
  while (!sched.idle())
    sched.step([&](const SequenceEvent& ev) {
      EXPECT_EQ(ev.logprobs.size(), ev.tokens.size());
      for (size_t i = 0; i < ev.tokens.size(); ++i) {
        EXPECT_EQ(ev.logprobs[i].token, ev.tokens[i]);
        EXPECT_LT(ev.logprobs[i].logprob, 0.0f);
        EXPECT_TRUE(ev.logprobs[i].top.empty());
      }
      seen += ev.tokens.size();
      return true;
    });
  EXPECT_EQ(seen, 12u);
  s.logprobs = kMaxTopLogprobs + 1;
  EXPECT_NE(sched.check(s), "");
}

}  // namespace
}  // namespace cllm
