// cllm serve: the OpenAI-compatible HTTP API (launch/openai_*.h) on rank 0, over the whole model
// or, under mpirun, over the tensor-parallel group (the other ranks run worker_loop).
// Threads on rank 0: the main thread loads the model and then runs the engine loop (it owns MPI:
// MPI_THREAD_FUNNELED); the HTTP server accepts and serves connections on its own threads from
// the start, so /health answers 503 while the weights load; a signal thread turns SIGTERM/SIGINT
// into a drain: no new requests, in-flight ones finish within --grace seconds (the rest are
// cancelled), then every rank exits 0.
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "core/check.h"
#include "launch/cli_common.h"
#include "launch/commands.h"
#include "launch/http_server.h"
#include "launch/openai_engine.h"
#include "launch/openai_routes.h"
#include "parallel/coordinator.h"
#include "runtime/block_policy.h"
#include "runtime/block_rows.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"

namespace cllm::cli {
namespace {

struct Flags {
  std::string model_path, host, api_key, chat_template, device, model_name, window = "sliding", block = "auto";
  int port = 8000, max_batch = 8, max_queue = 64, max_block = 0, max_context = 2048, threads = 0;
  int max_step_rows = 512, max_connections = 512;
  int candidates = JacobiOptions{}.candidates, ngram = JacobiOptions{}.ngram, blocks = JacobiOptions{}.blocks;
  double later_block_after = JacobiOptions{}.later_after;
  double header_timeout_s = 10, body_timeout_s = 60, idle_timeout_s = 30;
  int default_chat_max_tokens = 256;
  size_t max_body = 1 << 20;
  double grace_s = 30;
  CommFlags comm_flags;
};

// Turns the first SIGTERM/SIGINT into a call of `on_signal` (set once the engine exists; a signal
// that arrives while loading is remembered). A process-wide handler writes to a pipe that a
// watcher thread reads: masking the signals would not cover threads that libraries (OpenBLAS,
// MPI) started before us, and any such thread could take the signal's default action.
int g_signal_pipe[2] = {-1, -1};
extern "C" void on_stop_signal(int sig) {
  const char c = static_cast<char>(sig);
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &c, 1);
}

class SignalWatch {
 public:
  void start() {
    CLLM_CHECK(pipe(g_signal_pipe) == 0, "pipe() failed");
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::thread([this] {
      char sig = 0;
      while (read(g_signal_pipe[0], &sig, 1) != 1) {
      }
      std::fprintf(stderr, "cllm serve: %s: draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      std::lock_guard<std::mutex> lock(mu_);
      fired_ = true;
      if (action_) action_();
    }).detach();
  }
  // Runs action now if a signal came already, else when one comes.
  void on_signal(std::function<void()> action) {
    std::lock_guard<std::mutex> lock(mu_);
    action_ = std::move(action);
    if (fired_ && action_) action_();
  }
  // Forgets the action; returns only once an action already running has finished, so what it
  // references may be destroyed afterwards (the watcher thread runs it under the same mutex).
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    action_ = nullptr;
  }

