#include "launch/openai_api.h"

#include <nlohmann/json.hpp>
#include <set>

namespace cllm::openai {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

bool is_neutral(const std::string& key, const json& v) {
  if (v.is_null()) return true;
  if (key == "n" || key == "best_of") return v.is_number_integer() && v.get<int64_t>() == 1;
  if (key == "frequency_penalty" || key == "presence_penalty") return v.is_number() && v.get<double>() == 0;
  if (key == "logprobs" || key == "echo" || key == "parallel_tool_calls") return v.is_boolean() && !v.get<bool>();
  if (key == "logit_bias") return v.is_object() && v.empty();
  if (key == "suffix") return v.is_string() && v.get<std::string>().empty();
  if (key == "tools") return v.is_array() && v.empty();
  if (key == "response_format") return v.is_object() && v.value("type", "") == "text";
  return false;
}

const std::set<std::string> kIgnored = {"user", "metadata", "store", "service_tier"};
const std::set<std::string> kNeutralOnly = {"n", "best_of", "frequency_penalty", "presence_penalty", "logprobs",
                                            "echo", "logit_bias", "suffix", "tools", "response_format",
                                            "parallel_tool_calls", "top_logprobs"};

std::string text_content(const json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  // Content parts: [{"type": "text", "text": "..."}] joined; other part types are refused.
  if (!content.is_array()) bad(param, param + " must be a string or an array of text parts");
  std::string out;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      bad(param, param + ": only {\"type\": \"text\", \"text\": ...} parts are supported");
    out += part["text"].get<std::string>();
  }
  return out;
}

int int_field(const json& v, const std::string& key, int lo, int hi) {
  if (!v.is_number_integer()) bad(key, key + " must be an integer");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) bad(key, key + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + std::to_string(x));
  return static_cast<int>(x);
}

double number_field(const json& v, const std::string& key, double lo, double hi) {
  if (!v.is_number()) bad(key, key + " must be a number");
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) bad(key, key + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

}  // namespace

ApiRequest parse_request(const std::string& body, bool chat) {
  json j;
  try {
    j = json::parse(body);  // rejects invalid UTF-8 inside strings
  } catch (const json::exception& e) {
    bad("", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad("", "the body must be a JSON object");
  ApiRequest r;
  r.chat = chat;
  for (const auto& [key, v] : j.items()) {
    if (key == "model") {
      if (!v.is_string()) bad(key, "model must be a string");
      r.model = v.get<std::string>();
    } else if (key == "prompt" && !chat) {
      if (v.is_string()) {
        r.prompt = v.get<std::string>();
      } else if (v.is_array() && v.size() == 1 && v[0].is_string()) {
        r.prompt = v[0].get<std::string>();
      } else if (v.is_array() && !v.empty() && v[0].is_number_integer()) {
        for (const json& t : v) r.prompt_ids.push_back(int_field(t, "prompt", 0, INT32_MAX));
      } else {
        bad(key, "prompt must be a string, a one-string array or an array of token ids (batched prompts are not supported)");
      }
      if (r.prompt.empty() && r.prompt_ids.empty()) bad(key, "prompt is empty");
    } else if (key == "messages" && chat) {
      if (!v.is_array() || v.empty()) bad(key, "messages must be a non-empty array");
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string p = "messages[" + std::to_string(i) + "]";
        const json& m = v[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
          bad(p, p + " must be an object with a string role and a content");
        const std::string role = m["role"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant" && role != "developer")
          bad(p, p + ".role must be system, user or assistant, got '" + role + "'");
        r.messages.push_back({role == "developer" ? "system" : role, text_content(m["content"], p + ".content")});
      }
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) bad(key, key + " must be an integer");
      if (v.get<int64_t>() <= 0) bad(key, key + " must be positive, got " + std::to_string(v.get<int64_t>()));
      r.max_tokens = static_cast<int>(std::min<int64_t>(v.get<int64_t>(), INT32_MAX));
    } else if (key == "stop") {
      if (v.is_null()) continue;
      const json list = v.is_string() ? json::array({v}) : v;
      if (!list.is_array() || list.size() > 4) bad(key, "stop must be a string or an array of at most 4 strings");
      for (const json& s : list) {
        if (!s.is_string() || s.get<std::string>().empty()) bad(key, "stop strings must be non-empty strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else if (key == "temperature") {
      if (!v.is_null()) r.temperature = number_field(v, key, 0, 2);
    } else if (key == "top_p") {
      if (!v.is_null()) r.top_p = number_field(v, key, 1e-6, 1);
    } else if (key == "seed") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) bad(key, "seed must be an integer");
      r.seed = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
    } else if (key == "stream") {
      if (v.is_null()) continue;
      if (!v.is_boolean()) bad(key, "stream must be a boolean");
      r.stream = v.get<bool>();
    } else if (key == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) bad(key, "stream_options must be an object");
      for (const auto& [k2, v2] : v.items()) {
        if (k2 != "include_usage" || !v2.is_boolean()) bad(key, "stream_options supports only include_usage (boolean)");
        r.include_usage = v2.get<bool>();
      }
    } else if (key == "cllm_decode") {
      if (!v.is_string() || (v != "jacobi" && v != "ar")) bad(key, "cllm_decode must be \"jacobi\" or \"ar\"");
      r.decode = v.get<std::string>();
    } else if (key == "cllm_block") {
      r.block = int_field(v, key, 1, 64);
    } else if (key == "cllm_ignore_eos") {
      if (!v.is_boolean()) bad(key, "cllm_ignore_eos must be a boolean");
      r.ignore_eos = v.get<bool>();
    } else if (kIgnored.count(key)) {
      continue;
    } else if (kNeutralOnly.count(key)) {
      if (!is_neutral(key, v)) bad(key, key + " is not supported by cllm (only its default value is accepted)");
    } else {
      bad(key, "unknown or unsupported field '" + key + "'");
    }
  }
  if (chat && r.messages.empty()) bad("messages", "messages is required");
  if (!chat && r.prompt.empty() && r.prompt_ids.empty()) bad("prompt", "prompt is required");
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

}  // namespace

std::string completion_json(const ApiRequest& r, const std::string& id, int64_t created, const std::string& text,
                            const std::string& finish_reason, const Usage& u) {
  json j = envelope(r, id, created, r.chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", finish(finish_reason)}, {"logprobs", nullptr}};
  if (r.chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(u);
  j["cllm"] = cllm_json(u);
  return dump(j);
}

std::string chunk_event(const ApiRequest& r, const std::string& id, int64_t created, const std::string& text,
                        const std::string& finish_reason, const Usage* usage, bool first) {
  json j = envelope(r, id, created, r.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", finish(finish_reason)}, {"logprobs", nullptr}};
  if (r.chat) {
    choice["delta"] = json::object();
    if (first) choice["delta"]["role"] = "assistant";
    if (!text.empty() || finish_reason.empty()) choice["delta"]["content"] = text;
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
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
