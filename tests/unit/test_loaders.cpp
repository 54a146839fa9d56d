// Loader tests: dequantization against hand-built blocks, safetensors/GGUF/config parsers on
// valid and deliberately corrupted files written from code, and the real SmolLM2 GGUF against
// values from the python `gguf` package.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "kernels/check.h"
#include "loaders/checkpoint.h"
#include "loaders/checkpoint_common.h"
#include "loaders/dequant.h"
#include "loaders/gguf.h"
#include "loaders/hf_config.h"
#include "loaders/safetensors.h"

namespace fs = std::filesystem;
using namespace cllm;

namespace {

// Runs fn, expects cllm::Error whose message contains every needle.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
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
fs::path temp_dir() {
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

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::string read_file(const fs::path& p) { return read_text_file(p.string()); }

// Deterministic test values: multiples of `scale` in [-50, 50] (exact in fp16/bf16 for scale 2^-k).
std::vector<float> ramp(size_t n, float scale, size_t seed = 0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * (static_cast<float>((i * 37 + seed * 11) % 101) - 50);
  return v;
}

const uint8_t* u8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

}  // namespace

// ---------------------------------------------------------------- dequantization

TEST(Dequant, HalfAndBfloatConversions) {
  EXPECT_EQ(fp16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(fp16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(fp16_to_f32(0x7C00)));
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  // Every finite half survives f32 -> half; ties round to even.
  for (uint32_t h = 0; h < 0x10000; ++h)
    if ((h & 0x7C00) != 0x7C00) {
      ASSERT_EQ(f32_to_fp16(fp16_to_f32(static_cast<uint16_t>(h))), h) << h;
    }
  EXPECT_EQ(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even
  EXPECT_EQ(f32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(f32_to_fp16(70000.0f), 0x7C00);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);       // tie -> even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
}

TEST(Dequant, HandBuiltBlocks) {
  // Q8_0: d = 0.5 (fp16 0x3800), q[i] = i - 16.
  uint8_t q8[34] = {0x00, 0x38};
  for (int i = 0; i < 32; ++i) q8[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  float out[32];
  dequantize_row(DType::Q8_0, q8, 0, 32, out);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], 0.5f * (i - 16)) << i;

  // Q4_0: d = 2 (0x4000); byte j = low nibble j, high nibble 15 - j -> elements j and j + 16.
  uint8_t q40[18] = {0x00, 0x40};
  for (int j = 0; j < 16; ++j) q40[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  dequantize_row(DType::Q4_0, q40, 0, 32, out);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * (j - 8));
    EXPECT_EQ(out[j + 16], 2.0f * (15 - j - 8));
  }

  // Q4_1: d = 0.25 (0x3400), m = -1 (0xBC00); two blocks, second with m = +1 (0x3C00).
  uint8_t q41[40] = {0x00, 0x34, 0x00, 0xBC};
  for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  std::memcpy(q41 + 20, q41, 20);
  q41[23] = 0x3C;
  float row[64];
  dequantize_row(DType::Q4_1, q41, 0, 64, row);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(row[j], 0.25f * j - 1);
    EXPECT_EQ(row[j + 16], 0.25f * (15 - j) - 1);
    EXPECT_EQ(row[32 + j], 0.25f * j + 1);
  }
  // A column range that straddles the block boundary equals the same slice of the full row.
  float part[20];
  dequantize_row(DType::Q4_1, q41, 27, 47, part);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(part[i], row[27 + i]) << i;
}

// ---------------------------------------------------------------- safetensors

namespace {
// A safetensors image from header JSON text and a data section.
std::string st_image(const std::string& json, const std::string& data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((json.size() >> (8 * i)) & 0xFF);
  return s + json + data;
}
void parse_st(const std::string& img) { parse_safetensors(u8(img), img.size(), "x.safetensors"); }
}  // namespace

