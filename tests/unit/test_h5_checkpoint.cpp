// cllm's HDF5 checkpoint (loaders/h5_checkpoint.h): HF dir / GGUF -> .h5 keeps every tensor,
// the config, the tokenizer and so the model's logits and tokens; hyperslab reads equal the same
// slice of a full read and touch only their chunks; a flipped byte in a chunk, a missing dataset,
// a wrong shape and wrong attributes are refused naming the file and the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/tensor_manifest.h"
#include "loaders/h5_check.h"
#include "loaders/h5_checkpoint.h"
#include "loaders/hf_config.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "loader_test_util.h"
#include "test_support.h"

namespace cllm {
namespace {

namespace fs = std::filesystem;
using detail::H5Handle;

using loader_test::expect_error;

std::vector<float> read_all(const CheckpointReader& r, const std::string& name, const TensorRange& range = {}) {
  const auto s = r.shape(name);
  const int64_t rows = (range.row_end < 0 ? s[0] : range.row_end) - range.row_begin;
  const int64_t cols = s.size() < 2 ? 1 : (range.col_end < 0 ? s[1] : range.col_end) - range.col_begin;
  std::vector<float> v(static_cast<size_t>(rows * cols));
  r.read_f32(name, range, v.data());
  return v;
}

// `src` converted to <tag>/model.h5 (f32 unless told), once per process and dtype.
std::string converted(const std::string& src, const std::string& tag, DType dtype = DType::F32) {
  static std::map<std::string, std::string> made;
  const std::string key = tag + "_" + dtype_name(dtype);
  if (made.count(key)) return made[key];
  const fs::path dir = test::process_dir("h5_" + key);
  H5WriteOptions o;
  o.dtype = dtype;
  write_h5_checkpoint(*open_checkpoint(src), (dir / "model.h5").string(), o);
  return made[key] = (dir / "model.h5").string();
}

std::string tiny_h5(DType dtype = DType::F32) { return converted(test::random_model_dir("tiny", 1), "tiny", dtype); }

// A writable copy of the tiny .h5 for one test to damage.
std::string tiny_copy() {
  const fs::path p = test::temp_dir("h5") / "model.h5";
  fs::copy_file(tiny_h5(), p);
  return p.string();
}

// Runs fn on the open copy (read-write).
void edit(const std::string& path, const std::function<void(hid_t)>& fn) {
  H5Handle f(CLLM_H5(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Fclose);
  fn(f);
}

void expect_same_tensors(const CheckpointReader& a, const CheckpointReader& b, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    ASSERT_EQ(a.shape(n), b.shape(n)) << n;
    EXPECT_TRUE(read_all(a, n) == read_all(b, n)) << n;
  }
}

// Same logits (bitwise: same fp32 weights, same kernels) over the prompt, same greedy tokens.
void expect_same_model(const CheckpointReader& a, const CheckpointReader& b, const std::vector<int32_t>& prompt,
                       int max_new) {
  auto ma = make_model(a, Device::Cpu), mb = make_model(b, Device::Cpu);
  const int n = static_cast<int>(prompt.size()), vocab = a.config().vocab_size;
  std::vector<float> la(static_cast<size_t>(n) * vocab), lb(la.size());
  std::vector<int32_t> ia(n), ib(n);
  ma->reset(n);
  mb->reset(n);
  ma->forward(prompt.data(), n, 0, ia.data(), la.data());
  mb->forward(prompt.data(), n, 0, ib.data(), lb.data());
  EXPECT_TRUE(la == lb);
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  ma->reset(kv_rows_needed(n, max_new, 1));
  mb->reset(kv_rows_needed(n, max_new, 1));
  const GenerateResult ra = generate_ar(*ma, prompt, gen);
  EXPECT_EQ(static_cast<int>(ra.tokens.size()), max_new);
  EXPECT_EQ(generate_ar(*mb, prompt, gen).tokens, ra.tokens);
}

std::vector<std::string> all_names(const ModelConfig& c) {
  const TensorManifest m = make_tensor_manifest(c);
  std::vector<std::string> n;
  for (const TensorSpec* t : m.all()) n.push_back(t->name);
  return n;
}

TEST(H5Checkpoint, TinyRoundTripIsExact) {
  const auto src = open_checkpoint(test::random_model_dir("tiny", 1));
  const auto h5 = open_checkpoint(tiny_h5());
  const ModelConfig &a = src->config(), &b = h5->config();
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, "llama3");  // the tiny shape exercises every rope_scaling field
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);

