// Writes cllm's HDF5 checkpoint (layout in h5_checkpoint.h) from any CheckpointReader, one chunk
// at a time: each chunk is read from the source as fp32 (a TensorRange), converted to the stored
// dtype and written as one whole chunk, so HDF5 filters (Fletcher32) each chunk once.
#include <algorithm>
#include <filesystem>
#include <numeric>

#include "core/check.h"
#include "core/tensor_manifest.h"
#include "loaders/h5_checkpoint.h"
#include "loaders/h5_checkpoint_format.h"
#include "loaders/hf_config.h"

namespace cllm {

int64_t h5_chunk_count(int64_t dim, int tp_chunks) {
  CLLM_CHECK(tp_chunks >= 1, "--tp-chunks must be >= 1, got " << tp_chunks);
  return std::max<int64_t>(1, std::gcd(dim, static_cast<int64_t>(tp_chunks)));
}

namespace detail {
namespace {

constexpr hsize_t kMaxChunkBytes = (hsize_t{1} << 32) - 1;  // HDF5's limit on one chunk
constexpr hsize_t kArrayChunk = hsize_t{1} << 20;             // elements per chunk of 1-D side arrays

// A 1-D dataset of n elements; chunked with Fletcher32 unless empty (an empty one has no chunk).
void write_array(hid_t group, const char* name, hid_t file_type, hid_t mem_type, const void* data, size_t n) {
  const hsize_t dims[1] = {n}, chunk[1] = {std::min<hsize_t>(std::max<size_t>(n, 1), kArrayChunk)};
  H5Handle space(CLLM_H5(H5Screate_simple(1, dims, nullptr)), H5Sclose);
  H5Handle dcpl(CLLM_H5(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  if (n > 0) {
    CLLM_H5(H5Pset_chunk(dcpl, 1, chunk));
    CLLM_H5(H5Pset_fletcher32(dcpl));
  }
  H5Handle ds(CLLM_H5(H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)), H5Dclose);
  if (n > 0) CLLM_H5(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void write_bytes(hid_t group, const char* name, const std::string& bytes) {
  write_array(group, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, bytes.data(), bytes.size());
}

void write_strings(hid_t group, const char* bytes_name, const char* offsets_name, const std::vector<std::string>& v) {
  std::string bytes;
  std::vector<int64_t> off = {0};
  for (const std::string& s : v) {
    bytes += s;
    off.push_back(static_cast<int64_t>(bytes.size()));
  }
  write_bytes(group, bytes_name, bytes);
  write_array(group, offsets_name, H5T_STD_I64LE, H5T_NATIVE_INT64, off.data(), off.size());
}

void write_config(hid_t file, const ModelConfig& c) {
  h5_write_string_attr(file, "format", kFormatName);
  h5_write_attr<int32_t>(file, "format_version", H5T_STD_I32LE, kFormatVersion);
  h5_write_string_attr(file, "architecture", c.architecture);
  for (const auto& f : kIntFields) h5_write_attr<int32_t>(file, f.name, H5T_NATIVE_INT32, c.*f.field);
  for (const auto& f : kFloatFields) h5_write_attr<float>(file, f.name, H5T_NATIVE_FLOAT, c.*f.field);
  h5_write_attr<int32_t>(file, "tie_word_embeddings", H5T_NATIVE_INT32, c.tie_word_embeddings ? 1 : 0);
  h5_write_attr<int32_t>(file, "sliding_window", H5T_NATIVE_INT32, c.sliding_window);
  h5_write_string_attr(file, "rope_scaling_type", c.rope_scaling.type);
  h5_write_attr<float>(file, "rope_scaling_factor", H5T_NATIVE_FLOAT, c.rope_scaling.factor);
  h5_write_attr<float>(file, "rope_scaling_low_freq_factor", H5T_NATIVE_FLOAT, c.rope_scaling.low_freq_factor);
  h5_write_attr<float>(file, "rope_scaling_high_freq_factor", H5T_NATIVE_FLOAT, c.rope_scaling.high_freq_factor);
  h5_write_attr<int32_t>(file, "rope_scaling_original_max_position_embeddings", H5T_NATIVE_INT32,
                         c.rope_scaling.original_max_position_embeddings);
  const hsize_t n[1] = {c.eos_token_ids.size()};
  H5Handle space(CLLM_H5(H5Screate_simple(1, n, nullptr)), H5Sclose);
  H5Handle attr(CLLM_H5(H5Acreate2(file, "eos_token_ids", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  if (!c.eos_token_ids.empty()) CLLM_H5(H5Awrite(attr, H5T_NATIVE_INT, c.eos_token_ids.data()));
}

void write_tokenizer(hid_t file, const TokenizerSpec& t) {
  using K = TokenizerSpec::Kind;
  H5Handle g(CLLM_H5(H5Gcreate2(file, "/tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
  h5_write_string_attr(g, "kind", tokenizer_kind_name(t.kind));
  h5_write_string_attr(g, "pre", t.pre);
  h5_write_attr<int32_t>(g, "bos_id", H5T_NATIVE_INT32, t.bos_id);
  h5_write_attr<int32_t>(g, "eos_id", H5T_NATIVE_INT32, t.eos_id);
  h5_write_attr<int32_t>(g, "add_bos", H5T_NATIVE_INT32, t.add_bos ? 1 : 0);
  write_bytes(g, "chat_template", t.chat_template);
  if (t.kind == K::HfJson || t.kind == K::SentencePieceModel) {
    write_bytes(g, "file", read_text_file(t.path));
    H5Handle ds(CLLM_H5(H5Dopen2(g, "file", H5P_DEFAULT)), H5Dclose);
    h5_write_string_attr(ds, "file_name", t.kind == K::HfJson ? "tokenizer.json" : "tokenizer.model");
  } else if (t.kind == K::GgufBpe || t.kind == K::GgufSpm) {
    write_strings(g, "tokens", "token_offsets", t.tokens);
    if (!t.token_types.empty())
      write_array(g, "token_types", H5T_STD_I32LE, H5T_NATIVE_INT32, t.token_types.data(), t.token_types.size());
    if (t.kind == K::GgufBpe) write_strings(g, "merges", "merge_offsets", t.merges);
    if (t.kind == K::GgufSpm) write_array(g, "scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t.scores.data(), t.scores.size());
  }
}

// One tensor: a dataset chunked along its split axis (the manifest's split dimension: 0 rows,
// 1 columns, -1 replicated), filled chunk by chunk from `in`.
void write_tensor(hid_t group, const CheckpointReader& in, const TensorSpec& e, const H5WriteOptions& opts) {
  const size_t rank = e.shape.size();
  const int axis = e.dim();
  const hsize_t elem = opts.dtype == DType::F32 ? 4 : 2;
  hsize_t dims[2] = {0, 1}, chunk[2] = {0, 1};
  for (size_t d = 0; d < rank; ++d) dims[d] = chunk[d] = static_cast<hsize_t>(e.shape[d]);
  int64_t chunks = axis < 0 ? 1 : h5_chunk_count(e.shape[axis], opts.tp_chunks);
  // Past HDF5's 4 GiB per chunk, split further while the dimension divides.
  while (dims[0] * dims[1] * elem / chunks > kMaxChunkBytes && axis >= 0 && dims[axis] % (2 * chunks) == 0) chunks *= 2;
  if (axis >= 0) chunk[axis] = dims[axis] / chunks;
  CLLM_CHECK(chunk[0] * chunk[1] * elem <= kMaxChunkBytes,
             in.source() << ": tensor '" << e.name << "' " << shape_str(e.shape) << " has a chunk over HDF5's 4 GiB limit");

  H5Handle space(CLLM_H5(H5Screate_simple(static_cast<int>(rank), dims, nullptr)), H5Sclose);
  H5Handle dcpl(CLLM_H5(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  CLLM_H5(H5Pset_chunk(dcpl, static_cast<int>(rank), chunk));
  CLLM_H5(H5Pset_fletcher32(dcpl));
  CLLM_H5(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));  // every chunk is written whole
  H5Handle ds(CLLM_H5(H5Dcreate2(group, e.name.c_str(), stored_type(opts.dtype), space, H5P_DEFAULT, dcpl, H5P_DEFAULT)),
              H5Dclose);
  h5_write_string_attr(ds, "dtype", dtype_attr(opts.dtype));
  h5_write_attr<int32_t>(ds, "split_axis", H5T_NATIVE_INT32, axis);

  const size_t n = chunk[0] * chunk[1];
  std::vector<float> f32(n);
  std::vector<uint16_t> bits(opts.dtype == DType::F32 ? 0 : n);
  H5Handle mspace(CLLM_H5(H5Screate_simple(static_cast<int>(rank), chunk, nullptr)), H5Sclose);
  H5Handle fspace(CLLM_H5(H5Dget_space(ds)), H5Sclose);
  for (int64_t k = 0; k < chunks; ++k) {
    hsize_t start[2] = {0, 0};
    if (axis >= 0) start[axis] = static_cast<hsize_t>(k) * chunk[axis];
    const TensorRange r{static_cast<int64_t>(start[0]), static_cast<int64_t>(start[0] + chunk[0]),
                        static_cast<int64_t>(start[1]), static_cast<int64_t>(start[1] + chunk[1])};
    in.read_f32(e.name, r, f32.data());
    CLLM_H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, chunk, nullptr));
    if (opts.dtype == DType::F32) {
      CLLM_H5(H5Dwrite(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, f32.data()));
      continue;
    }
    for (size_t i = 0; i < n; ++i) bits[i] = opts.dtype == DType::F16 ? f32_to_fp16(f32[i]) : f32_to_bf16(f32[i]);
    CLLM_H5(H5Dwrite(ds, stored_type(opts.dtype), mspace, fspace, H5P_DEFAULT, bits.data()));  // raw bits
  }
}

}  // namespace
}  // namespace detail

std::string h5_checkpoint_temp_path(const std::string& path) { return path + ".tmp"; }

void write_h5_checkpoint(const CheckpointReader& in, const std::string& path, const H5WriteOptions& opts) {
  using namespace detail;
  namespace fs = std::filesystem;
  dtype_attr(opts.dtype);  // refuses a dtype the format does not store
  h5_chunk_count(1, opts.tp_chunks);
  // Checked before the conversion's work, not at the rename after it.
  CLLM_CHECK(!fs::is_directory(path), path << " is a directory: the .h5 checkpoint is one file; name a file");
  const std::string tmp = h5_checkpoint_temp_path(path);
  const ModelConfig& cfg = in.config();
  const TensorManifest manifest = make_tensor_manifest(cfg);
  const double total = static_cast<double>(manifest.bytes(sizeof(float)));
  double done = 0;
  H5QuietErrors quiet;
  try {
    H5Handle file(CLLM_H5(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
    write_config(file, cfg);
    {
      H5Handle g(CLLM_H5(H5Gcreate2(file, kTensorGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
      for (const TensorSpec* e : manifest.all()) {
        write_tensor(g, in, *e, opts);
        done += static_cast<double>(e->bytes(sizeof(float)));
        if (opts.progress) opts.progress(done, total, e->name);
      }
    }
    write_tokenizer(file, in.tokenizer());
    CLLM_H5(H5Fflush(file, H5F_SCOPE_GLOBAL));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);  // never leave a model-sized temporary behind
    CLLM_FAIL("cannot move the finished checkpoint into place at " << path << ": " << ec.message());
  }
}

}  // namespace cllm
