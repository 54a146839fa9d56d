// libFuzzer harness for prompts files (launch/prompts_file.h), what `cllm generate --prompts` and
// `cllm trajectories` read: the input as a .jsonl file, read without and with the chat template,
// then each chat line rendered by every template family. A cllm::Error is a clean refusal (llama-2
// refuses roles that do not alternate). An accepted file must give prompts as it promises: line
// numbers from 1 in file order, valid UTF-8 text, known roles, and a chat line for every prompt
// read with the template.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/check.h"
#include "launch/prompts_file.h"
#include "runtime/chat_template.h"
#include "runtime/unicode_text.h"
#include "tests/fuzz/scratch_file.h"

namespace {

void require(bool ok) {
  if (!ok) std::abort();  // libFuzzer and the corpus replay both report the input
}

bool valid_utf8(const std::string& s) { return cllm::unicode::to_valid_utf8(s) == s; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = cllm::fuzz::write_scratch_file("prompts", ".jsonl", data, size);
  for (const bool chat : {false, true}) {
    try {
      const std::vector<cllm::cli::PromptLine> lines = cllm::cli::read_prompts(path, chat);
      int last = 0;
      for (const cllm::cli::PromptLine& p : lines) {
        require(p.line > last);
        last = p.line;
        require(valid_utf8(p.text));
        require(!chat || !p.messages.empty());
        for (const cllm::ChatMessage& m : p.messages) {
          require(!cllm::canonical_chat_role(m.role).empty());
          require(valid_utf8(m.content));
        }
        if (p.messages.empty()) continue;
        for (const char* family : {"chatml", "llama-2", "llama-3", "vicuna"}) {
          try {
            require(valid_utf8(cllm::apply_chat_template(family, p.messages, true)));
          } catch (const cllm::Error&) {
          }
        }
      }
    } catch (const cllm::Error&) {
    }
  }
  return 0;
}
