#include "launch/openai_engine.h"

#include <algorithm>

#include "core/check.h"

namespace cllm::openai {

Stream::Update Stream::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !pending_.text.empty() || pending_.done; });
  Update u = pending_;
  pending_.text.clear();
  return u;
}

void Stream::publish(const std::string& text, bool done, const std::string& finish, int tokens, int iterations,
                     double ttft_s, double total_s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.done) return;
    pending_.text += text;
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

// A request inside the engine: its stream and the text state the engine thread keeps for it.
struct Engine::Live {
  Live(uint64_t id, const Tokenizer& tok) : id(id), decoder(tok) {}
  uint64_t id;
  std::shared_ptr<Stream> stream;
  StreamDecoder decoder;
  std::vector<std::string> stop;
  std::string held;  // decoded text not yet published: it may be the start of a stop string
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
      sched_(model, opts.limits) {
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

void Engine::finish(Live& l, const std::string& reason) {
  metrics_.add_tokens(0, l.tokens);  // before the client can see the end and read /metrics
  l.stream->publish(l.held, true, reason, l.tokens, l.iterations, l.ttft_s, seconds(Clock::now() - l.arrived));
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
  metrics_.add_accepted(ev.accepted_block, ev.accepted_pool, ev.accepted_recycled);
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
  for (int32_t t : ev.tokens) l.held += l.decoder.push(t);
  if (ev.done) l.held += l.decoder.flush();

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
  l.stream->publish(l.held.substr(0, l.held.size() - keep), false, "", l.tokens, l.iterations, l.ttft_s, 0);
  l.held.erase(0, l.held.size() - keep);
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
      sched_.step([this](const SequenceEvent& ev) { return on_event(ev); });
      batch = sched_.last_step();
      if (batch.sequences > 0) metrics_.observe_step(batch.sequences, batch.rows);
    }
    metrics_.set_gauges({sched_.waiting(), batch.sequences, batch.rows, sched_.kv_rows_in_use(),
                         sched_.kv_rows_budget()});
  }
  metrics_.set_gauges({0, 0, 0, 0, sched_.kv_rows_budget()});
}

}  // namespace cllm::openai
