// Jacobi trajectory collection for consistency training (the paper's data step): greedy Jacobi in
// the paper's blockwise mode from random guesses, recording every n-token block state before each
// iteration and the fixed point of each block, block after block, until a stop id or the length
// limit. With exact arithmetic the fixed points concatenated are the greedy AR continuation.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "loaders/trajectory_h5.h"
#include "runtime/block_rows.h"
#include "runtime/decoding.h"
#include "runtime/jacobi.h"
#include "runtime/model.h"

namespace cllm {

struct TrajectoryOptions {
  int block = 16;                 // n
  int max_new_tokens = 256;       // rounded up to whole blocks
  std::vector<int32_t> stop_ids;  // EOS: the block holding one is the last
  InitialGuess init = InitialGuess::RandomFromContext;
  int32_t pad_id = 0;             // for InitialGuess::Pad
  bool augment = false;           // add states with half of their wrong tokens set to the fixed point
  int max_repeat = 10;            // drop a sample with this many identical consecutive tokens (0: keep all)
  // Multi-block (runtime/jacobi.h): K blocks in flight. Each block's states are recorded in every
  // forward while it is in flight, as the frontier or as a later block drafting ahead; a block's
  // states stay consecutive (recorded when it is fixed), so the file's layout is unchanged.
  int blocks = 1;
};

// Positions a collection touches: prompt + whole blocks + the guesses of the blocks in flight.
int64_t trajectory_kv_rows(int64_t prompt_tokens, const TrajectoryOptions& opts);

// One forward of one sequence: tokens[0..n) at positions pos..pos+n-1 of its KV. The tokens stay
// valid until the collector that gave them is changed.
struct TrajectoryStep {
  const int32_t* tokens = nullptr;
  int n = 0;
  int pos = 0;
};

// The collection of one prompt as a state machine driven by the caller, so that one prompt alone
// (collect_trajectory) and many prompts sharing each forward (collect_trajectories with batch > 1)
// run the same code. The caller forwards a next_block() over the prompt's own KV and hands it, with
// the argmax of every row, to consume(), until done(). The blocks are first the prompt, in prefill
// chunks of at most kMaxBlockRows tokens (fewer where the step's row budget is short: a trajectory
// is the same alone or batched, as a chunk's KV is exact whichever forward wrote it), then the
// blockwise Jacobi iterations.
class TrajectoryCollector {
 public:
  // `seed` drives the initial guesses and the augmentation (see collect_trajectory).
  TrajectoryCollector(std::vector<int32_t> prompt, const TrajectoryOptions& opts, uint64_t seed);

  // Not after done(). While prefilling, the next chunk: at most max_prefill_rows (>= 1) tokens.
  TrajectoryStep next_block(int max_prefill_rows = kMaxBlockRows) const;
  bool prefilling() const { return prefilled_ < static_cast<int>(t_.prompt.size()); }
  int prefill_left() const { return static_cast<int>(t_.prompt.size()) - prefilled_; }
  // `step` was a next_block() (any chunk length while prefilling) and y[0..step.n) the argmax at
  // each of its positions; throws when it is not the block the collector is at.
  void consume(const TrajectoryStep& step, const int32_t* y);
  bool done() const { return done_; }
  Trajectory take();  // once done(); leaves the collector empty

 private:
  void finish_block();  // the current block is fixed: record it, apply the stop ids

  TrajectoryOptions opts_;
  uint64_t seed_;                       // of the initial guesses (the decoder starts after the prefill)
  Trajectory t_;
  int prefilled_ = 0;                   // prompt tokens whose KV is written
  std::optional<JacobiDecoder> dec_;    // once the prompt is prefilled
  std::vector<int32_t> gen_;            // final tokens; the last one is dec_->block()[0]
  std::mt19937_64 aug_rng_;
  int block_index_ = 0;                 // b: the frontier block, being iterated
  // pending_[k]: the states recorded so far of block b + k in flight, [count, n] row-major.
  std::vector<std::vector<int32_t>> pending_;
  bool done_ = false;
};

// `model` must have room for trajectory_kv_rows() positions (Model::reset); its KV is overwritten.
// `seed` drives the initial guesses and the augmentation, so a prompt's trajectory is a function
// of (model, prompt, opts, seed) alone.
Trajectory collect_trajectory(BlockPredictor& model, const std::vector<int32_t>& prompt,
                              const TrajectoryOptions& opts, uint64_t seed);

// The per-prompt seed: independent of which prompts ran before (so a resumed run matches).
uint64_t trajectory_seed(uint64_t seed, int64_t prompt_index);

// True when the valid generated tokens hold `run` identical consecutive tokens (the paper drops
// such degenerate samples; run 10). run <= 0 never matches.
bool has_repeated_run(const Trajectory& t, int run);

struct CollectSummary {
  int kept = 0, dropped = 0, skipped = 0;  // skipped: already in the file (resume)
  int remaining = 0;                       // of this shard, not started before max_seconds ran out
  int64_t tokens = 0, iterations = 0;      // valid generated tokens and Jacobi iterations of kept samples
};

// Which prompts a run collects, how many at once, and for how long. Sharding lets K processes
// share one GPU (a small model's steps are bound by the host, not the GPU): process I collects the
// prompts whose index % K == I into its own file, indices staying those of the whole prompts file,
// so the files merge without renumbering. batch > 1 does the same inside one process: up to
// `batch` prompts run at once, each in its own KV slot, with ONE Model::forward_batch per step
// over all of their blocks; prompts then finish, and are written, in completion order.
// max_seconds > 0 starts no prompt after that many seconds (the running ones finish): the run
// ends with a complete file that a later run resumes.
struct CollectPlan {
  int shard = 0, num_shards = 1;
  double max_seconds = 0;
  int batch = 1;               // prompts collected concurrently (KV slots)
  // Token rows of one step at most: every Jacobi block runs each step, prefill chunks share what
  // is left (at least one chunk per step), the others wait for a later step.
  int max_step_rows = 1024;
};

// Called after each prompt collected in this run: its index, its trajectory, whether it was dropped.
using CollectProgress = std::function<void(int64_t, const Trajectory&, bool)>;

// Collects every prompt of the plan's shard whose index is not yet in `out` (prompt i is
// prompts[i]) and writes it, kept or dropped, as soon as it is done. A prompt already in the file
// must have the same ids (else throws: the prompts file changed), and belong to the shard (else
// throws: the file was collected with another shard), and every pending prompt must fit the model's
// positions with max_new_tokens (else throws naming the prompt and the numbers, context_limit_error);
// all are checked before any work. Resets
// `model` once: min(plan.batch, pending prompts) slots of the longest pending prompt's
// trajectory_kv_rows().
CollectSummary collect_trajectories(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                    TrajectoryWriter& out, const TrajectoryOptions& opts, uint64_t seed,
                                    const CollectProgress& progress = {}, const CollectPlan& plan = {});

}  // namespace cllm
