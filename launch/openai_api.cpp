#include "launch/openai_api.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "launch/json_input.h"
#include "runtime/block_rows.h"
#include "runtime/chat_template.h"
#include "runtime/scheduler.h"

namespace cllm::openai {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

std::string text_content(const json& content, const std::string& param) {
  if (std::optional<std::string> text = cli::message_text(content)) return *text;
  if (!content.is_array()) bad(param, param + " must be a string or an array of text parts");
  bad(param, param + ": only {\"type\": \"text\", \"text\": ...} parts are supported");
}

int int_field(const json& v, const std::string& key, int lo, int hi) {
  if (!v.is_number_integer()) bad(key, key + " must be an integer");
  // An unsigned value past INT64_MAX would wrap in get<int64_t>(); the message shows the value as sent.
  const bool above = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX);
  const int64_t x = above ? INT64_MAX : v.get<int64_t>();
  if (x < lo || x > hi) bad(key, key + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + v.dump());
  return static_cast<int>(x);
}

double number_field(const json& v, const std::string& key, double lo, double hi) {
  if (!v.is_number()) bad(key, key + " must be a number");
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) bad(key, key + " must be in [" + json(lo).dump() + ", " + json(hi).dump() + "]");
  return x;
}

bool bool_field(const json& v, const std::string& key) {
  if (!v.is_boolean()) bad(key, key + " must be a boolean");
  return v.get<bool>();
}

void parse_prompt(const json& v, const std::string& key, ApiRequest& r) {
  auto wrong_shape = [&] {
    bad(key, key + " must be a string, an array of token ids, or a batch: an array of strings or of token-id "
                   "arrays");
  };
  // A batch of several prompts: each parsed as a prompt of its own.
  if (v.is_array() && v.size() > 1 && (v[0].is_string() || v[0].is_array())) {
    if (v.size() > static_cast<size_t>(kMaxBatchPrompts))
      bad(key, key + " holds " + std::to_string(v.size()) + " prompts, over " + std::to_string(kMaxBatchPrompts));
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].is_string() != v[0].is_string()) wrong_shape();
      ApiRequest one;
      parse_prompt(v[i].is_string() ? v[i] : json::array({v[i]}), key + "[" + std::to_string(i) + "]", one);
      r.batch.push_back({one.prompt, one.prompt_ids});
    }
    r.prompt = r.batch[0].text;
    r.prompt_ids = r.batch[0].ids;
    return;
  }
  if (v.is_string()) {
    r.prompt = v.get<std::string>();
  } else if (v.is_array() && v.size() == 1 && v[0].is_string()) {
    r.prompt = v[0].get<std::string>();
  } else if (v.is_array() && !v.empty() && (v[0].is_number_integer() || (v.size() == 1 && v[0].is_array()))) {
    // Token ids, or a batch of one id list ([[ids]], as lm-evaluation-harness sends them).
    for (const json& t : v[0].is_array() ? v[0] : v) {
      if (t.is_array() || t.is_string()) wrong_shape();
      r.prompt_ids.push_back(int_field(t, key, 0, INT32_MAX));
    }
  } else {
    wrong_shape();
  }
  if (r.prompt.empty() && r.prompt_ids.empty()) bad(key, key + " is empty");
}

void parse_messages(const json& v, const std::string& key, ApiRequest& r) {
  if (!v.is_array() || v.empty()) bad(key, key + " must be a non-empty array");
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = key + "[" + std::to_string(i) + "]";
    const json& m = v[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad(p, p + " must be an object with a string role and a content");
    const std::string role = m["role"].get<std::string>();
    const std::string canonical = canonical_chat_role(role);
    if (canonical.empty()) bad(p, p + ".role must be system, developer, user or assistant, got '" + role + "'");
    // An assistant turn may leave its content out or null (OpenAI's schema: it then carries tool
    // calls, which the chat template here cannot render); every other turn needs one.
    const bool no_content = !m.contains("content") || m["content"].is_null();
    if (canonical == "assistant" && m.contains("tool_calls") && !m["tool_calls"].is_null() &&
        !(m["tool_calls"].is_array() && m["tool_calls"].empty()))
      bad(p + ".tool_calls", p + ".tool_calls: tool calls in the conversation are not supported");
    if (no_content && canonical != "assistant") bad(p + ".content", p + ".content is missing (a " + role + " message needs one)");
    r.messages.push_back({canonical, no_content ? std::string() : text_content(m["content"], p + ".content")});
  }
}

