// The continuous-batching scheduler: one forward_batch per step over every active sequence (each
// in its own KV slot, long prompts prefilled in chunks beside the others' decoding); a
// sequence's output must not depend on what else runs beside it, greedy outputs must equal
// generate_ar, and admission, cancellation and the sink's "stop" must free slots for reuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

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
};

// Runs specs[i] as id i + 1 through one scheduler until all finish.
std::map<uint64_t, Outcome> run_all(const std::vector<SequenceSpec>& specs, SchedulerLimits limits,
                                    const std::function<bool(Scheduler&, const SequenceEvent&)>& hook = {}) {
  Scheduler sched(*tiny().model, limits);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_TRUE(sched.submit(i + 1, specs[i]));
  std::map<uint64_t, Outcome> out;
  for (int steps = 0; !sched.idle(); ++steps) {
    EXPECT_LE(sched.active(), limits.max_batch);
    sched.step([&](const SequenceEvent& ev) {
      Outcome& o = out[ev.id];
      o.tokens.insert(o.tokens.end(), ev.tokens.begin(), ev.tokens.end());
      ++o.events;
      if (ev.done) o.finish = ev.finish_reason;
      return hook ? hook(sched, ev) : true;
    });
    EXPECT_LT(steps, 1000) << "the scheduler does not finish";
    if (steps >= 1000) break;
  }
  return out;
}

SchedulerLimits limits(int batch, int queue = 64) { return {batch, queue, 256}; }

TEST(Scheduler, ConcurrentOutputsEqualAloneAndAr) {
  // Prompts past kChunk exercise chunked prefill (over several steps, beside the others).
  std::vector<SequenceSpec> specs = {spec(5, 1, 20, 4),  spec(11, 2, 17, 16), spec(70, 3, 12, 8),
                                     spec(3, 4, 25, 1),  spec(9, 5, 15, 16, 0.8f), spec(130, 6, 9, 32),
                                     spec(20, 7, 14, 2)};
  const auto together = run_all(specs, limits(3));
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto alone = run_all({specs[i]}, limits(1));
    const Outcome& t = together.at(i + 1);
    EXPECT_EQ(t.tokens, alone.at(1).tokens) << "sequence " << i;
    EXPECT_EQ(t.finish, "length");
    EXPECT_EQ(static_cast<int>(t.tokens.size()), specs[i].gen.max_new_tokens);
    if (specs[i].sampling.temperature == 0 && specs[i].prompt.size() <= Scheduler::kChunk) {
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
  EXPECT_THROW(sched.submit(1, spec(40, 1, 20, 8)), std::exception);
  EXPECT_TRUE(sched.submit(1, spec(5, 1, 4, 4)));
  EXPECT_TRUE(sched.submit(2, spec(5, 2, 4, 4)));
  EXPECT_FALSE(sched.submit(3, spec(5, 3, 4, 4)));  // queue of 2 is full
  sched.step([](const SequenceEvent&) { return true; });
  EXPECT_EQ(sched.active(), 1);
  EXPECT_EQ(sched.waiting(), 1);
  EXPECT_EQ(sched.kv_rows_in_use(), 6);  // prompt + the first token
  EXPECT_TRUE(sched.submit(3, spec(5, 3, 4, 4)));
}

// A Model that records every call and predicts a fixed function of (token, position).
class CountingModel final : public Model {
 public:
  explicit CountingModel(const ModelConfig& cfg) : cfg_(cfg) {}
  const ModelConfig& config() const override { return cfg_; }
  void reset(int max_tokens, int slots) override { resets.push_back({max_tokens, slots}); }
  void forward(const int32_t*, int, int, int32_t*, float*) override { ++plain_forwards; }
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override {
    calls.emplace_back(blocks, blocks + count);
    const int rows = check_batch_args(cfg_, tokens, blocks, count, resets.back().first, resets.back().second);
    for (int b = 0, row = 0; b < count; row += blocks[b++].n)
      for (int i = 0; i < blocks[b].n; ++i)
        out_ids[row + i] = (tokens[row + i] * 7 + blocks[b].pos + i + 1) % cfg_.vocab_size;
    if (logits) std::fill(logits, logits + static_cast<size_t>(rows) * cfg_.vocab_size, 0.0f);
  }
  double step_bytes(int) const override { return 0; }

  std::vector<std::pair<int, int>> resets;     // (max_tokens, slots)
  std::vector<std::vector<SeqBlock>> calls;    // forward_batch calls
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
      EXPECT_LE(b.n, Scheduler::kChunk);
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

}  // namespace
}  // namespace cllm
