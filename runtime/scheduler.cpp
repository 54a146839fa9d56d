#include "runtime/scheduler.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"
#include "runtime/generate.h"

namespace cllm {

// KV of slot `slot` is exact for the first `prefilled` prompt tokens while the prompt prefills,
// then for every token but the last, which is the next block's g[0] and not yet forwarded.
struct Scheduler::Sequence {
  uint64_t id = 0;
  SequenceSpec spec;
  std::vector<int32_t> tokens;  // prompt + final tokens
  std::optional<JacobiDecoder> jacobi;
  std::optional<Sampler> sampler;
  AcceptanceEstimate estimate;  // tokens per iteration at each block size (adaptive)
  int slot = -1;
  int prefilled = 0;     // prompt tokens forwarded so far
  bool dropped = false;  // cancelled or finished during step(): removed when the step ends
  int iterations = 0;
  int generated = 0;
  int row = 0;           // this step's block: rows [row, row + n) of the batch
  int n = 0;             // 0: not in this step's batch (a prefill chunk over the row budget)
  bool want_logits = false;

  std::vector<TokenLogprob> prompt_logprobs;  // gathered chunk by chunk, sent with the first event

  bool sampled() const { return spec.sampling.temperature > 0; }
  bool logprobs() const { return spec.logprobs >= 0; }
  bool prefilling() const { return prefilled < static_cast<int>(spec.prompt.size()); }
};

Scheduler::Scheduler(Model& model, const SchedulerLimits& limits, StepCostModel cost)
    : model_(model), limits_(limits), cost_(cost) {
  CLLM_CHECK(limits.max_batch > 0 && limits.max_queue >= 0 && limits.max_context > 0 && limits.max_step_rows >= 0,
             "scheduler limits must be positive: batch " << limits.max_batch << ", queue " << limits.max_queue
                                                         << ", context " << limits.max_context << ", step rows "
                                                         << limits.max_step_rows);
  model_.reset(limits.max_context, limits.max_batch);
  for (int slot = limits.max_batch - 1; slot >= 0; --slot) free_slots_.push_back(slot);  // slot 0 goes first
}

Scheduler::~Scheduler() = default;

std::string Scheduler::check(const SequenceSpec& spec) const {
  if (spec.prompt.empty()) return "the prompt is empty";
  if (spec.gen.max_new_tokens <= 0) return "max_tokens must be positive";
  const int block = spec.sampling.temperature > 0 ? 1 : spec.jacobi.rows();
  if (spec.jacobi.block < 1 || block > kMaxBlockRows)
    return "the Jacobi block (" + std::to_string(spec.jacobi.block) + ") x blocks in flight (" +
           std::to_string(spec.jacobi.blocks) + ") plus the candidates' rows must be in 1.." +
           std::to_string(kMaxBlockRows) + ", got " + std::to_string(block);
  if (spec.jacobi.blocks < 1 || (spec.jacobi.blocks > 1 && spec.jacobi.adaptive && spec.sampling.temperature <= 0))
    return "Jacobi blocks in flight must be >= 1, and more than one needs a fixed block size, got " +
           std::to_string(spec.jacobi.blocks);
  if (spec.jacobi.candidates < 0 || (spec.jacobi.candidates > 0 && spec.jacobi.ngram < 2))
    return "lookahead needs candidates >= 0 and an n-gram size >= 2, got " + std::to_string(spec.jacobi.candidates) +
           " and " + std::to_string(spec.jacobi.ngram);
  if (spec.jacobi.candidates > 0 && spec.sampling.temperature <= 0 && !model_.verifies_branches())
    return "lookahead candidates need a backend that verifies branches (the CPU and CUDA models); this one does not";
  if (spec.logprobs < -1 || spec.logprobs > kMaxTopLogprobs)
    return "top logprobs must be in 0.." + std::to_string(kMaxTopLogprobs);
  if (spec.prompt_logprobs && spec.logprobs < 0) return "prompt logprobs need logprobs";
  return context_limit_error(model_.config(), static_cast<int64_t>(spec.prompt.size()), spec.gen.max_new_tokens,
                             block, limits_.max_context);
}

bool Scheduler::submit(uint64_t id, SequenceSpec spec) {
  const std::string why = check(spec);
  CLLM_CHECK(why.empty(), "sequence " << id << " cannot run: " << why);
  CLLM_CHECK(id != 0, "sequence id 0 is reserved");
  // Room is a free KV slot (the next step admits it) or a queue place: the engine counts
  // max_batch + max_queue the same way, so the two never disagree (with --max-queue 0 as well).
  if (waiting_.size() >= static_cast<size_t>(limits_.max_queue) + free_slots_.size()) return false;
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->tokens = spec.prompt;
  s->spec = std::move(spec);
  if (s->sampled()) s->sampler.emplace(s->spec.sampling);
  waiting_.push_back(std::move(s));
  return true;
}

void Scheduler::cancel(uint64_t id) {
  auto match = [id](const std::unique_ptr<Sequence>& s) { return s->id == id; };
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), match), waiting_.end());
  // The sink may cancel while step() walks active_: mark now, erase when the walk is over.
  for (auto& s : active_)
    if (s->id == id) s->dropped = true;
  if (!stepping_) erase_dropped();
}

