#include "launch/openai_engine.h"

#include <algorithm>

#include "core/check.h"

namespace cllm::openai {

Stream::Update Stream::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !pending_.text.empty() || pending_.done; });
  Update u = pending_;
  pending_.text.clear();
  pending_.logprobs.clear();
  pending_.prompt_logprobs.clear();
  return u;
}

void Stream::publish(const std::string& text, bool done, const std::string& finish, int tokens, int iterations,
                     double ttft_s, double total_s, std::vector<TokenLogprob> logprobs,
                     std::vector<TokenLogprob> prompt_logprobs) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.done) return;
    pending_.text += text;
    pending_.logprobs.insert(pending_.logprobs.end(), logprobs.begin(), logprobs.end());
    pending_.prompt_logprobs.insert(pending_.prompt_logprobs.end(), prompt_logprobs.begin(), prompt_logprobs.end());
    pending_.done = done;
    pending_.finish_reason = finish;
    pending_.completion_tokens = tokens;
    pending_.iterations = iterations;
    pending_.ttft_s = ttft_s;
    pending_.total_s = total_s;
  }
  cv_.notify_all();
}

void Stream::fail(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.done) return;
    pending_.done = true;
    pending_.finish_reason = "error";
    pending_.error = why;
  }
  cv_.notify_all();
}

// A token's log-probability waiting for its text to be published, with the output offsets [begin,
// end) of that text: it goes out with the text up to `end`.
struct HeldLogprob {
  TokenLogprob lp;
  size_t begin, end;
};

// A request inside the engine: its stream and the text state the engine thread keeps for it.
struct Engine::Live {
  Live(uint64_t id, const Tokenizer& tok) : id(id), decoder(tok) {}
  uint64_t id;
  std::shared_ptr<Stream> stream;
  StreamDecoder decoder;
  std::vector<std::string> stop;
  std::string held;  // decoded text not yet published: it may be the start of a stop string
  size_t published = 0;  // bytes of text published before `held`
  std::vector<HeldLogprob> held_lp;  // of tokens not yet published
  std::vector<TokenLogprob> prompt_lp;  // published with the first update
  Clock::time_point arrived = Clock::now(), last_delivery;
  bool delivered = false;
  int tokens = 0, iterations = 0;
  double ttft_s = 0;  // arrival to the first token, once there is one
};

