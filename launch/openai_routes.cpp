#include "launch/openai_routes.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/check.h"
#include "launch/openai_api.h"
#include "runtime/chat_template.h"
#include "runtime/unicode_text.h"

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
           const std::string& param = "", http::Headers extra = {}) {
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
                         {"/tokenizer_info", "GET"},
                         {"/health", "GET"},          {"/metrics", "GET"}};

const Route* find_route(const std::string& path) {
  for (const Route& r : kRoutes) {
    const std::string p = r.path;
    if (r.prefix ? path.size() > p.size() + 1 && path.compare(0, p.size() + 1, p + "/") == 0 : path == p) return &r;
  }
  return nullptr;
}

json model_json(const std::string& name, int64_t created) {
  return {{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "cllm"}};
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
  static const std::set<std::string> kMethods = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
                                                  "CONNECT"};
  if (!kMethods.count(req.method)) return error(res, 501, "method " + req.method + " is not implemented");
  const Route* route = find_route(req.path);
  if (!route) return error(res, 404, "no route " + req.method + " " + req.path);
  const std::string endpoint = route->path;
  const std::string allowed = std::string(route->method) == "GET" ? "GET, HEAD" : route->method;
  // A browser's CORS preflight: the route's method and whatever headers it asks to send.
  if (req.method == "OPTIONS" && !req.header("access-control-request-method").empty()) {
    const std::string asked = req.header("access-control-request-headers");
    return res.send(204, "text/plain", "",
                    {{"Access-Control-Allow-Methods", allowed + ", OPTIONS"},
                     {"Access-Control-Allow-Headers", asked.empty() ? "Authorization, Content-Type" : asked},
                     {"Access-Control-Max-Age", "600"}});
  }
  // HEAD is GET without the body (the server writes the header only).
  const std::string method = req.method == "HEAD" ? "GET" : req.method;
  if (method != route->method)
    return error(res, 405, req.method + " is not allowed on " + req.path + " (use " + allowed + ")", "", "",
                 {{"Allow", allowed}});
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
    return reply(res, 200, model_json(id, created_));
  }
  if (endpoint == "/v1/models") return reply(res, 200, {{"object", "list"}, {"data", {model_json(cfg_.model_name, created_)}}});
  if (!engine) return error(res, 503, "the model is still loading");
  if (endpoint == "/tokenizer_info") return tokenizer_info(res);
  if (endpoint == "/tokenize" || endpoint == "/detokenize") return tokenize(req, res, endpoint == "/tokenize");
  generate(req, res, endpoint == "/v1/chat/completions");
}

