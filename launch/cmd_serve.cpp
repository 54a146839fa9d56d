// cllm serve: the OpenAI-compatible HTTP API (launch/openai_*.h) on rank 0, over the whole model
// or, under mpirun, over the tensor-parallel group (the other ranks run worker_loop).
// Threads on rank 0: the main thread loads the model and then runs the engine loop (it owns MPI:
// MPI_THREAD_FUNNELED); the HTTP server accepts and serves connections on its own threads from
// the start, so /health answers 503 while the weights load; a signal thread turns SIGTERM/SIGINT
// into a drain: no new requests, in-flight ones finish within --grace seconds (the rest are
// cancelled), then every rank exits 0.
#include <pthread.h>
#include <unistd.h>

#include <csignal>
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
#include "runtime/block_rows.h"
#include "runtime/chat_template.h"

namespace cllm::cli {
namespace {

struct Flags {
  std::string model_path, host, api_key, chat_template, device, model_name, window = "sliding";
  int port = 8000, max_batch = 8, max_queue = 64, block = 16, max_context = 2048, threads = 0;
  int max_step_rows = 512, max_connections = 512;
  int candidates = JacobiOptions{}.candidates, ngram = JacobiOptions{}.ngram;
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
      ("block", po::value(&f.block)->default_value(16),
       "default Jacobi block size (1.." + std::to_string(kMaxBlockRows) + "; requests: cllm_block)")
      ("window", po::value(&f.window)->default_value(f.window), "sliding | blockwise")
      ("candidates", po::value(&f.candidates)->default_value(f.candidates),
       "default lookahead n-grams verified beside the block per iteration (0: none; requests: cllm_candidates)")
      ("ngram", po::value(&f.ngram)->default_value(f.ngram), "default lookahead n-gram size (requests: cllm_ngram)")
      ("chat-template", po::value(&f.chat_template), "chat template family (chatml, llama-2, llama-3, vicuna) "
                                                     "instead of the checkpoint's")
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
                   "[--max-batch N] [--max-queue N] [--max-step-rows N] [--block N] [--chat-template FAMILY]",
                   opts, vm))
    return 0;
  check_block_flag(f.block);
  CLLM_CHECK(f.max_connections >= 1, "--max-connections must be >= 1");
  CLLM_CHECK(f.header_timeout_s > 0 && f.body_timeout_s > 0 && f.idle_timeout_s > 0, "timeouts must be > 0 seconds");
  CLLM_CHECK(f.max_step_rows >= 0, "--max-step-rows must be >= 0 (0: no limit), got " << f.max_step_rows);
  CLLM_CHECK(f.window == "sliding" || f.window == "blockwise", "--window must be sliding or blockwise");
  comm.set_deadline_seconds(f.comm_flags.deadline_s);
  set_cpu_threads(f.threads, comm);
  std::signal(SIGPIPE, SIG_IGN);  // a client that leaves mid-write is an error code, not a kill

  if (comm.rank() != 0) {
    // Workers ignore the signals and follow rank 0's stop plan (or its death, by the deadline).
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    LoadedModel m = load_model(f.model_path, parse_device(f.device), comm, f.comm_flags);
    worker_loop(*m.model, comm);
    return 0;
  }

  // Rank 0: refuse bad settings before listening or loading.
  openai::RouteConfig rc;
  rc.model_name = vm.count("model-name") ? f.model_name : std::filesystem::path(f.model_path).stem().string();
  rc.api_key = f.api_key;
  rc.max_context = f.max_context;
  rc.default_chat_max_tokens = f.default_chat_max_tokens;
  rc.jacobi.block = f.block;
  rc.jacobi.window = f.window == "sliding" ? JacobiWindow::Sliding : JacobiWindow::Blockwise;
  rc.jacobi.candidates = f.candidates;
  rc.jacobi.ngram = f.ngram;
  check_lookahead_flags(rc.jacobi);
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
  rc.max_context = std::min(f.max_context, m.model->config().max_position_embeddings);

  std::unique_ptr<CoordinatorModel> group;
  if (comm.size() > 1) group = std::make_unique<CoordinatorModel>(*m.model, comm);
  Model& model = group ? static_cast<Model&>(*group) : *m.model;
  openai::EngineOptions eo;
  eo.limits = {f.max_batch, f.max_queue, rc.max_context, f.max_step_rows};
  eo.keepalive_s = comm.size() > 1 ? f.comm_flags.deadline_s / 4 : 0;
  openai::Engine engine(model, *m.tokenizer, eo, metrics, [&] {
    if (group) group->keepalive();
  });
  routes.set_ready(rc, &engine, m.tokenizer.get());
  std::fprintf(stderr,
               "cllm serve: ready: model '%s', %d slots x %d positions, queue %d, step rows %d, chat template '%s'\n",
               rc.model_name.c_str(), f.max_batch, rc.max_context, f.max_queue, f.max_step_rows,
               rc.chat_template.empty() ? "" : chat_template_family(rc.chat_template).c_str());
  signals.on_signal([&] {
    engine.drain(f.grace_s);
    server.stop();
  });
  // An engine failure (a lost rank, a collective past its deadline, an error): every open request
  // gets an error answer and the HTTP threads leave (within a bound: a client that does not read
  // must not keep the other ranks waiting) before the engine and server go away.
  auto answer_all = [&](const std::string& why) {
    signals.clear();
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
    answer_all(e.what());
    throw;  // run_on_all_ranks reports it and stops every rank
  }
  comm.set_abort_hook(nullptr);
  signals.clear();  // the action touches engine and server, which die with this scope
  server.stop();
  server.join();
  if (group) group->stop();
  std::fprintf(stderr, "cllm serve: stopped\n");
  return 0;
}

}  // namespace

int serve_main(int argc, char** argv) {
  const std::unique_ptr<Comm> comm = init_comm_from_environment(startup_deadline(argc, argv));
  return run_on_all_ranks(*comm, [&] { return serve_on_rank(argc, argv, *comm); });
}

}  // namespace cllm::cli