 private:
  std::mutex mu_;
  bool fired_ = false;
  std::function<void()> action_;
};

int serve_on_rank(int argc, char** argv, Comm& comm) {
  po::options_description opts("cllm serve");
  Flags f;
  opts.add_options()
      ("model", po::value(&f.model_path)->default_value(default_model_path()), "GGUF file, HF checkpoint directory, cllm .h5 checkpoint, or random:SHAPE "
                                                                     "(random weights of tiny|135m|7b|13b|70b, byte-level tokenizer: for benchmarks)")
      ("host", po::value(&f.host)->default_value("127.0.0.1"), "address to listen on (loopback by default)")
      ("port", po::value(&f.port)->default_value(8000), "TCP port (0: any free port, printed at start)")
      ("api-key", po::value(&f.api_key), "require 'Authorization: Bearer KEY' on /v1/* (default: no auth)")
      ("model-name", po::value(&f.model_name), "name in /v1/models and requests (default: the model file's stem)")
      ("max-batch", po::value(&f.max_batch)->default_value(8), "KV slots: sequences decoded concurrently")
      ("max-queue", po::value(&f.max_queue)->default_value(64), "requests that may wait for a slot; more get 429")
      ("max-context", po::value(&f.max_context)->default_value(2048), "KV rows per slot: prompt + max_tokens + block")
      ("max-step-rows", po::value(&f.max_step_rows)->default_value(f.max_step_rows),
       "token rows per engine step at most (0: no limit): decoding blocks always run, prompt prefill "
       "chunks take the rest, so a burst of long prompts does not stall running requests")
      ("block", po::value(&f.block)->default_value(f.block),
       std::string(kBlockFlagHelp) + " (1.." + std::to_string(kMaxBlockRows) + "); a request's cllm_block pins its own")
      ("max-block", po::value(&f.max_block)->default_value(0),
       "with --block auto: the largest block (0: " + std::to_string(kMaxBlockRows) + ")")
      ("window", po::value(&f.window)->default_value(f.window), "sliding | blockwise")
      ("candidates", po::value(&f.candidates)->default_value(f.candidates),
       "default lookahead n-grams verified beside the block per iteration (0: none; requests: cllm_candidates)")
      ("ngram", po::value(&f.ngram)->default_value(f.ngram), "default lookahead n-gram size (requests: cllm_ngram)")
      ("blocks", po::value(&f.blocks)->default_value(f.blocks),
       "default multi-block: Jacobi blocks of --block guesses in flight (1: one block; more need a fixed --block "
       "N; requests: cllm_blocks)")
      ("later-block-after", po::value(&f.later_block_after)->default_value(f.later_block_after),
       std::string(kLaterBlockAfterHelp) + "; requests: cllm_later_block_after")
      ("chat-template", po::value(&f.chat_template), kChatTemplateFlagHelp)
      ("default-chat-max-tokens", po::value(&f.default_chat_max_tokens)->default_value(256),
       "max_tokens of a chat request that gives none")
      ("max-body", po::value(&f.max_body)->default_value(f.max_body), "largest request body in bytes (413 above)")
      ("max-connections", po::value(&f.max_connections)->default_value(f.max_connections),
       "open connections; past it the one idle the longest is closed")
      ("header-timeout", po::value(&f.header_timeout_s)->default_value(f.header_timeout_s),
       "seconds a request's header may take (408 after)")
      ("body-timeout", po::value(&f.body_timeout_s)->default_value(f.body_timeout_s),
       "seconds a request's body may take once the header is in (408 after)")
      ("idle-timeout", po::value(&f.idle_timeout_s)->default_value(f.idle_timeout_s),
       "seconds a keep-alive connection may wait for its next request")
      ("grace", po::value(&f.grace_s)->default_value(30.0), "seconds in-flight requests may finish after SIGTERM")
      ("device", po::value(&f.device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&f.threads)->default_value(0), "CPU threads (0: all cores, shared among a node's ranks)");
  add_comm_flags(opts, f.comm_flags);
  po::variables_map vm;
  if (!parse_flags(argc, argv,
                   "[mpirun -np N] cllm serve [--model PATH] [--host 127.0.0.1] [--port 8000] [--api-key KEY] "
                   "[--max-batch N] [--max-queue N] [--max-step-rows N] [--block auto|N] [--chat-template FAMILY]",
                   opts, vm))
    return 0;
  CLLM_CHECK(f.max_connections >= 1, "--max-connections must be >= 1");
  CLLM_CHECK(f.header_timeout_s > 0 && f.body_timeout_s > 0 && f.idle_timeout_s > 0, "timeouts must be > 0 seconds");
  CLLM_CHECK(f.max_step_rows >= 0, "--max-step-rows must be >= 0 (0: no limit), got " << f.max_step_rows);
  CLLM_CHECK(f.port >= 0 && f.port <= 65535, "--port must be a TCP port in 0..65535, got " << f.port);
  CLLM_CHECK(f.max_batch >= 1, "--max-batch must be >= 1, got " << f.max_batch);
  CLLM_CHECK(f.max_queue >= 0, "--max-queue must be >= 0, got " << f.max_queue);
  CLLM_CHECK(f.max_context >= 1, "--max-context must be >= 1, got " << f.max_context);
  CLLM_CHECK(f.default_chat_max_tokens >= 1, "--default-chat-max-tokens must be >= 1, got " << f.default_chat_max_tokens);
  CLLM_CHECK(f.max_body >= 1, "--max-body must be >= 1 byte (every POST would get 413), got " << f.max_body);
  CLLM_CHECK(f.grace_s >= 0, "--grace must be >= 0 seconds, got " << f.grace_s);
  // `--api-key "$KEY"` with KEY unset must not serve without authentication.
  CLLM_CHECK(!vm.count("api-key") || !f.api_key.empty(),
             "--api-key is empty: give the key clients must send, or leave the flag out to serve without one");
  CLLM_CHECK(f.window == "sliding" || f.window == "blockwise", "--window must be sliding or blockwise");
  JacobiOptions jacobi;
  jacobi.window = f.window == "sliding" ? JacobiWindow::Sliding : JacobiWindow::Blockwise;
  jacobi.candidates = f.candidates;
  jacobi.ngram = f.ngram;
  jacobi.blocks = f.blocks;
  jacobi.later_after = f.later_block_after;
  apply_block_flags(f.block, f.max_block == 0 ? kMaxBlockRows : f.max_block, f.max_block != 0, jacobi);
  check_lookahead_flags(jacobi);
  // The smallest request (one prompt token, one new token) with the default block must fit a slot.
  const int64_t smallest = kv_rows_needed(1, 1, jacobi.rows());
  CLLM_CHECK(smallest <= f.max_context, "--max-context " << f.max_context << " leaves no room for a request: one "
                                        "prompt token and one new token with the default block ("
                                            << jacobi.rows() << " rows: --block, --max-block, --blocks, --candidates) "
                                            "need " << smallest << " KV rows");
  f.comm_flags.lookahead_rows = invariant_decode_rows(jacobi);
  comm.set_deadline_seconds(f.comm_flags.deadline_s);
  set_cpu_threads(f.threads, comm);
  std::signal(SIGPIPE, SIG_IGN);  // a client that leaves mid-write is an error code, not a kill

  if (comm.rank() != 0) {
    // Workers ignore the signals and follow rank 0's stop plan (or its death, by the deadline).
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    LoadedModel m = load_model(f.model_path, parse_device(f.device), comm, f.comm_flags);
    worker_loop(*m.model, comm);
    std::fprintf(stderr, "cllm serve: rank %d stopped\n", comm.rank());
    return 0;
  }

  // Rank 0: refuse bad settings before listening or loading.
  openai::RouteConfig rc;
  rc.model_name = vm.count("model-name") ? f.model_name : std::filesystem::path(f.model_path).stem().string();
  rc.api_key = f.api_key;
  rc.max_context = f.max_context;
  rc.default_chat_max_tokens = f.default_chat_max_tokens;
  rc.max_sequences = f.max_batch + f.max_queue;
  rc.jacobi = jacobi;
  if (vm.count("chat-template")) rc.chat_template = chat_template_family(f.chat_template);
  http::Metrics metrics;
  openai::Routes routes(rc, metrics);
  // Static: the detached watcher thread outlives this function (it may still be blocked in read()).
  static SignalWatch signals;
  http::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.max_body = f.max_body;
  so.max_connections = f.max_connections;
  so.header_timeout_s = f.header_timeout_s;
  so.body_timeout_s = f.body_timeout_s;
  so.idle_timeout_s = f.idle_timeout_s;
  http::Server server(
      so, [&](const http::Request& q, http::Responder& r) { routes.handle(q, r); }, routes.observer());
  server.start();
  signals.start();
  // The pid: under mpirun, SIGTERM goes to this process (mpirun itself kills the job on SIGTERM).
  std::fprintf(stderr, "cllm serve: pid %d listening on http://%s:%d (loading the model)\n", static_cast<int>(getpid()),
               f.host.c_str(), server.port());

  LoadedModel m = load_model(f.model_path, parse_device(f.device), comm, f.comm_flags);
  const TokenizerSpec& ts = m.checkpoint->tokenizer();
  if (rc.chat_template.empty() && !ts.chat_template.empty()) {
    try {
      chat_template_family(ts.chat_template);  // refuses an unrecognised template now, not per request
      rc.chat_template = ts.chat_template;
    } catch (const Error& e) {
      CLLM_FAIL("the checkpoint's chat template is not supported (" << e.what()
                                                                   << "); start with --chat-template FAMILY");
    }
  }
  rc.add_bos = ts.add_bos;
  rc.eos_ids = m.model->config().eos_token_ids;
  auto token_name = [&](int id) { return id >= 0 && id < static_cast<int>(ts.tokens.size()) ? ts.tokens[id] : ""; };
  rc.eos_token = token_name(m.tokenizer->eos_id());
  rc.bos_token = token_name(m.tokenizer->bos_id());
  rc.max_context = std::min(f.max_context, m.model->config().max_position_embeddings);
  if (vm.given("max-context") && rc.max_context < f.max_context)
    std::fprintf(stderr, "cllm serve: warning: --max-context %d is beyond the model's %d positions "
                         "(max_position_embeddings): slots hold %d\n", f.max_context, rc.max_context, rc.max_context);

  std::unique_ptr<CoordinatorModel> group;
  if (comm.size() > 1) group = std::make_unique<CoordinatorModel>(*m.model, comm);
  // SIGTERM to mpirun reaches the ranks odls_base_sigkill_timeout seconds later and SIGKILL follows
  // as long after that: the drain has that long, not --grace, unless the timeout is raised.
  if (comm.size() > 1) {
    const char* t = std::getenv("OMPI_MCA_odls_base_sigkill_timeout");
    if (!t || std::atof(t) < f.grace_s)
      std::fprintf(stderr,
                   "cllm serve: warning: SIGTERM to mpirun leaves the ranks %s s to drain, less than --grace %.0f: "
                   "start mpirun with --mca odls_base_sigkill_timeout %.0f (or more) to let in-flight requests finish\n",
                   t ? t : "1", f.grace_s, f.grace_s);
  }
  Model& model = group ? static_cast<Model&>(*group) : *m.model;
  openai::EngineOptions eo;
  eo.limits = {f.max_batch, f.max_queue, rc.max_context, f.max_step_rows};
  eo.keepalive_s = comm.size() > 1 ? f.comm_flags.deadline_s / 4 : 0;
  if (jacobi.adaptive) {
    // The step cost of the row counts the engine will run (up to the step budget), for --block auto.
    const auto t0 = std::chrono::steady_clock::now();
    const int rows = f.max_step_rows > 0 ? f.max_step_rows : f.max_batch * kMaxBlockRows;
    eo.step_cost = calibrate_step_cost(model, f.max_batch, rc.max_context, rows);
    std::fprintf(stderr, "cllm serve: step cost (--block auto): 1 row %.2f ms, %d rows %.2f ms; calibrated in %.2f s\n",
                 eo.step_cost.seconds(1) * 1e3, jacobi.block, eo.step_cost.seconds(jacobi.block) * 1e3,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  openai::Engine engine(model, *m.tokenizer, eo, metrics, [&] {
    if (group) group->keepalive();
  });
  routes.set_ready(rc, &engine, m.tokenizer.get());
  std::fprintf(stderr,
               "cllm serve: ready: model '%s', %d slots x %d positions, queue %d, step rows %d, chat template '%s'\n",
               rc.model_name.c_str(), f.max_batch, rc.max_context, f.max_queue, f.max_step_rows,
               rc.chat_template.empty() ? "" : chat_template_family(rc.chat_template).c_str());
  // Under mpirun a stop signal may also mean a rank died: mpirun then sends SIGTERM to the others
  // and SIGKILL odls_base_sigkill_timeout seconds later (default 1), while this thread may be
  // blocked in a collective with the dead rank. A watchdog answers every open request with an error
  // once the engine is stuck in one step, so clients get an error event or a 5xx, not a cut stream.
  std::atomic<bool> engine_done{false};
  std::thread watchdog;
  signals.on_signal([&] {
    engine.drain(f.grace_s);
    server.stop();
    if (comm.size() > 1)
      watchdog = std::thread([&] {
        while (!engine_done) {
          if (engine.stalled(0.5)) {
            std::fprintf(stderr, "cllm serve: a step stalled while stopping (a rank is gone): failing open requests\n");
            engine.fail_open("a rank of the tensor-parallel group stopped responding while the job was stopped");
            return;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
  });
  auto stop_watchdog = [&] {
    engine_done = true;
    signals.clear();  // after this, no action can start a watchdog
    if (watchdog.joinable()) watchdog.join();
  };
  // An engine failure (a lost rank, a collective past its deadline, an error): every open request
  // gets an error answer and the HTTP threads leave (within a bound: a client that does not read
  // must not keep the other ranks waiting) before the engine and server go away.
  auto answer_all = [&](const std::string& why) {
    stop_watchdog();
    routes.detach_engine();
    engine.fail("the server failed: " + why);
    server.join(5.0);
  };
  // A collective's deadline stops every rank from inside the collective, on this thread.
  comm.set_abort_hook(answer_all);
  try {
    engine.run();
  } catch (const std::exception& e) {
    comm.set_abort_hook(nullptr);
    stop_watchdog();
    answer_all(e.what());
    throw;  // run_on_all_ranks reports it and stops every rank
  }
  comm.set_abort_hook(nullptr);
  stop_watchdog();  // and the signal action: it touches engine and server, which die with this scope
  server.stop();
  server.join();
  if (group) group->stop();
  std::fprintf(stderr, "cllm serve: stopped\n");
  if (comm.size() > 1) std::fprintf(stderr, "cllm serve: rank 0 stopped\n");
  return 0;
}

}  // namespace

int serve_main(int argc, char** argv) {
  const std::unique_ptr<Comm> comm = init_comm_from_environment(startup_deadline(argc, argv));
  return run_on_all_ranks(*comm, [&] { return serve_on_rank(argc, argv, *comm); });
}

}  // namespace cllm::cli
