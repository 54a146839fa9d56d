#include "runtime/trajectory.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "kernels/check.h"
#include "runtime/generate.h"
#include "runtime/jacobi.h"

namespace cllm {
namespace {

int max_blocks(const TrajectoryOptions& opts) { return (opts.max_new_tokens + opts.block - 1) / opts.block; }

// For each state of block b that is not yet its fixed point and has w >= 2 wrong tokens, one
// augmented copy with w/2 of them (chosen at random) set to their fixed-point values.
void augment_block(Trajectory& t, int b, int first_state, std::mt19937_64& rng) {
  const int n = t.block;
  const int32_t* fp = &t.fixed_points[static_cast<size_t>(b) * n];
  for (int s = first_state; s < first_state + t.iterations[b]; ++s) {
    std::vector<int32_t> state(t.states.begin() + static_cast<long>(s) * n, t.states.begin() + static_cast<long>(s + 1) * n);
    std::vector<int> wrong;
    for (int j = 0; j < n; ++j)
      if (state[j] != fp[j]) wrong.push_back(j);
    const int fix = static_cast<int>(wrong.size()) / 2;
    if (fix == 0) continue;
    for (int k = 0; k < fix; ++k) {  // partial Fisher-Yates: wrong[0..fix) become a random subset
      const int pick = std::uniform_int_distribution<int>(k, static_cast<int>(wrong.size()) - 1)(rng);
      std::swap(wrong[k], wrong[pick]);
      state[wrong[k]] = fp[wrong[k]];
    }
    t.augmented.insert(t.augmented.end(), state.begin(), state.end());
    t.augmented_block.push_back(b);
  }
}

}  // namespace

int trajectory_kv_rows(int prompt_tokens, const TrajectoryOptions& opts) {
  return kv_rows_needed(prompt_tokens, max_blocks(opts) * opts.block, opts.block);
}

uint64_t trajectory_seed(uint64_t seed, int64_t prompt_index) {
  // splitmix64 of (seed, index): neighbouring indices get unrelated streams.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(prompt_index) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

Trajectory collect_trajectory(BlockPredictor& model, const std::vector<int32_t>& prompt,
                              const TrajectoryOptions& opts, uint64_t seed) {
  CLLM_CHECK(opts.block >= 1, "trajectory block size must be >= 1, got " << opts.block);
  CLLM_CHECK(opts.max_new_tokens > 0, "max_new_tokens must be positive, got " << opts.max_new_tokens);
  CLLM_CHECK(!prompt.empty(), "the prompt is empty: nothing to condition on");
  const int n = opts.block;
  Trajectory t;
  t.block = n;
  t.prompt = prompt;

  std::vector<int32_t> y(prompt.size());
  model.predict(prompt.data(), static_cast<int>(prompt.size()), 0, y.data());
  JacobiDecoder dec({n, JacobiWindow::Blockwise, opts.init, seed, opts.pad_id}, prompt, y.back());
  // Final tokens in order; the last one is always dec.block()[0], the rest are committed.
  std::vector<int32_t> gen{y.back()};
  std::mt19937_64 aug_rng(seed ^ 0x5bd1e995ULL);

  for (int b = 0; b < max_blocks(opts); ++b) {
    const size_t start = static_cast<size_t>(b) * n;  // index in gen of the block's first token
    const int first_state = t.num_states();
    int iterations = 0;
    while (gen.size() < start + n + 1) {  // fixed once the next block's first token is known
      const std::vector<int32_t>& g = dec.block();
      // The n-token state: this block's committed tokens, then the current guesses.
      t.states.insert(t.states.end(), gen.begin() + static_cast<long>(start), gen.end() - 1);
      t.states.insert(t.states.end(), g.begin(), g.end());
      CLLM_CHECK(t.states.size() == (static_cast<size_t>(first_state) + iterations + 1) * n,
                 "blockwise Jacobi state of block " << b << " is not " << n << " tokens");
      y.resize(g.size());
      model.predict(g.data(), static_cast<int>(g.size()), dec.position(), y.data());
      const std::vector<int32_t> final_tokens = dec.accept(y.data());
      gen.insert(gen.end(), final_tokens.begin(), final_tokens.end());
      ++iterations;
    }
    t.fixed_points.insert(t.fixed_points.end(), gen.begin() + static_cast<long>(start),
                          gen.begin() + static_cast<long>(start + n));
    t.iterations.push_back(iterations);
    if (opts.augment) augment_block(t, b, first_state, aug_rng);

    t.num_tokens = static_cast<int32_t>(start + n);
    for (int j = 0; j < n; ++j) {
      if (std::find(opts.stop_ids.begin(), opts.stop_ids.end(), gen[start + j]) != opts.stop_ids.end()) {
        t.num_tokens = static_cast<int32_t>(start + j + 1);
        t.stopped = true;
        break;
      }
    }
    if (t.stopped) break;
  }
  return t;
}

bool has_repeated_run(const Trajectory& t, int run) {
  if (run <= 0) return false;
  int count = 0;
  for (int i = 0; i < t.num_tokens; ++i) {
    count = (i > 0 && t.fixed_points[i] == t.fixed_points[i - 1]) ? count + 1 : 1;
    if (count >= run) return true;
  }
  return false;
}

CollectSummary collect_trajectories(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                    TrajectoryWriter& out, const TrajectoryOptions& opts, uint64_t seed,
                                    const CollectProgress& progress, const CollectPlan& plan) {
  CLLM_CHECK(plan.num_shards >= 1 && plan.shard >= 0 && plan.shard < plan.num_shards,
             "shard " << plan.shard << " of " << plan.num_shards << " does not exist");
  for (int64_t index : out.done())
    CLLM_CHECK(index % plan.num_shards == plan.shard,
               "the output file holds prompt " << index << ", which is not in shard " << plan.shard << "/"
                   << plan.num_shards << ": it was collected with another shard (use one file per shard)");
  const auto start = std::chrono::steady_clock::now();
  CollectSummary sum;
  for (size_t i = plan.shard; i < prompts.size(); i += plan.num_shards) {
    const int64_t index = static_cast<int64_t>(i);
    if (out.done().count(index)) {
      CLLM_CHECK(out.stored_prompt(index) == prompts[i],
                 "prompt " << index << " differs from the one already collected in the output file: "
                           "the prompts file or the tokenization changed since the interrupted run");
      ++sum.skipped;
      continue;
    }
    if (plan.max_seconds > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= plan.max_seconds) {
      ++sum.remaining;
      continue;  // keep counting: the summary says how many a resumed run still has to do
    }
    model.reset(trajectory_kv_rows(static_cast<int>(prompts[i].size()), opts));
    const Trajectory t = collect_trajectory(model, prompts[i], opts, trajectory_seed(seed, index));
    const bool drop = has_repeated_run(t, opts.max_repeat);
    if (drop) {
      out.write_dropped(index, t.prompt);
      ++sum.dropped;
    } else {
      out.write(index, t);
      ++sum.kept;
      sum.tokens += t.num_tokens;
      for (int32_t it : t.iterations) sum.iterations += it;
    }
    if (progress) progress(index, t, drop);
  }
  return sum;
}

}  // namespace cllm