void Scheduler::erase_dropped() {
  for (const auto& s : active_)
    if (s->dropped) free_slots_.push_back(s->slot);
  active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& s) { return s->dropped; }),
                active_.end());
}

void Scheduler::plan_decode_blocks() {
  std::vector<BlockCandidate> seqs;
  std::vector<Sequence*> who;  // the adaptive ones among seqs, or null
  StepShape shape;
  int prefill_rows = 0;
  for (const auto& s : active_) {
    if (s->prefilling()) {
      prefill_rows += std::min(kMaxBlockRows, static_cast<int>(s->spec.prompt.size()) - s->prefilled);
    } else if (!s->jacobi) {  // sampled: one row, one token
      ++shape.fixed_rows;
      shape.fixed_tokens += 1;
      shape.fixed_ctx += static_cast<double>(s->tokens.size()) - 1;
    } else {
      const int now = s->jacobi->block_rows();
      // Lookahead rows ride beside the block whatever its size.
      const int extra = static_cast<int>(s->jacobi->block().size()) - now;
      shape.fixed_rows += extra;
      shape.fixed_ctx += static_cast<double>(extra) * s->jacobi->position();
      // Guesses past the tokens still wanted would be wasted rows.
      const int cap = std::max(1, std::min(s->spec.jacobi.block, s->spec.gen.max_new_tokens - s->generated));
      const bool adaptive = s->spec.jacobi.adaptive && s->spec.jacobi.window == JacobiWindow::Sliding;
      seqs.push_back({adaptive ? 1 : now, adaptive ? cap : now, s->jacobi->position(), &s->estimate});
      who.push_back(adaptive ? s.get() : nullptr);
    }
  }
  if (limits_.max_step_rows > 0) prefill_rows = std::min(prefill_rows, limits_.max_step_rows);
  shape.fixed_rows += prefill_rows;
  // Growing blocks must leave the prefill its share of the row budget.
  if (limits_.max_step_rows > 0) shape.max_rows = std::max(1, limits_.max_step_rows - shape.fixed_rows);
  if (seqs.empty()) return;
  const std::vector<int> blocks = plan_blocks(seqs, shape, cost_);
  for (size_t i = 0; i < who.size(); ++i)
    if (who[i]) who[i]->jacobi->set_block(blocks[i]);
}

int64_t Scheduler::kv_rows_in_use() const {
  int64_t rows = 0;
  for (const auto& s : active_) rows += static_cast<int64_t>(s->tokens.size());
  return rows;
}

