// safetensors reader/writer; see safetensors.h. The parser takes raw bytes so the fuzzer can call it.
#include "loaders/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace cllm {

namespace {

// Same cap as the reference implementation: a header is names and shapes, never weights.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// A JSON value for an error message: scalars verbatim, containers by type only (an adversarial
// header could nest them deep enough for a recursive dump to exhaust the stack).
std::string describe(const nlohmann::json& v) { return v.is_primitive() ? v.dump() : std::string(v.type_name()); }

bool dtype_from_string(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::F32;
  else if (s == "F16") *out = DType::F16;
  else if (s == "BF16") *out = DType::BF16;
  else return false;
  return true;
}

SafetensorsTensor parse_entry(const std::string& name, const nlohmann::json& e, uint64_t data_offset,
                              uint64_t data_size, const std::string& file) {
  const std::string where = file + ": tensor '" + name + "'";
  CLLM_CHECK(e.is_object(), where << ": entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    CLLM_CHECK(e.contains(key), where << ": missing field '" << key << "'");

  SafetensorsTensor t;
  t.name = name;
  CLLM_CHECK(e["dtype"].is_string(), where << ": 'dtype' is not a string");
  const std::string dt = e["dtype"].get<std::string>();
  CLLM_CHECK(dtype_from_string(dt, &t.dtype),
             where << ": unsupported dtype '" << dt << "' (accepted: F32, F16, BF16)");

  const nlohmann::json& shape = e["shape"];
  CLLM_CHECK(shape.is_array(), where << ": 'shape' is not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape) {
    CLLM_CHECK(d.is_number_unsigned(), where << ": shape entry " << describe(d) << " is not a non-negative integer");
    const uint64_t v = d.get<uint64_t>();
    CLLM_CHECK(v <= static_cast<uint64_t>(INT64_MAX), where << ": shape entry " << v << " is too large");
    if (v != 0 && numel > UINT64_MAX / v) overflow = true;
    numel *= v;
    t.shape.push_back(static_cast<int64_t>(v));
  }
  const uint64_t elem = static_cast<uint64_t>(dtype_block_bytes(t.dtype));
  CLLM_CHECK(!overflow && numel <= UINT64_MAX / elem, where << ": element count overflows");

  const nlohmann::json& off = e["data_offsets"];
  CLLM_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
             where << ": 'data_offsets' must be [begin, end] non-negative integers, got " << describe(off));
  const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
  CLLM_CHECK(b <= en && en <= data_size, where << ": data_offsets [" << b << ", " << en
                                               << "] out of range of the " << data_size << "-byte data section");
  CLLM_CHECK(en - b == numel * elem, where << ": byte size " << (en - b) << " does not match shape "
                                           << shape.dump() << " x " << dt << " = " << numel * elem << " bytes");
  t.begin = data_offset + b;
  t.end = data_offset + en;
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& filename) {
  CLLM_CHECK(size >= 8, filename << ": truncated safetensors file (" << size
                                 << " bytes, need at least the 8-byte header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  CLLM_CHECK(n <= size - 8, filename << ": header length " << n << " runs past the end of the file ("
                                     << size << " bytes)");
  CLLM_CHECK(n <= kMaxHeaderBytes, filename << ": header length " << n << " exceeds the "
                                            << kMaxHeaderBytes << "-byte limit");

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(bytes + 8, bytes + 8 + n);
  } catch (const nlohmann::json::exception& e) {
    CLLM_FAIL(filename << ": header is not valid JSON: " << e.what());
  }
  CLLM_CHECK(j.is_object(), filename << ": header JSON is not an object");

  SafetensorsHeader h;
  h.data_offset = 8 + n;
  const uint64_t data_size = size - h.data_offset;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      CLLM_CHECK(it->is_object(), filename << ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        CLLM_CHECK(m->is_string(), filename << ": __metadata__ value '" << m.key() << "' is not a string");
        h.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(it.key(), *it, h.data_offset, data_size, filename));
  }

  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.begin < b.begin; });
  const SafetensorsTensor* prev = nullptr;
  for (const auto& t : h.tensors) {
    if (t.begin == t.end) continue;  // empty tensors occupy no bytes
    CLLM_CHECK(prev == nullptr || t.begin >= prev->end,
               filename << ": tensor '" << t.name << "' bytes [" << t.begin - h.data_offset << ", "
                        << t.end - h.data_offset << ") overlap tensor '" << prev->name << "' ["
                        << prev->begin - h.data_offset << ", " << prev->end - h.data_offset << ")");
    prev = &t;
  }
  return h;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> numels;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    CLLM_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16,
               path << ": tensor '" << t.name << "': cannot write dtype " << dtype_name(t.dtype)
                    << " (F32, F16, BF16 only)");
    CLLM_CHECK(!header.contains(t.name), path << ": duplicate tensor '" << t.name << "'");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      CLLM_CHECK(d >= 0, path << ": tensor '" << t.name << "' has negative dimension " << d);
      numel *= static_cast<uint64_t>(d);
    }
    CLLM_CHECK(t.data != nullptr || numel == 0, path << ": tensor '" << t.name << "' has no data");
    const uint64_t nbytes = numel * static_cast<uint64_t>(dtype_block_bytes(t.dtype));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    numels.push_back(numel);
    offset += nbytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  CLLM_CHECK(out, "cannot create " << path << ": " << std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(json.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  std::vector<uint16_t> buf;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& t = tensors[k];
    if (t.dtype == DType::F32) {
      out.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(numels[k] * 4));
      continue;
    }
    buf.resize(numels[k]);
    for (uint64_t i = 0; i < numels[k]; ++i)
      buf[i] = t.dtype == DType::F16 ? f32_to_fp16(t.data[i]) : f32_to_bf16(t.data[i]);
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(numels[k] * 2));
  }
  out.close();
  CLLM_CHECK(out, "write to " << path << " failed: " << std::strerror(errno));
}

}  // namespace cllm