// max_tokens, or max_completion_tokens (OpenAI's newer name), which wins when both are given, in
// either order, as in vLLM.
void parse_max_tokens(const json& v, const std::string& key, ApiRequest& r) {
  if (!v.is_number_integer()) bad(key, key + " must be an integer");
  // 0 only with echo (checked once every field is read): the prompt's logprobs, nothing generated.
  if (!v.is_number_unsigned() && v.get<int64_t>() < 0)
    bad(key, key + " must be positive, got " + std::to_string(v.get<int64_t>()));
  if (key == "max_tokens" && r.max_tokens_field == "max_completion_tokens") return;
  // Held at INT32_MAX (beyond any context, refused with it), the value as sent kept for the message.
  r.max_tokens = v.is_number_unsigned() ? static_cast<int>(std::min<uint64_t>(v.get<uint64_t>(), INT32_MAX))
                                        : static_cast<int>(std::min<int64_t>(v.get<int64_t>(), INT32_MAX));
  r.max_tokens_sent = v.dump();
  r.max_tokens_field = key;
  r.echo_only = r.max_tokens == 0;
}

// Chat: logprobs is a boolean and top_logprobs the alternatives; completions: logprobs is the
// number of alternatives. parse_request() combines them into r.logprobs once every field is read.
void parse_logprobs(const json& v, const std::string& key, ApiRequest& r) {
  if (r.chat || v.is_boolean()) {  // completions: false / true as none / 0 alternatives
    r.logprobs = bool_field(v, key) ? std::max(r.logprobs, 0) : -1;
  } else {
    r.logprobs = int_field(v, key, 0, kMaxTopLogprobs);
  }
}

void parse_echo(const json& v, const std::string& key, ApiRequest& r) {
  r.echo = bool_field(v, key);
  if (r.echo && r.chat) bad(key, "echo is for /v1/completions only");
}

void parse_stop(const json& v, const std::string& key, ApiRequest& r) {
  const json list = v.is_string() ? json::array({v}) : v;
  if (!list.is_array() || list.size() > 4) bad(key, key + " must be a string or an array of at most 4 strings");
  for (const json& s : list) {
    if (!s.is_string() || s.get<std::string>().empty()) bad(key, key + " strings must be non-empty strings");
    r.stop.push_back(s.get<std::string>());
  }
}

void parse_seed(const json& v, const std::string& key, ApiRequest& r) {
  if (!v.is_number_integer()) bad(key, key + " must be an integer");
  r.seed = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
  r.seed_given = true;
}

void parse_stream_options(const json& v, const std::string& key, ApiRequest& r) {
  if (!v.is_object()) bad(key, key + " must be an object");
  r.stream_options = true;
  for (const auto& [k2, v2] : v.items()) {
    if (k2 != "include_usage" || !v2.is_boolean()) bad(key, key + " supports only include_usage (boolean)");
    r.include_usage = v2.get<bool>();
  }
}

void parse_window(const json& v, const std::string& key, ApiRequest& r) {
  if (!v.is_string() || (v != "sliding" && v != "blockwise")) bad(key, key + " must be \"sliding\" or \"blockwise\"");
  r.window = v.get<std::string>();
}

void parse_decode(const json& v, const std::string& key, ApiRequest& r) {
  if (!v.is_string() || (v != "jacobi" && v != "ar")) bad(key, key + " must be \"jacobi\" or \"ar\"");
  r.decode = v.get<std::string>();
}