void Scheduler::step(const EventSink& emit) {
  while (!free_slots_.empty() && !waiting_.empty()) {
    active_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    active_.back()->slot = free_slots_.back();
    free_slots_.pop_back();
  }
  plan_decode_blocks();
  int decode_rows = 0;
  for (const auto& s : active_)
    if (!s->prefilling()) decode_rows += s->jacobi ? static_cast<int>(s->jacobi->block().size()) : 1;
  PrefillBudget prefill(limits_.max_step_rows, decode_rows);
  // One block per sequence that gets rows, in admission order.
  blocks_.clear();
  tokens_.clear();
  rows_.clear();
  moves_.clear();
  bool layout = false;  // some block verifies lookahead candidates or moves KV
  last_step_ = {};
  bool want_logits = false;
  for (auto& s : active_) {
    s->row = static_cast<int>(tokens_.size());
    if (s->prefilling()) {
      s->n = prefill.take(static_cast<int>(s->spec.prompt.size()) - s->prefilled);
      s->want_logits = false;
      if (s->n == 0) {  // over the budget: waits for a later step (later admissions wait too)
        ++last_step_.prefill_deferred;
        continue;
      }
      tokens_.insert(tokens_.end(), s->spec.prompt.begin() + s->prefilled,
                     s->spec.prompt.begin() + s->prefilled + s->n);
      blocks_.push_back({s->slot, s->prefilled, s->n});
      for (int i = 0; i < s->n; ++i) rows_.push_back({s->prefilled + i, 0});
      moves_.push_back({});
      last_step_.prefill_rows += s->n;
      // The chunk that completes the prompt predicts the first token.
      // Prompt logprobs need every row's.
      s->want_logits = ((s->sampled() || s->logprobs()) && s->prefilled + s->n == static_cast<int>(s->spec.prompt.size())) ||
                       s->spec.prompt_logprobs;
    } else {
      const std::vector<int32_t> last = {s->tokens.back()};
      const std::vector<int32_t>& block = s->jacobi ? s->jacobi->block() : last;
      s->n = static_cast<int>(block.size());
      tokens_.insert(tokens_.end(), block.begin(), block.end());
      const int32_t pos = static_cast<int32_t>(s->tokens.size()) - 1;
      blocks_.push_back({s->slot, pos, s->n});
      // By the Jacobi block's size (its guesses), lookahead rows aside.
      ++last_step_.decode_blocks[static_cast<size_t>(s->jacobi ? s->jacobi->block_rows() : 1)];
      if (s->jacobi && !s->jacobi->rows().empty()) {
        rows_.insert(rows_.end(), s->jacobi->rows().begin(), s->jacobi->rows().end());
        layout = true;
      } else {
        for (int i = 0; i < s->n; ++i) rows_.push_back({pos + i, 0});
      }
      moves_.push_back(s->jacobi ? s->jacobi->move() : KvMove{});
      layout = layout || moves_.back().n > 0;
      s->want_logits = s->sampled() || s->logprobs();
    }
    want_logits = want_logits || s->want_logits;
  }
  if (blocks_.empty()) return;
  last_step_.sequences = static_cast<int>(blocks_.size());
  last_step_.rows = static_cast<int>(tokens_.size());
  ids_.resize(tokens_.size());
  if (want_logits) logits_.resize(tokens_.size() * static_cast<size_t>(model_.config().vocab_size));
  // A throw leaves every sequence as it was: the forward only wrote KV rows past what is exact.
  const auto t0 = std::chrono::steady_clock::now();
  if (layout)
    model_.forward_rows(tokens_.data(), blocks_.data(), static_cast<int>(blocks_.size()), rows_.data(), moves_.data(),
                        ids_.data(), want_logits ? logits_.data() : nullptr);
  else
    model_.forward_batch(tokens_.data(), blocks_.data(), static_cast<int>(blocks_.size()), ids_.data(),
                         want_logits ? logits_.data() : nullptr);
  double ctx = 0;  // attention work: rows x the position they start at
  for (const SeqBlock& b : blocks_) ctx += static_cast<double>(b.n) * b.pos;
  cost_.observe(last_step_.rows, ctx,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  stepping_ = true;
  try {
    for (auto& s : active_) {
      if (s->dropped || s->n == 0) continue;  // cancelled by the sink earlier in this walk, or not in the batch
      if (advance(*s, emit)) s->dropped = true;
    }
  } catch (...) {
    stepping_ = false;
    throw;
  }
  stepping_ = false;
  erase_dropped();
}

bool Scheduler::advance(Sequence& s, const EventSink& emit) {
  const int vocab = model_.config().vocab_size;
  const size_t last_row = static_cast<size_t>(s.row + s.n - 1);
  std::vector<int32_t> finals;
  std::vector<int> final_rows;  // finals[i] was predicted by row final_rows[i] (empty: s.row + i)
  int first_row = s.row;         // when final_rows is empty
  int accepted_block = 0, accepted_later = 0, accepted_pool = 0, accepted_recycled = 0;
  if (s.prefilling()) {
    if (s.spec.prompt_logprobs)  // row i (position prefilled + i) predicts prompt[prefilled + i + 1]
      for (int i = 0; i < s.n && s.prefilled + i + 1 < static_cast<int>(s.spec.prompt.size()); ++i)
        s.prompt_logprobs.push_back(token_logprob(logits_.data() + static_cast<size_t>(s.row + i) * vocab, vocab,
                                                  s.spec.prompt[s.prefilled + i + 1], s.spec.logprobs));
    s.prefilled += s.n;
    if (s.prefilling()) return false;  // more chunks to come: nothing final yet
    // The prompt's last row predicts the first token. The whole prefill counts as one iteration.
    const int32_t first = s.sampled() ? s.sampler->sample(logits_.data() + last_row * vocab, vocab) : ids_[last_row];
    if (!s.sampled()) s.jacobi.emplace(s.spec.jacobi, s.spec.prompt, first);
    finals = {first};
    first_row = static_cast<int>(last_row);
  } else if (s.sampled()) {
    finals = {s.sampler->sample(logits_.data() + last_row * vocab, vocab)};
    first_row = static_cast<int>(last_row);
  } else {
    const int block0 = s.jacobi->accepted_block(), later0 = s.jacobi->accepted_later();
    const int pool0 = s.jacobi->accepted_pool();
    const int recycled0 = s.jacobi->accepted_recycled();
    const int block_rows = s.jacobi->block_rows();
    finals = s.jacobi->accept(ids_.data() + s.row);
    s.estimate.observe(block_rows, static_cast<int>(finals.size()));
    for (int r : s.jacobi->final_rows()) final_rows.push_back(s.row + r);
    accepted_block = s.jacobi->accepted_block() - block0;
    accepted_later = s.jacobi->accepted_later() - later0;
    accepted_pool = s.jacobi->accepted_pool() - pool0;
    accepted_recycled = s.jacobi->accepted_recycled() - recycled0;
  }
  ++s.iterations;
  s.tokens.insert(s.tokens.end(), finals.begin(), finals.end());

  // The limits as generate.cpp applies them: length first, then stop ids, cut before either.
  SequenceEvent ev;
  ev.id = s.id;
  const Truncation t = truncate_final(s.spec.gen, s.generated, finals.data(), static_cast<int>(finals.size()));
  ev.tokens.assign(finals.begin(), finals.begin() + t.take);
  if (s.logprobs())
    for (int i = 0; i < t.take; ++i) {
      const size_t row = static_cast<size_t>(final_rows.empty() ? first_row + i : final_rows[static_cast<size_t>(i)]);
      ev.logprobs.push_back(token_logprob(logits_.data() + row * vocab, vocab, finals[static_cast<size_t>(i)],
                                          s.spec.logprobs));
    }
  s.generated += t.take;
  ev.finish_reason = t.finish_reason;
  ev.accepted_block = accepted_block;
  ev.accepted_later = accepted_later;
  ev.accepted_pool = accepted_pool;
  ev.accepted_recycled = accepted_recycled;
  if (!s.prompt_logprobs.empty()) ev.prompt_logprobs = std::move(s.prompt_logprobs);
  s.prompt_logprobs.clear();
  ev.done = !ev.finish_reason.empty();
  ev.iterations = s.iterations;
  ev.generated = s.generated;
  const bool wanted = emit(ev);
  return ev.done || !wanted;
}

}  // namespace cllm
