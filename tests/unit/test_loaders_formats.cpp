// Loader tests, formats: dequantization against hand-built blocks, and the safetensors, GGUF and
// config.json parsers on valid and deliberately corrupted inputs written from code.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include "loaders/checkpoint.h"
#include "loaders/checkpoint_common.h"
#include "loaders/dequant.h"
#include "loaders/gguf.h"
#include "loaders/hf_config.h"
#include "loaders/safetensors.h"

#include "core/check.h"
#include "loader_test_util.h"

namespace fs = std::filesystem;
using namespace cllm;
using namespace cllm::loader_test;

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
  // A float field stored as an integer (a corrupted type byte over float bits) is refused.
  expect_error([&] { g.get_float("a.u32"); }, {"m.gguf", "'a.u32'", "uint32", "expected float32 or float64"});
  expect_error([&] { g.get_int("nope"); }, {"m.gguf", "missing metadata key 'nope'"});
}

TEST(Gguf, UnknownQuantType) {
  GgufBuilder b;
  b.tensor("blk.0.ffn_down.weight", {256, 1}, 23, std::string(136, 0));  // IQ4_XS: 136 bytes per 256
  expect_error([&] { parse_g(b.build()); }, {"m.gguf", "'blk.0.ffn_down.weight'", "IQ4_XS (type 23)", "Q6_K"});
}

TEST(Gguf, TruncatedHeaderAndStrings) {
  GgufBuilder b;
  b.str("general.name", "a fairly long model name");
  const std::string img = b.build();
  expect_error([&] { parse_g(img.substr(0, 60)); }, {"m.gguf", "truncated", "general.name"});
  expect_error([&] { parse_g(img.substr(0, 10)); }, {"m.gguf", "truncated", "tensor count"});
}

// A key whose bytes or length field are corrupted: refused with the reason, and the message is
// whole: the NUL byte is shown as \x00, so nothing after it is cut where the message is printed.
TEST(Gguf, CorruptedKeyNamedWhole) {
  GgufBuilder b;
  b.str(std::string("general.na\0me", 13), "x");
  const std::string img = b.build();
  try {
    parse_g(img);
    ADD_FAILURE() << "a key with a NUL byte was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();  // as printf("%s") prints it: up to the first NUL
    for (const char* needle : {"m.gguf", "metadata key #0 'general.na\\x00me'", "byte 0x0 at position 10",
                               "the key or its length is corrupted"})
      EXPECT_NE(msg.find(needle), std::string::npos) << needle << " not in: " << msg;
  }
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
  // The data must lie back to back in info order (as llama.cpp requires): b is named with a's end.
  expect_error([&] { parse_g(img); }, {"m.gguf", "tensor 'b' data starts at offset 0", "'a' (F32 [16], 64 bytes), ends at 64"});
}

// A corrupted type byte that shrinks the last tensor (F32 -> F16) leaves bytes no tensor explains.
TEST(Gguf, LastTensorTypeCorruptedIsRefused) {
  GgufBuilder b;
  b.f32_tensor("a", {16}, ramp(16, 1.0f));
  b.f32_tensor("b", {64}, ramp(64, 1.0f));
  std::string img = b.build();
  const size_t type_at = img.find(std::string("\x01\0\0\0\0\0\0\0b", 9)) + 9 + 4 + 8;
  ASSERT_EQ(static_cast<uint8_t>(img[type_at]), 0u);  // F32
  EXPECT_NO_THROW(parse_g(img));
  img[type_at] = 1;  // F16: half the bytes
  expect_error([&] { parse_g(img); }, {"m.gguf", "128 bytes follow the last tensor, 'b' (F16 [64], 128 bytes)"});
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
  // Widths past int32 (found by tests/fuzz/fuzz_hf_config.cpp): refused, not computed with overflow.
  c = parse_hf_config(R"({"vocab_size":10,"hidden_size":12,"intermediate_size":16,"num_hidden_layers":1,
      "num_attention_heads":1,"num_key_value_heads":1,"head_dim":1073741824})", "d/config.json");
  expect_error([&] { validate(c, "d/config.json"); }, {"d/config.json", "head_dim 1073741824", "q|k|v", "overflows"});
  c = parse_hf_config(R"({"vocab_size":10,"hidden_size":12,"intermediate_size":2000000000,"num_hidden_layers":1,
      "num_attention_heads":3})", "d/config.json");
  expect_error([&] { validate(c, "d/config.json"); }, {"d/config.json", "intermediate_size 2000000000", "overflows"});
}