  const TokenizerSpec &ta = src->tokenizer(), &tb = h5->tokenizer();
  EXPECT_EQ(tb.kind, TokenizerSpec::Kind::HfJson);
  EXPECT_EQ(ta.bos_id, tb.bos_id);
  EXPECT_EQ(ta.eos_id, tb.eos_id);
  EXPECT_EQ(ta.add_bos, tb.add_bos);
  EXPECT_EQ(ta.chat_template, tb.chat_template);
  EXPECT_NE(ta.path, tb.path);  // rebuilt from the bytes embedded in the .h5
  EXPECT_EQ(read_text_file(ta.path), read_text_file(tb.path));
  const std::string text = "Hello, HDF5 world! 123";
  EXPECT_EQ(make_tokenizer(ta)->encode(text, true), make_tokenizer(tb)->encode(text, true));

  expect_same_tensors(*src, *h5, all_names(a));
  expect_same_model(*src, *h5, {1, 17, 99, 250, 3, 42, 7}, 12);
}

// A Mistral config's sliding window survives the conversion, and the model still decodes the same.
TEST(H5Checkpoint, SlidingWindowRoundTrip) {
  const std::string dir = test::random_model_with_config(
      "tiny", 1, "h5_mistral_sw8",
      R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 8})");
  const auto src = open_checkpoint(dir);
  const auto h5 = open_checkpoint(converted(dir, "mistral_sw8"));
  EXPECT_EQ(src->config().sliding_window, 8);
  EXPECT_EQ(h5->config().sliding_window, 8);
  expect_same_model(*src, *h5, {1, 17, 99, 250, 3, 42, 7, 8, 9, 10, 11, 12}, 12);
}

TEST(H5Checkpoint, HalfDtypesRoundToNearestEven) {
  const auto src = open_checkpoint(test::random_model_dir("tiny", 1));
  for (DType dt : {DType::F16, DType::BF16}) {
    const auto h5 = open_checkpoint(tiny_h5(dt));
    for (const char* n : {"model.layers.1.self_attn.o_proj.weight", "model.embed_tokens.weight"}) {
      std::vector<float> want = read_all(*src, n);
      for (float& x : want) x = dt == DType::F16 ? fp16_to_f32(f32_to_fp16(x)) : bf16_to_f32(f32_to_bf16(x));
      EXPECT_TRUE(read_all(*h5, n) == want) << n << " " << dtype_name(dt);
    }
  }
}

