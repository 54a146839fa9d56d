// The load-adaptive block policy as a pure function of a step cost model and acceptance estimates:
// AR when extra rows are expensive and guesses are rarely accepted, long blocks when rows are
// cheap and guesses are accepted, fewer rows per sequence as the batch grows; and the cost model
// and estimates it reads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/check.h"
#include "runtime/block_policy.h"
#include "runtime/model.h"
#include "test_support.h"

namespace cllm {
namespace {

// Seconds = f(rows) at the knots 1, 2, 4, ... 8192, frozen (no online refinement).
template <typename F>
StepCostModel cost_of(F f) {
  StepCostModel c;
  for (int n = 1; n <= 8192; n *= 2) c.set_knot(n, f(n));
  c.set_learning_rate(0);
  return c;
}
// A CPU-like step: every row costs compute (a 2-row step is 1.8x a 1-row one).
StepCostModel cpu_like() {
  return cost_of([](int n) { return n == 1 ? 0.050 : 0.080 + 0.005 * n; });
}
// A GPU-like step: flat while the weights' read dominates (up to 256 rows), then linear.
StepCostModel gpu_like() {
  return cost_of([](int n) { return 0.010 * std::max(1.0, n / 256.0); });
}

// An estimate after `iterations` of block `block` that each made `tokens` final.
AcceptanceEstimate after(int block, int tokens, int iterations = 20) {
  AcceptanceEstimate e;
  for (int i = 0; i < iterations; ++i) e.observe(block, tokens);
  return e;
}

std::vector<int> choose(std::vector<AcceptanceEstimate>& est, int cap, const StepCostModel& cost, StepShape shape = {}) {
  std::vector<BlockCandidate> seqs;
  for (auto& e : est) seqs.push_back({1, cap, 100, &e});
  return choose_blocks(seqs, shape, cost);
}

TEST(BlockPolicy, PicksArWhenBlocksAreExpensiveAndAcceptanceIsLow) {
  std::vector<AcceptanceEstimate> est = {after(16, 1)};  // a base model: nothing past g[0]
  EXPECT_LT(est[0].expected(64), 1.2);
  EXPECT_EQ(choose(est, 64, cpu_like()), std::vector<int>{1});
  std::vector<AcceptanceEstimate> four(4, after(16, 1));
  EXPECT_EQ(choose(four, 64, cpu_like()), std::vector<int>(4, 1));
}

TEST(BlockPolicy, PicksTheCapWhenStepsAreCheapAndAcceptanceIsHigh) {
  std::vector<AcceptanceEstimate> est = {after(16, 16)};  // every guess accepted
  EXPECT_GT(est[0].expected(32), 20);
  EXPECT_EQ(choose(est, 64, gpu_like()), std::vector<int>{64});
  EXPECT_EQ(choose(est, 16, gpu_like()), std::vector<int>{16});
  // Even where rows cost compute, a block that makes most of its rows final pays.
  EXPECT_GE(choose(est, 64, cpu_like())[0], 32);
}

TEST(BlockPolicy, SameEstimatesFewerRowsAsTheBatchGrows) {
  // A CLLM-like sequence (about 3 tokens per iteration at block 16) on a GPU-like cost: alone it
  // takes a long block, 64 of them share 256 flat rows, 256 of them run AR steps (or nearly).
  auto pick = [&](int batch) {
    std::vector<AcceptanceEstimate> est(batch, after(16, 3));
    const std::vector<int> b = choose(est, 64, gpu_like());
    int rows = 0;
    for (int n : b) rows += n;
    return std::pair<int, int>{*std::max_element(b.begin(), b.end()), rows};
  };
  EXPECT_GE(pick(1).first, 16);
  EXPECT_LE(pick(64).second, 256 + 64);
  EXPECT_GE(pick(64).first, 2);
  EXPECT_LE(pick(256).second, 256 + 32);
  EXPECT_GT(pick(1).first, pick(64).first);
}

TEST(BlockPolicy, HighAcceptanceSequenceGetsTheLongerBlock) {
  std::vector<AcceptanceEstimate> est = {after(8, 1), after(8, 8)};
  const std::vector<int> b = choose(est, 64, cpu_like());
  EXPECT_EQ(b[0], 1);
  EXPECT_GT(b[1], 4);
}

TEST(BlockPolicy, PinnedBoundsAndRowBudgetHold) {
  AcceptanceEstimate hi = after(16, 16);
  AcceptanceEstimate lo = after(16, 1);
  // A pinned block (min == max) is kept whatever the estimate; the others stay within their caps.
  std::vector<BlockCandidate> seqs = {{16, 16, 0, &lo}, {1, 8, 0, &hi}, {1, 64, 0, &hi}};
  std::vector<int> b = choose_blocks(seqs, {}, gpu_like());
  EXPECT_EQ(b, (std::vector<int>{16, 8, 64}));
  // max_rows caps the chosen rows (here 40: 16 pinned + 24 for the other two).
  StepShape shape;
  shape.max_rows = 40;
  b = choose_blocks(seqs, shape, gpu_like());
  EXPECT_EQ(b[0], 16);
  EXPECT_LE(b[0] + b[1] + b[2], 40);
  EXPECT_GE(b[1] + b[2], 16);
  // A budget below the minimum rows still runs every sequence at its minimum.
  shape.max_rows = 4;
  EXPECT_EQ(choose_blocks(seqs, shape, gpu_like()), (std::vector<int>{16, 1, 1}));
  EXPECT_THROW(choose_blocks({{4, 2, 0, nullptr}}, {}, gpu_like()), Error);
}

TEST(BlockPolicy, FixedRowsAndDeepContextMoveTheChoice) {
  // Moderate acceptance (p about 0.74). Rows beside the sequence (a prefill chunk) make its extra
  // guesses relatively cheaper, so its block does not shrink; a steep attention cost at position
  // 4000 makes every row dear, so it does.
  std::vector<AcceptanceEstimate> est = {after(16, 4)};
  StepCostModel cost = cost_of([](int n) { return 0.010 + 0.0005 * n; });
  const int alone = choose(est, 64, cost)[0];
  EXPECT_GT(alone, 1);
  StepShape busy;
  busy.fixed_rows = 200;
  EXPECT_GE(choose(est, 64, cost, busy)[0], alone);
  cost.set_per_context(1e-6);
  std::vector<BlockCandidate> deep = {{1, 64, 4000, &est[0]}};
  EXPECT_LT(choose_blocks(deep, {}, cost)[0], alone);
}

TEST(StepCostModel, InterpolatesExtrapolatesAndLearns) {
  StepCostModel c;
  EXPECT_FALSE(c.calibrated());
  c.set_knot(1, 1.0);
  c.set_knot(4, 2.5);
  c.set_knot(8, 4.5);
  EXPECT_TRUE(c.calibrated());
  EXPECT_DOUBLE_EQ(c.seconds(1), 1.0);
  EXPECT_DOUBLE_EQ(c.seconds(2), 1.5);   // between 1 and 4
  EXPECT_DOUBLE_EQ(c.seconds(6), 3.5);   // between 4 and 8
  EXPECT_DOUBLE_EQ(c.seconds(16), 8.5);  // past 8: the slope of the last two knots
  c.set_per_context(0.001);
  EXPECT_DOUBLE_EQ(c.seconds(4, 1000), 3.5);
  c.set_per_context(0);
  // Observations move the prediction toward them; the sizes move together (a shared scale), so a
  // machine that got slower keeps the ratios that decide the policy.
  const double ratio_before = c.seconds(8) / c.seconds(1);
  for (int i = 0; i < 50; ++i) c.observe(1, 0, 2.0);
  EXPECT_NEAR(c.seconds(1), 2.0, 0.02);
  EXPECT_NEAR(c.seconds(8) / c.seconds(1), ratio_before, 0.15 * ratio_before);
  EXPECT_GT(c.seconds(8), 4.5 * 1.6);
  // ... and the knots near the measured rows learn the shape, slowly.
  for (int i = 0; i < 2000; ++i) {
    c.observe(1, 0, 2.0);
    c.observe(8, 0, 3.0);
  }
  EXPECT_NEAR(c.seconds(1), 2.0, 0.05);
  EXPECT_NEAR(c.seconds(8), 3.0, 0.1);
  // One outlier counts as at most 2x the prediction.
  const double before = c.seconds(8);
  c.observe(8, 0, 1000.0);
  EXPECT_LE(c.seconds(8), before * 1.25);
  EXPECT_THROW(c.set_knot(3, 1.0), Error);
  // An uncalibrated model learns its first knot from the first observation.
  StepCostModel fresh;
  fresh.observe(1, 0, 0.02);
  EXPECT_NEAR(fresh.seconds(1), 0.02, 1e-12);
}

TEST(AcceptanceEstimate, PriorObservationsAndProbes) {
  AcceptanceEstimate e;
  EXPECT_DOUBLE_EQ(e.expected(1), 1.0);
  EXPECT_NEAR(e.expected(2), 1.5, 1e-12);  // prior p = 0.5
  EXPECT_LE(e.expected(64), 2.0);
  // Block 8, 3 tokens: 2 guesses accepted, then one rejected.
  for (int i = 0; i < 30; ++i) e.observe(8, 3);
  EXPECT_NEAR(e.p(), 2.0 / 3.0, 0.02);
  EXPECT_NEAR(e.expected(8), (1 - std::pow(e.p(), 8)) / (1 - e.p()), 1e-12);
  // A block accepted whole is no failure: p grows toward 1.
  for (int i = 0; i < 30; ++i) e.observe(4, 4);
  EXPECT_GT(e.p(), 0.9);
  e.observe(1, 1);  // an AR step says nothing
  EXPECT_GT(e.p(), 0.9);
  // The prior fades with the observations: a text whose guesses are rarely accepted (1 in 20
  // blocks of 2, a base model's rate) settles near that rate, under the 2-row step's extra cost,
  // instead of being held near the prior's share (p about 0.12 when the prior never decayed).
  // (p jumps after each acceptance and fades until the next: the mean over a cycle is the rate.)
  AcceptanceEstimate low;
  double p_sum = 0;
  int prefer_ar = 0;
  for (int i = 0; i < 200; ++i) {
    low.observe(2, i % 20 == 19 ? 2 : 1);
    if (i < 180) continue;
    p_sum += low.p();
    prefer_ar += low.expected(2) < 1.08;  // a 2-row step costing 1.08x a 1-row one loses
  }
  EXPECT_LT(p_sum / 20, 0.07);
  EXPECT_GE(prefer_ar, 15);

  // Probes: due after 16 AR steps; a probe that finds nothing doubles the wait, one that accepts resets it.
  AcceptanceEstimate a;
  for (int i = 0; i < 15; ++i) a.note_choice(1, false);
  EXPECT_FALSE(a.probe_due());
  a.note_choice(1, false);
  EXPECT_TRUE(a.probe_due());
  a.note_choice(2, true);
  a.observe(2, 1);
  for (int i = 0; i < 31; ++i) a.note_choice(1, false);
  EXPECT_FALSE(a.probe_due());
  a.note_choice(1, false);
  EXPECT_TRUE(a.probe_due());
  a.note_choice(2, true);
  a.observe(2, 2);
  for (int i = 0; i < 16; ++i) a.note_choice(1, false);
  EXPECT_TRUE(a.probe_due());
}

TEST(BlockPolicy, PlanBlocksProbesSequencesStuckAtAr) {
  StepCostModel cost = cpu_like();
  AcceptanceEstimate e = after(16, 1);
  int probes = 0;
  for (int i = 0; i < 200; ++i) {
    const int n = plan_blocks({{1, 64, 0, &e}}, {}, cost)[0];
    if (n > 1) {
      EXPECT_EQ(n, 2);
      ++probes;
    }
    e.observe(n, 1);
  }
  // 16, then 32, 64 and 128 AR steps between probes.
  EXPECT_EQ(probes, 3);
  // A pinned sequence is never probed.
  AcceptanceEstimate pinned = after(16, 1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(plan_blocks({{1, 1, 0, &pinned}}, {}, cost)[0], 1);
}

TEST(StepCostModel, CalibratesOnARealModel) {
  auto ckpt = open_checkpoint(test::random_model_dir("tiny", 1));
  auto model = make_model(*ckpt, Device::Cpu);
  // 128 rows over two slots of at most 64: a real forward takes longer than one row's. The tiny
  // model's steps take microseconds, so load beside the test (ctest -j) can invert one calibration;
  // it is calibrated again, up to 3 times: a model that ignores its rows stays inverted in each.
  StepCostModel c = calibrate_step_cost(*model, 2, 128, 128, 5.0);
  for (int again = 0; again < 2 && !(c.seconds(128) > c.seconds(1)); ++again)
    c = calibrate_step_cost(*model, 2, 128, 128, 5.0);
  EXPECT_TRUE(c.calibrated());
  EXPECT_GT(c.seconds(1), 0);
  EXPECT_GT(c.seconds(128), c.seconds(1));
  EXPECT_THROW(calibrate_step_cost(*model, 0, 128, 16), Error);
}

}  // namespace
}  // namespace cllm
