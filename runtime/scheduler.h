// Iteration-level scheduling of many sequences over one Model (design.md, "One request, end to
// end", 3-7). Sequences join and leave between iterations; each step() advances every active
// sequence by one iteration (one Jacobi iteration, or one sampled AR token at temperature > 0).
//
// What is missing: the Model interface holds the KV of ONE sequence and forwards one sequence per
// call, so the active sequences do not yet share a forward pass; step() makes one forward per
// active sequence. SequenceSlots below switches the model's KV between sequences by recomputing
// the committed tokens of the sequence that takes the model (no KV save/restore API exists, and
// copying KV would cost as much as the weights it saves on a small model). Blocks of at most
// kChunk tokens go through the batch-invariant GEMM, and the recompute rides in the same forward
// as the sequence's Jacobi block, so the recomputed KV is bit-identical to the original: a
// sequence's output does not depend on what else is running (tests/unit/test_scheduler.cpp).
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
};

// What one iteration of one sequence produced.
struct SequenceEvent {
  uint64_t id = 0;
  std::vector<int32_t> tokens;  // newly final tokens (stop token and tokens past the limit cut)
  bool done = false;
  std::string finish_reason;    // when done: "stop" (a stop id) or "length"
  int iterations = 0;           // forward iterations so far, the prefill included
  int generated = 0;            // tokens generated so far
};
// Returns false when the consumer wants no more of this sequence (a stop string matched, the
// client left): the scheduler then drops it, as cancel() would.
using EventSink = std::function<bool(const SequenceEvent&)>;

struct SchedulerLimits {
  int max_batch = 8;     // KV slots: sequences advanced per step
  int max_queue = 64;    // sequences waiting for a slot
  int max_context = 0;   // KV rows of one slot (prompt + generated + block)
};

class Scheduler {
 public:
  // Forwards of at most this many tokens are batch invariant (CpuModel::kInvariantMaxTokens).
  static constexpr int kChunk = 64;

  Scheduler(Model& model, const SchedulerLimits& limits);
  ~Scheduler();

  // Why `spec` can never run ("" if it can): empty prompt, more KV rows than a slot holds, ...
  std::string check(const SequenceSpec& spec) const;
  // Queues a sequence (id != 0, unique); false when the queue is full. Throws if check(spec) is not "".
  bool submit(uint64_t id, SequenceSpec spec);
  // Drops a waiting or active sequence (no event is emitted); may be called from the sink.
  // Unknown ids are ignored.
  void cancel(uint64_t id);

  // Fills free slots from the queue, then runs one iteration of every active sequence.
  void step(const EventSink& emit);

  bool idle() const { return active_.empty() && waiting_.empty(); }
  int active() const { return static_cast<int>(active_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  int64_t kv_rows_in_use() const;  // committed tokens of the active sequences
  int64_t kv_rows_budget() const { return int64_t{limits_.max_batch} * limits_.max_context; }
  const SchedulerLimits& limits() const { return limits_; }

 private:
  struct Sequence;
  // One iteration of s; returns true when s is finished (or dropped by the sink).
  bool iterate(Sequence& s, const EventSink& emit);
  // Forwards `block` (block[0] = the last final token) at the sequence's position, preceded by
  // the committed tokens whose KV the model lacks (all of them when another sequence held it).
  // Returns the predictions of the block's rows; with want_logits, logits_ holds the last row's.
  std::vector<int32_t> forward(Sequence& s, const std::vector<int32_t>& block, bool want_logits);

  void erase_dropped();

  Model& model_;
  SchedulerLimits limits_;
  bool stepping_ = false;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> active_;  // in admission order
  // SequenceSlots: which sequence's KV the model holds, and how many of its rows are exact.
  uint64_t resident_ = 0;  // 0: none
  int resident_rows_ = 0;
  std::vector<float> logits_;
};

}  // namespace cllm
