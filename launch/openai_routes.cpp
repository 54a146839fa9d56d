#include "launch/openai_routes.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "core/check.h"
#include "launch/openai_api.h"
#include "runtime/chat_template.h"

namespace cllm::openai {
namespace {

using json = nlohmann::json;

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

void reply(http::Responder& res, int status, const json& body) {
  res.send(status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace));
}

void error(http::Responder& res, int status, const std::string& message, const std::string& code = "",
           const std::string& param = "") {
  http::Headers extra;
  if (status == 429) extra.push_back({"Retry-After", "1"});
  if (status == 401) extra.push_back({"WWW-Authenticate", "Bearer"});
  res.send(status, "application/json", http::error_json(message, error_type(status), code, param), extra);
}

// RFC 7235: the scheme is case-insensitive ("bearer KEY" is as good as "Bearer KEY").
bool authorized(const std::string& header, const std::string& key) {
  const size_t space = header.find(' ');
  if (space == std::string::npos || !http::iequals(header.substr(0, space), "bearer")) return false;
  return header.substr(header.find_first_not_of(' ', space)) == key;
}

struct Route {
  const char* path;
  const char* method;
  bool prefix = false;  // path + "/ID"
};
const Route kRoutes[] = {{"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
                         {"/v1/models", "GET"},       {"/v1/models", "GET", true},
                         {"/tokenize", "POST"},       {"/detokenize", "POST"},
                         {"/health", "GET"},          {"/metrics", "GET"}};

const Route* find_route(const std::string& path) {
  for (const Route& r : kRoutes) {
    const std::string p = r.path;
    if (r.prefix ? path.size() > p.size() + 1 && path.compare(0, p.size() + 1, p + "/") == 0 : path == p) return &r;
  }
  return nullptr;
}

json model_json(const std::string& name) {
  return {{"id", name}, {"object", "model"}, {"created", 0}, {"owned_by", "cllm"}};
}

}  // namespace

http::Observer Routes::observer() {
  return {[this](const http::Request& req, int status) {
            const Route* route = find_route(req.path);
            metrics_.count_request(route ? route->path : "other", status);
          },
          [](const http::Request& req, int status, size_t body_bytes, double seconds) {
            std::fprintf(stderr, "cllm serve: %s %s %d %zu %.3fs %s\n", req.method.empty() ? "-" : req.method.c_str(),
                         req.path.empty() ? "-" : req.path.c_str(), status, body_bytes, seconds,
                         req.id.empty() ? "-" : req.id.c_str());
          }};
}

void Routes::handle(const http::Request& req, http::Responder& res) {
  const Route* route = find_route(req.path);
  if (!route) return error(res, 404, "no route " + req.method + " " + req.path);
  const std::string endpoint = route->path;
  if (req.method != route->method)
    return error(res, 405, req.method + " is not allowed on " + req.path + " (use " + route->method + ")");
  Engine* engine = engine_.load();

  if (endpoint == "/health") {
    const bool ok = engine && !engine->draining();
    return reply(res, ok ? 200 : 503, {{"status", !engine ? "loading" : ok ? "ok" : "draining"}});
  }
  if (endpoint == "/metrics") return res.send(200, "text/plain; version=0.0.4", metrics_.render());
  // The API routes need the key when one is set; /health and /metrics stay open for probes.
  if (!cfg_.api_key.empty() && !authorized(req.header("authorization"), cfg_.api_key))
    return error(res, 401, "missing or wrong API key (send Authorization: Bearer KEY)", "invalid_api_key");
  if (route->prefix) {
    const std::string id = req.path.substr(endpoint.size() + 1);
    if (id != cfg_.model_name) return error(res, 404, "model '" + id + "' is not served here", "model_not_found", "model");
    return reply(res, 200, model_json(id));
  }
  if (endpoint == "/v1/models") return reply(res, 200, {{"object", "list"}, {"data", {model_json(cfg_.model_name)}}});
  if (!engine) return error(res, 503, "the model is still loading");
  if (endpoint == "/tokenize" || endpoint == "/detokenize") return tokenize(req, res, endpoint == "/tokenize");
  generate(req, res, endpoint == "/v1/chat/completions");
}

// vLLM's shape: /tokenize takes a completions prompt or chat messages and gives the ids the model
// would see; /detokenize takes {"tokens": [...]} and gives {"prompt": text}.
void Routes::tokenize(const http::Request& req, http::Responder& res, bool forward) {
  try {
    if (!forward) {
      const json j = json::parse(req.body, nullptr, false);
      if (!j.is_object() || !j.contains("tokens") || !j["tokens"].is_array())
        throw ApiError(400, "the body must be {\"tokens\": [ids]}", "tokens");
      std::vector<int32_t> ids;
      for (const json& t : j["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok_->vocab_size())
          throw ApiError(400, "tokens must be ids in 0.." + std::to_string(tok_->vocab_size() - 1), "tokens");
        ids.push_back(t.get<int32_t>());
      }
      return reply(res, 200, {{"prompt", tok_->decode(ids)}});
    }
    const json j = json::parse(req.body, nullptr, false);
    const ApiRequest r = parse_request(req.body, j.is_object() && j.contains("messages"));
    const SequenceSpec spec = request_spec(r, cfg_, *tok_);
    reply(res, 200, {{"tokens", spec.prompt}, {"count", spec.prompt.size()}, {"max_model_len", cfg_.max_context}});
  } catch (const ApiError& e) {
    error(res, e.status, e.what(), e.code, e.param);
  }
}

void Routes::generate(const http::Request& req, http::Responder& res, bool chat) {
  Engine* current = engine_.load();
  if (!current) return error(res, 503, "the engine is not available");
  Engine& engine = *current;
  ApiRequest r;
  SequenceSpec spec;
  try {
    r = parse_request(req.body, chat);
    // Sampling without a seed differs run to run, as OpenAI's does; a seed makes it reproducible.
    if (r.temperature > 0 && !r.seed_given) r.seed = std::random_device{}() * 0x100000000ull + std::random_device{}();
    spec = request_spec(r, cfg_, *tok_);
    const std::string why = engine.check(spec);
    if (!why.empty()) throw ApiError(400, why, "prompt", "context_length_exceeded");
  } catch (const ApiError& e) {
    return error(res, e.status, e.what(), e.code, e.param);
  }
  if (r.model.empty()) r.model = cfg_.model_name;

  std::shared_ptr<Stream> stream;
  switch (engine.submit(spec, r.stop, &stream)) {
    case Engine::Admission::QueueFull:
      return error(res, 429, "the server is at capacity (all KV slots and the queue are full); retry later");
    case Engine::Admission::Draining:
      return error(res, 503, "the server is shutting down");
    case Engine::Admission::Accepted:
      break;
  }
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + http::new_id();
  const int64_t created = unix_now();
  Usage usage;
  usage.prompt_tokens = static_cast<int>(spec.prompt.size());
  std::string text;
  std::string finish;
  bool first = true;
  // A client that leaves cancels its request; recorded as 499, nginx's "client closed request".
  auto client_left = [&] {
    engine.cancel(stream);
    res.abandon(499);
  };
  // A non-streamed request whose client sent FIN may come from one that left or from one that
  // only finished sending: the answer starts at once as a 200 whose body is JSON after leading
  // whitespace, and a space written now and then tells whether anyone is still reading.
  bool probing = false;
  auto last_probe = Clock::now();
  auto send_body = [&](int status, const std::string& body) {
    if (!probing) return res.send(status, "application/json", body);
    res.write_chunk(body);
    res.end_stream();
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
      if (u.finish_reason == "cancelled" || u.finish_reason == "error") {
        const bool failed = u.finish_reason == "error";
        const std::string msg = failed ? u.error : "the server shut down before the request finished";
        const std::string body = http::error_json(msg, failed ? "server_error" : "service_unavailable");
        if (!r.stream) return send_body(failed ? 500 : 503, body);
        res.write_chunk("event: error\ndata: " + body + "\n\n");
        return res.end_stream();
      }
      finish = u.finish_reason;
      break;
    }
    if (res.client_gone()) return client_left();
    if (!r.stream && !probing && res.peer_finished_sending()) {
      if (!res.start_stream("application/json")) return client_left();
      probing = true;
    }
    if (probing && Clock::now() - last_probe > std::chrono::milliseconds(500)) {
      if (!res.write_chunk(" ")) return client_left();
      last_probe = Clock::now();
    }
  }
  if (!r.stream) return send_body(200, completion_json(r, id, created, text, finish, usage));
  std::string tail = chunk_event(r, id, created, "", finish, &usage, first);
  if (r.include_usage) tail += usage_event(r, id, created, usage);
  tail += "data: [DONE]\n\n";
  res.write_chunk(tail);
  res.end_stream();
}

}  // namespace cllm::openai
