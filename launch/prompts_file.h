// Prompts files, shared by `cllm trajectories` and `cllm generate --prompts` so that training and
// evaluation read the same prompts the same way ("-": standard input). Format, decided by the first
// non-empty line:
//   JSONL (the first line is a JSON object; for a .jsonl or .json file, starts with '{'): one object
//     per line, {"prompt": "text"} or
//     {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} (a content may
//     also be OpenAI's text parts, [{"type": "text", "text": "..."}, ...], joined); "messages"
//     always go through the model's chat template (ending with the assistant header), "prompt"
//     only with chat; other keys (e.g. "source") are ignored;
//   plain text otherwise (a code prompt such as "{ int x = 1; }" too): one prompt per line (wrapped
//     as a user message with chat).
// Empty lines are skipped; prompt i is the i-th non-empty line. Malformed lines, and lines that
// are not valid UTF-8, throw with file:line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"

namespace cllm::cli {

struct PromptLine {
  std::vector<ChatMessage> messages;  // non-empty: render with the chat template
  std::string text;                   // used as is otherwise
  int line = 0;                       // its line in the file (1-based), for messages
};

std::vector<PromptLine> read_prompts(const std::string& path, bool chat);

// Throws "WHERE: invalid UTF-8 (byte 0xNN at byte K of WHAT); SHOULD" when text is not valid
// UTF-8: a prompt is text, and other bytes would be tokenized as something else or dropped.
void check_utf8_text(const std::string& text, const std::string& where, const char* what, const char* should);

// Token ids of every prompt (chat template and BOS applied as the model asks); throws on a prompt
// that encodes to nothing.
std::vector<std::vector<int32_t>> tokenize_prompts(const std::vector<PromptLine>& lines, const Tokenizer& tokenizer,
                                                   const std::string& chat_template, bool add_bos,
                                                   const std::string& path);

// "I/K" -> {I, K} with 0 <= I < K; throws naming the flag otherwise.
struct Shard {
  int index = 0, count = 1;
};
Shard parse_shard(const std::string& text);

}  // namespace cllm::cli