TEST(H5Checkpoint, ChunksFollowTheSplitAxis) {
  EXPECT_EQ(h5_chunk_count(160, 8), 8);
  EXPECT_EQ(h5_chunk_count(12, 8), 4);  // TP 1, 2, 4 read whole chunks; TP 8 cannot split 12 rows anyway
  EXPECT_EQ(h5_chunk_count(576, 3), 3);
  EXPECT_EQ(h5_chunk_count(7, 8), 1);
  H5Handle f(CLLM_H5(H5Fopen(tiny_h5().c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  const auto chunk_of = [&](const std::string& name) {
    H5Handle ds(CLLM_H5(H5Dopen2(f, ("/tensors/" + name).c_str(), H5P_DEFAULT)), H5Dclose);
    H5Handle dcpl(CLLM_H5(H5Dget_create_plist(ds)), H5Pclose);
    hsize_t c[2] = {0, 0};
    const int rank = CLLM_H5(H5Pget_chunk(dcpl, 2, c));
    return std::vector<hsize_t>(c, c + rank);
  };
  EXPECT_EQ(chunk_of("model.layers.0.self_attn.q_proj.weight"), (std::vector<hsize_t>{8, 64}));   // [64, 64]
  EXPECT_EQ(chunk_of("model.layers.0.self_attn.k_proj.weight"), (std::vector<hsize_t>{4, 64}));   // [32, 64]
  EXPECT_EQ(chunk_of("model.layers.0.mlp.up_proj.weight"), (std::vector<hsize_t>{20, 64}));       // [160, 64]
  EXPECT_EQ(chunk_of("model.layers.0.self_attn.o_proj.weight"), (std::vector<hsize_t>{64, 8}));   // [64, 64]
  EXPECT_EQ(chunk_of("model.layers.0.mlp.down_proj.weight"), (std::vector<hsize_t>{64, 20}));     // [64, 160]
  EXPECT_EQ(chunk_of("model.embed_tokens.weight"), (std::vector<hsize_t>{40, 64}));               // [320, 64]
  EXPECT_EQ(chunk_of("model.norm.weight"), (std::vector<hsize_t>{64}));
}

TEST(H5Checkpoint, HyperslabEqualsSliceOfFullRead) {
  const auto h5 = open_checkpoint(tiny_h5(DType::BF16));
  struct Case {
    std::string name;
    TensorRange r;
  };
  // Whole chunks, ranges crossing chunk edges, single rows/columns, 1-D element ranges.
  for (const Case& c : std::vector<Case>{{"model.layers.0.self_attn.q_proj.weight", {16, 32}},
                                         {"model.layers.0.self_attn.q_proj.weight", {3, 11, 5, 60}},
                                         {"model.layers.1.mlp.down_proj.weight", {0, -1, 40, 80}},
                                         {"model.layers.1.mlp.down_proj.weight", {63, 64, 17, 151}},
                                         {"lm_head.weight", {319, 320}},
                                         {"model.norm.weight", {10, 33}}}) {
    const std::vector<float> full = read_all(*h5, c.name), got = read_all(*h5, c.name, c.r);
    const auto s = h5->shape(c.name);
    const int64_t cols = s.size() < 2 ? 1 : s[1], r1 = c.r.row_end < 0 ? s[0] : c.r.row_end, c0 = c.r.col_begin;
    const int64_t c1 = s.size() < 2 ? 1 : (c.r.col_end < 0 ? cols : c.r.col_end);
    std::vector<float> want;
    for (int64_t r = c.r.row_begin; r < r1; ++r)
      for (int64_t k = c0; k < c1; ++k) want.push_back(full[r * cols + k]);
    EXPECT_TRUE(got == want) << c.name << " rows [" << c.r.row_begin << ", " << r1 << ")";
  }
  float sink[8];
  expect_error([&] { h5->read_f32("model.layers.0.self_attn.k_proj.weight", {30, 34}, sink); },
               {"model.h5", "model.layers.0.self_attn.k_proj.weight", "out of bounds"});
}

// File offset and stored size of the chunk starting at element (row, col) (HDF5 1.10.5+).
std::pair<haddr_t, hsize_t> chunk_location(const std::string& path, const std::string& name, hsize_t row, hsize_t col) {
  H5Handle f(CLLM_H5(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  H5Handle ds(CLLM_H5(H5Dopen2(f, ("/tensors/" + name).c_str(), H5P_DEFAULT)), H5Dclose);
  const hsize_t offset[2] = {row, col};
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  CLLM_H5(H5Dget_chunk_info_by_coord(ds, offset, &mask, &addr, &size));
  return {addr, size};
}

void flip_byte(const std::string& path, haddr_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char b = 0;
  f.read(&b, 1);
  b = static_cast<char>(b ^ 0x10);  // one bit of one weight
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&b, 1);
  ASSERT_TRUE(f.good());
}

TEST(H5Checkpoint, FlippedByteInAChunkIsDetected) {
  const std::string path = tiny_copy();
  const std::string name = "model.layers.1.self_attn.o_proj.weight";  // [64, 64], 8 column chunks of 8
  const auto [addr, size] = chunk_location(path, name, 0, 40);  // columns [40, 48)
  ASSERT_EQ(size, 64u * 8 * 4 + 4);  // the chunk's floats, then the 4-byte checksum
  flip_byte(path, addr + size / 2);
  const auto h5 = open_checkpoint(path);  // opening reads no tensor data
  std::vector<float> buf(64 * 64);
  h5->read_f32(name, {0, -1, 0, 40}, buf.data());  // chunks 0-4: hyperslab reads touch only their chunks
  h5->read_f32(name, {0, -1, 48, 64}, buf.data());
  for (const TensorRange& r : {TensorRange{}, TensorRange{0, -1, 40, 48}, TensorRange{7, 8, 45, 46}})
    expect_error([&] { h5->read_f32(name, r, buf.data()); }, {path, "tensor '" + name + "'", "Fletcher32"});
  expect_error([&] { make_model(*h5, Device::Cpu); }, {path, name, "Fletcher32"});
}

// The HDF5 fingerprint hashes every chunk's stored Fletcher32: equal for a copy, different for
// another seed, and different for one value changed off the probe rows (which the default probe
// fingerprint, reading 256 values, does not see).
TEST(H5Checkpoint, FingerprintCoversEveryStoredByte) {
  const std::string path = tiny_copy(), name = "model.layers.1.self_attn.o_proj.weight";  // [64, 64]
  const auto original = open_checkpoint(tiny_h5());
  const auto other = open_checkpoint(converted(test::random_model_dir("tiny", 2), "tiny_seed2"));
  EXPECT_EQ(open_checkpoint(path)->fingerprint(name), original->fingerprint(name));
  EXPECT_NE(other->fingerprint(name), original->fingerprint(name));
  edit(path, [&](hid_t f) {  // row 5 is not a probe row (0, 21, 42, 63)
    H5Handle ds(CLLM_H5(H5Dopen2(f, ("/tensors/" + name).c_str(), H5P_DEFAULT)), H5Dclose);
    H5Handle space(CLLM_H5(H5Dget_space(ds)), H5Sclose);
    const hsize_t start[2] = {5, 37}, count[2] = {1, 1};
    CLLM_H5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr));
    H5Handle mem(CLLM_H5(H5Screate_simple(2, count, nullptr)), H5Sclose);
    const float v = 0.125f;
    CLLM_H5(H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &v));
  });
  const auto changed = open_checkpoint(path);
  EXPECT_NE(changed->fingerprint(name), original->fingerprint(name));
  EXPECT_EQ(probe_fingerprint(*changed, name), probe_fingerprint(*original, name));
}

TEST(H5Checkpoint, MissingDatasetIsRefused) {
  const std::string path = tiny_copy();
  edit(path, [](hid_t f) { CLLM_H5(H5Ldelete(f, "/tensors/model.layers.1.mlp.up_proj.weight", H5P_DEFAULT)); });
  expect_error([&] { open_checkpoint(path); }, {path, "missing tensor 'model.layers.1.mlp.up_proj.weight'"});
}

// Replaces a dataset by a float32 one of `dims`, written like cllm writes (chunked, Fletcher32).
// chunk: the chunk shape (empty: the whole tensor); a chunk wider than the tensor needs unlimited
// maximum dimensions, which HDF5 then allows.
void replace_dataset(hid_t f, const std::string& name, std::vector<hsize_t> dims, bool fletcher = true,
                     std::vector<hsize_t> chunk = {}) {
  const std::string full = "/tensors/" + name;
  CLLM_H5(H5Ldelete(f, full.c_str(), H5P_DEFAULT));
  const std::vector<hsize_t> unlimited(dims.size(), H5S_UNLIMITED);
  H5Handle space(CLLM_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(),
                                          chunk.empty() ? nullptr : unlimited.data())),
                 H5Sclose);
  H5Handle dcpl(CLLM_H5(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  CLLM_H5(H5Pset_chunk(dcpl, static_cast<int>(dims.size()), chunk.empty() ? dims.data() : chunk.data()));
  if (fletcher) CLLM_H5(H5Pset_fletcher32(dcpl));
  H5Handle ds(CLLM_H5(H5Dcreate2(f, full.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)), H5Dclose);
  detail::h5_write_string_attr(ds, "dtype", "f32");
}

TEST(H5Checkpoint, WrongShapeIsRefused) {
  const std::string path = tiny_copy();
  edit(path, [](hid_t f) { replace_dataset(f, "model.layers.0.self_attn.k_proj.weight", {48, 64}); });
  expect_error([&] { open_checkpoint(path); },
               {path, "'model.layers.0.self_attn.k_proj.weight'", "[48, 64]", "the config implies [32, 64]"});
}

// A chunk shape wider than its tensor (as a damaged layout message reads) is refused before any
// read: HDF5 trusts it and copied past its buffers.
TEST(H5Checkpoint, ChunkWiderThanItsTensorIsRefused) {
  const std::string path = tiny_copy();
  edit(path, [](hid_t f) { replace_dataset(f, "model.embed_tokens.weight", {320, 64}, true, {40, 16448}); });
  expect_error([&] { open_checkpoint(path); },
               {path, "'model.embed_tokens.weight'", "chunk dimension 1 is 16448, outside 1..64", "damaged"});
}

TEST(H5Checkpoint, DatasetWithoutChecksumIsRefused) {
  const std::string path = tiny_copy();
  edit(path, [](hid_t f) { replace_dataset(f, "model.norm.weight", {64}, false); });
  expect_error([&] { open_checkpoint(path); }, {path, "'model.norm.weight'", "no Fletcher32 checksum"});
}

TEST(H5Checkpoint, WrongAttributesAreRefused) {
  const std::string q = "/tensors/model.layers.0.self_attn.q_proj.weight";
  struct Case {
    std::function<void(hid_t)> damage;
    std::vector<std::string> needles;
  };
  const auto set_string = [](const char* obj, const char* attr, const char* value) {
    return [=](hid_t f) {
      CLLM_H5(H5Adelete_by_name(f, obj, attr, H5P_DEFAULT));
      H5Handle o(CLLM_H5(H5Oopen(f, obj, H5P_DEFAULT)), H5Oclose);
      detail::h5_write_string_attr(o, attr, value);
    };
  };
  const std::vector<Case> cases = {
      // The stored type says f32; the attribute claims f16.
      {set_string(q.c_str(), "dtype", "f16"),
       {"tensor 'model.layers.0.self_attn.q_proj.weight'", "attribute dtype is 'f16'", "4-byte float"}},
      {set_string(q.c_str(), "dtype", "q4_0"), {"tensor 'model.layers.0.self_attn.q_proj.weight'", "'q4_0'"}},
      // hidden_size 48 (heads 4 x head_dim 16 stays 64): every [*, 64] weight now disagrees.
      {[](hid_t f) {
         H5Handle a(CLLM_H5(H5Aopen(f, "hidden_size", H5P_DEFAULT)), H5Aclose);
         const int32_t v = 48;
         CLLM_H5(H5Awrite(a, H5T_NATIVE_INT32, &v));
       },
       {"model.embed_tokens.weight", "[320, 64]", "the config implies [320, 48]"}},
      {[](hid_t f) { CLLM_H5(H5Adelete(f, "rope_theta")); }, {"missing attribute 'rope_theta'"}},
      {set_string("/", "format", "something-else"), {"attribute format is 'something-else'"}},
      {set_string("/tokenizer", "kind", "wordpiece"), {"/tokenizer", "'wordpiece'"}},
  };
  for (const Case& c : cases) {
    const std::string path = tiny_copy();
    edit(path, c.damage);
    std::vector<std::string> needles = {path};
    needles.insert(needles.end(), c.needles.begin(), c.needles.end());
    expect_error([&] { open_checkpoint(path); }, needles);
  }
}

// A checkpoint cut short (a copy that stopped half way) is refused naming the file.
TEST(H5Checkpoint, TruncatedFileIsRefusedNamingIt) {
  const std::string path = tiny_copy();
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  expect_error([&] { open_checkpoint(path); }, {path, "cannot open the checkpoint", "truncated"});
}

// String attributes are fixed-length: a variable-length one lives in the global heap, which has no
// checksum, and HDF5 dereferenced a damaged heap address (a crash in H5HG_read). Files from before,
// with variable-length strings, still load.
TEST(H5Checkpoint, StringAttributesAreFixedLengthAndOldOnesStillLoad) {
  const std::string path = tiny_copy();
  {
    H5Handle f(CLLM_H5(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
    H5Handle a(CLLM_H5(H5Aopen(f, "format", H5P_DEFAULT)), H5Aclose);
    H5Handle t(CLLM_H5(H5Aget_type(a)), H5Tclose);
    EXPECT_EQ(H5Tis_variable_str(t), 0);
  }
  edit(path, [](hid_t f) {  // "architecture" as the writer stored it before: variable-length UTF-8
    const std::string value = detail::h5_read_string_attr(f, "architecture", "test");
    CLLM_H5(H5Adelete(f, "architecture"));
    H5Handle type(CLLM_H5(H5Tcopy(H5T_C_S1)), H5Tclose);
    CLLM_H5(H5Tset_size(type, H5T_VARIABLE));
    H5Handle space(CLLM_H5(H5Screate(H5S_SCALAR)), H5Sclose);
    H5Handle a(CLLM_H5(H5Acreate2(f, "architecture", type, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
    const char* p = value.c_str();
    CLLM_H5(H5Awrite(a, type, &p));
  });
  EXPECT_EQ(open_checkpoint(path)->config().architecture, open_checkpoint(tiny_h5())->config().architecture);
}

// Random bit flips in a checkpoint's metadata (its first and last 64 KiB) and anywhere: each open and
// read of every tensor ends in data or in an error, never a crash or a hang. Among the flips this
// test once met: a damaged heap address under a variable-length string attribute, and a chunk shape
// wider than its tensor (HDF5 copied past its buffers). In a child process: HDF5 keeps files it
// failed to close open until exit.
TEST(H5Checkpoint, RandomBitFlipsEndInAnErrorOrData) {
  const std::string clean = tiny_h5();
  const std::vector<std::string> names = all_names(open_checkpoint(clean)->config());
  std::ifstream in(clean, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const fs::path path = test::temp_dir("h5") / "flipped.h5";
  constexpr int kTrials = 1500;
  const test::FlipCounts c = test::bit_flip_trials(bytes, path, kTrials, 65536, [&] {
    const auto ckpt = open_checkpoint(path.string());
    for (const std::string& name : names) read_all(*ckpt, name);
  });
  EXPECT_GT(c.refused, kTrials / 2);  // most flips land in metadata or a checksummed chunk
}

TEST(H5Checkpoint, NotAnHdf5File) {
  const fs::path p = test::temp_dir("h5") / "fake.h5";
  std::ofstream(p) << "not hdf5";
  expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "not an HDF5 file"});
}

// The real SmolLM2 (GGUF Q4_1, tied head, GGUF BPE vocabulary, q/k un-permuted) through f32 .h5.
TEST(H5Checkpoint, SmolLM2RoundTrip) {
  const auto src = open_checkpoint(test::smollm2_path());
  const auto h5 = open_checkpoint(converted(test::smollm2_path(), "smollm2"));
  const TokenizerSpec &ta = src->tokenizer(), &tb = h5->tokenizer();
  EXPECT_EQ(tb.kind, TokenizerSpec::Kind::GgufBpe);
  EXPECT_EQ(ta.pre, tb.pre);
  EXPECT_EQ(ta.tokens, tb.tokens);
  EXPECT_EQ(ta.merges, tb.merges);
  EXPECT_EQ(ta.token_types, tb.token_types);
  EXPECT_EQ(ta.bos_id, tb.bos_id);
  EXPECT_EQ(ta.eos_id, tb.eos_id);
  EXPECT_EQ(ta.add_bos, tb.add_bos);
  EXPECT_EQ(ta.chat_template, tb.chat_template);
  EXPECT_EQ(src->config().eos_token_ids, h5->config().eos_token_ids);
  expect_same_tensors(*src, *h5, {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.7.self_attn.k_proj.weight", "model.layers.29.mlp.down_proj.weight",
                                  "model.layers.13.input_layernorm.weight", "model.norm.weight"});
  const std::string text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
  const std::vector<int32_t> prompt = make_tokenizer(tb)->encode(text, tb.add_bos);
  EXPECT_EQ(make_tokenizer(ta)->encode(text, ta.add_bos), prompt);
  expect_same_model(*src, *h5, prompt, 8);
}

}  // namespace
}  // namespace cllm
