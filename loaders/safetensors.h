// safetensors: 8-byte little-endian header length N, N bytes of JSON, then the raw tensor bytes.
// JSON: {"name": {"dtype": "BF16", "shape": [out, in], "data_offsets": [begin, end]}, ...,
//        "__metadata__": {"key": "value"}}; offsets are relative to the first byte after the JSON.
// Only the float dtypes cllm serves (F32, F16, BF16) are accepted; anything else is refused by name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loaders/dequant.h"

namespace cllm {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // as stored (HF order: [out, in] for linear weights)
  uint64_t begin = 0, end = 0;  // absolute byte range in the file, [begin, end)
};

struct SafetensorsHeader {
  std::vector<SafetensorsTensor> tensors;  // sorted by begin
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + N
};

// Parses and validates a whole file image (header length, JSON, dtypes, shapes vs byte sizes,
// offsets inside the file, no overlaps). Throws cllm::Error naming `filename` and the tensor.
SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& filename);

// One tensor to write: `data` holds numel(shape) fp32 values, stored as `dtype` (F32/F16/BF16,
// rounded to nearest even).
struct SafetensorsWriteTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Writes a safetensors file (header padded with spaces to 8 bytes, tensors in the given order).
void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace cllm
