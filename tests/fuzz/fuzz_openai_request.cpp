// libFuzzer harness for the OpenAI request parser (launch/openai_api.h), the code that reads every
// HTTP body `cllm serve` receives, as a completions and as a chat request. An ApiError is a clean
// refusal; it must be a 4xx with a message. Any other exception, crash or sanitizer report is a bug,
// and so is an accepted request outside the ranges the engine relies on.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "launch/openai_api.h"

namespace {

void require(bool ok) {
  if (!ok) std::abort();  // libFuzzer and the corpus replay both report the input
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (const bool chat : {false, true}) {
    try {
      const cllm::openai::ApiRequest r = cllm::openai::parse_request(body, chat);
      require(r.chat == chat);
      require(r.max_tokens >= 0 && r.n >= 1 && r.n <= cllm::openai::kMaxChoices);
      require(r.logprobs >= -1 && r.batch.size() <= static_cast<size_t>(cllm::openai::kMaxBatchPrompts));
      require(!chat || !r.messages.empty());
    } catch (const cllm::openai::ApiError& e) {
      require(e.status >= 400 && e.status < 500 && *e.what() != '\0');
    }
  }
  return 0;
}