TEST(Safetensors, WriteParseRoundTrip) {
  const fs::path p = temp_dir() / "t.safetensors";
  const auto a = ramp(6, 0.25f), b = ramp(4, 0.5f), c = ramp(3, 1.0f);
  write_safetensors(p.string(), {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::F16, {4}, b.data()},
                                 {"c", DType::BF16, {3}, c.data()}}, {{"format", "pt"}});
  const std::string img = read_file(p);
  const SafetensorsHeader h = parse_safetensors(u8(img), img.size(), p.string());
  EXPECT_EQ(h.data_offset % 8, 0u);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[0].shape, (std::vector<int64_t>{2, 3}));
  const SafetensorsTensor& tb = h.tensors[1];
  EXPECT_EQ(tb.dtype, DType::F16);
  float got[4];
  dequantize_row(DType::F16, u8(img) + tb.begin, 0, 4, got);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], b[i]);  // multiples of 0.5: exact in fp16
}

TEST(Safetensors, TruncatedFile) { expect_error([] { parse_st("\x10\0\0"); }, {"x.safetensors", "truncated"}); }

TEST(Safetensors, HeaderLengthPastEof) {
  std::string img = st_image("{}", "");
  img[0] = 100;
  expect_error([&] { parse_st(img); }, {"x.safetensors", "header length 100", "past the end"});
}

TEST(Safetensors, BadJson) {
  expect_error([] { parse_st(st_image("{\"a\": [1,", "")); }, {"x.safetensors", "not valid JSON"});
}

TEST(Safetensors, UnknownDtype) {
  expect_error([] { parse_st(st_image(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, 0))); },
               {"x.safetensors", "'w'", "unsupported dtype 'I64'"});
}

TEST(Safetensors, OffsetsOutOfRange) {
  expect_error([] { parse_st(st_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, 0))); },
               {"x.safetensors", "'w'", "out of range"});
}

TEST(Safetensors, ByteSizeDisagreesWithShape) {
  expect_error([] { parse_st(st_image(R"({"w":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", std::string(8, 0))); },
               {"x.safetensors", "'w'", "does not match shape"});
}

TEST(Safetensors, OverlappingTensors) {
  const std::string j = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_error([&] { parse_st(st_image(j, std::string(12, 0))); }, {"x.safetensors", "'b'", "overlap", "'a'"});
}

// ---------------------------------------------------------------- GGUF container

namespace {
// Minimal GGUF writer for tests: metadata and tensors (data appended in order, aligned).
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
  void str(const std::string& k, const std::string& v) { key(k, GgufType::STRING), put_str(kv, v); }
  void strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, GgufType::ARRAY), put(kv, static_cast<uint32_t>(GgufType::STRING), 4), put(kv, v.size(), 8);
    for (const auto& s : v) put_str(kv, s);
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
GgufFile parse_g(const std::string& img) { return parse_gguf(u8(img), img.size(), "m.gguf"); }
}  // namespace