// A field cllm does not implement: accepted only at its neutral value (or null).
template <bool (*Neutral)(const json&)>
void neutral_only(const json& v, const std::string& key, ApiRequest&) {
  if (!Neutral(v)) bad(key, key + " is not supported by cllm (only its default value is accepted)");
}
bool is_zero(const json& v) { return v.is_number() && v.get<double>() == 0; }
bool is_boolean(const json& v) { return v.is_boolean(); }
bool is_none_or_auto(const json& v) { return v == "none" || v == "auto"; }
bool is_empty_string(const json& v) { return v.is_string() && v.get<std::string>().empty(); }
bool is_empty_array(const json& v) { return v.is_array() && v.empty(); }
bool is_text_format(const json& v) { return v.is_object() && v.value("type", "") == "text"; }
bool is_number_one(const json& v) { return v.is_number() && v.get<double>() == 1; }
bool is_no_top_k(const json& v) { return v.is_number_integer() && (v.get<int64_t>() == -1 || v.get<int64_t>() == 0); }
// logit_bias {} or every bias 0 (token id -> bias, OpenAI's shape).
bool is_zero_bias(const json& v) {
  if (!v.is_object()) return false;
  for (const auto& [token, bias] : v.items())
    if (!bias.is_number() || bias.get<double>() != 0) return false;
  return true;
}

void ignore(const json&, const std::string&, ApiRequest&) {}

// One entry per JSON field the API knows: where it is allowed, whether null means "not given"
// (the default applies) or is an error, and its parser, which validates the value and throws
// ApiError naming the field (message and error.param). A field not in this table, or in the
// other endpoint's, is refused.
enum class Endpoint { Both, Completions, Chat };
struct Field {
  const char* name;
  Endpoint endpoint;
  bool null_is_absent;
  void (*parse)(const json& v, const std::string& key, ApiRequest& r);
};

const Field kFields[] = {
    // null: the served model, as vLLM takes it.
    {"model", Endpoint::Both, true,
     [](const json& v, const std::string& key, ApiRequest& r) {
       if (!v.is_string()) bad(key, key + " must be a string");
       r.model = v.get<std::string>();
     }},
    {"prompt", Endpoint::Completions, false, parse_prompt},
    {"messages", Endpoint::Chat, false, parse_messages},
    {"max_tokens", Endpoint::Both, true, parse_max_tokens},
    {"max_completion_tokens", Endpoint::Both, true, parse_max_tokens},
    {"stop", Endpoint::Both, true, parse_stop},
    {"temperature", Endpoint::Both, true,
     [](const json& v, const std::string& key, ApiRequest& r) { r.temperature = number_field(v, key, 0, 2); }},
    {"top_p", Endpoint::Both, true,
     // 0, as OpenAI takes it: the smallest nucleus, the most likely token alone.
     [](const json& v, const std::string& key, ApiRequest& r) { r.top_p = std::max(number_field(v, key, 0, 1), 1e-6); }},
    {"seed", Endpoint::Both, true, parse_seed},
    {"stream", Endpoint::Both, true,
     [](const json& v, const std::string& key, ApiRequest& r) { r.stream = bool_field(v, key); }},
    {"stream_options", Endpoint::Both, true, parse_stream_options},
    {"cllm_decode", Endpoint::Both, false, parse_decode},
    {"cllm_block", Endpoint::Both, false,
     [](const json& v, const std::string& key, ApiRequest& r) { r.block = int_field(v, key, 1, kMaxBlockRows); }},
    {"cllm_candidates", Endpoint::Both, false,
     [](const json& v, const std::string& key, ApiRequest& r) { r.candidates = int_field(v, key, 0, kMaxBlockRows - 1); }},
    {"cllm_ngram", Endpoint::Both, false,
     [](const json& v, const std::string& key, ApiRequest& r) { r.ngram = int_field(v, key, 2, kMaxBlockRows); }},
    {"cllm_blocks", Endpoint::Both, false,
     [](const json& v, const std::string& key, ApiRequest& r) { r.blocks = int_field(v, key, 1, kMaxBlockRows); }},
    {"cllm_later_block_after", Endpoint::Both, false,
     [](const json& v, const std::string& key, ApiRequest& r) { r.later_block_after = number_field(v, key, 0, 1); }},
    {"cllm_window", Endpoint::Both, false, parse_window},
    {"cllm_ignore_eos", Endpoint::Both, false,
     [](const json& v, const std::string& key, ApiRequest& r) { r.ignore_eos = bool_field(v, key); }},
    // Client bookkeeping: ignored.
    {"user", Endpoint::Both, true, ignore},
    {"metadata", Endpoint::Both, true, ignore},
    {"store", Endpoint::Both, true, ignore},
    {"service_tier", Endpoint::Both, true, ignore},
    // Would change the output in ways cllm does not implement: only the neutral value.
    {"n", Endpoint::Both, true,
     [](const json& v, const std::string& key, ApiRequest& r) { r.n = int_field(v, key, 1, kMaxChoices); }},
    {"logprobs", Endpoint::Both, true, parse_logprobs},
    {"top_logprobs", Endpoint::Both, true,
     [](const json& v, const std::string& key, ApiRequest& r) { r.top_logprobs = int_field(v, key, 0, kMaxTopLogprobs); }},
    {"echo", Endpoint::Both, true, parse_echo},
    // best_of equal to n (checked once every field is read): as many candidates as choices, none dropped.
    {"best_of", Endpoint::Both, true,
     [](const json& v, const std::string& key, ApiRequest& r) { r.best_of = int_field(v, key, 1, kMaxChoices); }},
    {"frequency_penalty", Endpoint::Both, true, neutral_only<is_zero>},
    {"presence_penalty", Endpoint::Both, true, neutral_only<is_zero>},
    // Without tools (only [] is accepted) every value of these is neutral.
    {"parallel_tool_calls", Endpoint::Both, true, neutral_only<is_boolean>},
    {"tool_choice", Endpoint::Both, true, neutral_only<is_none_or_auto>},
    {"logit_bias", Endpoint::Both, true, neutral_only<is_zero_bias>},
    // vLLM's sampling extensions, at the values that turn them off.
    {"top_k", Endpoint::Both, true, neutral_only<is_no_top_k>},
    {"min_p", Endpoint::Both, true, neutral_only<is_zero>},
    {"repetition_penalty", Endpoint::Both, true, neutral_only<is_number_one>},
    {"suffix", Endpoint::Both, true, neutral_only<is_empty_string>},
    {"tools", Endpoint::Both, true, neutral_only<is_empty_array>},
    {"response_format", Endpoint::Both, true, neutral_only<is_text_format>},
};

