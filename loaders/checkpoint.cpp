// open_checkpoint: picks the reader by what the path is.
#include "loaders/checkpoint.h"

#include <filesystem>

#include "core/check.h"
#include "loaders/checkpoint_common.h"
#include "loaders/h5_checkpoint.h"

namespace cllm {

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