// vLLM's shape: /tokenize takes a completions prompt or chat messages and gives the ids the model
// would see; /detokenize takes {"tokens": [...]} and gives {"prompt": text}.
void Routes::tokenize(const http::Request& req, http::Responder& res, bool forward) {
  try {
    if (!forward) {
      const json j = parse_body(req.body);
      if (!j.contains("tokens") || !j["tokens"].is_array())
        throw ApiError(400, "the body must be {\"tokens\": [ids]}", "tokens");
      std::vector<int32_t> ids;
      for (const json& t : j["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok_->vocab_size())
          throw ApiError(400, "tokens must be ids in 0.." + std::to_string(tok_->vocab_size() - 1), "tokens");
        ids.push_back(t.get<int32_t>());
      }
      return reply(res, 200, {{"prompt", tok_->decode(ids)}});
    }
    json j = parse_body(req.body);
    // vLLM's add_special_tokens (default true): false encodes a text prompt without BOS.
    bool special = true;
    if (j.contains("add_special_tokens")) {
      if (!j["add_special_tokens"].is_boolean()) throw ApiError(400, "add_special_tokens must be a boolean", "add_special_tokens");
      special = j["add_special_tokens"].get<bool>();
      j.erase("add_special_tokens");
    }
    const ApiRequest r = parse_request_object(j, j.contains("messages"));
    SequenceSpec spec = request_spec(r, cfg_, *tok_);
    if (!special && !r.chat && r.prompt_ids.empty()) spec.prompt = tok_->encode(r.prompt, false);
    reply(res, 200, {{"tokens", spec.prompt}, {"count", spec.prompt.size()}, {"max_model_len", cfg_.max_model_len()}});
  } catch (const ApiError& e) {
    error(res, e.status, e.what(), e.code, e.param);
  }
}

// vLLM's /tokenizer_info: what a client that tokenizes through /tokenize needs (lm-evaluation-
// harness's remote tokenizer reads the special tokens' text from it).
std::string Routes::token_text(int32_t id) const {
  std::string t = tok_->token_bytes(id);
  if (t.empty()) t = tok_->token_string(id);  // a control token: its name ("<|endoftext|>")
  if (t.empty() && id == tok_->eos_id()) return cfg_.eos_token;
  if (t.empty() && id == tok_->bos_id()) return cfg_.bos_token;
  return t;
}

void Routes::tokenizer_info(http::Responder& res) {
  auto special = [](const std::string& t) { return t.empty() ? json(nullptr) : json(t); };
  const bool jinja = cfg_.chat_template.find("{%") != std::string::npos;
  reply(res, 200, {{"tokenizer_class", "cllm"},
                   {"eos_token", special(cfg_.eos_token)},
                   {"bos_token", special(cfg_.bos_token)},
                   {"pad_token", nullptr},
                   {"add_bos_token", cfg_.add_bos},
                   {"chat_template", jinja ? json(cfg_.chat_template) : json(nullptr)},
                   {"model_max_length", cfg_.max_model_len()},
                   {"vocab_size", tok_->vocab_size()}});
}

void Routes::generate(const http::Request& req, http::Responder& res, bool chat) {
  Engine* current = engine_.load();
  if (!current) return error(res, 503, "the engine is not available");
  Engine& engine = *current;
  ApiRequest r;
  std::vector<SequenceSpec> specs;  // one per prompt (a completions batch has several)
  std::vector<std::string> prompt_texts;
  try {
    r = parse_request(req.body, chat);
    // Sampling without a seed differs run to run, as OpenAI's does; a seed makes it reproducible.
    if (r.temperature > 0 && !r.seed_given) r.seed = std::random_device{}() * 0x100000000ull + std::random_device{}();
    std::vector<ApiRequest::PromptInput> inputs = std::move(r.batch);  // out of r: not copied per prompt
    r.batch.clear();
    if (inputs.empty()) inputs.push_back({r.prompt, r.prompt_ids});
    for (const ApiRequest::PromptInput& in : inputs) {
      ApiRequest one = r;
      one.prompt = in.text;
      one.prompt_ids = in.ids;
      SequenceSpec spec = request_spec(one, cfg_, *tok_);
      std::string why = engine.check(spec);
      if (!why.empty()) {
        // Named as the API names it (max_tokens), and blamed on max_tokens when the prompt alone fits.
        SequenceSpec one_token = spec;
        one_token.gen.max_new_tokens = 1;
        const bool prompt_fits = engine.check(one_token).empty();
        // (a request without max_tokens was given the default completion length: named as such)
        const std::string named = r.max_tokens > 0 ? r.max_tokens_field : "default completion length";
        for (size_t at; (at = why.find("max_new_tokens")) != std::string::npos;) why.replace(at, 14, named);
        if (!prompt_fits)  // vLLM's words first: the limit in tokens a request may use, then the detail
          why = "This model's maximum context length is " + std::to_string(cfg_.max_model_len()) +
                " tokens (prompt and completion); the " + (chat ? "messages are " : "prompt is ") +
                std::to_string(spec.prompt.size()) + " tokens, leaving no room for one more (" + why + ")";
        throw ApiError(400, why, prompt_fits ? r.max_tokens_field : (chat ? "messages" : "prompt"),
                       "context_length_exceeded");
      }
      prompt_texts.push_back(chat ? "" : one.prompt_ids.empty() ? one.prompt : tok_->decode(spec.prompt));
      specs.push_back(std::move(spec));
    }
  } catch (const ApiError& e) {
    return error(res, e.status, e.what(), e.code, e.param);
  }
  if (r.model.empty()) r.model = cfg_.model_name;

  // n choices are n sequences; a sampled one gets seed + index, so each choice is reproducible
  // on its own and they differ from each other.
  // More choices than the server ever holds at once would meet 429 however long the client waits.
  const int total = r.n * static_cast<int>(specs.size());  // choices: prompt p's j-th is p * n + j
  if (cfg_.max_sequences > 0 && total > cfg_.max_sequences)
    return error(res, 400,
                 (specs.size() > 1 ? std::to_string(specs.size()) + " prompts x " : std::string()) + "n (" +
                     std::to_string(r.n) + ") is more than this server holds at once (" +
                     std::to_string(cfg_.max_sequences) + " sequences: --max-batch + --max-queue)",
                 "", specs.size() > 1 ? "prompt" : "n");
  std::vector<std::shared_ptr<Stream>> streams;
  for (int i = 0; i < total; ++i) {
    SequenceSpec si = specs[i / r.n];
    si.sampling.seed += static_cast<uint64_t>(i % r.n);
    si.jacobi.seed += static_cast<uint64_t>(i % r.n);
    std::shared_ptr<Stream> stream;
    const Engine::Admission a = engine.submit(si, r.stop, &stream);
    if (a != Engine::Admission::Accepted) {
      for (const auto& s : streams) engine.cancel(s);
      if (a == Engine::Admission::Draining) return error(res, 503, "the server is shutting down");
      return error(res, 429, "the server is at capacity (all KV slots and the queue are full); retry later");
    }
    streams.push_back(stream);
  }
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + http::new_id();
  const int64_t created = unix_now();
  const bool want_lp = r.logprobs >= 0;
  auto token_info = [&](const TokenLogprob& lp) {
    TokenInfo t{token_text(lp.token), lp.logprob, {}, tok_->token_bytes(lp.token), 0};
    for (const auto& [alt, alt_lp] : lp.top) t.top.push_back({token_text(alt), alt_lp});
    return t;
  };
  // echo: the answer starts with the prompt, and its logprobs with the prompt's (none for the first).
  auto prompt_of = [&](size_t choice) -> const SequenceSpec& { return specs[choice / r.n]; };
  auto echo_of = [&](size_t choice) { return r.echo ? prompt_texts[choice / r.n] : std::string(); };
  struct Progress {
    Choice all;       // the whole choice so far
    size_t offset = 0;  // completions: text_offset of the next token, in characters
    unicode::Utf8CharCounter chars;  // of the answer's bytes so far: each token's text_chars
    bool first = true, done = false, echoed = false;
    Stream::Update last;
  };
  std::vector<Progress> choices(streams.size());
  for (size_t i = 0; i < choices.size(); ++i) {
    choices[i].all.index = static_cast<int>(i);
    // Offsets count characters (as OpenAI's do) from the prompt's start.
    choices[i].offset = r.echo ? 0 : unicode::code_points(prompt_texts[i / r.n]);
    choices[i].all.text_offset = choices[i].offset;
  }
  Usage usage;
  for (const SequenceSpec& s : specs) usage.prompt_tokens += static_cast<int>(s.prompt.size());  // each prompt once
  auto update_usage = [&] {
    usage.completion_tokens = usage.iterations = 0;
    for (const Progress& c : choices) {
      usage.completion_tokens += r.echo_only ? 0 : c.last.completion_tokens;
      usage.iterations += c.last.iterations;
    }
    usage.server_ttft_s = choices[0].last.ttft_s;
    usage.server_total_s = 0;
    for (const Progress& c : choices) usage.server_total_s = std::max(usage.server_total_s, c.last.total_s);
  };
  // A client that leaves cancels its request; recorded as 499, nginx's "client closed request".
  auto client_left = [&] {
    for (const auto& s : streams) engine.cancel(s);
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
  size_t open = choices.size();
  const auto wait = std::chrono::milliseconds(std::max<int>(1, 50 / static_cast<int>(choices.size())));
  while (open > 0) {
    for (size_t i = 0; i < choices.size(); ++i) {
      Progress& c = choices[i];
      if (c.done) continue;
      Stream::Update u = streams[i]->take(wait);
      c.last.completion_tokens = u.completion_tokens;
      c.last.iterations = u.iterations;
      c.last.ttft_s = u.ttft_s;
      c.last.total_s = u.total_s;
      // This update's part of the choice: the echoed prompt first, then the new text.
      Choice delta;
      delta.index = static_cast<int>(i);
      delta.text_offset = c.offset;
      if (r.echo && !c.echoed && (u.done || !u.text.empty() || !u.logprobs.empty() || !u.prompt_logprobs.empty())) {
        c.echoed = true;
        const std::string echo_text = echo_of(i);
        const std::vector<int32_t>& prompt = prompt_of(i).prompt;
        delta.text = echo_text;
        if (want_lp) {
          delta.tokens.push_back(token_info(TokenLogprob{prompt[0], std::nanf(""), {}}));  // no logprob of its own
          for (const TokenLogprob& lp : u.prompt_logprobs) delta.tokens.push_back(token_info(lp));
          // A special token written in the prompt ("<|im_start|>") has no bytes of its own but
          // stands in the echoed text as written; one the tokenizer added (BOS) stands nowhere.
          size_t at = 0;
          for (TokenInfo& t : delta.tokens) {
            const bool literal = t.bytes.empty() && !t.token.empty() && echo_text.compare(at, t.token.size(), t.token) == 0;
            if (literal) t.bytes = t.token;
            at += t.bytes.size();
          }
        }
      }
      if (!r.echo_only) {
        delta.text += u.text;
        if (want_lp)
          for (const TokenLogprob& lp : u.logprobs) delta.tokens.push_back(token_info(lp));
      }
      for (TokenInfo& t : delta.tokens) {
        t.text_chars = c.chars.add(t.bytes);
        c.offset += t.text_chars;
      }
      c.all.text += delta.text;
      c.all.tokens.insert(c.all.tokens.end(), delta.tokens.begin(), delta.tokens.end());
      if (r.stream && (!delta.text.empty() || !delta.tokens.empty() || (c.first && chat))) {
        // Every chunk carries the request's counts so far (cllm.completion_tokens...): a client can
        // tell how many tokens a chunk holds (a Jacobi iteration can make several final).
        update_usage();
        if (!res.write_chunk(chunk_event(r, id, created, delta, &usage, c.first))) return client_left();
        c.first = false;
      }
      if (!u.done) continue;
      if (u.finish_reason == "cancelled" || u.finish_reason == "error") {
        for (const auto& s : streams) engine.cancel(s);
        const bool failed = u.finish_reason == "error";
        const std::string msg = failed ? u.error : "the server shut down before the request finished";
        const std::string body = http::error_json(msg, failed ? "server_error" : "service_unavailable");
        if (!r.stream) return send_body(failed ? 500 : 503, body);
        res.write_chunk("event: error\ndata: " + body + "\n\n");
        return res.end_stream();
      }
      c.done = true;
      --open;
      // Echo with max_tokens 0: the one token generated is not part of the answer.
      c.all.finish_reason = r.echo_only ? "length" : u.finish_reason;
    }
    if (open == 0) break;
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
  update_usage();
  if (!r.stream) {
    std::vector<Choice> all;
    for (const Progress& c : choices) all.push_back(c.all);
    return send_body(200, completion_json(r, id, created, all, usage));
  }
  std::string tail;
  for (const Progress& c : choices) {
    Choice end;
    end.index = c.all.index;
    end.finish_reason = c.all.finish_reason;
    end.text_offset = c.offset;
    tail += chunk_event(r, id, created, end, &usage, c.first);
  }
  if (r.include_usage) tail += usage_event(r, id, created, usage);
  tail += "data: [DONE]\n\n";
  res.write_chunk(tail);
  res.end_stream();
}

}  // namespace cllm::openai