TEST(Gguf, ParsesAllValueKinds) {
  GgufBuilder b;
  b.u32("a.u32", 7);
  b.f32("a.f32", 0.5f);
  b.str("a.str", "hi");
  b.strs("a.strs", {"x", "", "yz"});
  b.key("a.i8", GgufType::I8), GgufBuilder::put(b.kv, 0xFE, 1);
  b.key("a.bool", GgufType::BOOL), GgufBuilder::put(b.kv, 1, 1);
  b.key("a.f64", GgufType::F64), GgufBuilder::put(b.kv, 0x3FF8000000000000ull, 8);  // 1.5
  b.key("a.i16s", GgufType::ARRAY), GgufBuilder::put(b.kv, 3, 4), GgufBuilder::put(b.kv, 2, 8);
  GgufBuilder::put(b.kv, 0xFFFF, 2), GgufBuilder::put(b.kv, 5, 2);
  b.f32_tensor("t", {4, 2}, ramp(8, 1.0f));
  const GgufFile g = parse_g(b.build());
  EXPECT_EQ(g.get_int("a.u32"), 7);
  EXPECT_EQ(g.get_float("a.f32"), 0.5);
  EXPECT_EQ(g.get_string("a.str"), "hi");
  EXPECT_EQ(g.get_strings("a.strs"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(g.get_int("a.i8"), -2);
  EXPECT_TRUE(g.get_bool("a.bool", false));
  EXPECT_EQ(g.get_float("a.f64"), 1.5);
  EXPECT_EQ(g.get_ints("a.i16s"), (std::vector<int64_t>{-1, 5}));
  ASSERT_EQ(g.tensors.size(), 1u);
  EXPECT_EQ(g.tensors[0].ne, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(g.tensors[0].offset, g.data_offset);
  expect_error([&] { g.get_string("a.u32"); }, {"m.gguf", "'a.u32'", "uint32", "expected string"});
  expect_error([&] { g.get_int("nope"); }, {"m.gguf", "missing metadata key 'nope'"});
}

TEST(Gguf, UnknownQuantType) {
  GgufBuilder b;
  b.tensor("blk.0.ffn_down.weight", {256, 1}, 14, std::string(210, 0));  // Q6_K: 210 bytes per 256
  expect_error([&] { parse_g(b.build()); }, {"m.gguf", "'blk.0.ffn_down.weight'", "Q6_K (type 14)"});
}

TEST(Gguf, TruncatedHeaderAndStrings) {
  GgufBuilder b;
  b.str("general.name", "a fairly long model name");
  const std::string img = b.build();
  expect_error([&] { parse_g(img.substr(0, 60)); }, {"m.gguf", "truncated", "general.name"});
  expect_error([&] { parse_g(img.substr(0, 10)); }, {"m.gguf", "truncated", "tensor count"});
}

TEST(Gguf, TooManyDims) {
  GgufBuilder b;
  b.tensor("t", {1, 1, 1, 1, 1}, 0, std::string(4, 0));
  expect_error([&] { parse_g(b.build()); }, {"m.gguf", "'t'", "n_dims 5"});
}

TEST(Gguf, TensorDataOutOfRange) {
  GgufBuilder b;
  b.f32_tensor("t", {64}, ramp(64, 1.0f));
  const std::string img = b.build();
  expect_error([&] { parse_g(img.substr(0, img.size() - 8)); }, {"m.gguf", "'t'", "past the end"});
}

TEST(Gguf, OverlappingTensors) {
  GgufBuilder b;
  b.f32_tensor("a", {16}, ramp(16, 1.0f));
  b.f32_tensor("b", {16}, ramp(16, 1.0f));
  std::string img = b.build();
  // b's offset field is the last 8 bytes of its info: point it at a's data (offset 32 -> 0).
  const size_t at = img.find(std::string("\x01\0\0\0\0\0\0\0b", 9)) + 9 + 4 + 8 + 4;
  ASSERT_EQ(static_cast<uint8_t>(img[at]), 64u);
  img[at] = 0;
  expect_error([&] { parse_g(img); }, {"m.gguf", "overlaps"});
}

// ---------------------------------------------------------------- config.json

TEST(HfConfig, WriteParseRoundTripAndKeys) {
  ModelConfig c;
  c.vocab_size = 100, c.hidden_size = 32, c.intermediate_size = 64, c.num_layers = 2;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 8, c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5f, c.rope_theta = 500000.0f, c.bos_token_id = 1, c.eos_token_ids = {2, 7};
  c.rope_scaling = {"llama3", 8.0f, 1.0f, 4.0f, 8192};
  const fs::path d = temp_dir();
  write_hf_config(c, d.string());
  const ModelConfig r = load_hf_config(d.string());
  EXPECT_EQ(r.num_kv_heads, 2);
  EXPECT_EQ(r.head_dim, 8);
  EXPECT_EQ(r.rms_norm_eps, 1e-5f);
  EXPECT_EQ(r.rope_theta, 500000.0f);
  EXPECT_EQ(r.rope_scaling.type, "llama3");
  EXPECT_EQ(r.rope_scaling.factor, 8.0f);
  EXPECT_EQ(r.eos_token_ids, (std::vector<int>{2, 7}));
  EXPECT_NE(read_file(d / "config.json").find("\"rms_norm_eps\": 1e-05"), std::string::npos);

  // Defaults (kv heads, head_dim) and a generation_config eos list merged without duplicates.
  ModelConfig m = parse_hf_config(R"({"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
      "num_attention_heads":2,"eos_token_id":3,"rope_scaling":{"type":"linear","factor":2}})", "c.json");
  merge_generation_config(m, R"({"eos_token_id":[3,4],"bos_token_id":0})", "g.json");
  EXPECT_EQ(m.num_kv_heads, 2);
  EXPECT_EQ(m.head_dim, 4);
  EXPECT_EQ(m.eos_token_ids, (std::vector<int>{3, 4}));
  EXPECT_EQ(m.bos_token_id, 0);
  EXPECT_EQ(m.rope_scaling.type, "linear");
}

TEST(HfConfig, MissingAndIllTypedFields) {
  expect_error([] { parse_hf_config(R"({"vocab_size":10})", "d/config.json"); }, {"d/config.json", "'hidden_size'"});
  expect_error([] { parse_hf_config(R"({"vocab_size":"10"})", "d/config.json"); }, {"d/config.json", "'vocab_size'", "integer"});
  expect_error([] { parse_hf_config(R"({"architectures":["GPT2LMHeadModel"]})", "d/config.json"); },
               {"d/config.json", "GPT2LMHeadModel"});
  ModelConfig c = parse_hf_config(R"({"vocab_size":10,"hidden_size":12,"intermediate_size":16,"num_hidden_layers":1,
      "num_attention_heads":3,"num_key_value_heads":2})", "d/config.json");
  expect_error([&] { validate(c, "d/config.json"); }, {"d/config.json", "num_attention_heads 3", "num_key_value_heads 2"});
}

// ---------------------------------------------------------------- HF checkpoint directories

namespace {
struct TinyModel {
  ModelConfig cfg;
  std::map<std::string, std::vector<float>> w;
  std::map<std::string, std::vector<int64_t>> shape;
};

TinyModel tiny_model() {
  TinyModel m;
  ModelConfig& c = m.cfg;
  c.vocab_size = 64, c.hidden_size = 16, c.intermediate_size = 32, c.num_layers = 2;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 4, c.bos_token_id = 1, c.eos_token_ids = {2};
  size_t seed = 0;
  for (const auto& e : detail::expected_tensors(c)) {
    size_t n = 1;
    for (int64_t d : e.shape) n *= static_cast<size_t>(d);
    m.w[e.name] = ramp(n, 1.0f / 64, ++seed);
    m.shape[e.name] = e.shape;
  }
  return m;
}

// config.json + model.safetensors (F32, or BF16 for every other tensor), without `skip`.
void write_hf(const TinyModel& m, const fs::path& dir, const std::string& skip = "") {
  write_hf_config(m.cfg, dir.string());
  std::vector<SafetensorsWriteTensor> ts;
  for (const auto& [name, v] : m.w)
    if (name != skip) ts.push_back({name, ts.size() % 2 ? DType::BF16 : DType::F32, m.shape.at(name), v.data()});
  write_safetensors((dir / "model.safetensors").string(), ts);
}

void write_tokenizer_json(const fs::path& dir, int n_tokens) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < n_tokens; ++i) vocab["t" + std::to_string(i)] = i;
  const nlohmann::json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}}},
                             {"added_tokens", {{{"id", 1}, {"content", "<s>"}}, {{"id", 2}, {"content", "</s>"}}}}};
  write_file(dir / "tokenizer.json", tj.dump());
}
}  // namespace

