// GGUF parser; see gguf.h. Every read goes through Cursor, which bounds-checks against the image.
#include "loaders/gguf.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "core/check.h"

namespace cllm {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr int kMaxArrayDepth = 4;        // nested arrays deeper than this are refused

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t size, const std::string& file) : p_(p), size_(size), file_(file) {}

  const std::string& file() const { return file_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    CLLM_CHECK(n <= remaining(), file_ << ": truncated file: " << what << " needs " << n << " bytes at offset "
                                       << pos_ << ", only " << remaining() << " left");
  }
  uint64_t uint(int bytes, const std::string& what) {
    need(static_cast<uint64_t>(bytes), what);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p_[pos_ + static_cast<size_t>(i)];
    pos_ += static_cast<size_t>(bytes);
    return v;
  }
  uint32_t u32(const std::string& what) { return static_cast<uint32_t>(uint(4, what)); }
  uint64_t u64(const std::string& what) { return uint(8, what); }
  std::string str(const std::string& what) {
    const uint64_t n = u64(what + " length");
    need(n, what + " (string of " + std::to_string(n) + " bytes)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

 private:
  const uint8_t* p_;
  size_t size_;
  const std::string& file_;
  size_t pos_ = 0;
};

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

int scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;  // STRING, ARRAY: variable
  }
}

bool is_float(GgufType t) { return t == GgufType::F32 || t == GgufType::F64; }

// Reads a fixed-size scalar; integers sign-extended per their type, floats widened to double.
void read_scalar(Cursor& c, GgufType t, const std::string& what, int64_t* i, double* f) {
  const int n = scalar_bytes(t);
  const uint64_t raw = c.uint(n, what);
  switch (t) {
    case GgufType::I8: *i = static_cast<int8_t>(raw); break;
    case GgufType::I16: *i = static_cast<int16_t>(raw); break;
    case GgufType::I32: *i = static_cast<int32_t>(raw); break;
    case GgufType::BOOL:
      CLLM_CHECK(raw <= 1, c.file() << ": " << what << ": bool value " << raw << " is not 0 or 1");
      *i = static_cast<int64_t>(raw);
      break;
    case GgufType::F32: {
      const uint32_t b = static_cast<uint32_t>(raw);
      float v;
      std::memcpy(&v, &b, 4);
      *f = v;
      break;
    }
    case GgufType::F64: std::memcpy(f, &raw, 8); break;
    default: *i = static_cast<int64_t>(raw); break;  // unsigned: u64 is bit-cast
  }
}

void read_value(Cursor& c, GgufType t, GgufValue& v, const std::string& what, int depth) {
  v.type = t;
  if (t == GgufType::STRING) {
    v.s = c.str(what);
    return;
  }
  if (t != GgufType::ARRAY) {
    read_scalar(c, t, what, &v.i, &v.f);
    return;
  }
  CLLM_CHECK(depth < kMaxArrayDepth, c.file() << ": " << what << ": arrays nested deeper than " << kMaxArrayDepth);
  const uint32_t et = c.u32(what + " element type");
  CLLM_CHECK(valid_type(et), c.file() << ": " << what << ": unknown array element type " << et);
  v.elem_type = static_cast<GgufType>(et);
  v.array_size = c.u64(what + " element count");
  // Every element takes at least 1 byte (8 for strings and arrays), so this bounds the loop
  // and the reservations by the file size before any allocation.
  const int min_elem = scalar_bytes(v.elem_type) > 0 ? scalar_bytes(v.elem_type) : 8;
  CLLM_CHECK(v.array_size <= c.remaining() / static_cast<uint64_t>(min_elem),
             c.file() << ": " << what << ": array of " << v.array_size << " " << gguf_type_name(v.elem_type)
                  << " runs past the end of the file");
  const size_t n = static_cast<size_t>(v.array_size);
  if (v.elem_type == GgufType::STRING) {
    v.strings.reserve(n);
    for (size_t k = 0; k < n; ++k) v.strings.push_back(c.str(what + "[" + std::to_string(k) + "]"));
  } else if (v.elem_type == GgufType::ARRAY) {
    for (size_t k = 0; k < n; ++k) {
      GgufValue inner;
      read_value(c, GgufType::ARRAY, inner, what + "[" + std::to_string(k) + "]", depth + 1);
    }
  } else if (is_float(v.elem_type)) {
    v.floats.resize(n);
    int64_t unused = 0;
    for (size_t k = 0; k < n; ++k) read_scalar(c, v.elem_type, what, &unused, &v.floats[k]);
  } else {
    v.ints.resize(n);
    double unused = 0;
    for (size_t k = 0; k < n; ++k) read_scalar(c, v.elem_type, what, &v.ints[k], &unused);
  }
}

