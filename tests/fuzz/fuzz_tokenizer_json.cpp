// libFuzzer harness for the tokenizer.json reader and the BPE encoder it feeds
// (runtime/tokenizer_bpe.h): the input as a tokenizer.json file, then, when accepted, a fixed text
// (ASCII, accents, CJK, an emoji, digits, spaces and a few special-token spellings) encoded and
// decoded. A cllm::Error is a clean refusal. Any other exception, crash or sanitizer report is a bug,
// and so is an id outside the vocabulary.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/check.h"
#include "runtime/tokenizer_bpe.h"

namespace {

// The reader takes a path: each input goes through one scratch file per process, removed at exit.
struct ScratchFile {
  std::string path = "/tmp/cllm_fuzz_tokenizer_" + std::to_string(::getpid()) + ".json";
  ~ScratchFile() { std::remove(path.c_str()); }
};

const std::string& scratch_path() {
  static const ScratchFile file;
  return file.path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(scratch_path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const auto tok = cllm::make_bpe_tokenizer(cllm::load_hf_bpe_vocab(scratch_path()), "fuzz/tokenizer.json");
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
