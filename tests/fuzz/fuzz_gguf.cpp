// libFuzzer harness for the GGUF parser. Any cllm::Error is a clean refusal; every other exception,
// crash or sanitizer report is a bug. Each accepted tensor's first and last rows are dequantized
// to exercise the byte ranges the parser vouched for.
#include <cstdint>
#include <vector>

#include "core/check.h"
#include "loaders/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const cllm::GgufFile g = cllm::parse_gguf(data, size, "fuzz.gguf");
    std::vector<float> row;
    for (const auto& t : g.tensors) {
      if (t.nbytes == 0) continue;
      const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(t.rows());
      row.resize(static_cast<size_t>(t.ne[0]));
      cllm::dequantize_row(t.dtype, data + t.offset, 0, t.ne[0], row.data());
      cllm::dequantize_row(t.dtype, data + t.offset + t.nbytes - row_bytes, 0, t.ne[0], row.data());
    }
  } catch (const cllm::Error&) {
  }
  return 0;
}
