#include "runtime/block_policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/check.h"
#include "runtime/block_rows.h"
#include "runtime/model.h"

namespace cllm {
namespace {

int knot_rows(int k) { return 1 << k; }

}  // namespace

StepCostModel::StepCostModel() = default;

bool StepCostModel::calibrated() const { return std::any_of(known_, known_ + kKnots, [](bool b) { return b; }); }

void StepCostModel::set_knot(int rows, double seconds) {
  for (int k = 0; k < kKnots; ++k)
    if (knot_rows(k) == rows) {
      value_[k] = seconds;
      known_[k] = true;
      return;
    }
  CLLM_FAIL("step cost knots are at powers of two up to " << knot_rows(kKnots - 1) << " rows, got " << rows);
}

double StepCostModel::base(int rows) const {
  rows = std::max(rows, 1);
  int first = -1, last = -1, prev = -1;  // known knots: the first, the last, the one before the last
  for (int k = 0; k < kKnots; ++k)
    if (known_[k]) {
      if (first < 0) first = k;
      prev = last;
      last = k;
    }
  if (first < 0) return 1e-3 * rows;  // uncalibrated: proportional to rows
  if (rows <= knot_rows(first)) return value_[first];
  if (rows >= knot_rows(last)) {
    // Past the last measurement: the slope of the last two (none known: proportional to rows).
    const double slope = prev >= 0 ? std::max(0.0, (value_[last] - value_[prev]) / (knot_rows(last) - knot_rows(prev)))
                                   : value_[last] / knot_rows(last);
    return value_[last] + slope * (rows - knot_rows(last));
  }
  int lo = first;
  for (int k = first + 1; k <= last; ++k) {
    if (!known_[k]) continue;
    if (knot_rows(k) >= rows) {
      const double t = static_cast<double>(rows - knot_rows(lo)) / (knot_rows(k) - knot_rows(lo));
      return value_[lo] + t * (value_[k] - value_[lo]);
    }
    lo = k;
  }
  return value_[last];
}

double StepCostModel::seconds(int rows, double ctx) const { return scale_ * (base(rows) + per_context_ * ctx); }

void StepCostModel::observe(int rows, double ctx, double seconds) {
  rows = std::max(rows, 1);
  if (!calibrated()) {
    int k = 0;
    while (k + 1 < kKnots && knot_rows(k + 1) <= rows) ++k;
    set_knot(knot_rows(k), std::max(seconds / scale_ - per_context_ * ctx, 0.0) * knot_rows(k) / rows);
    return;
  }
  const double predicted = this->seconds(rows, ctx);
  if (predicted <= 0) return;
  const double ratio = std::clamp(seconds / predicted, 0.5, 2.0);
  scale_ *= 1 + alpha_ * (ratio - 1);
  // The knots' share: the rest of the error, in unscaled seconds, spread over the two knots that
  // bracket `rows` by their interpolation weights (the gradient of the prediction).
  const double error = ratio * predicted / scale_ - (base(rows) + per_context_ * ctx);
  int lo = 0;
  while (lo + 1 < kKnots && knot_rows(lo + 1) <= rows) ++lo;
  const int hi = std::min(lo + 1, kKnots - 1);
  const double t = hi == lo ? 0.0
                            : std::min(1.0, static_cast<double>(rows - knot_rows(lo)) / (knot_rows(hi) - knot_rows(lo)));
  const double weights[2] = {1 - t, t};
  const int knots[2] = {lo, hi};
  double start[2];
  for (int i = 0; i < 2; ++i) start[i] = known_[knots[i]] ? value_[knots[i]] : base(knot_rows(knots[i]));
  for (int i = 0; i < 2; ++i) {
    if (weights[i] <= 0) continue;
    value_[knots[i]] = std::max(0.0, start[i] + 0.1 * alpha_ * weights[i] * error);
    known_[knots[i]] = true;
  }
}

StepCostModel calibrate_step_cost(Model& model, int slots, int capacity, int max_rows, double budget_s) {
  using Clock = std::chrono::steady_clock;
  CLLM_CHECK(slots >= 1 && capacity >= 1 && max_rows >= 1,
             "step cost calibration needs slots, capacity and rows >= 1, got " << slots << ", " << capacity << ", "
                                                                               << max_rows);
  model.reset(capacity, slots);
  const int vocab = model.config().vocab_size;
  const int per_block = std::min(kMaxBlockRows, capacity);
  std::vector<int32_t> tokens, ids;
  std::vector<SeqBlock> blocks;
  auto time_once = [&](int rows, int pos) {
    tokens.resize(rows);
    ids.resize(rows);
    for (int i = 0; i < rows; ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 11) % vocab);
    blocks.clear();
    for (int row = 0, slot = 0; row < rows; row += per_block, ++slot)
      blocks.push_back({slot, pos, std::min(per_block, rows - row)});
    const auto t0 = Clock::now();
    model.forward_batch(tokens.data(), blocks.data(), static_cast<int>(blocks.size()), ids.data(), nullptr);
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // A warm-up round (caches, allocations, graphs) that also picks the sizes the budget allows,
  // then kRounds rounds over all of them, each size's fastest kept: the rounds interleave the
  // sizes, so other work on the machine slows them alike and their ratios hold.
  constexpr int kRounds = 3;
  std::vector<int> sizes;
  std::vector<double> first;
  double spent = 0;
  for (int rows = 1; rows <= std::min(max_rows, per_block * slots); rows *= 2) {
    first.push_back(time_once(rows, 0));
    sizes.push_back(rows);
    spent += (1 + kRounds) * first.back();
    if (spent + (1 + kRounds) * 2 * first.back() > budget_s) break;  // the next size: about 2t a forward
  }
  // Attention: a block of n rows at position `deep` against one at 0, if the budget allows the
  // prefill of rows [0, deep) first (a block attends to KV rows that must hold real values).
  const int n = std::min(16, per_block);
  const int deep = std::min(capacity - n, 512) / per_block * per_block;
  auto estimate = [&](int rows) {  // from the warm-up round: the largest size timed up to `rows`
    size_t i = 0;
    while (i + 1 < sizes.size() && sizes[i + 1] <= rows) ++i;
    return first[i] * std::max(1.0, static_cast<double>(rows) / sizes[i]);
  };
  const double t_n = estimate(n);
  const double prefill = static_cast<double>(deep) / per_block * estimate(per_block);
  const bool attention = deep >= 64 && spent + prefill + 2 * kRounds * t_n <= budget_s;
  if (attention)
    for (int pos = 0; pos < deep; pos += per_block) {
      tokens.assign(per_block, 1);
      ids.resize(per_block);
      const SeqBlock b{0, pos, per_block};
      model.forward_batch(tokens.data(), &b, 1, ids.data(), nullptr);
    }
  std::vector<double> best(sizes.size(), 1e30);
  double shallow = 1e30, deeper = 1e30;
  for (int round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < sizes.size(); ++i) best[i] = std::min(best[i], time_once(sizes[i], 0));
    if (attention) {
      shallow = std::min(shallow, time_once(n, 0));
      deeper = std::min(deeper, time_once(n, deep));
    }
  }
  StepCostModel cost;
  for (size_t i = 0; i < sizes.size(); ++i) cost.set_knot(sizes[i], best[i]);
  if (attention) cost.set_per_context(std::max(0.0, deeper - shallow) / (static_cast<double>(n) * deep));
  return cost;
}