namespace {
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

Engine::Engine(Model& model, const Tokenizer& tok, const EngineOptions& opts, http::Metrics& metrics,
               std::function<void()> keepalive)
    : model_(model), tok_(tok), opts_(opts), metrics_(metrics), keepalive_(std::move(keepalive)),
      sched_(model, opts.limits, opts.step_cost) {
  metrics_.set_gauges({0, 0, 0, 0, sched_.kv_rows_budget()});
}

Engine::~Engine() = default;

Engine::Admission Engine::submit(SequenceSpec spec, std::vector<std::string> stop, std::shared_ptr<Stream>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return Admission::Draining;
  // The scheduler's slots plus its queue: counting here answers 429 at once, without a round
  // trip through the engine thread.
  if (in_system_ >= opts_.limits.max_batch + opts_.limits.max_queue) return Admission::QueueFull;
  ++in_system_;
  auto live = std::make_unique<Live>(next_id_++, tok_);
  live->stream = std::make_shared<Stream>();
  live->stop = std::move(stop);
  *out = live->stream;
  open_.erase(std::remove_if(open_.begin(), open_.end(), [](const auto& w) { return w.expired(); }), open_.end());
  open_.push_back(live->stream);
  inbox_.emplace_back(std::move(live), std::move(spec));
  wake_.notify_all();
  return Admission::Accepted;
}

void Engine::cancel(const std::shared_ptr<Stream>& s) {
  // The stream does not know its id; the engine thread matches it (after admitting the inbox).
  std::lock_guard<std::mutex> lock(mu_);
  cancel_streams_.push_back(s);
  wake_.notify_all();
}

void Engine::drain(double grace_s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return;
  draining_ = true;
  drain_deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
  wake_.notify_all();
}

bool Engine::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

// The log-probabilities of the held tokens whose text ends at or before `end` (an output offset),
// removed from held_lp.
static std::vector<TokenLogprob> take_logprobs(std::vector<HeldLogprob>& held, size_t end) {
  std::vector<TokenLogprob> out;
  size_t k = 0;
  for (; k < held.size() && held[k].end <= end; ++k) out.push_back(std::move(held[k].lp));
  held.erase(held.begin(), held.begin() + k);
  return out;
}

void Engine::finish(Live& l, const std::string& reason) {
  metrics_.add_tokens(0, l.tokens);  // before the client can see the end and read /metrics
  // After a stop string cut the text, the tokens whose text starts before the cut keep their
  // logprobs (the last one holds the cut, even when part of its text was published before); those
  // wholly past it do not. A token with no text (a special token) at the cut stays.
  const size_t end = l.published + l.held.size();
  std::vector<TokenLogprob> lp;
  for (HeldLogprob& h : l.held_lp) {
    if (reason == "stop" && h.begin >= end && h.end > h.begin) break;
    lp.push_back(std::move(h.lp));
  }
  l.held_lp.clear();
  l.stream->publish(l.held, true, reason, l.tokens, l.iterations, l.ttft_s, seconds(Clock::now() - l.arrived),
                    std::move(lp), std::move(l.prompt_lp));
  const uint64_t id = l.id;
  live_.erase(std::remove_if(live_.begin(), live_.end(), [id](const auto& p) { return p->id == id; }), live_.end());
  std::lock_guard<std::mutex> lock(mu_);
  --in_system_;
}

bool Engine::on_event(const SequenceEvent& ev) {
  auto it = std::find_if(live_.begin(), live_.end(), [&](const auto& p) { return p->id == ev.id; });
  CLLM_CHECK(it != live_.end(), "event for unknown sequence " << ev.id);
  Live& l = **it;
  const Clock::time_point now = Clock::now();
  metrics_.observe_iteration(static_cast<int>(ev.tokens.size()) + (ev.finish_reason == "stop" ? 1 : 0));
  metrics_.add_accepted(ev.accepted_block, ev.accepted_later, ev.accepted_pool, ev.accepted_recycled);
  if (!ev.tokens.empty()) {
    if (!l.delivered) {
      l.ttft_s = seconds(now - l.arrived);
      metrics_.observe_ttft(l.ttft_s);
    } else {
      const double gap = std::chrono::duration<double>(now - l.last_delivery).count() / ev.tokens.size();
      for (size_t i = 0; i < ev.tokens.size(); ++i) metrics_.observe_inter_token(gap);
    }
    l.delivered = true;
    l.last_delivery = now;
  }
  l.tokens = ev.generated;
  l.iterations = ev.iterations;
  for (size_t i = 0; i < ev.tokens.size(); ++i) {
    const size_t begin = l.published + l.held.size();
    l.held += l.decoder.push(ev.tokens[i]);
    if (i < ev.logprobs.size()) l.held_lp.push_back({ev.logprobs[i], begin, l.published + l.held.size()});
  }
  // At the end, bytes held back for an unfinished character (max_tokens cut it) are dropped, as vLLM
  // does: the text ends at the last whole character, never in U+FFFD.
  if (ev.done) l.decoder.flush();
  l.prompt_lp.insert(l.prompt_lp.end(), ev.prompt_logprobs.begin(), ev.prompt_logprobs.end());

  // Stop strings act on text, so they match across token boundaries; the text ends before them.
  size_t cut = std::string::npos;
  for (const std::string& s : l.stop) cut = std::min(cut, l.held.find(s));
  if (cut != std::string::npos) {
    l.held.resize(cut);
    finish(l, "stop");
    return false;
  }
  if (ev.done) {
    finish(l, ev.finish_reason);
    return true;
  }
  // Hold back the longest tail that could still grow into a stop string.
  size_t keep = 0;
  for (const std::string& s : l.stop)
    for (size_t k = std::min(s.size() - 1, l.held.size()); k > keep; --k)
      if (l.held.compare(l.held.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  const size_t out = l.held.size() - keep;
  l.stream->publish(l.held.substr(0, out), false, "", l.tokens, l.iterations, l.ttft_s, 0,
                    take_logprobs(l.held_lp, l.published + out), std::move(l.prompt_lp));
  l.prompt_lp.clear();
  l.held.erase(0, out);
  l.published += out;
  return true;
}

void Engine::fail(const std::string& why) {
  std::deque<std::pair<std::unique_ptr<Live>, SequenceSpec>> arrivals;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    drain_deadline_ = Clock::now();
    arrivals.swap(inbox_);
    cancel_streams_.clear();
    in_system_ = 0;
  }
  for (auto& a : arrivals) a.first->stream->fail(why);
  for (auto& l : live_) l->stream->fail(why);
  live_.clear();
}

void Engine::fail_open(const std::string& why) {
  std::vector<std::shared_ptr<Stream>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    for (const auto& w : open_)
      if (auto s = w.lock()) open.push_back(std::move(s));
  }
  for (const auto& s : open) s->fail(why);  // a finished stream ignores it
}

namespace {
int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }
}  // namespace

