// open_checkpoint: picks the reader by what the path is. The manifest helpers of checkpoint.h, and
// CheckpointReader::read_f32's finiteness check over every format's converted values.
#include "loaders/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/check.h"
#include "loaders/checkpoint_common.h"
#include "loaders/h5_checkpoint.h"

namespace cllm {
namespace {

// NaN and Inf are the floats whose 8 exponent bits are all ones.
bool non_finite_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x7f800000u) == 0x7f800000u;
}

// Index of the first NaN or Inf of v[0..n), or n. The branch-free OR over blocks of 1024 values
// vectorises; only a block that holds one is scanned again for the index.
size_t first_non_finite(const float* v, size_t n) {
  constexpr size_t kBlock = 1024;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = std::min(n, b + kBlock);
    bool bad = false;
    for (size_t i = b; i < e; ++i) bad |= non_finite_bits(v[i]);
    if (bad)
      for (size_t i = b; i < e; ++i)
        if (non_finite_bits(v[i])) return i;
  }
  return n;
}

[[noreturn]] void fail_non_finite(const CheckpointReader& ckpt, const std::string& name, float value,
                                  const std::string& where) {
  CLLM_FAIL(ckpt.source() << ": tensor '" << name << "' holds " << value << " at " << where
                          << ": weights must be finite, or every logit becomes NaN; the file is corrupted or was saved "
                             "from a diverged run");
}

}  // namespace

void CheckpointReader::read_f32(const std::string& name, const TensorRange& range, float* dst) const {
  const std::vector<int64_t> shape = this->shape(name);
  const detail::Rect r = detail::resolve_range(range, shape, source(), name);
  const int64_t cols = r.c1 - r.c0;  // a 1-D range is rows of one element
  // Converted in blocks of rows and checked while each block is still in cache: a separate pass
  // over a whole range (an embedding is hundreds of MB) would read it from memory a second time.
  const int64_t block_rows = std::max<int64_t>(1, read_block_values() / std::max<int64_t>(cols, 1));
  for (int64_t b = r.r0; b < r.r1; b += std::min(block_rows, r.r1 - b)) {
    TensorRange sub = range;
    sub.row_begin = b;
    sub.row_end = b + std::min(block_rows, r.r1 - b);
    float* out = dst + (b - r.r0) * cols;
    const size_t n = static_cast<size_t>((sub.row_end - b) * cols);
    convert_f32(name, sub, out);
    const size_t i = first_non_finite(out, n);
    if (i == n) continue;
    std::ostringstream at;
    if (shape.size() == 1)
      at << "element " << b + static_cast<int64_t>(i);
    else
      at << "[" << b + static_cast<int64_t>(i) / cols << ", " << r.c0 + static_cast<int64_t>(i) % cols << "]";
    fail_non_finite(*this, name, out[i], at.str());
  }
}

uint64_t CheckpointReader::fingerprint(const std::string& name) const { return probe_fingerprint(*this, name); }

uint64_t checkpoint_fingerprint(const CheckpointReader& ckpt) {
  uint64_t h = fnv1a(nullptr, 0);
  const TensorManifest manifest = make_tensor_manifest(ckpt.config());
  for (const TensorSpec* t : manifest.all()) {
    const uint64_t f = ckpt.fingerprint(t->name);
    h = fnv1a(&f, sizeof f, h);
  }
  return h;
}

uint64_t probe_fingerprint(const CheckpointReader& ckpt, const std::string& name) {
  constexpr int64_t kProbes = 4, kWindow = 16;
  const std::vector<int64_t> shape = ckpt.shape(name);
  const bool one_d = shape.size() == 1;
  const int64_t rows = one_d ? 1 : shape[0];
  int64_t cols = 1;
  for (size_t d = one_d ? 0 : 1; d < shape.size(); ++d) cols *= shape[d];
  uint64_t h = fnv1a(nullptr, 0);
  float window[kWindow];
  for (int64_t pr = 0; pr < std::min(kProbes, rows); ++pr) {
    const int64_t row = rows == 1 ? 0 : pr * (rows - 1) / (kProbes - 1);
    for (int64_t pc = 0; pc < kProbes; ++pc) {
      const int64_t c0 = pc * std::max<int64_t>(cols - kWindow, 0) / (kProbes - 1), c1 = std::min(cols, c0 + kWindow);
      if (one_d)
        ckpt.read_f32(name, {c0, c1}, window);
      else
        ckpt.read_f32(name, {row, row + 1, c0, c1}, window);
      h = fnv1a(window, static_cast<size_t>(c1 - c0) * sizeof(float), h);
    }
  }
  return h;
}

void CheckpointReader::read_blocks(const std::string& name, int64_t row_begin, int64_t row_end, uint8_t* dst) const {
  copy_blocks(name, row_begin, row_end, dst);
  // A block's values are finite iff its scales are, but the layouts differ per format: decoding
  // each row once is format-blind and costs a fraction of the load's page-in.
  const DType t = stored_dtype(name);
  const int64_t cols = shape(name).back();
  const uint64_t row_bytes = dtype_row_bytes(t, cols, name);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    dequantize_row(t, dst + static_cast<uint64_t>(r - row_begin) * row_bytes, 0, cols, row.data());
    const size_t i = first_non_finite(row.data(), row.size());
    if (i != row.size()) fail_non_finite(*this, name, row[i], "[" + std::to_string(r) + ", " + std::to_string(i) + "]");
  }
}

void CheckpointReader::copy_blocks(const std::string& name, int64_t, int64_t, uint8_t*) const {
  CLLM_FAIL(source() << ": tensor '" << name << "' is not stored in blocks (only GGUF files keep quantized blocks)");
}

TensorRange slice_range(const TensorSpec& t) {
  switch (t.split) {
    case SplitAxis::None: return {};
    case SplitAxis::Rows:
    case SplitAxis::Vocab: return {t.begin, t.end};
    case SplitAxis::Cols: return {0, -1, t.begin, t.end};
  }
  CLLM_FAIL("tensor " << t.name << ": unknown split axis");
}

void check_shape(const CheckpointReader& ckpt, const TensorSpec& t) {
  CLLM_CHECK(ckpt.has_tensor(t.name), ckpt.source() << ": missing tensor '" << t.name << "'");
  const std::vector<int64_t> actual = ckpt.shape(t.name);
  CLLM_CHECK(actual == t.shape, ckpt.source() << ": tensor '" << t.name << "' has shape " << shape_str(actual)
                                              << ", the config implies " << shape_str(t.shape));
}

std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  CLLM_CHECK(fs::exists(st), "checkpoint " << path << " does not exist");
  if (fs::is_directory(st)) return detail::open_hf_checkpoint(path);
  // A FIFO or a device would block the open or the read forever, or have no size to map.
  CLLM_CHECK(fs::is_regular_file(st), "checkpoint " << path << " is not a regular file or a directory");
  const fs::path ext = fs::path(path).extension();
  if (ext == ".gguf") return detail::open_gguf_checkpoint(path);
  if (ext == ".h5") return detail::open_h5_checkpoint(path);
  CLLM_FAIL("checkpoint " << path << ": unrecognised format (accepted: a .gguf file, a cllm .h5 checkpoint, or a "
                          "Hugging Face directory with config.json and model.safetensors or model.safetensors.index.json)");
}

}  // namespace cllm