double AcceptanceEstimate::p() const {
  return trials_ > 0 ? successes_ / trials_ : opts_.prior_p;
}

double AcceptanceEstimate::expected(int block) const {
  const double q = p();
  if (block <= 1) return 1;
  if (q >= 1 - 1e-9) return block;
  return (1 - std::pow(q, block)) / (1 - q);
}

void AcceptanceEstimate::note_choice(int block, bool probe) {
  if (block <= 1) {
    ++ar_run_;
    return;
  }
  ar_run_ = 0;
  probing_ = probe;
  if (!probe) probe_after_ = opts_.probe_after;
}

void AcceptanceEstimate::observe(int block, int tokens) {
  if (block <= 1) return;
  tokens = std::clamp(tokens, 1, block);
  const double accepted = tokens - 1;
  successes_ = opts_.decay * successes_ + accepted;
  trials_ = opts_.decay * trials_ + accepted + (tokens < block ? 1 : 0);
  if (probing_) {
    probe_after_ = tokens > 1 ? opts_.probe_after : std::min(2 * probe_after_, opts_.max_probe_after);
    probing_ = false;
  }
}

std::vector<int> choose_blocks(const std::vector<BlockCandidate>& seqs, const StepShape& shape,
                               const StepCostModel& cost) {
  const int count = static_cast<int>(seqs.size());
  // Each candidate's sizes: its bounds and the powers of two between them, ascending.
  std::vector<std::vector<int>> ladder(count);
  std::vector<std::vector<double>> gain(count);  // expected tokens at each size
  int min_rows = 0;
  for (int i = 0; i < count; ++i) {
    const BlockCandidate& c = seqs[i];
    CLLM_CHECK(1 <= c.min_block && c.min_block <= c.max_block,
               "block bounds must satisfy 1 <= min <= max, got " << c.min_block << ", " << c.max_block);
    ladder[i].push_back(c.min_block);
    for (int n = 2; n < c.max_block; n *= 2)
      if (n > c.min_block) ladder[i].push_back(n);
    if (c.max_block > c.min_block) ladder[i].push_back(c.max_block);
    for (int n : ladder[i]) gain[i].push_back(c.estimate ? c.estimate->expected(n) : 1.0);
    min_rows += c.min_block;
  }
  const int max_rows = shape.max_rows > 0 ? std::max(shape.max_rows, min_rows) : 0;

  // Totals of an assignment (index into each ladder) and its tokens per second.
  std::vector<int> pick(count, 0);
  double tokens = 0, ctx = 0;
  int rows = 0;
  auto totals = [&] {
    tokens = shape.fixed_tokens, ctx = shape.fixed_ctx, rows = 0;
    for (int i = 0; i < count; ++i) {
      tokens += gain[i][pick[i]];
      rows += ladder[i][pick[i]];
      ctx += static_cast<double>(ladder[i][pick[i]]) * seqs[i].position;
    }
  };
  auto rate = [&](double t, int r, double x) {
    if (max_rows > 0 && r > max_rows) return -1.0;
    const double s = cost.seconds(shape.fixed_rows + r, x);
    return s > 0 ? t / s : t * 1e30;
  };

  // The best uniform assignment: every sequence the same size (clipped to its bounds).
  std::vector<int> best_pick(count, 0);
  double best = -2;
  for (int size = 1; size <= kMaxBlockRows; size *= 2) {
    for (int i = 0; i < count; ++i) {
      int k = 0;
      while (k + 1 < static_cast<int>(ladder[i].size()) && ladder[i][k + 1] <= size) ++k;
      pick[i] = k;
    }
    totals();
    const double r = rate(tokens, rows, ctx);
    if (r > best * (1 + 1e-9)) {
      best = r;
      best_pick = pick;
    }
  }
  pick = best_pick;
  totals();

  // Then one sequence one size up or down at a time, the best improving move first.
  for (int moves = 0; moves < 4 * (count + 1) * 8; ++moves) {
    int best_i = -1, best_k = 0;
    double best_rate = rate(tokens, rows, ctx);
    for (int i = 0; i < count; ++i)
      for (int dk : {-1, 1}) {
        const int k = pick[i] + dk;
        if (k < 0 || k >= static_cast<int>(ladder[i].size())) continue;
        const int dn = ladder[i][k] - ladder[i][pick[i]];
        const double r = rate(tokens + gain[i][k] - gain[i][pick[i]], rows + dn,
                              ctx + static_cast<double>(dn) * seqs[i].position);
        if (r > best_rate * (1 + 1e-9)) {
          best_rate = r;
          best_i = i;
          best_k = k;
        }
      }
    if (best_i < 0) break;
    pick[best_i] = best_k;
    totals();
  }
  std::vector<int> out(count);
  for (int i = 0; i < count; ++i) out[i] = ladder[i][pick[i]];
  return out;
}

std::vector<int> plan_blocks(const std::vector<BlockCandidate>& seqs, const StepShape& shape,
                             const StepCostModel& cost) {
  std::vector<int> out = choose_blocks(seqs, shape, cost);
  for (size_t i = 0; i < seqs.size(); ++i) {
    AcceptanceEstimate* e = seqs[i].estimate;
    if (!e) continue;
    const bool probe = out[i] == 1 && e->probe_due() && seqs[i].min_block == 1 && seqs[i].max_block > 1;
    if (probe) out[i] = std::min(e->probe_block(), seqs[i].max_block);
    e->note_choice(out[i], probe);
  }
  return out;
}

int pick_block(AcceptanceEstimate& estimate, int cap, int position, const StepCostModel& cost) {
  return plan_blocks({{1, cap, position, &estimate}}, {}, cost)[0];
}

}  // namespace cllm
