// libFuzzer harness for the tokenizer.json reader and the BPE encoder it feeds
// (runtime/tokenizer_bpe.h): the input as a tokenizer.json file, then, when accepted, a fixed text
// (ASCII, accents, CJK, an emoji, digits, spaces and a few special-token spellings) encoded and
// decoded. A cllm::Error is a clean refusal. Any other exception, crash or sanitizer report is a bug,
// and so is an id outside the vocabulary.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/check.h"
#include "runtime/tokenizer_bpe.h"
#include "tests/fuzz/scratch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = cllm::fuzz::write_scratch_file("tokenizer", ".json", data, size);
  try {
    const auto tok = cllm::make_bpe_tokenizer(cllm::load_hf_bpe_vocab(path), "fuzz/tokenizer.json");
    static const std::string text = "Hello, w\xc3\xb6rld!  \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x99\x82 12345\n\t<s></s><|im_start|>";
    const std::vector<int32_t> ids = tok->encode(text, true);
    for (const int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) std::abort();
    (void)tok->decode(ids);
    for (int32_t id = 0; id < tok->vocab_size() && id < 64; ++id) (void)tok->token_bytes(id);
  } catch (const cllm::Error&) {
  }
  return 0;
}
