#include "launch/prompts_file.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "launch/json_input.h"
#include "runtime/chat_template.h"
#include "runtime/unicode_text.h"

namespace cllm::cli {
namespace {

std::string json_string(const nlohmann::json& j, const char* key, const std::string& where) {
  CLLM_CHECK(j.contains(key) && j[key].is_string(), where << ": '" << key << "' must be a string");
  return j[key].get<std::string>();
}

PromptLine parse_jsonl_line(const std::string& line, bool chat, const std::string& where) {
  nlohmann::json j;
  try {
    j = parse_untrusted_json(line);
  } catch (const nlohmann::json::exception& e) {
    CLLM_FAIL(where << ": not valid JSON: " << e.what());
  } catch (const std::invalid_argument& e) {
    CLLM_FAIL(where << ": " << e.what());
  }
  CLLM_CHECK(j.is_object(), where << ": expected a JSON object");
  CLLM_CHECK(j.contains("prompt") != j.contains("messages"), where << ": needs exactly one of 'prompt' or 'messages'");
  PromptLine p;
  if (j.contains("prompt")) {
    p.text = json_string(j, "prompt", where);
    if (chat) p.messages.push_back({"user", p.text});
    return p;
  }
  const nlohmann::json& ms = j["messages"];
  CLLM_CHECK(ms.is_array() && !ms.empty(), where << ": 'messages' must be a non-empty list");
  for (size_t k = 0; k < ms.size(); ++k) {
    const std::string mw = where + ": messages[" + std::to_string(k) + "]";
    CLLM_CHECK(ms[k].is_object(), mw << " must be an object with 'role' and 'content'");
    const std::string role = json_string(ms[k], "role", mw), canonical = canonical_chat_role(role);
    CLLM_CHECK(!canonical.empty(), mw << ": role must be system, developer, user or assistant, got '" << role << "'");
    const std::optional<std::string> content =
        ms[k].contains("content") ? message_text(ms[k]["content"]) : std::nullopt;
    CLLM_CHECK(content, mw << ": 'content' must be a string or a list of {\"type\": \"text\", \"text\": ...} parts");
    p.messages.push_back({canonical, *content});
  }
  return p;
}

}  // namespace

// True when a file's first non-empty line makes it JSONL: it parses as a JSON object, or (a .jsonl or
// .json file, whose malformed first line is then reported) it starts with '{'.
bool first_line_is_jsonl(const std::string& line, const std::string& path) {
  if (line[line.find_first_not_of(" \t")] != '{') return false;
  const auto ends_with = [&](const char* ext) {
    const std::string e(ext);
    return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
  };
  if (ends_with(".jsonl") || ends_with(".json")) return true;
  try {
    return parse_untrusted_json(line).is_object();
  } catch (const std::exception&) {
    return false;  // text that starts with a brace: a code prompt
  }
}

void check_utf8_text(const std::string& text, const std::string& where, const char* what, const char* should) {
  const std::string valid = unicode::to_valid_utf8(text);
  if (valid == text) return;
  size_t col = 0;
  while (col < text.size() && text[col] == valid[col]) ++col;
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[col]));
  CLLM_FAIL(where << ": invalid UTF-8 (byte " << hex << " at byte " << col + 1 << " of " << what << "); " << should);
}

std::vector<PromptLine> read_prompts(const std::string& path, bool chat) {
  CLLM_CHECK(path == "-" || !std::filesystem::is_directory(path), path << " is a directory, not a prompts file");
  std::ifstream file;
  if (path != "-") file.open(path);
  std::istream& in = path == "-" ? std::cin : file;
  CLLM_CHECK(in, "cannot read the prompts file " << path);
  std::vector<PromptLine> out;
  std::string line;
  int line_no = 0;
  int jsonl = -1;  // decided by the first non-empty line
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // A UTF-8 byte order mark (what some editors write first) is not part of the first prompt.
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (jsonl < 0) jsonl = first_line_is_jsonl(line, path);
    const std::string where = path + ":" + std::to_string(line_no);
    check_utf8_text(line, where, "the line", "a prompts file must be UTF-8 text");
    if (jsonl) {
      out.push_back(parse_jsonl_line(line, chat, where));
    } else {
      PromptLine p{{}, line};
      if (chat) p.messages.push_back({"user", line});
      out.push_back(std::move(p));
    }
    out.back().line = line_no;
  }
  CLLM_CHECK(!out.empty(), path << " holds no prompts");
  return out;
}

std::vector<std::vector<int32_t>> tokenize_prompts(const std::vector<PromptLine>& lines, const Tokenizer& tokenizer,
                                                   const std::string& chat_template, bool add_bos,
                                                   const std::string& path) {
  std::vector<std::vector<int32_t>> prompts;
  for (const PromptLine& p : lines) {
    prompts.push_back(p.messages.empty() ? tokenizer.encode(p.text, add_bos)
                                         : encode_chat(tokenizer, chat_template, p.messages, add_bos));
    CLLM_CHECK(!prompts.back().empty(), path << ":" << p.line << ": prompt " << prompts.size() - 1
                                              << " (counting from 0) encodes to no tokens");
  }
  return prompts;
}

Shard parse_shard(const std::string& text) {
  Shard s;
  const size_t slash = text.find('/');
  bool ok = slash != std::string::npos && slash > 0 && slash + 1 < text.size() &&
            text.find_first_not_of("0123456789/") == std::string::npos && text.find('/', slash + 1) == std::string::npos;
  if (ok) {
    try {
      s.index = std::stoi(text.substr(0, slash));
      s.count = std::stoi(text.substr(slash + 1));
    } catch (const std::exception&) {
      ok = false;
    }
  }
  CLLM_CHECK(ok && s.count >= 1 && s.index < s.count,
             "--shard must be I/K with 0 <= I < K (e.g. 0/8: prompts whose index % 8 == 0), got '" << text << "'");
  return s;
}

}  // namespace cllm::cli
