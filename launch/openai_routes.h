// The routes of `cllm serve`: /v1/completions, /v1/chat/completions (JSON or SSE), /v1/models[/ID],
// /tokenize, /detokenize, /tokenizer_info, /health and /metrics, with the API key check. Admits validated requests
// (their specs from openai_spec.h) and waits on their streams, cancelling a request whose client
// has gone. Every request the HTTP server answers is counted and logged through observer(),
// whoever answered it (this class, or the server itself for 400/408/413).
#pragma once
#include <atomic>
#include <ctime>
#include <string>

#include "launch/http_metrics.h"
#include "launch/http_server.h"
#include "launch/openai_engine.h"
#include "launch/openai_spec.h"
#include "runtime/tokenizer.h"

namespace cllm::openai {

class Routes {
 public:
  Routes(RouteConfig cfg, http::Metrics& metrics) : cfg_(std::move(cfg)), metrics_(metrics) {}
  // Once the model is loaded: from then on /health is 200 and generation is served. `loaded`
  // brings what the checkpoint decides (chat family, BOS, EOS ids, context); those fields are
  // read only by generation, which starts after the engine pointer is published.
  void set_ready(const RouteConfig& loaded, Engine* engine, const Tokenizer* tok) {
    cfg_.chat_template = loaded.chat_template;
    cfg_.add_bos = loaded.add_bos;
    cfg_.eos_ids = loaded.eos_ids;
    cfg_.eos_token = loaded.eos_token;
    cfg_.bos_token = loaded.bos_token;
    cfg_.max_context = loaded.max_context;
    tok_ = tok;
    engine_.store(engine);
  }
  // The engine failed or is going away: from now on generation answers 503 (requests already
  // inside generate() keep the reference they took).
  void detach_engine() { engine_.store(nullptr); }
  void handle(const http::Request& req, http::Responder& res);
  // The HTTP server's observer: counts in cllm_requests_total and one access-log line.
  http::Observer observer();

 private:
  void generate(const http::Request& req, http::Responder& res, bool chat);
  void tokenize(const http::Request& req, http::Responder& res, bool forward);
  void tokenizer_info(http::Responder& res);
  // A token's text in logprobs: its bytes, or for BOS/EOS (no bytes) the control token's name.
  std::string token_text(int32_t id) const;

  RouteConfig cfg_;
  const int64_t created_ = static_cast<int64_t>(std::time(nullptr));  // the model's "created": the server's start
  http::Metrics& metrics_;
  std::atomic<Engine*> engine_{nullptr};
  const Tokenizer* tok_ = nullptr;
};

}  // namespace cllm::openai
