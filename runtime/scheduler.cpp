#include "runtime/scheduler.h"

#include <algorithm>

#include "kernels/check.h"
#include "runtime/generate.h"

namespace cllm {

// Invariant once prefilled: the model's KV (when this sequence holds it) can be exact for every
// token but the last, which is the next block's g[0] and has not been forwarded yet.
struct Scheduler::Sequence {
  uint64_t id = 0;
  SequenceSpec spec;
  std::vector<int32_t> tokens;  // prompt + final tokens
  std::optional<JacobiDecoder> jacobi;
  std::optional<Sampler> sampler;
  bool prefilled = false;
  bool dropped = false;  // cancelled during step(): removed when the step ends
  int iterations = 0;
  int generated = 0;

  bool sampled() const { return spec.sampling.temperature > 0; }
};

Scheduler::Scheduler(Model& model, const SchedulerLimits& limits) : model_(model), limits_(limits) {
  CLLM_CHECK(limits.max_batch > 0 && limits.max_queue >= 0 && limits.max_context > 0,
             "scheduler limits must be positive: batch " << limits.max_batch << ", queue " << limits.max_queue
                                                         << ", context " << limits.max_context);
  // One slot's worth of KV rows: sequences take turns in it (see SequenceSlots in the header).
  model_.reset(limits.max_context);
}

Scheduler::~Scheduler() = default;

std::string Scheduler::check(const SequenceSpec& spec) const {
  if (spec.prompt.empty()) return "the prompt is empty";
  if (spec.gen.max_new_tokens <= 0) return "max_tokens must be positive";
  const int block = spec.sampling.temperature > 0 ? 1 : spec.jacobi.block;
  if (block < 1 || block > kChunk) return "the Jacobi block must be in 1.." + std::to_string(kChunk);
  const int rows = kv_rows_needed(static_cast<int>(spec.prompt.size()), spec.gen.max_new_tokens, block);
  if (rows > limits_.max_context)
    return "prompt (" + std::to_string(spec.prompt.size()) + " tokens) + max_tokens (" +
           std::to_string(spec.gen.max_new_tokens) + ") + block (" + std::to_string(block) + ") is " +
           std::to_string(rows) + " positions, over the context of " + std::to_string(limits_.max_context);
  return "";
}

bool Scheduler::submit(uint64_t id, SequenceSpec spec) {
  const std::string why = check(spec);
  CLLM_CHECK(why.empty(), "sequence " << id << " cannot run: " << why);
  CLLM_CHECK(id != 0, "sequence id 0 is reserved");
  if (static_cast<int>(waiting_.size()) >= limits_.max_queue) return false;
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->tokens = spec.prompt;
  s->spec = std::move(spec);
  waiting_.push_back(std::move(s));
  return true;
}

void Scheduler::cancel(uint64_t id) {
  auto match = [id](const std::unique_ptr<Sequence>& s) { return s->id == id; };
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), match), waiting_.end());
  if (resident_ == id) resident_ = 0;
  // The sink may cancel while step() walks active_: mark now, erase when the walk is over.
  for (auto& s : active_)
    if (s->id == id) s->dropped = true;
  if (!stepping_) erase_dropped();
}

void Scheduler::erase_dropped() {
  active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& s) { return s->dropped; }),
                active_.end());
}

int64_t Scheduler::kv_rows_in_use() const {
  int64_t rows = 0;
  for (const auto& s : active_) rows += static_cast<int64_t>(s->tokens.size());
  return rows;
}

