// GGUF (llama.cpp) container, versions 2 and 3, little-endian:
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
//   n_kv x (string key, u32 type, value), n_tensors x (string name, u32 n_dims, u64 ne[n_dims],
//   u32 ggml_type, u64 offset), padding to general.alignment (default 32), tensor data.
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements.
// ne[0] is the fastest-varying (row length): a linear weight is ne = [in, out].
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loaders/dequant.h"

namespace cllm {

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);
// "Q6_K (type 14)"-style name of any ggml tensor type id, known to cllm or not.
std::string ggml_type_name(uint32_t type);

// One metadata value. Integer and bool scalars live in `i` (u64 bit-cast), float scalars in `f`.
// Arrays keep their elements in the vector matching elem_type (integers and bools widened to
// int64, floats to double); arrays of arrays are bounds-checked and skipped (only array_size kept).
struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType elem_type = GgufType::U8;  // ARRAY only
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  uint64_t array_size = 0;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> ne;  // 1..4 dims, ne[0] = row length
  uint64_t offset = 0;      // absolute byte offset in the file
  uint64_t nbytes = 0;
  int64_t rows() const;     // product of ne[1..]
};

struct GgufFile {
  std::string filename;
  uint32_t version = 0;
  std::map<std::string, GgufValue> kv;
  std::vector<GgufTensorInfo> tensors;  // file order
  uint64_t alignment = 32;
  uint64_t data_offset = 0;

  const GgufValue* find(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // Typed accessors: throw naming the file and key when absent or of the wrong type/range.
  int64_t get_int(const std::string& key) const;  // any integer type
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;  // F32/F64 only
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;
  const std::vector<int64_t>& get_ints(const std::string& key) const;
  const std::vector<double>& get_floats(const std::string& key) const;
};

// Parses and validates a whole file image: every length, count and offset is bounds-checked,
// n_dims <= 4, tensor types limited to the DTypes of dequant.h, tensor data inside the file,
// aligned and non-overlapping. Throws cllm::Error naming `filename` and the key or tensor.
GgufFile parse_gguf(const uint8_t* bytes, size_t size, const std::string& filename);

}  // namespace cllm