const Field* find_field(const std::string& key, bool chat) {
  for (const Field& f : kFields)
    if (key == f.name)
      return f.endpoint == Endpoint::Both || (f.endpoint == Endpoint::Chat) == chat ? &f : nullptr;
  return nullptr;
}

}  // namespace

json parse_body(const std::string& body) {
  json j;
  try {
    j = cli::parse_untrusted_json(body);  // rejects invalid UTF-8 inside strings
  } catch (const json::exception& e) {
    bad("", std::string("the body is not valid JSON: ") + e.what());
  } catch (const std::invalid_argument& e) {
    bad("", std::string("the body is refused: ") + e.what());
  }
  if (!j.is_object()) bad("", "the body must be a JSON object");
  return j;
}

ApiRequest parse_request(const std::string& body, bool chat) { return parse_request_object(parse_body(body), chat); }

ApiRequest parse_request_object(const json& j, bool chat) {
  ApiRequest r;
  r.chat = chat;
  for (const auto& [key, v] : j.items()) {
    const Field* f = find_field(key, chat);
    if (!f) bad(key, "unknown or unsupported field '" + key + "'");
    if (v.is_null() && f->null_is_absent) continue;
    f->parse(v, key, r);
  }
  if (chat && r.messages.empty()) bad("messages", "messages is required");
  if (!chat && r.prompt.empty() && r.prompt_ids.empty()) bad("prompt", "prompt is required");
  if (r.top_logprobs > 0 && (!chat || r.logprobs < 0))
    bad("top_logprobs", chat ? "top_logprobs needs logprobs: true"
                             : "top_logprobs is for chat; completions take the count as logprobs");
  if (chat && r.logprobs >= 0) r.logprobs = std::max(r.top_logprobs, 0);
  if (r.echo_only && !r.echo) bad(r.max_tokens_field, r.max_tokens_field + " must be positive (0 only with echo)");
  if (r.stream_options && !r.stream) bad("stream_options", "stream_options needs stream: true");
  if (r.best_of > 0 && r.best_of != r.n)
    bad("best_of", "best_of is not supported by cllm beyond n (" + std::to_string(r.n) + "): it would rank " +
                       std::to_string(r.best_of) + " candidates and return " + std::to_string(r.n));
  if (r.decode == "jacobi" && r.temperature > 0)
    bad("cllm_decode", "Jacobi decoding is greedy: use temperature 0, or cllm_decode \"ar\" to sample");
  return r;
}