void Scheduler::step(const EventSink& emit) {
  while (static_cast<int>(active_.size()) < limits_.max_batch && !waiting_.empty()) {
    active_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  // The sequence whose KV the model already holds goes first: one recompute fewer per step.
  auto resident = std::find_if(active_.begin(), active_.end(), [&](const auto& s) { return s->id == resident_; });
  if (resident != active_.end()) std::rotate(active_.begin(), resident, active_.end());
  stepping_ = true;
  for (auto& s : active_) {
    if (s->dropped) continue;
    bool finished = true;
    try {
      finished = iterate(*s, emit);
    } catch (...) {
      stepping_ = false;
      throw;
    }
    if (finished) {
      s->dropped = true;
      if (resident_ == s->id) resident_ = 0;
    }
  }
  stepping_ = false;
  erase_dropped();
}

bool Scheduler::iterate(Sequence& s, const EventSink& emit) {
  std::vector<int32_t> finals;
  const int vocab = model_.config().vocab_size;
  if (!s.prefilled) {
    // The prompt, with its last token as a one-token block: the prediction after the prompt.
    if (s.sampled()) s.sampler.emplace(s.spec.sampling);
    const std::vector<int32_t> y = forward(s, {s.tokens.back()}, s.sampled());
    const int32_t first = s.sampled() ? s.sampler->sample(logits_.data(), vocab) : y[0];
    if (!s.sampled()) s.jacobi.emplace(s.spec.jacobi, s.spec.prompt, first);
    s.prefilled = true;
    finals = {first};
  } else if (s.sampled()) {
    forward(s, {s.tokens.back()}, true);
    finals = {s.sampler->sample(logits_.data(), vocab)};
  } else {
    const std::vector<int32_t> y = forward(s, s.jacobi->block(), false);
    finals = s.jacobi->accept(y.data());
  }
  ++s.iterations;
  s.tokens.insert(s.tokens.end(), finals.begin(), finals.end());
  if (resident_ == s.id) resident_rows_ = static_cast<int>(s.tokens.size()) - 1;

  // The limits as generate.cpp applies them: length first, then stop ids, cut before either.
  SequenceEvent ev;
  ev.id = s.id;
  const std::vector<int32_t>& stops = s.spec.gen.stop_ids;
  for (int32_t t : finals) {
    if (s.generated >= s.spec.gen.max_new_tokens) {
      ev.finish_reason = "length";
      break;
    }
    if (std::find(stops.begin(), stops.end(), t) != stops.end()) {
      ev.finish_reason = "stop";
      break;
    }
    ev.tokens.push_back(t);
    ++s.generated;
  }
  if (ev.finish_reason.empty() && s.generated >= s.spec.gen.max_new_tokens) ev.finish_reason = "length";
  ev.done = !ev.finish_reason.empty();
  ev.iterations = s.iterations;
  ev.generated = s.generated;
  const bool wanted = emit(ev);
  return ev.done || !wanted;
}

std::vector<int32_t> Scheduler::forward(Sequence& s, const std::vector<int32_t>& block, bool want_logits) {
  const int start = resident_ == s.id ? resident_rows_ : 0;
  const int kv_end = static_cast<int>(s.tokens.size()) - 1;
  std::vector<int32_t> feed(s.tokens.begin() + start, s.tokens.begin() + kv_end);
  feed.insert(feed.end(), block.begin(), block.end());
  const int total = static_cast<int>(feed.size());
  const int vocab = model_.config().vocab_size;
  std::vector<int32_t> out(total);
  // Until the forward completes, the KV holds no sequence exactly (a throw leaves it that way).
  resident_ = 0;
  for (int off = 0; off < total; off += kChunk) {
    const int n = std::min(kChunk, total - off);
    const bool last = off + n == total;
    if (last && want_logits) logits_.resize(static_cast<size_t>(n) * vocab);
    model_.forward(feed.data() + off, n, start + off, out.data() + off, last && want_logits ? logits_.data() : nullptr);
    if (last && want_logits && n > 1)
      std::copy(logits_.end() - vocab, logits_.end(), logits_.begin());  // keep only the last row's
  }
  resident_ = s.id;
  resident_rows_ = kv_end;  // the block's rows are exact only once accepted (iterate() updates)
  return std::vector<int32_t>(out.end() - static_cast<long>(block.size()), out.end());
}

}  // namespace cllm