TEST(HfCheckpoint, OpensAndReadsRanges) {
  const TinyModel m = tiny_model();
  const fs::path d = temp_dir();
  write_hf(m, d);
  write_tokenizer_json(d, 64);
  write_file(d / "tokenizer_config.json", R"({"add_bos_token": true, "eos_token": {"content": "</s>"},
      "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  const auto r = open_checkpoint(d.string());
  EXPECT_EQ(r->config().num_kv_heads, 2);
  EXPECT_EQ(r->tokenizer().kind, TokenizerSpec::Kind::HfJson);
  EXPECT_EQ(r->tokenizer().eos_id, 2);
  EXPECT_TRUE(r->tokenizer().add_bos);
  EXPECT_EQ(r->tokenizer().chat_template, "D");
  for (const char* name : {"model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight"}) {
    const auto shape = r->shape(name);
    const int64_t cols = shape[1];
    std::vector<float> full(m.w.at(name).size());
    r->read_f32(name, {}, full.data());
    EXPECT_EQ(full, m.w.at(name)) << name;  // multiples of 1/64 are exact in bf16
    std::vector<float> part(3 * 5);
    r->read_f32(name, {2, 5, 3, 8}, part.data());
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 5; ++j) EXPECT_EQ(part[i * 5 + j], full[(2 + i) * cols + 3 + j]);
  }
  float norm[2];
  r->read_f32("model.norm.weight", {4, 6}, norm);
  EXPECT_EQ(norm[1], m.w.at("model.norm.weight")[5]);
  expect_error([&] { r->read_f32("model.norm.weight", {0, 17}, norm); }, {"model.norm.weight", "out of bounds"});
}

