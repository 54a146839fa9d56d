// Each family is a short renderer that mirrors its reference jinja template line by line
// (tests/reference/make_tokenizer_fixtures.py holds the templates the tests render with).
#include "runtime/chat_template.h"

#include "core/check.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode_text.h"

namespace cllm {
namespace {

constexpr const char* kSupported = "supported families: chatml (incl. SmolLM), llama-2, llama-3, vicuna";
constexpr const char* kVicunaSystem =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.";

struct Family {
  std::string name;
  std::string default_system;  // inserted when the conversation has no system message
};

bool contains(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

// Python's str.strip() (jinja's trim and .strip()): Unicode whitespace plus \x1c-\x1f.
std::string py_strip(const std::string& s) {
  auto ws_at = [&](size_t pos, size_t* len) {
    uint32_t cp = unicode::decode_utf8(s, pos, len);
    return unicode::is_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F);
  };
  size_t begin = 0, len;
  while (begin < s.size() && ws_at(begin, &len)) begin += len;
  size_t end = begin;  // one past the last non-space code point
  for (size_t pos = begin; pos < s.size(); pos += len) {
    if (!ws_at(pos, &len)) end = pos + len;
  }
  return s.substr(begin, end - begin);
}

// Reads a jinja string literal's body starting at s[pos] up to the closing quote, undoing
// the escapes templates use (\n, \', \", \\).
std::string literal_body(const std::string& s, size_t pos, char quote, const char* stop = nullptr) {
  std::string out;
  for (; pos < s.size() && s[pos] != quote; ++pos) {
    if (stop && s.compare(pos, std::char_traits<char>::length(stop), stop) == 0) break;
    if (s[pos] == '\\' && pos + 1 < s.size()) {
      char c = s[++pos];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += s[pos];
    }
  }
  return out;
}

// SmolLM2-style chatml: '<|im_start|>system\n<default prompt><|im_end|>\n' as one literal.
std::string chatml_default_system(const std::string& t) {
  for (char q : {'\'', '"'}) {
    const std::string head = std::string(1, q) + "<|im_start|>system";
    size_t at = t.find(head);
    if (at == std::string::npos) continue;
    size_t pos = at + head.size();
    if (t.compare(pos, 1, "\n") == 0) {
      pos += 1;
    } else if (t.compare(pos, 2, "\\n") == 0) {
      pos += 2;
    } else {
      continue;
    }
    return literal_body(t, pos, q, "<|im_end|>");
  }
  return "";
}

// vicuna templates set the default with {% set system_message = '...' %}.
std::string vicuna_default_system(const std::string& t) {
  const std::string key = "system_message = ";
  for (size_t at = t.find(key); at != std::string::npos; at = t.find(key, at + 1)) {
    char q = t[at + key.size()];
    if (q == '\'' || q == '"') return literal_body(t, at + key.size() + 1, q);
  }
  return kVicunaSystem;
}

}  // namespace

std::string canonical_chat_role(const std::string& role) {
  if (role == "system" || role == "user" || role == "assistant") return role;
  return role == "developer" ? "system" : "";
}

namespace {

Family detect(const std::string& t) {
  if (t == "chatml" || t == "llama-2" || t == "llama-3") return {t, ""};
  if (t == "vicuna") return {t, kVicunaSystem};
  if (contains(t, "<|start_header_id|>")) return {"llama-3", ""};
  if (contains(t, "<|im_start|>")) return {"chatml", chatml_default_system(t)};
  if (contains(t, "[INST]") && contains(t, "<<SYS>>")) return {"llama-2", ""};
  if (contains(t, "USER:") && contains(t, "ASSISTANT:")) return {"vicuna", vicuna_default_system(t)};
  CLLM_CHECK(!t.empty(), "the model has no chat template (" << kSupported << "): --chat-template FAMILY names one");
  CLLM_FAIL("unrecognised chat template (" << kSupported << "; --chat-template FAMILY overrides it): "
                                           << t.substr(0, 120));
}

std::string render_chatml(const Family& f, const std::vector<ChatMessage>& m, bool gen) {
  std::string out;
  if (!m.empty() && !f.default_system.empty() && m[0].role != "system") {
    out += "<|im_start|>system\n" + f.default_system + "<|im_end|>\n";
  }
  for (const auto& msg : m) out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

// Meta's template: BOS per user turn, system folded into the first user turn, roles must
// alternate user/assistant, content stripped; there is no generation prompt to add.
std::string render_llama2(const std::vector<ChatMessage>& m) {
  size_t first = 0;
  std::string system;
  bool has_system = !m.empty() && m[0].role == "system";
  if (has_system) {
    system = m[0].content;
    first = 1;
  }
  std::string out;
  for (size_t i = first; i < m.size(); ++i) {
    const size_t k = i - first;
    CLLM_CHECK((m[i].role == "user") == (k % 2 == 0),
               "llama-2 chat template: conversation roles must alternate user/assistant/user/assistant/... "
               "(message " << i << " is '" << m[i].role << "')");
    std::string content = m[i].content;
    if (k == 0 && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    if (m[i].role == "user") {
      out += "<s>[INST] " + py_strip(content) + " [/INST]";
    } else if (m[i].role == "assistant") {
      out += ' ';
      out += py_strip(content) + " </s>";
    }
  }
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& m, bool gen) {
  std::string out;
  for (size_t i = 0; i < m.size(); ++i) {
    if (i == 0) out += "<|begin_of_text|>";
    out += "<|start_header_id|>" + m[i].role + "<|end_header_id|>\n\n" + py_strip(m[i].content) + "<|eot_id|>";
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// FastChat's vicuna_v1.1: "SYSTEM USER: q ASSISTANT: a</s>USER: q2 ASSISTANT:".
std::string render_vicuna(const Family& f, const std::vector<ChatMessage>& m, bool gen) {
  size_t first = 0;
  std::string out = f.default_system;
  if (!m.empty() && m[0].role == "system") {
    out = m[0].content;
    first = 1;
  }
  out += " ";
  for (size_t i = first; i < m.size(); ++i) {
    if (m[i].role == "user") out += "USER: " + m[i].content + " ";
    if (m[i].role == "assistant") out += "ASSISTANT: " + m[i].content + "</s>";
  }
  if (gen) out += "ASSISTANT:";
  return out;
}

}  // namespace

std::string chat_template_family(const std::string& family_or_jinja) { return detect(family_or_jinja).name; }

std::string apply_chat_template(const std::string& family_or_jinja, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) {
  const Family f = detect(family_or_jinja);
  if (f.name == "chatml") return render_chatml(f, messages, add_generation_prompt);
  if (f.name == "llama-2") return render_llama2(messages);
  if (f.name == "llama-3") return render_llama3(messages, add_generation_prompt);
  return render_vicuna(f, messages, add_generation_prompt);
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::string& family_or_jinja,
                                 const std::vector<ChatMessage>& messages, bool add_bos) {
  std::vector<int32_t> ids = tok.encode(apply_chat_template(family_or_jinja, messages, true), false);
  const int32_t bos = tok.bos_id();
  if (add_bos && bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
  return ids;
}

}  // namespace cllm
