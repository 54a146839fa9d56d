// cllm's HDF5 checkpoint: the reader behind open_checkpoint("x.h5"). Layout in h5_checkpoint.h;
// the writer is h5_checkpoint_write.cpp, the pieces both use are h5_checkpoint_format.h.
// Every HDF5 call is serialised by one mutex: the serial HDF5 build is not thread-safe.
#include <unistd.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <unordered_map>

#include "core/check.h"
#include "loaders/checkpoint_common.h"
#include "loaders/h5_checkpoint.h"
#include "loaders/h5_checkpoint_format.h"

namespace cllm::detail {

namespace {

namespace fs = std::filesystem;
static_assert(std::endian::native == std::endian::little, "f16/bf16 datasets are read as little-endian bits");

std::mutex& h5_mutex() {
  static std::mutex m;
  return m;
}

// A 1-D dataset of `type` elements; throws naming `where` when absent or not 1-D.
template <typename T>
std::vector<T> read_array(hid_t group, const char* name, hid_t type, const std::string& where) {
  CLLM_CHECK(h5_link_exists(group, name), where << ": missing dataset '" << name << "'");
  H5Handle ds(CLLM_H5(H5Dopen2(group, name, H5P_DEFAULT)), H5Dclose);
  H5Handle space(CLLM_H5(H5Dget_space(ds)), H5Sclose);
  CLLM_CHECK(H5Sget_simple_extent_ndims(space) == 1, where << "/" << name << " is not 1-D");
  std::vector<T> v(static_cast<size_t>(CLLM_H5(H5Sget_simple_extent_npoints(space))));
  if (!v.empty()) CLLM_H5(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
  return v;
}

std::string read_bytes(hid_t group, const char* name, const std::string& where) {
  const std::vector<uint8_t> v = read_array<uint8_t>(group, name, H5T_NATIVE_UINT8, where);
  return std::string(v.begin(), v.end());
}

// Strings stored as concatenated bytes + int64 offsets [n+1] (h5_checkpoint.h).
std::vector<std::string> read_strings(hid_t group, const char* bytes_name, const char* offsets_name,
                                      const std::string& where) {
  const std::string bytes = read_bytes(group, bytes_name, where);
  const std::vector<int64_t> off = read_array<int64_t>(group, offsets_name, H5T_NATIVE_INT64, where);
  CLLM_CHECK(!off.empty() && off.front() == 0 && off.back() == static_cast<int64_t>(bytes.size()),
             where << "/" << offsets_name << " does not span " << bytes_name << " (" << bytes.size() << " bytes)");
  std::vector<std::string> out;
  out.reserve(off.size() - 1);
  for (size_t i = 0; i + 1 < off.size(); ++i) {
    CLLM_CHECK(off[i] <= off[i + 1], where << "/" << offsets_name << " decreases at entry " << i);
    out.emplace_back(bytes, static_cast<size_t>(off[i]), static_cast<size_t>(off[i + 1] - off[i]));
  }
  return out;
}

// Names of a group's members, in name order.
std::vector<std::string> group_members(hid_t group) {
  H5G_info_t gi;
  CLLM_H5(H5Gget_info(group, &gi));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < gi.nlinks; ++i) {
    const ssize_t len = CLLM_H5(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT));
    std::string name(static_cast<size_t>(len) + 1, '\0');
    CLLM_H5(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT));
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

ModelConfig read_config(hid_t file, const std::string& path) {
  ModelConfig c;
  c.architecture = h5_read_string_attr(file, "architecture", path);
  for (const auto& f : kIntFields) c.*f.field = h5_read_attr<int32_t>(file, f.name, H5T_NATIVE_INT32, path);
  for (const auto& f : kFloatFields) c.*f.field = h5_read_attr<float>(file, f.name, H5T_NATIVE_FLOAT, path);
  c.tie_word_embeddings = h5_read_attr<int32_t>(file, "tie_word_embeddings", H5T_NATIVE_INT32, path) != 0;
  // Files written before sliding-window support have no window: 0.
  if (H5Aexists(file, "sliding_window") > 0)
    c.sliding_window = h5_read_attr<int32_t>(file, "sliding_window", H5T_NATIVE_INT32, path);
  c.rope_scaling.type = h5_read_string_attr(file, "rope_scaling_type", path);
  c.rope_scaling.factor = h5_read_attr<float>(file, "rope_scaling_factor", H5T_NATIVE_FLOAT, path);
  c.rope_scaling.low_freq_factor = h5_read_attr<float>(file, "rope_scaling_low_freq_factor", H5T_NATIVE_FLOAT, path);
  c.rope_scaling.high_freq_factor = h5_read_attr<float>(file, "rope_scaling_high_freq_factor", H5T_NATIVE_FLOAT, path);
  c.rope_scaling.original_max_position_embeddings = h5_read_attr<int32_t>(
      file, "rope_scaling_original_max_position_embeddings", H5T_NATIVE_INT32, path);
  CLLM_CHECK(H5Aexists(file, "eos_token_ids") > 0, path << ": missing attribute 'eos_token_ids'");
  H5Handle attr(CLLM_H5(H5Aopen(file, "eos_token_ids", H5P_DEFAULT)), H5Aclose);
  H5Handle space(CLLM_H5(H5Aget_space(attr)), H5Sclose);
  CLLM_CHECK(H5Sget_simple_extent_ndims(space) == 1, path << ": attribute 'eos_token_ids' is not a 1-D array");
  c.eos_token_ids.resize(static_cast<size_t>(CLLM_H5(H5Sget_simple_extent_npoints(space))));
  if (!c.eos_token_ids.empty()) CLLM_H5(H5Aread(attr, H5T_NATIVE_INT, c.eos_token_ids.data()));
  return c;
}

// A tokenizer file stored in the checkpoint, copied to a content-addressed path in the temp
// directory (reused while its bytes match) because the tokenizers load from a path.
std::string materialise(const std::string& bytes, const std::string& file_name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : bytes) h = (h ^ ch) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  const fs::path dir = fs::temp_directory_path() / ("cllm-tokenizer-" + std::string(hex)), path = dir / file_name;
  if (fs::exists(path) && fs::file_size(path) == bytes.size()) {
    std::ifstream in(path, std::ios::binary);
    const std::string have((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (have == bytes) return path.string();
  }
  fs::create_directories(dir);
  const fs::path tmp = dir / (file_name + ".tmp." + std::to_string(getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    CLLM_CHECK(out.good(), "cannot write the tokenizer copy " << tmp.string());
  }
  fs::rename(tmp, path);  // atomic: ranks extracting the same file at once each install a whole copy
  return path.string();
}

TokenizerSpec read_tokenizer(hid_t file, const std::string& path, int64_t* vocab) {
  const std::string where = path + ": /tokenizer";
  CLLM_CHECK(h5_link_exists(file, "/tokenizer"), path << ": missing group '/tokenizer'");
  H5Handle g(CLLM_H5(H5Gopen2(file, "/tokenizer", H5P_DEFAULT)), H5Gclose);
  TokenizerSpec t;
  t.kind = tokenizer_kind(h5_read_string_attr(g, "kind", where), where);
  t.pre = h5_read_string_attr(g, "pre", where);
  t.bos_id = h5_read_attr<int32_t>(g, "bos_id", H5T_NATIVE_INT32, where);
  t.eos_id = h5_read_attr<int32_t>(g, "eos_id", H5T_NATIVE_INT32, where);
  t.add_bos = h5_read_attr<int32_t>(g, "add_bos", H5T_NATIVE_INT32, where) != 0;
  t.chat_template = read_bytes(g, "chat_template", where);
  *vocab = 0;
  using K = TokenizerSpec::Kind;
  if (t.kind == K::HfJson || t.kind == K::SentencePieceModel) {
    const std::string name = [&] {
      H5Handle ds(CLLM_H5(H5Dopen2(g, "file", H5P_DEFAULT)), H5Dclose);
      return h5_read_string_attr(ds, "file_name", where + "/file");
    }();
    const char* want = t.kind == K::HfJson ? "tokenizer.json" : "tokenizer.model";
    CLLM_CHECK(name == want, where << "/file: attribute file_name is '" << name << "', expected '" << want << "'");
    t.path = materialise(read_bytes(g, "file", where), name);
  } else if (t.kind == K::GgufBpe || t.kind == K::GgufSpm) {
    t.tokens = read_strings(g, "tokens", "token_offsets", where);
    const size_t n = t.tokens.size();
    if (h5_link_exists(g, "token_types")) {
      t.token_types = read_array<int32_t>(g, "token_types", H5T_NATIVE_INT32, where);
      CLLM_CHECK(t.token_types.size() == n, where << "/token_types has " << t.token_types.size() << " entries, "
                                                  << n << " tokens");
    }
    if (t.kind == K::GgufBpe) t.merges = read_strings(g, "merges", "merge_offsets", where);
    if (t.kind == K::GgufSpm) {
      t.scores = read_array<float>(g, "scores", H5T_NATIVE_FLOAT, where);
      CLLM_CHECK(t.scores.size() == n, where << "/scores has " << t.scores.size() << " entries, " << n << " tokens");
    }
    CLLM_CHECK(t.bos_id < static_cast<int64_t>(n) && t.eos_id < static_cast<int64_t>(n),
               where << ": bos/eos id (" << t.bos_id << "/" << t.eos_id << ") outside the " << n << "-token vocabulary");
    *vocab = static_cast<int64_t>(n);
  }
  return t;
}

class H5Reader final : public CheckpointReader {
 public:
  explicit H5Reader(const std::string& path) : path_(path) {
    std::lock_guard lock(h5_mutex());
    H5QuietErrors quiet;
    CLLM_CHECK(fs::exists(path), path << ": no such file");
    htri_t is_h5 = 0;
    H5E_BEGIN_TRY { is_h5 = H5Fis_hdf5(path.c_str()); }
    H5E_END_TRY;
    CLLM_CHECK(is_h5 > 0, path << " is not an HDF5 file");
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    CLLM_CHECK(file_ >= 0, path << ": cannot open the checkpoint (damaged or truncated?)" << h5_error_text());
    const std::string format = h5_read_string_attr(file_, "format", path);
    CLLM_CHECK(format == kFormatName, path << ": attribute format is '" << format << "', not '" << kFormatName
                                           << "' (write one with cllm convert --to h5)");
    const int version = h5_read_attr<int32_t>(file_, "format_version", H5T_NATIVE_INT32, path);
    CLLM_CHECK(version == kFormatVersion, path << ": format_version " << version << ", this build reads "
                                               << kFormatVersion);
    cfg_ = read_config(file_, path);
    validate(cfg_, path);
    int64_t tok_vocab = 0;
    tok_ = read_tokenizer(file_, path, &tok_vocab);
    CLLM_CHECK(h5_link_exists(file_, kTensorGroup), path << ": missing group '" << kTensorGroup << "'");
    H5Handle g(CLLM_H5(H5Gopen2(file_, kTensorGroup, H5P_DEFAULT)), H5Gclose);
    for (const std::string& name : group_members(g)) tensors_.emplace(name, inspect(g, name));
    std::vector<HeldTensor> held;
    for (const auto& kv : tensors_) held.push_back({kv.first, kv.first});
    check_tensors(*this, cfg_, tok_vocab, std::move(held));
  }
  ~H5Reader() override {
    std::lock_guard lock(h5_mutex());
    if (group_ >= 0) H5Gclose(group_);
    if (file_ >= 0) H5Fclose(file_);
  }

  const ModelConfig& config() const override { return cfg_; }
  const TokenizerSpec& tokenizer() const override { return tok_; }
  bool has_tensor(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::string source() const override { return path_; }
  std::vector<int64_t> shape(const std::string& name) const override { return entry(name).shape; }

  // Every chunk's offset and stored Fletcher32 checksum (the chunk's last 4 bytes in the file): a
  // hash of every stored byte of the tensor, read as 4 bytes per chunk, without reading the data.
  uint64_t fingerprint(const std::string& name) const override {
    std::lock_guard lock(h5_mutex());
    H5QuietErrors quiet;
    const std::string where = path_ + ": tensor '" + name + "'";
    H5Handle ds(CLLM_H5(H5Dopen2(tensor_group(), name.c_str(), H5P_DEFAULT)), H5Dclose);
    H5Handle space(CLLM_H5(H5Dget_space(ds)), H5Sclose);
    hsize_t chunks = 0;
    CLLM_H5(H5Dget_num_chunks(ds, space, &chunks));
    std::ifstream file(path_, std::ios::binary);
    uint64_t h = fnv1a(nullptr, 0);
    for (hsize_t i = 0; i < chunks; ++i) {
      hsize_t offset[2] = {0, 0}, size = 0;
      unsigned filter_mask = 0;
      haddr_t addr = 0;
      CLLM_H5(H5Dget_chunk_info(ds, space, i, offset, &filter_mask, &addr, &size));
      CLLM_CHECK(size >= 4 && filter_mask == 0, where << ": chunk " << i << " has no Fletcher32 checksum");
      unsigned char sum[4];
      file.seekg(static_cast<std::streamoff>(addr + size - 4));
      file.read(reinterpret_cast<char*>(sum), sizeof sum);
      CLLM_CHECK(file, where << ": cannot read the checksum of chunk " << i << " at byte " << addr + size - 4);
      h = fnv1a(offset, sizeof offset, h);
      h = fnv1a(sum, sizeof sum, h);
    }
    return h;
  }

 protected:
  // One hyperslab read per range: each H5Dread has a fixed cost (dataset open, chunk lookup).
  int64_t read_block_values() const override { return INT64_MAX; }
  // Reads only the selected hyperslab: HDF5 reads (and checksums) just the chunks it touches.
  void convert_f32(const std::string& name, const TensorRange& range, float* dst) const override {
    const Entry& e = entry(name);
    const Rect rect = resolve_range(range, e.shape, path_, name);
    const int rank = static_cast<int>(e.shape.size());
    const hsize_t start[2] = {static_cast<hsize_t>(rect.r0), static_cast<hsize_t>(rect.c0)};
    const hsize_t count[2] = {static_cast<hsize_t>(rect.r1 - rect.r0), static_cast<hsize_t>(rect.c1 - rect.c0)};
    const size_t n = count[0] * (rank == 2 ? count[1] : 1);
    if (n == 0) return;
    // f16/bf16: the raw bits, converted below (uninitialised: H5Dread fills all of it)
    const std::unique_ptr<uint16_t[]> bits(e.dtype == DType::F32 ? nullptr : new uint16_t[n]);
    {
      std::lock_guard lock(h5_mutex());
      H5QuietErrors quiet;
      const std::string where = path_ + ": tensor '" + name + "'";
      H5Handle ds(CLLM_H5(H5Dopen2(tensor_group(), name.c_str(), H5P_DEFAULT)), H5Dclose);
      H5Handle fspace(CLLM_H5(H5Dget_space(ds)), H5Sclose);
      CLLM_H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr));
      H5Handle mspace(CLLM_H5(H5Screate_simple(rank, count, nullptr)), H5Sclose);
      H5Handle ftype(CLLM_H5(H5Dget_type(ds)), H5Tclose);
      // f32 converts from F32LE (a no-op here); f16/bf16 read with the file's own type: raw bits.
      const herr_t st = e.dtype == DType::F32
                            ? H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, dst)
                            : H5Dread(ds, ftype, mspace, fspace, H5P_DEFAULT, bits.get());
      if (st < 0) {
        const std::string why = h5_error_text();  // before any other HDF5 call clears the stack
        const bool checksum = why.find("Fletcher32") != std::string::npos || why.find("checksum") != std::string::npos;
        CLLM_FAIL(where << ": reading rows [" << rect.r0 << ", " << rect.r1 << ") cols [" << rect.c0 << ", " << rect.c1
                        << ") failed"
                        << (checksum ? ": a chunk is corrupted (Fletcher32 checksum mismatch); re-convert or "
                                       "re-copy the file"
                                     : "")
                        << why);
      }
    }
    if (bits) dequantize_row(e.dtype, reinterpret_cast<const uint8_t*>(bits.get()), 0, static_cast<int64_t>(n), dst);
  }

 private:
  struct Entry {
    std::vector<int64_t> shape;
    DType dtype;
  };

  const Entry& entry(const std::string& name) const {
    const auto it = tensors_.find(name);
    CLLM_CHECK(it != tensors_.end(), path_ << ": no tensor '" << name << "'");
    return it->second;
  }

  hid_t tensor_group() const {
    if (group_ < 0) group_ = CLLM_H5(H5Gopen2(file_, kTensorGroup, H5P_DEFAULT));
    return group_;
  }

  // Shape, dtype attribute against the stored type, and the Fletcher32 filter of one dataset.
  Entry inspect(hid_t group, const std::string& name) const {
    const std::string where = path_ + ": tensor '" + name + "'";
    H5O_info_t info;
    CLLM_H5(H5Oget_info_by_name(group, name.c_str(), &info, H5P_DEFAULT));
    CLLM_CHECK(info.type == H5O_TYPE_DATASET, where << " is not a dataset");
    H5Handle ds(CLLM_H5(H5Dopen2(group, name.c_str(), H5P_DEFAULT)), H5Dclose);
    H5Handle space(CLLM_H5(H5Dget_space(ds)), H5Sclose);
    const int rank = CLLM_H5(H5Sget_simple_extent_ndims(space));
    CLLM_CHECK(rank == 1 || rank == 2, where << " has " << rank << " dimensions (expected 1 or 2)");
    hsize_t dims[2] = {0, 0};
    CLLM_H5(H5Sget_simple_extent_dims(space, dims, nullptr));
    Entry e{std::vector<int64_t>(dims, dims + rank), tensor_dtype(h5_read_string_attr(ds, "dtype", where), where)};
    H5Handle ftype(CLLM_H5(H5Dget_type(ds)), H5Tclose);
    H5Handle want(CLLM_H5(H5Tcopy(stored_type(e.dtype))), H5Tclose);
    CLLM_CHECK(CLLM_H5(H5Tequal(ftype, want)) > 0,
               where << ": attribute dtype is '" << dtype_attr(e.dtype) << "' but the dataset stores "
                     << describe_type(ftype) << " (expected " << describe_type(want) << ")");
    H5Handle dcpl(CLLM_H5(H5Dget_create_plist(ds)), H5Pclose);
    unsigned flags = 0, cd[1];
    size_t ncd = 0;
    htri_t has_fletcher = 0;
    H5E_BEGIN_TRY {
      has_fletcher = H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &ncd, cd, 0, nullptr, nullptr) >= 0;
    }
    H5E_END_TRY;
    CLLM_CHECK(has_fletcher > 0, where << " has no Fletcher32 checksum (cllm convert writes one on every chunk, "
                                          "so corruption cannot be detected); re-convert it");
    // Chunks inside the tensor's shape, as cllm convert writes them: HDF5 trusts a chunk shape read
    // from a damaged header and copies past its buffers.
    hsize_t chunk[2] = {0, 0};
    CLLM_CHECK(H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 2, chunk) == rank,
               where << " is not stored in chunks of its own rank");
    for (int i = 0; i < rank; ++i)
      CLLM_CHECK(chunk[i] >= 1 && chunk[i] <= dims[i], where << ": chunk dimension " << i << " is " << chunk[i]
                                                         << ", outside 1.." << dims[i]
                                                         << " (the tensor's shape): the file is damaged");
    return e;
  }

  std::string path_;
  hid_t file_ = -1;
  mutable hid_t group_ = -1;  // /tensors, opened on first read, closed with the file
  ModelConfig cfg_;
  TokenizerSpec tok_;
  std::unordered_map<std::string, Entry> tensors_;
};

}  // namespace

std::unique_ptr<CheckpointReader> open_h5_checkpoint(const std::string& path) {
  return std::make_unique<H5Reader>(path);
}

}  // namespace cllm::detail