TEST(HfCheckpoint, TiedEmbeddingsNeedNoLmHead) {
  TinyModel m = tiny_model();
  m.cfg.tie_word_embeddings = true;
  m.w.erase("lm_head.weight");
  const fs::path d = temp_dir();
  write_hf(m, d);
  const auto r = open_checkpoint(d.string());
  EXPECT_TRUE(r->config().tie_word_embeddings);
  EXPECT_FALSE(r->has_tensor("lm_head.weight"));
}

TEST(HfCheckpoint, MissingTensor) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d, "model.layers.1.mlp.up_proj.weight");
  expect_error([&] { open_checkpoint(d.string()); }, {d.string(), "missing tensor 'model.layers.1.mlp.up_proj.weight'"});
}

TEST(HfCheckpoint, ShapeDisagreesWithConfig) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d);
  nlohmann::json c = nlohmann::json::parse(read_file(d / "config.json"));
  c["intermediate_size"] = 48;
  write_file(d / "config.json", c.dump());
  expect_error([&] { open_checkpoint(d.string()); },
               {d.string(), "'model.layers.0.mlp.gate_proj.weight'", "[32, 16]", "[48, 16]"});
}

TEST(HfCheckpoint, VocabSizeMismatch) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d);
  write_tokenizer_json(d, 70);
  expect_error([&] { open_checkpoint(d.string()); }, {d.string(), "vocab size mismatch", "70 tokens", "64 rows"});
}

TEST(HfCheckpoint, TruncatedSafetensors) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d);
  const std::string img = read_file(d / "model.safetensors");
  write_file(d / "model.safetensors", img.substr(0, img.size() - 10));
  expect_error([&] { open_checkpoint(d.string()); }, {(d / "model.safetensors").string(), "out of range"});
}

