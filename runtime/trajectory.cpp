#include "runtime/trajectory.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "core/check.h"
#include "runtime/generate.h"
#include "runtime/jacobi.h"

namespace cllm {
namespace {

// 64-bit: max_new_tokens near INT32_MAX plus a block must not wrap.
int64_t max_blocks(const TrajectoryOptions& opts) {
  return (static_cast<int64_t>(opts.max_new_tokens) + opts.block - 1) / opts.block;
}

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

int64_t trajectory_kv_rows(int64_t prompt_tokens, const TrajectoryOptions& opts) {
  return kv_rows_needed(prompt_tokens, max_blocks(opts) * opts.block, opts.block * opts.blocks);
}

uint64_t trajectory_seed(uint64_t seed, int64_t prompt_index) {
  // splitmix64 of (seed, index): neighbouring indices get unrelated streams.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(prompt_index) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

TrajectoryCollector::TrajectoryCollector(std::vector<int32_t> prompt, const TrajectoryOptions& opts, uint64_t seed)
    : opts_(opts), seed_(seed), aug_rng_(seed ^ 0x5bd1e995ULL) {
  CLLM_CHECK(opts.block >= 1, "trajectory block size must be >= 1, got " << opts.block);
  CLLM_CHECK(opts.blocks >= 1 && opts.block * opts.blocks <= kMaxBlockRows,
             "trajectory blocks in flight (" << opts.blocks << ") of " << opts.block << " must be >= 1 and hold at most "
                                             << kMaxBlockRows << " rows");
  CLLM_CHECK(opts.max_new_tokens > 0, "max_new_tokens must be positive, got " << opts.max_new_tokens);
  CLLM_CHECK(!prompt.empty(), "the prompt is empty: nothing to condition on");
  t_.block = opts.block;
  t_.prompt = std::move(prompt);
}

TrajectoryStep TrajectoryCollector::next_block(int max_prefill_rows) const {
  CLLM_CHECK(!done_, "the trajectory is complete: there is no next block");
  if (prefilling()) {
    CLLM_CHECK(max_prefill_rows >= 1, "a prefill chunk needs at least 1 row, got " << max_prefill_rows);
    const int n = std::min({kMaxBlockRows, max_prefill_rows, prefill_left()});
    return {t_.prompt.data() + prefilled_, n, prefilled_};
  }
  const std::vector<int32_t>& g = dec_->block();
  return {g.data(), static_cast<int>(g.size()), dec_->position()};
}

void TrajectoryCollector::consume(const TrajectoryStep& step, const int32_t* y) {
  const TrajectoryStep at = next_block(std::max(step.n, 1));
  CLLM_CHECK(step.tokens == at.tokens && step.n == at.n && step.pos == at.pos,
             "the forwarded block (" << step.n << " rows at position " << step.pos << ") is not the collector's next ("
                                     << at.n << " rows at position " << at.pos << ")");
  if (prefilling()) {
    prefilled_ += step.n;
    if (prefilling()) return;  // more chunks: only the prompt's last row predicts anything
    const int32_t first = y[step.n - 1];
    dec_.emplace(JacobiOptions{.block = opts_.block,
                               .window = JacobiWindow::Blockwise,
                               .init = opts_.init,
                               .seed = seed_,
                               .pad_id = opts_.pad_id,
                               .blocks = opts_.blocks},
                 t_.prompt, first);
    gen_.assign(1, first);
    return;
  }
  const int n = opts_.block;
  // The n-token state before this iteration of each block in flight: its committed tokens (the
  // frontier's, in gen_), then the guesses forwarded at its positions. Generated token i sits at
  // step.pos - (gen_.size() - 1) + i; the forward covers the frontier and the later blocks whole.
  const int64_t committed = static_cast<int64_t>(gen_.size()) - 1;  // gen_.back() is the forward's g[0]
  const int64_t in_flight = (committed + step.n) / n - block_index_;
  CLLM_CHECK((committed + step.n) % n == 0 && in_flight == opts_.blocks,
             "multi-block state: " << step.n << " rows after " << committed << " tokens do not end block "
                                   << block_index_ + opts_.blocks - 1);
  pending_.resize(static_cast<size_t>(in_flight));
  for (int64_t k = 0; k < in_flight && block_index_ + k < max_blocks(opts_); ++k)
    for (int64_t i = (block_index_ + k) * n; i < (block_index_ + k + 1) * n; ++i)
      pending_[static_cast<size_t>(k)].push_back(i < committed ? gen_[static_cast<size_t>(i)] : step.tokens[i - committed]);
  const std::vector<int32_t> final_tokens = dec_->accept(y);
  gen_.insert(gen_.end(), final_tokens.begin(), final_tokens.end());
  // A block is fixed once the next block's first token is known; a path may fix several at once.
  while (!done_ && gen_.size() >= static_cast<size_t>(block_index_) * n + n + 1) finish_block();
}

void TrajectoryCollector::finish_block() {
  const int n = opts_.block, b = block_index_;
  const size_t start = static_cast<size_t>(b) * n;
  t_.fixed_points.insert(t_.fixed_points.end(), gen_.begin() + static_cast<long>(start),
                         gen_.begin() + static_cast<long>(start + n));
  const int first_state = t_.num_states();
  t_.states.insert(t_.states.end(), pending_.front().begin(), pending_.front().end());
  pending_.erase(pending_.begin());
  t_.iterations.push_back(t_.num_states() - first_state);
  if (opts_.augment) augment_block(t_, b, first_state, aug_rng_);

  t_.num_tokens = static_cast<int32_t>(start + n);
  for (int j = 0; j < n; ++j) {
    if (std::find(opts_.stop_ids.begin(), opts_.stop_ids.end(), gen_[start + j]) != opts_.stop_ids.end()) {
      t_.num_tokens = static_cast<int32_t>(start + j + 1);
      t_.stopped = true;
      break;
    }
  }
  ++block_index_;
  done_ = t_.stopped || block_index_ == max_blocks(opts_);
}

Trajectory TrajectoryCollector::take() {
  CLLM_CHECK(done_, "the trajectory is not complete yet");
  return std::move(t_);
}

Trajectory collect_trajectory(BlockPredictor& model, const std::vector<int32_t>& prompt,
                              const TrajectoryOptions& opts, uint64_t seed) {
  TrajectoryCollector c(prompt, opts, seed);
  std::vector<int32_t> y;
  while (!c.done()) {
    const TrajectoryStep s = c.next_block();
    y.resize(s.n);
    model.predict(s.tokens, s.n, s.pos, y.data());
    c.consume(s, y.data());
  }
  return c.take();
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

namespace {

// Writes a finished prompt, kept or dropped (has_repeated_run), counts it and reports it.
void write_result(TrajectoryWriter& out, int64_t index, const Trajectory& t, const TrajectoryOptions& opts,
                  CollectSummary& sum, const CollectProgress& progress) {
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

// A prompt being collected in its own KV slot.
struct Running {
  int64_t index;
  int slot;
  TrajectoryCollector collector;
  TrajectoryStep step;  // its block in the current step's forward (n 0: it waits this step)
};

// One step's forward: the blocks of the running prompts, in admission order, under the row budget
// the scheduler keeps too (PrefillBudget). Sets each Running's step.
void plan_step(std::vector<Running>& running, int max_step_rows, std::vector<int32_t>& tokens,
               std::vector<SeqBlock>& blocks) {
  tokens.clear();
  blocks.clear();
  int decode_rows = 0;
  for (const Running& r : running)
    if (!r.collector.prefilling()) decode_rows += r.collector.next_block().n;
  PrefillBudget prefill(max_step_rows, decode_rows);
  for (Running& r : running) {
    r.step = {};
    if (r.collector.prefilling()) {
      const int n = prefill.take(r.collector.prefill_left());
      if (n == 0) continue;
      r.step = r.collector.next_block(n);
    } else {
      r.step = r.collector.next_block();
    }
    tokens.insert(tokens.end(), r.step.tokens, r.step.tokens + r.step.n);
    blocks.push_back({r.slot, r.step.pos, r.step.n});
  }
}

}  // namespace

CollectSummary collect_trajectories(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                    TrajectoryWriter& out, const TrajectoryOptions& opts, uint64_t seed,
                                    const CollectProgress& progress, const CollectPlan& plan) {
  CLLM_CHECK(plan.num_shards >= 1 && plan.shard >= 0 && plan.shard < plan.num_shards,
             "shard " << plan.shard << " of " << plan.num_shards << " does not exist");
  CLLM_CHECK(plan.batch >= 1, "the collection batch must be >= 1 prompt, got " << plan.batch);
  CLLM_CHECK(plan.max_step_rows >= 1, "max_step_rows must be >= 1, got " << plan.max_step_rows);
  for (int64_t index : out.done())
    CLLM_CHECK(index % plan.num_shards == plan.shard,
               "the output file holds prompt " << index << ", which is not in shard " << plan.shard << "/"
                   << plan.num_shards << ": it was collected with another shard (use one file per shard)");
  CollectSummary sum;
  std::vector<int64_t> pending;  // this shard's prompts not yet in the file, ascending
  int64_t kv_rows = 0;           // of the longest of them
  for (size_t i = plan.shard; i < prompts.size(); i += plan.num_shards) {
    const int64_t index = static_cast<int64_t>(i);
    if (out.done().count(index)) {
      CLLM_CHECK(out.stored_prompt(index) == prompts[i],
                 "prompt " << index << " differs from the one already collected in the output file: "
                           "the prompts file or the tokenization changed since the interrupted run");
      ++sum.skipped;
      continue;
    }
    const std::string why = context_limit_error(model.config(), static_cast<int64_t>(prompts[i].size()),
                                                max_blocks(opts) * opts.block, opts.block * opts.blocks);
    CLLM_CHECK(why.empty(), "prompt " << index << " cannot be collected: " << why);
    pending.push_back(index);
    kv_rows = std::max(kv_rows, trajectory_kv_rows(static_cast<int64_t>(prompts[i].size()), opts));
  }
  if (pending.empty()) return sum;

  const auto start = std::chrono::steady_clock::now();
  auto out_of_time = [&] {
    return plan.max_seconds > 0 &&
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= plan.max_seconds;
  };
  const int slots = static_cast<int>(std::min<size_t>(plan.batch, pending.size()));
  model.reset(static_cast<int>(kv_rows), slots);  // within max_position_embeddings + a block: checked above
  std::vector<int> free_slots;  // popped from the back: slot 0 first
  for (int s = slots - 1; s >= 0; --s) free_slots.push_back(s);
  std::vector<Running> running;  // admission order
  size_t next = 0;               // pending[next] is the next prompt to start
  std::vector<int32_t> tokens, ids;
  std::vector<SeqBlock> blocks;
  for (;;) {
    while (!free_slots.empty() && next < pending.size() && !out_of_time()) {
      const int64_t index = pending[next++];
      running.push_back({index, free_slots.back(), TrajectoryCollector(prompts[index], opts, trajectory_seed(seed, index)), {}});
      free_slots.pop_back();
    }
    if (running.empty()) break;  // everything done, or the time is up and the last ones finished
    plan_step(running, plan.max_step_rows, tokens, blocks);
    ids.resize(tokens.size());
    model.forward_batch(tokens.data(), blocks.data(), static_cast<int>(blocks.size()), ids.data(), nullptr);
    size_t row = 0;
    for (Running& r : running) {
      if (r.step.n == 0) continue;
      r.collector.consume(r.step, ids.data() + row);
      row += r.step.n;
      if (!r.collector.done()) continue;
      write_result(out, r.index, r.collector.take(), opts, sum, progress);
      free_slots.push_back(r.slot);
    }
    std::erase_if(running, [](const Running& r) { return r.collector.done(); });
  }
  sum.remaining = static_cast<int>(pending.size() - next);
  return sum;
}

}  // namespace cllm
