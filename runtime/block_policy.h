// Load-adaptive Jacobi: each step, pick every sequence's block size (1 is an AR step, up to the
// sequence's cap) to maximise the batch's expected final tokens per second.
//   tokens/s = (sum_i E_i(n_i) + fixed tokens) / cost(rows, attention work)
// with E_i(n) a sequence's expected tokens per iteration at block n (AcceptanceEstimate) and cost
// the step time (StepCostModel: calibrated at start-up, refined from every observed step).
// Any block size keeps greedy Jacobi equal to greedy AR (runtime/jacobi.h), so the policy only
// moves speed. choose_blocks() is a pure function of the cost model and the estimates
// (tests/unit/test_block_policy.cpp).
#pragma once
#include <cstdint>
#include <vector>

namespace cllm {

class Model;

// Seconds of one batched forward as a function of its token rows and attention work:
//   cost(rows, ctx) = scale * (base(rows) + per_context * ctx),   ctx = sum over blocks of n * position
// base() is piecewise linear between knots at rows 1, 2, 4, ... (linear past the last known knot).
// observe() refines it from a measured step (the measurement clamped to [0.5x, 2x] of the
// prediction, so one stall does not swing it), two ways: `scale`, a moving average of measured
// over predicted that every size shares, takes most of the change (other work on the machine, a
// longer context: the sizes' ratios, which decide the policy, stay); the knots next to the
// measured rows take a small share (the shape: real steps of many sequences against the
// calibration's).
class StepCostModel {
 public:
  StepCostModel();
  // A measured forward of `rows` rows and `ctx` attention work (row x position sums).
  void observe(int rows, double ctx, double seconds);
  void set_knot(int rows, double seconds);  // rows: a power of two
  void set_per_context(double seconds_per_row_position) { per_context_ = seconds_per_row_position; }
  // The moving averages' weights of a new step: alpha for the scale, alpha / 10 for the knots.
  // 0: frozen (tests).
  void set_learning_rate(double alpha) { alpha_ = alpha; }
  double seconds(int rows, double ctx = 0) const;
  bool calibrated() const;
  double per_context() const { return per_context_; }

 private:
  static constexpr int kKnots = 14;  // rows 1 .. 8192
  double base(int rows) const;
  double value_[kKnots] = {};
  bool known_[kKnots] = {};
  double per_context_ = 0;
  double scale_ = 1;
  double alpha_ = 0.2;
};

// Times forwards of 1, 2, 4, ... rows (blocks of at most kMaxBlockRows over up to `slots` KV
// slots of `capacity` rows) up to `max_rows` while the next size fits in `budget_s` seconds, then
// the attention term from a block at position 0 against one deep in the context. Leaves garbage
// in the KV cache: call Model::reset afterwards.
StepCostModel calibrate_step_cost(Model& model, int slots, int capacity, int max_rows, double budget_s = 3.0);

// One sequence's expected tokens per iteration at each block size. Model: each guess after the
// first is accepted with probability p given the ones before it were (the first token of a block
// is always final), so E(n) = (1 - p^n) / (1 - p), at most n. An iteration of block n that made t
// tokens final gives t - 1 successes and one failure (none when t == n): p = successes / trials,
// both decayed per iteration and starting at the prior's pseudo-trials. One parameter learns from every block size
// and gives an estimate at each, including sizes not tried yet.
class AcceptanceEstimate {
 public:
  struct Options {
    double prior_p = 0.5;       // a fresh sequence's p
    double prior_weight = 2;    // pseudo-trials behind it
    double decay = 0.9;         // per observed iteration: the memory is about 10 iterations
    int probe_after = 16;       // AR steps in a row before a probe (doubling after each failed probe)
    int probe_block = 2;
    int max_probe_after = 256;
  };
  AcceptanceEstimate() : AcceptanceEstimate(Options{}) {}
  explicit AcceptanceEstimate(const Options& opts) : opts_(opts) {}

  double p() const;
  double expected(int block) const;
  // An iteration decoded with `block` rows that made `tokens` final (before stop/length cuts).
  void observe(int block, int tokens);
  // A sequence that only takes AR steps would never learn that its text became predictable: after
  // probe_after AR steps in a row it is due a block of probe_block (probe_after doubles after a
  // probe that found nothing, and resets once the policy picks a block > 1 by itself).
  bool probe_due() const { return ar_run_ >= probe_after_; }
  int probe_block() const { return opts_.probe_block; }
  // The block that runs this iteration (before its observe): counts AR runs, marks probes.
  void note_choice(int block, bool probe);

 private:
  Options opts_;
  // Decayed counts of accepted guesses and guesses tried, starting at the prior's pseudo-trials:
  // the prior decays with the observations, so it is not a lasting floor under p (with a base
  // model's few acceptances it kept p near 0.12, enough to prefer blocks of 2 that cost more than
  // their extra tokens gave).
  double successes_ = opts_.prior_p * opts_.prior_weight, trials_ = opts_.prior_weight;
  int ar_run_ = 0;                     // AR steps in a row
  int probe_after_ = opts_.probe_after;
  bool probing_ = false;
};

// One sequence's choice: [min_block, max_block] (equal: pinned) and its expected tokens.
struct BlockCandidate {
  int min_block = 1;
  int max_block = 1;
  int position = 0;                        // KV position of the block's first row
  AcceptanceEstimate* estimate = nullptr;  // null: 1 token per iteration whatever the block
};

struct StepShape {
  int fixed_rows = 0;       // rows whose size is not chosen here (prefill chunks, sampled AR)
  double fixed_tokens = 0;  // final tokens they make
  double fixed_ctx = 0;     // their attention work
  int max_rows = 0;         // the chosen blocks' rows at most (0: no limit; all 1s always allowed)
};

// The block of each candidate maximising expected tokens per second. Sizes tried: 1, 2, 4, ...
// and each candidate's bounds. Starts from the best uniform choice (every sequence the same size,
// clipped to its bounds), then moves one sequence one size up or down while that improves.
std::vector<int> choose_blocks(const std::vector<BlockCandidate>& seqs, const StepShape& shape,
                               const StepCostModel& cost);

// choose_blocks(), then probes: a sequence left at 1 whose probe is due (and whose bounds allow
// it) gets its probe block. Records every choice in the estimates (AcceptanceEstimate::note_choice).
std::vector<int> plan_blocks(const std::vector<BlockCandidate>& seqs, const StepShape& shape,
                             const StepCostModel& cost);
// One sequence alone (cllm generate): its block in 1..cap at KV position `position`.
int pick_block(AcceptanceEstimate& estimate, int cap, int position, const StepCostModel& cost);

}  // namespace cllm
