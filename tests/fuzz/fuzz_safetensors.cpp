// libFuzzer harness for the safetensors header parser. Any cllm::Error is a clean refusal; every
// other exception, crash or sanitizer report is a bug. Accepted tensors are converted to fp32 to
// exercise the byte ranges the parser vouched for.
#include <cstdint>
#include <vector>

#include "core/check.h"
#include "loaders/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const cllm::SafetensorsHeader h = cllm::parse_safetensors(data, size, "fuzz.safetensors");
    std::vector<float> buf;
    for (const auto& t : h.tensors) {
      const int64_t n = static_cast<int64_t>((t.end - t.begin) / static_cast<uint64_t>(cllm::dtype_block_bytes(t.dtype)));
      buf.resize(static_cast<size_t>(n));
      cllm::dequantize_row(t.dtype, data + t.begin, 0, n, buf.data());
    }
  } catch (const cllm::Error&) {
  }
  return 0;
}
