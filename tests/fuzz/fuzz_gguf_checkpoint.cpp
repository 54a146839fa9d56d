// libFuzzer harness for a whole GGUF checkpoint as `cllm generate --model FILE.gguf` opens it: the
// input as a .gguf file through open_checkpoint (the model config from the metadata, validated; the
// tensors named and checked against it; the tokenizer spec), then the tokenizer built from it, a
// fixed text encoded and decoded. fuzz_gguf covers the container alone; this one the meaning of
// its keys. A cllm::Error is a clean refusal. Any other exception, crash or sanitizer report is a
// bug, and so is an id outside the vocabulary.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/check.h"
#include "loaders/checkpoint.h"
#include "runtime/tokenizer.h"
#include "tests/fuzz/scratch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = cllm::fuzz::write_scratch_file("checkpoint", ".gguf", data, size);
  try {
    const auto checkpoint = cllm::open_checkpoint(path);
    const auto tok = cllm::make_tokenizer(checkpoint->tokenizer(), checkpoint->config().vocab_size);
    static const std::string text = "Hello, w\xc3\xb6rld! \xe4\xbd\xa0\xe5\xa5\xbd 123 <|im_start|><s>";
    const std::vector<int32_t> ids = tok->encode(text, true);
    for (const int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) std::abort();
    (void)tok->decode(ids);
  } catch (const cllm::Error&) {
  }
  return 0;
}
