// Jacobi trajectory collection for consistency training (the paper's data step): greedy Jacobi in
// the paper's blockwise mode from random guesses, recording every n-token block state before each
// iteration and the fixed point of each block, block after block, until a stop id or the length
// limit. With exact arithmetic the fixed points concatenated are the greedy AR continuation.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "loaders/trajectory_h5.h"
#include "runtime/decoding.h"
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
};

// Positions a collection touches: prompt + whole blocks + the guesses of one more block.
int trajectory_kv_rows(int prompt_tokens, const TrajectoryOptions& opts);

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

// Which prompts a run collects, and for how long. Sharding lets K processes share one GPU (a small
// model's steps are bound by the host, not the GPU): process I collects the prompts whose index
// % K == I into its own file, indices staying those of the whole prompts file, so the files merge
// without renumbering. max_seconds > 0 starts no prompt after that many seconds: the run ends with
// a complete file that a later run resumes.
struct CollectPlan {
  int shard = 0, num_shards = 1;
  double max_seconds = 0;
};

// Called after each prompt collected in this run: its index, its trajectory, whether it was dropped.
using CollectProgress = std::function<void(int64_t, const Trajectory&, bool)>;

// Collects every prompt of the plan's shard whose index is not yet in `out` (prompt i is
// prompts[i]) and writes it, kept or dropped, as soon as it is done. A prompt already in the file
// must have the same ids (else throws: the prompts file changed), and belong to the shard (else
// throws: the file was collected with another shard). Resets `model` per prompt.
CollectSummary collect_trajectories(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                    TrajectoryWriter& out, const TrajectoryOptions& opts, uint64_t seed,
                                    const CollectProgress& progress = {}, const CollectPlan& plan = {});

}  // namespace cllm