bool dtype_from_ggml(uint32_t t, DType* out) {
  switch (t) {
    case 0: *out = DType::F32; return true;
    case 1: *out = DType::F16; return true;
    case 2: *out = DType::Q4_0; return true;
    case 3: *out = DType::Q4_1; return true;
    case 6: *out = DType::Q5_0; return true;
    case 7: *out = DType::Q5_1; return true;
    case 8: *out = DType::Q8_0; return true;
    case 10: *out = DType::Q2_K; return true;
    case 11: *out = DType::Q3_K; return true;
    case 12: *out = DType::Q4_K; return true;
    case 13: *out = DType::Q5_K; return true;
    case 14: *out = DType::Q6_K; return true;
    case 15: *out = DType::Q8_K; return true;
    case 30: *out = DType::BF16; return true;
    default: return false;
  }
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool", "string", "array", "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown";
}

std::string ggml_type_name(uint32_t type) {
  // ggml.h enum ggml_type; ids 4 and 5 (Q4_2, Q4_3) were removed upstream.
  static const char* names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0",
                                "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS",
                                "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
                                "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4",
                                "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4",
                                "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
  const char* n = type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
  return std::string(n) + " (type " + std::to_string(type) + ")";
}

int64_t GgufTensorInfo::rows() const {
  int64_t r = 1;
  for (size_t d = 1; d < ne.size(); ++d) r *= ne[d];
  return r;
}

