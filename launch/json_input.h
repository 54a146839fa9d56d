// JSON text from outside (request bodies, prompts files) parsed with a nesting limit and no NUL
// bytes. The parser keeps its own stack, but copying, dumping and destroying parts of a value
// recurse once per level: a few hundred KB of '[' would overflow a thread's stack. No request or
// prompt needs more than a handful of levels.
#pragma once
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace cllm::cli {

constexpr int kMaxJsonDepth = 64;

// Throws nlohmann::json::exception when `text` is not JSON, and std::invalid_argument when it nests
// deeper than kMaxJsonDepth (an array or object counts one level) or holds a NUL byte (never valid
// JSON text, and nlohmann's parser would take it for the end of the input and ignore what follows).
inline nlohmann::json parse_untrusted_json(const std::string& text) {
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    throw std::invalid_argument("a NUL byte at offset " + std::to_string(nul) + " (JSON text holds none; write \\u0000)");
  auto limit = [](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      throw std::invalid_argument("JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  };
  return nlohmann::json::parse(text, limit);
}

// A chat message's content as text: a string, or OpenAI's content parts [{"type": "text", "text":
// "..."}, ...] joined; nullopt for anything else (other part types, other shapes). The one rule the
// server's requests and prompts files share.
inline std::optional<std::string> message_text(const nlohmann::json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return std::nullopt;
  std::string out;
  for (const nlohmann::json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      return std::nullopt;
    out += part["text"].get<std::string>();
  }
  return out;
}

}  // namespace cllm::cli