namespace {

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json cllm_json(const Usage& u) {
  return {{"completion_tokens", u.completion_tokens},
          {"iterations", u.iterations},
          {"tokens_per_iteration", u.iterations ? static_cast<double>(u.completion_tokens) / u.iterations : 0.0},
          {"server_ttft_s", u.server_ttft_s},
          {"server_total_s", u.server_total_s}};
}

json envelope(const ApiRequest& r, const std::string& id, int64_t created, const char* object) {
  return {{"id", id}, {"object", object}, {"created", created}, {"model", r.model}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json finish(const std::string& reason) { return reason.empty() ? json(nullptr) : json(reason); }

json number_or_null(double x) { return std::isnan(x) ? json(nullptr) : json(x); }

json bytes_json(const std::string& t) {
  json out = json::array();
  for (unsigned char c : t) out.push_back(static_cast<int>(c));
  return out;
}

// Chat: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], "refusal": null}.
json chat_logprobs(const std::vector<TokenInfo>& tokens) {
  json content = json::array();
  for (const TokenInfo& t : tokens) {
    json top = json::array();
    for (const auto& [alt, lp] : t.top) top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", bytes_json(alt)}});
    content.push_back({{"token", t.token}, {"logprob", number_or_null(t.logprob)}, {"bytes", bytes_json(t.token)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

// Completions: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}; the echoed
// prompt's first token has null in token_logprobs and top_logprobs.
json completion_logprobs(const std::vector<TokenInfo>& tokens, size_t offset) {
  json j = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
            {"text_offset", json::array()}};
  for (const TokenInfo& t : tokens) {
    j["tokens"].push_back(t.token);
    j["token_logprobs"].push_back(number_or_null(t.logprob));
    json top = json::object();
    for (const auto& [alt, lp] : t.top) top[alt] = lp;
    j["top_logprobs"].push_back(std::isnan(t.logprob) ? json(nullptr) : top);
    j["text_offset"].push_back(offset);
    offset += t.text_chars;
  }
  return j;
}

json choice_json(const ApiRequest& r, const Choice& c) {
  json j = {{"index", c.index}, {"finish_reason", finish(c.finish_reason)}, {"logprobs", nullptr}};
  if (r.logprobs >= 0) j["logprobs"] = r.chat ? chat_logprobs(c.tokens) : completion_logprobs(c.tokens, c.text_offset);
  return j;
}

}  // namespace

std::string completion_json(const ApiRequest& r, const std::string& id, int64_t created,
                            const std::vector<Choice>& choices, const Usage& u) {
  json j = envelope(r, id, created, r.chat ? "chat.completion" : "text_completion");
  j["choices"] = json::array();
  for (const Choice& c : choices) {
    json choice = choice_json(r, c);
    if (r.chat)
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      choice["text"] = c.text;
    j["choices"].push_back(choice);
  }
  j["usage"] = usage_json(u);
  j["cllm"] = cllm_json(u);
  return dump(j);
}

std::string chunk_event(const ApiRequest& r, const std::string& id, int64_t created, const Choice& delta,
                        const Usage* usage, bool first) {
  json j = envelope(r, id, created, r.chat ? "chat.completion.chunk" : "text_completion");
  json choice = choice_json(r, delta);
  if (r.chat) {
    choice["delta"] = json::object();
    if (first) choice["delta"]["role"] = "assistant";
    if (!delta.text.empty() || delta.finish_reason.empty()) choice["delta"]["content"] = delta.text;
  } else {
    choice["text"] = delta.text;
  }
  j["choices"] = json::array({choice});
  if (r.include_usage) j["usage"] = nullptr;  // as OpenAI: null in every chunk, the totals in the last
  if (usage) j["cllm"] = cllm_json(*usage);
  return "data: " + dump(j) + "\n\n";
}

std::string usage_event(const ApiRequest& r, const std::string& id, int64_t created, const Usage& u) {
  json j = envelope(r, id, created, r.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(u);
  j["cllm"] = cllm_json(u);
  return "data: " + dump(j) + "\n\n";
}

}  // namespace cllm::openai