bool Engine::stalled(double min_s) const {
  const int64_t began = step_began_ns_.load();
  if (began == 0) return false;
  // Four typical steps, or twice the slowest recent one (a loaded machine, many ranks on few cores,
  // has single steps far above its average; a stall is a step that never ends), the latter at most
  // 0.9 s: under mpirun a rank's death brings SIGKILL 1 s after SIGTERM, and open requests must be
  // answered before it.
  const double limit = std::max({min_s, 4e-9 * static_cast<double>(typical_step_ns_.load()),
                                 std::min(0.9, 2e-9 * static_cast<double>(slow_step_ns_.load()))});
  return 1e-9 * static_cast<double>(now_ns() - began) > limit;
}

void Engine::run() {
  for (;;) {
    std::deque<std::pair<std::unique_ptr<Live>, SequenceSpec>> arrivals;
    std::vector<std::shared_ptr<Stream>> cancels;
    bool give_up = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto has_work = [&] { return !inbox_.empty() || !cancel_streams_.empty() || draining_ || !sched_.idle(); };
      if (!has_work()) {
        const auto wait = std::chrono::duration<double>(opts_.keepalive_s > 0 ? opts_.keepalive_s : 3600.0);
        if (!wake_.wait_for(lock, wait, has_work)) {
          lock.unlock();
          if (keepalive_) keepalive_();
          continue;
        }
      }
      arrivals.swap(inbox_);
      cancels.swap(cancel_streams_);
      give_up = draining_ && Clock::now() >= drain_deadline_;
    }
    for (auto& [live, spec] : arrivals) {
      metrics_.add_tokens(static_cast<int>(spec.prompt.size()), 0);
      CLLM_CHECK(sched_.submit(live->id, std::move(spec)), "admission count and scheduler queue disagree");
      live_.push_back(std::move(live));
    }
    for (const auto& s : cancels) {
      auto it = std::find_if(live_.begin(), live_.end(), [&](const auto& p) { return p->stream == s; });
      if (it == live_.end()) continue;  // finished meanwhile
      sched_.cancel((*it)->id);
      finish(**it, "cancelled");
    }
    if (give_up)
      while (!live_.empty()) {
        sched_.cancel(live_.front()->id);
        finish(*live_.front(), "cancelled");
      }
    if (draining() && live_.empty()) break;
    StepStats batch;
    if (!sched_.idle()) {
      const int64_t began = now_ns();
      step_began_ns_ = began;
      sched_.step([this](const SequenceEvent& ev) { return on_event(ev); });
      step_began_ns_ = 0;
      const int64_t took = now_ns() - began;
      typical_step_ns_ = typical_step_ns_.load() == 0 ? took : (7 * typical_step_ns_.load() + took) / 8;
      const int64_t slow = slow_step_ns_.load();
      slow_step_ns_ = std::max(took, slow - slow / 64);  // decays over ~64 steps
      batch = sched_.last_step();
      if (batch.sequences > 0) metrics_.observe_step(batch.sequences, batch.rows, batch.decode_blocks);
    }
    metrics_.set_gauges({sched_.waiting(), batch.sequences, batch.rows, sched_.kv_rows_in_use(),
                         sched_.kv_rows_budget()});
  }
  metrics_.set_gauges({0, 0, 0, 0, sched_.kv_rows_budget()});
}

}  // namespace cllm::openai
