#include "launch/openai_routes.h"

#include <chrono>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "launch/openai_api.h"

namespace cllm::openai {
namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

}  // namespace

void Routes::reply(http::Responder& res, const std::string& endpoint, int status, const std::string& body,
                   const http::Headers& extra) {
  res.send(status, "application/json", body, extra);
  metrics_.count_request(endpoint, status);
}

void Routes::error(http::Responder& res, const std::string& endpoint, int status, const std::string& message,
                   const std::string& type, const std::string& code, const std::string& param) {
  http::Headers extra;
  if (status == 429) extra.push_back({"Retry-After", "1"});
  if (status == 401) extra.push_back({"WWW-Authenticate", "Bearer"});
  reply(res, endpoint, status, http::error_json(message, type.empty() ? error_type(status) : type, code, param),
        extra);
}

void Routes::handle(const http::Request& req, http::Responder& res) {
  struct Route {
    const char* path;
    const char* method;
  };
  static const Route kRoutes[] = {{"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
                                  {"/v1/models", "GET"},       {"/health", "GET"},
                                  {"/metrics", "GET"}};
  const Route* route = nullptr;
  for (const Route& r : kRoutes)
    if (req.path == r.path) route = &r;
  if (!route) return error(res, "other", 404, "no route " + req.method + " " + req.path, "");
  const std::string endpoint = route->path;
  if (req.method != route->method)
    return error(res, endpoint, 405, req.method + " is not allowed on " + req.path + " (use " + route->method + ")", "");
  Engine* engine = engine_.load();

  if (endpoint == "/health") {
    const bool ok = engine && !engine->draining();
    return reply(res, endpoint, ok ? 200 : 503,
                 nlohmann::json{{"status", !engine ? "loading" : ok ? "ok" : "draining"}}.dump());
  }
  if (endpoint == "/metrics") {
    res.send(200, "text/plain; version=0.0.4", metrics_.render());
    return metrics_.count_request(endpoint, 200);
  }
  // The API routes need the key when one is set; /health and /metrics stay open for probes.
  if (!cfg_.api_key.empty() && req.header("authorization") != "Bearer " + cfg_.api_key)
    return error(res, endpoint, 401, "missing or wrong API key (send Authorization: Bearer KEY)", "", "invalid_api_key");
  if (endpoint == "/v1/models") {
    nlohmann::json m = {{"id", cfg_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "cllm"}};
    return reply(res, endpoint, 200, nlohmann::json{{"object", "list"}, {"data", {m}}}.dump());
  }
  if (!engine) return error(res, endpoint, 503, "the model is still loading", "");
  generate(req, res, endpoint == "/v1/chat/completions", endpoint);
}

void Routes::generate(const http::Request& req, http::Responder& res, bool chat, const std::string& endpoint) {
  Engine* current = engine_.load();
  if (!current) return error(res, endpoint, 503, "the engine is not available", "");
  Engine& engine = *current;
  ApiRequest r;
  SequenceSpec spec;
  try {
    r = parse_request(req.body, chat);
    spec = request_spec(r, cfg_, *tok_);
    const std::string why = engine.check(spec);
    if (!why.empty()) throw ApiError(400, why, "prompt", "context_length_exceeded");
  } catch (const ApiError& e) {
    return error(res, endpoint, e.status, e.what(), "", e.code, e.param);
  }
  if (r.model.empty()) r.model = cfg_.model_name;

  std::shared_ptr<Stream> stream;
  switch (engine.submit(spec, r.stop, &stream)) {
    case Engine::Admission::QueueFull:
      return error(res, endpoint, 429, "the server is at capacity (all KV slots and the queue are full); retry later", "");
    case Engine::Admission::Draining:
      return error(res, endpoint, 503, "the server is shutting down", "");
    case Engine::Admission::Accepted:
      break;
  }
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
  const int64_t created = unix_now();
  Usage usage;
  usage.prompt_tokens = static_cast<int>(spec.prompt.size());
  std::string text;
  std::string finish;
  bool first = true;
  // A client that leaves cancels its request; counted as 499, nginx's "client closed request".
  auto client_left = [&] {
    engine.cancel(stream);
    metrics_.count_request(endpoint, 499);
  };
  if (r.stream && !res.start_stream("text/event-stream")) return client_left();
  for (;;) {
    const Stream::Update u = stream->take(std::chrono::milliseconds(50));
    usage.completion_tokens = u.completion_tokens;
    usage.iterations = u.iterations;
    usage.server_ttft_s = u.ttft_s;
    usage.server_total_s = u.total_s;
    if (r.stream && (!u.text.empty() || (first && chat))) {
      // Every chunk carries the request's counts so far (cllm.completion_tokens...): a client can
      // tell how many tokens a chunk holds (a Jacobi iteration can make several final).
      if (!res.write_chunk(chunk_event(r, id, created, u.text, "", &usage, first))) return client_left();
      first = false;
    } else {
      text += u.text;
    }
    if (u.done) {
      if (u.finish_reason == "cancelled") {
        const std::string msg = "the server shut down before the request finished";
        if (!r.stream) return error(res, endpoint, 503, msg, "");
        res.write_chunk("data: " + http::error_json(msg, "server_error") + "\n\n");
        res.end_stream();
        return metrics_.count_request(endpoint, 503);
      }
      finish = u.finish_reason;
      break;
    }
    if (res.client_gone()) return client_left();
  }
  if (!r.stream) return reply(res, endpoint, 200, completion_json(r, id, created, text, finish, usage));
  std::string tail = chunk_event(r, id, created, "", finish, &usage, first);
  if (r.include_usage) tail += usage_event(r, id, created, usage);
  tail += "data: [DONE]\n\n";
  res.write_chunk(tail);
  res.end_stream();
  metrics_.count_request(endpoint, 200);
}

}  // namespace cllm::openai
