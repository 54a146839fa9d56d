// Iteration-level scheduling with continuous batching (design.md, "One request, end to end",
// 3-7). Sequences join and leave between steps; each step() makes ONE Model::forward_batch over
// every active sequence, so they share each pass over the weights. Each active sequence owns a
// KV slot (model.reset(max_context, max_batch)) and contributes one block to the batch:
//   - while its prompt prefills: the next chunk of at most kMaxBlockRows prompt tokens (a long prompt
//     prefills over several steps, beside the others' decoding: chunked prefill);
//   - then its Jacobi block (greedy), or its last token (sampled AR, temperature > 0).
// A sequence with JacobiOptions::adaptive gets its block size picked each step by
// runtime/block_policy.h for the whole batch (expected tokens per second under the step cost
// model, which every step's measured time refines); the others forward their fixed block.
// Every block has at most kMaxBlockRows rows, so the batch-invariant GEMM serves it and a sequence's
// output does not depend on what else runs beside it (tests/unit/test_scheduler.cpp).
// SchedulerLimits::max_step_rows caps a step's rows (vLLM's max_num_batched_tokens), so a burst of
// long prompts does not stretch the inter-token latency of the sequences already decoding:
// decoding blocks always run, prefill chunks fill what is left of the budget (at least one chunk).
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/block_policy.h"
#include "runtime/block_rows.h"
#include "runtime/decoding.h"
#include "runtime/jacobi.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

namespace cllm {

struct SequenceSpec {
  std::vector<int32_t> prompt;
  GenerateOptions gen;        // max_new_tokens and stop ids (EOS)
  JacobiOptions jacobi;       // block 1 is greedy AR
  SamplingOptions sampling;   // temperature > 0: AR sampling; jacobi is then unused
  // -1: no log-probabilities; 0..kMaxTopLogprobs: each final token's, with that many alternatives.
  int logprobs = -1;
  // The prompt's log-probabilities too (prompt[1..]; needs logprobs >= 0): the prefill forwards
  // every prompt row with logits.
  bool prompt_logprobs = false;
};
constexpr int kMaxTopLogprobs = 20;

// What one iteration of one sequence produced.
struct SequenceEvent {
  uint64_t id = 0;
  std::vector<int32_t> tokens;  // newly final tokens (stop token and tokens past the limit cut)
  bool done = false;
  std::string finish_reason;    // when done: "stop" (a stop id) or "length"
  int iterations = 0;           // forward iterations so far, the prefill included
  int generated = 0;            // tokens generated so far
  // When spec.logprobs >= 0: logprobs[i] is tokens[i]'s, from the logits of the row that
  // predicted it (for Jacobi, the row that verified it), so it equals AR's.
  std::vector<TokenLogprob> logprobs;
  // The first event of a spec.prompt_logprobs sequence: prompt[1..]'s log-probabilities.
  std::vector<TokenLogprob> prompt_logprobs;
  // Tokens this iteration accepted beyond its first, by source: the Jacobi block's guesses, later
  // blocks' guesses (multi-block), a verified n-gram of the pool, a recycled one (DecodeStats).
  int accepted_block = 0, accepted_later = 0, accepted_pool = 0, accepted_recycled = 0;
};
// Returns false when the consumer wants no more of this sequence (a stop string matched, the
// client left): the scheduler then drops it, as cancel() would.
using EventSink = std::function<bool(const SequenceEvent&)>;

struct SchedulerLimits {
  int max_batch = 8;     // KV slots: sequences advanced per step
  int max_queue = 64;    // sequences waiting for a slot
  int max_context = 0;   // KV rows of one slot (prompt + generated + block)
  // Token rows of one step's forward at most (0: no limit). Every decoding sequence's block runs
  // each step, whatever the budget (decode is never starved); prefill chunks then take what is
  // left, in admission order, the last one shortened to fit; a prompt that gets no rows waits for
  // a later step. Prefill always gets at least min(kMaxBlockRows, max_step_rows) rows when a prompt waits,
  // even if the decode rows alone reach the budget (a step then has at most decode rows + kMaxBlockRows),
  // so new requests are never starved by a full batch of Jacobi blocks.
  int max_step_rows = 0;
};

// The shape of one step's forward: how much work shared one pass over the weights.
struct StepStats {
  int sequences = 0;  // blocks in the batch
  int rows = 0;       // token rows in the batch (prefill chunks + Jacobi blocks + AR tokens)
  int prefill_rows = 0;
  int prefill_deferred = 0;  // prefilling sequences that got no rows (over max_step_rows)
  // Decoding sequences by block size (index: rows; 1 is an AR step, sampled ones included).
  std::array<int, kMaxBlockRows + 1> decode_blocks{};
};

class Scheduler {
 public:
  // `cost`: the step cost model of adaptive sequences (calibrate_step_cost), refined by every step.
  Scheduler(Model& model, const SchedulerLimits& limits, StepCostModel cost = {});
  ~Scheduler();

  // Why `spec` can never run ("" if it can): empty prompt, more KV rows than a slot holds, ...
  std::string check(const SequenceSpec& spec) const;
  // Queues a sequence (id != 0, unique); false when no free slot and no queue place is left. Throws if check(spec) is not "".
  bool submit(uint64_t id, SequenceSpec spec);
  // Drops a waiting or active sequence (no event is emitted); may be called from the sink.
  // Unknown ids are ignored.
  void cancel(uint64_t id);

  // Fills free slots from the queue, then runs one batched forward over the active sequences
  // (every decoding one, prefilling ones while max_step_rows allows) and emits an event for each sequence that made tokens final (not for a prefill chunk that
  // leaves part of the prompt for later steps).
  void step(const EventSink& emit);

  bool idle() const { return active_.empty() && waiting_.empty(); }
  int active() const { return static_cast<int>(active_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  int64_t kv_rows_in_use() const;  // committed tokens of the active sequences
  int64_t kv_rows_budget() const { return int64_t{limits_.max_batch} * limits_.max_context; }
  const SchedulerLimits& limits() const { return limits_; }
  // The last step's batch (all zero before the first step, or when it had nothing to run).
  const StepStats& last_step() const { return last_step_; }
  const StepCostModel& cost_model() const { return cost_; }

 private:
  struct Sequence;
  // Turns the batch's predictions for s (rows [row, row + n) of ids_, logits_ if asked) into
  // final tokens and an event; returns true when s is finished (or dropped by the sink).
  bool advance(Sequence& s, const EventSink& emit);
  void erase_dropped();  // and frees their slots
  // Sets the block of every decoding Jacobi sequence for this step (adaptive ones by the policy).
  void plan_decode_blocks();

  Model& model_;
  SchedulerLimits limits_;
  StepCostModel cost_;
  bool stepping_ = false;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> active_;  // in admission order
  std::vector<int> free_slots_;                    // KV slots no active sequence holds
  StepStats last_step_;
  // The step's batch: blocks, their token rows, predictions, and logits when a sampled sequence
  // needs its last row's ([rows, vocab]: the Model returns all rows or none).
  std::vector<SeqBlock> blocks_;
  std::vector<RowSpec> rows_;  // every row's layout, when some block verifies lookahead candidates
  std::vector<KvMove> moves_;  // one per block
  std::vector<int32_t> tokens_, ids_;
  std::vector<float> logits_;
};

}  // namespace cllm