TEST(HfCheckpoint, ShardedIndex) {
  const TinyModel m = tiny_model();
  const fs::path d = temp_dir();
  write_hf_config(m.cfg, d.string());
  std::vector<SafetensorsWriteTensor> a, b;
  nlohmann::json map = nlohmann::json::object();
  for (const auto& [name, v] : m.w) {
    const bool first = name.find("layers.1.") == std::string::npos;
    (first ? a : b).push_back({name, DType::F32, m.shape.at(name), v.data()});
    map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors((d / "model-00001-of-00002.safetensors").string(), a);
  write_safetensors((d / "model-00002-of-00002.safetensors").string(), b);
  write_file(d / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  std::vector<float> got(m.w.at("model.layers.1.mlp.up_proj.weight").size());
  open_checkpoint(d.string())->read_f32("model.layers.1.mlp.up_proj.weight", {}, got.data());
  EXPECT_EQ(got, m.w.at("model.layers.1.mlp.up_proj.weight"));

  map["model.norm.weight"] = "model-00002-of-00002.safetensors";  // wrong shard
  write_file(d / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  expect_error([&] { open_checkpoint(d.string()); }, {"model.safetensors.index.json", "'model.norm.weight'", "not in its shard"});
  fs::remove(d / "model-00002-of-00002.safetensors");
  expect_error([&] { open_checkpoint(d.string()); }, {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "does not exist"});
}

TEST(HfCheckpoint, UnknownFormatListsAccepted) {
  const fs::path p = temp_dir() / "weights.bin";
  write_file(p, "x");
  expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "unrecognised format", ".gguf", "config.json"});
}

// ---------------------------------------------------------------- GGUF checkpoints

namespace {
// A tiny llama GGUF holding the TinyModel's weights, q/k permuted as llama.cpp's converter does.
std::string tiny_gguf(const TinyModel& m, int n_tokens) {
  const ModelConfig& c = m.cfg;
  GgufBuilder b;
  b.str("general.architecture", "llama");
  b.u32("llama.block_count", c.num_layers);
  b.u32("llama.embedding_length", c.hidden_size);
  b.u32("llama.feed_forward_length", c.intermediate_size);
  b.u32("llama.attention.head_count", c.num_heads);
  b.u32("llama.attention.head_count_kv", c.num_kv_heads);
  b.u32("llama.vocab_size", c.vocab_size);
  b.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.str("tokenizer.ggml.model", "gpt2");
  std::vector<std::string> toks;
  for (int i = 0; i < n_tokens; ++i) toks.push_back("t" + std::to_string(i));
  b.strs("tokenizer.ggml.tokens", toks);
  b.strs("tokenizer.ggml.merges", {"t 1"});
  b.u32("tokenizer.ggml.eos_token_id", 2);
  const auto permute = [&](const std::vector<float>& w, int n_head) {  // HF -> GGUF row order
    const size_t hd = c.head_dim, in = c.hidden_size;
    std::vector<float> out(w.size());
    for (size_t h = 0; h < static_cast<size_t>(n_head); ++h)
      for (size_t j = 0; j < 2; ++j)
        for (size_t i = 0; i < hd / 2; ++i)
          std::memcpy(&out[(h * hd + 2 * i + j) * in], &w[(h * hd + j * hd / 2 + i) * in], in * 4);
    return out;
  };
  const std::map<std::string, std::string> names = {
      {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"}, {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}};
  for (const auto& [name, v] : m.w) {
    const auto& s = m.shape.at(name);
    std::vector<uint64_t> ne(s.rbegin(), s.rend());
    std::string g = name == "model.embed_tokens.weight" ? "token_embd.weight"
                    : name == "model.norm.weight"       ? "output_norm.weight"
                                                        : "output.weight";
    std::vector<float> data = v;
    if (name.rfind("model.layers.", 0) == 0) {
      const size_t dot = name.find('.', 13);
      const std::string layer = name.substr(13, dot - 13), part = name.substr(dot + 1, name.size() - dot - 8);
      g = "blk." + layer + "." + names.at(part) + ".weight";
      if (part == "self_attn.q_proj") data = permute(v, c.num_heads);
      if (part == "self_attn.k_proj") data = permute(v, c.num_kv_heads);
    }
    b.f32_tensor(g, ne, data);
  }
  return b.build();
}
}  // namespace

TEST(GgufCheckpoint, UnpermutesQkAndMapsNames) {
  TinyModel m = tiny_model();
  const fs::path p = temp_dir() / "tiny.gguf";
  write_file(p, tiny_gguf(m, 64));
  const auto r = open_checkpoint(p.string());
  EXPECT_FALSE(r->config().tie_word_embeddings);
  EXPECT_EQ(r->config().num_kv_heads, 2);
  EXPECT_EQ(r->config().head_dim, 4);
  EXPECT_EQ(r->tokenizer().kind, TokenizerSpec::Kind::GgufBpe);
  for (const auto& [name, v] : m.w) {
    EXPECT_EQ(r->shape(name), m.shape.at(name)) << name;
    std::vector<float> got(v.size());
    r->read_f32(name, {}, got.data());
    EXPECT_EQ(got, v) << name;
  }
  std::vector<float> rows(3 * 16);
  r->read_f32("model.layers.0.self_attn.q_proj.weight", {5, 8}, rows.data());
  EXPECT_TRUE(std::equal(rows.begin(), rows.end(), m.w.at("model.layers.0.self_attn.q_proj.weight").begin() + 5 * 16));
}

TEST(GgufCheckpoint, VocabSizeMismatch) {
  const fs::path p = temp_dir() / "tiny.gguf";
  write_file(p, tiny_gguf(tiny_model(), 70));
  expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "vocab size mismatch", "70 tokens", "64 rows"});
}

// ---------------------------------------------------------------- the real SmolLM2 GGUF

namespace {
std::unique_ptr<CheckpointReader> smollm() {
  const std::string path = std::string(CLLM_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) ADD_FAILURE() << path << " is missing (fetch it with launch/fetch_model.sh)";
  return open_checkpoint(path);
}
}  // namespace

TEST(SmolLM2, ConfigAndTokenizer) {
  const auto r = smollm();
  const ModelConfig& c = r->config();
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(r->has_tensor("lm_head.weight"));
  const TokenizerSpec& t = r->tokenizer();
  EXPECT_EQ(t.kind, TokenizerSpec::Kind::GgufBpe);
  EXPECT_EQ(t.pre, "smollm");
  EXPECT_EQ(t.tokens.size(), 49152u);
  EXPECT_EQ(t.merges.size(), 48900u);
  EXPECT_EQ(t.token_types.size(), 49152u);
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_FALSE(t.add_bos);
  EXPECT_NE(t.chat_template.find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(r->shape("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{192, 576}));
}

// Reference values from the python gguf package (gguf 0.x, numpy 2.4), q/k un-permuted in numpy:
//   python3 -c "import gguf, numpy as np
//   r = gguf.GGUFReader('models/SmolLM2-135M-Instruct.Q4_1.gguf'); T = {t.name: t for t in r.tensors}
//   deq = lambda n: gguf.quants.dequantize(T[n].data, T[n].tensor_type)
//   un = lambda w, h: w.reshape(h, w.shape[0] // h // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
//   e = deq('token_embd.weight'); print(e[100, :4], e[49151, 572:576])
//   q = un(deq('blk.0.attn_q.weight'), 9); print(q[1, :4], q[33, 100:103], q[575, 575])
//   k = un(deq('blk.0.attn_k.weight'), 3); print(k[40, 10:13])
//   print(deq('blk.29.ffn_down.weight')[575, 1533:1536], deq('output_norm.weight')[:3])"
TEST(SmolLM2, DequantizedValuesMatchPythonGguf) {
  const auto r = smollm();
  const auto check = [&](const std::string& name, TensorRange range, const std::vector<float>& want) {
    std::vector<float> got(want.size());
    r->read_f32(name, range, got.data());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6f) << name << " [" << i << "]";
  };
  check("model.embed_tokens.weight", {100, 101, 0, 4}, {0.019052505f, -0.08437538f, -0.16602898f, -0.1007061f});
  check("model.embed_tokens.weight", {49151, 49152, 572, 576}, {0.07819176f, 0.128582f, -0.11989403f, -0.04170227f});
  check("model.layers.0.self_attn.q_proj.weight", {1, 2, 0, 4}, {-0.15917969f, 0.39794922f, -0.019897461f, -1.2734375f});
  check("model.layers.0.self_attn.q_proj.weight", {33, 34, 100, 103}, {0.3057251f, 0.58862305f, -0.07147217f});
  check("model.layers.0.self_attn.q_proj.weight", {575, 576, 575, 576}, {-0.25585938f});
  check("model.layers.0.self_attn.k_proj.weight", {40, 41, 10, 13}, {0.13671875f, -0.50390625f, 0.45703125f});
  check("model.layers.29.mlp.down_proj.weight", {575, 576, 1533, 1536}, {0.203125f, -0.08984375f, 0.056640625f});
  check("model.norm.weight", {0, 3}, {1.7578125f, 1.8203125f, 1.78125f});
}

TEST(SmolLM2, RowRangeEqualsFullReadAfterUnpermute) {
  const auto r = smollm();
  for (const char* name : {"model.layers.3.self_attn.q_proj.weight", "model.layers.3.self_attn.k_proj.weight"}) {
    const auto s = r->shape(name);
    std::vector<float> full(static_cast<size_t>(s[0] * s[1]));
    r->read_f32(name, {}, full.data());
    const int64_t r0 = 70, r1 = 131, c0 = 17, c1 = 300;  // crosses head and Q4_1 block boundaries
    std::vector<float> part(static_cast<size_t>((r1 - r0) * (c1 - c0)));
    r->read_f32(name, {r0, r1, c0, c1}, part.data());
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t j = c0; j < c1; ++j)
        ASSERT_EQ(part[(i - r0) * (c1 - c0) + j - c0], full[i * s[1] + j]) << name << " " << i << "," << j;
  }
}
