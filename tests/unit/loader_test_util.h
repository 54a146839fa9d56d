// Helpers shared by the loader tests (test_loaders_formats.cpp, test_loaders_checkpoints.cpp,
// test_h5_checkpoint.cpp): expected errors, per-test temp dirs, deterministic values.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "loaders/gguf.h"
#include "loaders/hf_config.h"

namespace cllm::loader_test {

namespace fs = std::filesystem;

// Runs fn, expects cllm::Error whose message contains every needle.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no cllm::Error thrown (expected one naming " << needles.front() << ")";
}

// Fresh empty directory per test under one per-process root, removed when the binary exits.
inline fs::path temp_dir() {
  struct Root {
    fs::path path = fs::temp_directory_path() / ("cllm_test_loaders_" + std::to_string(getpid()));
    ~Root() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const Root root;
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  const fs::path d = root.path / (std::string(info->test_suite_name()) + "_" + info->name());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

inline void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
inline std::string read_file(const fs::path& p) { return read_text_file(p.string()); }

// Deterministic test values: multiples of `scale` in [-50, 50] (exact in fp16/bf16 for scale 2^-k).
inline std::vector<float> ramp(size_t n, float scale, size_t seed = 0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * (static_cast<float>((i * 37 + seed * 11) % 101) - 50);
  return v;
}

inline const uint8_t* u8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// Builds a GGUF file image in memory, for parser and checkpoint tests.
struct GgufBuilder {
  std::string kv;
  uint64_t n_kv = 0;
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string data;
  };
  std::vector<Tensor> tensors;

  static void put(std::string& s, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  static void put_str(std::string& s, const std::string& v) { put(s, v.size(), 8), s += v; }
  void key(const std::string& k, GgufType t) { put_str(kv, k), put(kv, static_cast<uint32_t>(t), 4), ++n_kv; }
  void u32(const std::string& k, uint32_t v) { key(k, GgufType::U32), put(kv, v, 4); }
  void f32(const std::string& k, float v) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    key(k, GgufType::F32), put(kv, b, 4);
  }
  void boolean(const std::string& k, bool v) { key(k, GgufType::BOOL), put(kv, v ? 1 : 0, 1); }
  void str(const std::string& k, const std::string& v) { key(k, GgufType::STRING), put_str(kv, v); }
  void strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, GgufType::ARRAY), put(kv, static_cast<uint32_t>(GgufType::STRING), 4), put(kv, v.size(), 8);
    for (const auto& s : v) put_str(kv, s);
  }
  void i32s(const std::string& k, const std::vector<int32_t>& v) {
    key(k, GgufType::ARRAY), put(kv, static_cast<uint32_t>(GgufType::I32), 4), put(kv, v.size(), 8);
    for (int32_t x : v) put(kv, static_cast<uint32_t>(x), 4);
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::string data) {
    tensors.push_back({name, std::move(ne), type, std::move(data)});
  }
  void f32_tensor(const std::string& name, std::vector<uint64_t> ne, const std::vector<float>& v) {
    tensor(name, std::move(ne), 0, std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
  }
  std::string build() const {
    std::string s = "GGUF";
    put(s, 3, 4), put(s, tensors.size(), 8), put(s, n_kv, 8);
    s += kv;
    uint64_t off = 0;
    for (const auto& t : tensors) {
      put_str(s, t.name), put(s, t.ne.size(), 4);
      for (uint64_t n : t.ne) put(s, n, 8);
      put(s, t.type, 4), put(s, off, 8);
      off += (t.data.size() + 31) / 32 * 32;
    }
    s.resize((s.size() + 31) / 32 * 32, '\0');
    for (const auto& t : tensors) s += t.data + std::string((32 - t.data.size() % 32) % 32, '\0');
    return s;
  }
};

}  // namespace cllm::loader_test
