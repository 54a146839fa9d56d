// The bridge between HTTP threads and the decoding loop. The engine loop runs on the thread that
// owns MPI (MPI_THREAD_FUNNELED: only it may call the coordinator), HTTP handlers run on their
// own threads; they meet in a Stream per request. Each loop step is one batched forward over
// every active request (Scheduler::step); between steps the loop takes new requests and
// cancellations, detokenizes each sequence's new tokens, applies stop strings, and publishes the
// text to its Stream.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "launch/http_metrics.h"
#include "runtime/scheduler.h"
#include "runtime/tokenizer.h"

namespace cllm::openai {

using Clock = std::chrono::steady_clock;

// One request's output, written by the engine thread and read by its HTTP thread.
class Stream {
 public:
  struct Update {
    std::string text;           // new text since the last take()
    bool done = false;
    std::string finish_reason;  // "stop", "length"; "cancelled" when the server gave up on it;
                                // "error" when the engine failed (then `error` says why)
    std::string error;
    int completion_tokens = 0;
    int iterations = 0;
    double ttft_s = 0;   // engine-measured, from submit(): to the first token (0 before it)
    double total_s = 0;  // ... to the end (0 before it)
    // When the spec asked for them: the log-probabilities of the tokens whose text is in `text`
    // (a token whose text is held back, e.g. as a possible stop string, comes with its text), and
    // once, with the first update, the prompt's (prompt[1..]).
    std::vector<TokenLogprob> logprobs;
    std::vector<TokenLogprob> prompt_logprobs;
  };
  // Waits up to `timeout` for new text or the end; returns what there is.
  Update take(std::chrono::milliseconds timeout);

 private:
  friend class Engine;
  void publish(const std::string& text, bool done, const std::string& finish, int tokens, int iterations,
               double ttft_s, double total_s, std::vector<TokenLogprob> logprobs = {},
               std::vector<TokenLogprob> prompt_logprobs = {});
  void fail(const std::string& why);

  std::mutex mu_;
  std::condition_variable cv_;
  Update pending_;
  bool finished_ = false;
};

struct EngineOptions {
  SchedulerLimits limits;   // slots, queue, context, and max_step_rows: the rows of one step
  double keepalive_s = 10;  // an idle engine calls keepalive this often (0: never)
  StepCostModel step_cost;  // of --block auto (calibrate_step_cost), refined by every step
};

class Engine {
 public:
  // keepalive: sent when idle (CoordinatorModel::keepalive under mpirun), may be empty.
  Engine(Model& model, const Tokenizer& tok, const EngineOptions& opts, http::Metrics& metrics,
         std::function<void()> keepalive);
  ~Engine();

  enum class Admission { Accepted, QueueFull, Draining };
  // Any thread. "" or why spec can never run (then the caller answers 400).
  std::string check(const SequenceSpec& spec) const { return sched_.check(spec); }
  // Any thread. On Accepted, *out is the request's stream.
  Admission submit(SequenceSpec spec, std::vector<std::string> stop, std::shared_ptr<Stream>* out);
  // Any thread: the client left; the sequence leaves at the next step boundary.
  void cancel(const std::shared_ptr<Stream>& s);
  // Any thread: refuse new requests; in-flight ones may finish until grace_s has passed, then the
  // rest are cancelled and run() returns.
  void drain(double grace_s);
  bool draining() const;

  // The MPI thread: decodes until drain() and the last request is gone.
  void run();
  // The MPI thread, after run() threw: ends every admitted request with an error (their HTTP
  // threads answer it) and refuses new ones, so the server can be joined before the engine dies.
  void fail(const std::string& why);
  // Any thread, while run() may be blocked (a rank died inside a collective, and the launcher is
  // about to kill this process): ends every open request with an error and refuses new ones.
  void fail_open(const std::string& why);
  // Any thread: run() has been inside one step for longer than max(min_s, 4 x a typical step,
  // min(0.9 s, 2 x the slowest recent step)).
  bool stalled(double min_s) const;

 private:
  struct Live;
  bool on_event(const SequenceEvent& ev);
  void finish(Live& l, const std::string& reason);

  Model& model_;
  const Tokenizer& tok_;
  EngineOptions opts_;
  http::Metrics& metrics_;
  std::function<void()> keepalive_;
  Scheduler sched_;  // touched only by run() (check() reads constant limits)

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::pair<std::unique_ptr<Live>, SequenceSpec>> inbox_;
  std::vector<std::shared_ptr<Stream>> cancel_streams_;
  int in_system_ = 0;  // admitted and not yet finished: the admission count
  uint64_t next_id_ = 1;
  bool draining_ = false;
  Clock::time_point drain_deadline_;
  std::vector<std::unique_ptr<Live>> live_;  // run()'s thread only
  std::vector<std::weak_ptr<Stream>> open_;  // every admitted stream (under mu_), for fail_open()
  // The step in progress: when it began (0: none), and a running average of step times (ns).
  std::atomic<int64_t> step_began_ns_{0}, typical_step_ns_{0}, slow_step_ns_{0};
};

}  // namespace cllm::openai