GgufFile parse_gguf(const uint8_t* bytes, size_t size, const std::string& filename) {
  GgufFile g;
  g.filename = filename;
  Cursor c(bytes, size, filename);
  const uint32_t magic = c.u32("magic");
  CLLM_CHECK(magic == kMagic, filename << ": not a GGUF file (magic 0x" << std::hex << magic << ", expected 0x"
                                       << kMagic << " \"GGUF\")");
  g.version = c.u32("version");
  CLLM_CHECK(g.version == 2 || g.version == 3,
             filename << ": unsupported GGUF version " << g.version << " (accepted: 2, 3)");
  const uint64_t n_tensors = c.u64("tensor count");
  const uint64_t n_kv = c.u64("metadata count");
  // Smallest kv: 8-byte key length + 4-byte type + 1-byte value; smallest tensor info: 8+4+8+4+8.
  CLLM_CHECK(n_kv <= c.remaining() / 13, filename << ": truncated file: metadata count " << n_kv << " cannot fit in it");
  CLLM_CHECK(n_tensors <= c.remaining() / 32, filename << ": truncated file: tensor count " << n_tensors << " cannot fit in it");

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key = c.str("metadata key #" + std::to_string(k));
    const std::string what = "metadata key '" + key + "'";
    // GGUF keys are ASCII ("tokenizer.ggml.tokens"): any other byte means a corrupted key or key length.
    const auto bad = std::find_if(key.begin(), key.end(), [](char ch) { return ch < 0x20 || ch > 0x7e; });
    CLLM_CHECK(bad == key.end(), filename << ": metadata key #" << k << " '" << key << "' holds byte 0x" << std::hex
                                          << static_cast<int>(static_cast<unsigned char>(*bad)) << std::dec
                                          << " at position " << bad - key.begin()
                                          << ": keys are ASCII, so the key or its length is corrupted");
    const uint32_t t = c.u32(what + " type");
    CLLM_CHECK(valid_type(t), filename << ": " << what << ": unknown value type " << t);
    GgufValue v;
    read_value(c, static_cast<GgufType>(t), v, what, 0);
    CLLM_CHECK(g.kv.emplace(key, std::move(v)).second, filename << ": " << what << ": duplicate key");
  }

  if (const GgufValue* a = g.find("general.alignment")) {
    CLLM_CHECK(a->type == GgufType::U32 && a->i > 0 && (a->i & (a->i - 1)) == 0,
               filename << ": metadata key 'general.alignment' must be a power-of-two uint32, got "
                        << gguf_type_name(a->type) << " " << a->i);
    g.alignment = static_cast<uint64_t>(a->i);
  }

  std::vector<uint64_t> rel_offsets;
  std::unordered_set<std::string> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = c.str("tensor #" + std::to_string(k) + " name");
    const std::string tname = "tensor '" + t.name + "'";  // for the cursor, which adds the file name
    const std::string what = filename + ": " + tname;
    const uint32_t n_dims = c.u32(tname + " n_dims");
    CLLM_CHECK(n_dims >= 1 && n_dims <= 4, what << ": n_dims " << n_dims << " not in [1, 4]");
    // Both the row count (ne[1..]) and the element count must fit in int64, even when ne[0] = 0.
    uint64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.u64(tname + " ne");
      const uint64_t lim = static_cast<uint64_t>(INT64_MAX);
      const bool ok = ne <= lim && (d == 0 || ne == 0 || rows <= lim / ne);
      CLLM_CHECK(ok, what << ": element count overflows (ne[" << d << "] = " << ne << ")");
      if (d > 0) rows *= ne;
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    CLLM_CHECK(t.ne[0] == 0 || rows <= static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(t.ne[0]),
               what << ": element count overflows");
    t.ggml_type = c.u32(tname + " type");
    CLLM_CHECK(dtype_from_ggml(t.ggml_type, &t.dtype),
               what << ": unsupported tensor type " << ggml_type_name(t.ggml_type)
                    << " (accepted: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)");
    const uint64_t row = dtype_row_bytes(t.dtype, t.ne[0], what);
    CLLM_CHECK(rows == 0 || row <= UINT64_MAX / rows, what << ": byte size overflows");
    t.nbytes = row * rows;
    const uint64_t off = c.u64(tname + " offset");
    CLLM_CHECK(off % g.alignment == 0, what << ": data offset " << off << " is not a multiple of the alignment "
                                            << g.alignment);
    rel_offsets.push_back(off);
    CLLM_CHECK(names.insert(t.name).second, what << ": duplicate tensor name");
    g.tensors.push_back(std::move(t));
  }

  const uint64_t pad = (g.alignment - c.pos() % g.alignment) % g.alignment;
  g.data_offset = c.pos() + pad;
  const uint64_t data_size = g.data_offset <= size ? size - g.data_offset : 0;
  for (size_t k = 0; k < g.tensors.size(); ++k) {
    GgufTensorInfo& t = g.tensors[k];
    const uint64_t off = rel_offsets[k];
    CLLM_CHECK(g.data_offset <= size && off <= data_size && t.nbytes <= data_size - off,
               filename << ": tensor '" << t.name << "' data [" << off << ", +" << t.nbytes
                        << ") runs past the end of the " << data_size << "-byte data section (file truncated?)");
    t.offset = g.data_offset + off;
  }

  // The tensors' data lie back to back in the order of their infos, each padded to the alignment,
  // and the file ends with the last one (as llama.cpp's reader requires and every GGUF writer does).
  // A tensor whose type or shape byte was corrupted changes its size, so the next tensor's offset,
  // or for the last tensor the file's end, no longer fits: refused naming that tensor.
  uint64_t expected = 0;
  const GgufTensorInfo* prev = nullptr;
  const auto describe = [](const GgufTensorInfo& t) {
    std::string d = "'" + t.name + "' (" + std::string(dtype_name(t.dtype)) + " [";
    for (size_t i = 0; i < t.ne.size(); ++i) d += (i ? ", " : "") + std::to_string(t.ne[i]);
    return d + "], " + std::to_string(t.nbytes) + " bytes)";
  };
  for (size_t k = 0; k < g.tensors.size(); ++k) {
    const GgufTensorInfo& t = g.tensors[k];
    CLLM_CHECK(rel_offsets[k] == expected,
               filename << ": tensor '" << t.name << "' data starts at offset " << rel_offsets[k] << ", but "
                        << (prev ? "the tensor before it, " + describe(*prev) + ", ends at " : "the data section starts at ")
                        << expected << ": a tensor's offset, type or shape is corrupted");
    expected += (t.nbytes + g.alignment - 1) / g.alignment * g.alignment;  // no overflow: nbytes <= data_size
    prev = &t;
  }
  if (prev != nullptr) {
    const uint64_t end = prev->offset + prev->nbytes;  // the last tensor's data, unpadded
    CLLM_CHECK(size <= g.data_offset + expected,
               filename << ": " << size - end << " bytes follow the last tensor, " << describe(*prev)
                        << ", where at most its padding to " << g.alignment
                        << " bytes may: a tensor's type or shape is corrupted");
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = kv.find(key);
  return it == kv.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {
const GgufValue& require(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  CLLM_CHECK(v != nullptr, g.filename << ": missing metadata key '" << key << "'");
  return *v;
}
[[noreturn]] void wrong_type(const GgufFile& g, const std::string& key, const GgufValue& v, const char* want) {
  CLLM_FAIL(g.filename << ": metadata key '" << key << "' has type " << gguf_type_name(v.type)
                       << (v.type == GgufType::ARRAY ? std::string(" of ") + gguf_type_name(v.elem_type) : "")
                       << ", expected " << want);
}
bool is_int(GgufType t) { return scalar_bytes(t) > 0 && !is_float(t) && t != GgufType::BOOL; }
}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (!is_int(v.type)) wrong_type(*this, key, v, "an integer");
  CLLM_CHECK(v.type != GgufType::U64 || v.i >= 0, filename << ": metadata key '" << key << "' value out of range");
  return v.i;
}
int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return find(key) ? get_int(key) : fallback;
}
double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  // Floats only, as llama.cpp reads them: the bits of a float field whose type byte was corrupted
  // into an integer type read as an integer of another magnitude.
  if (is_float(v.type)) return v.f;
  wrong_type(*this, key, v, "float32 or float64");
}
double GgufFile::get_float(const std::string& key, double fallback) const {
  return find(key) ? get_float(key) : fallback;
}
bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufType::BOOL) wrong_type(*this, key, *v, "bool");
  return v->i != 0;
}
const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::STRING) wrong_type(*this, key, v, "string");
  return v.s;
}
const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::ARRAY || v.elem_type != GgufType::STRING) wrong_type(*this, key, v, "array of string");
  return v.strings;
}
const std::vector<int64_t>& GgufFile::get_ints(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::ARRAY || !(is_int(v.elem_type) || v.elem_type == GgufType::BOOL))
    wrong_type(*this, key, v, "array of integers");
  return v.ints;
}
const std::vector<double>& GgufFile::get_floats(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::ARRAY || !is_float(v.elem_type)) wrong_type(*this, key, v, "array of floats");
  return v.floats;
}

}  // namespace cllm
