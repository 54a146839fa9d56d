// open_checkpoint: picks the reader by what the path is. The manifest helpers of checkpoint.h.
#include "loaders/checkpoint.h"

#include <filesystem>

#include "core/check.h"
#include "loaders/checkpoint_common.h"
#include "loaders/h5_checkpoint.h"

namespace cllm {

void CheckpointReader::read_blocks(const std::string& name, int64_t, int64_t, uint8_t*) const {
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
  const fs::path ext = fs::path(path).extension();
  if (ext == ".gguf") return detail::open_gguf_checkpoint(path);
  if (ext == ".h5") return detail::open_h5_checkpoint(path);
  CLLM_FAIL("checkpoint " << path << ": unrecognised format (accepted: a .gguf file, a cllm .h5 checkpoint, or a "
                          "Hugging Face directory with config.json and model.safetensors or model.safetensors.index.json)");
}

}  // namespace cllm
