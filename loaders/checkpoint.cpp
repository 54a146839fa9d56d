// open_checkpoint: picks the reader by what the path is.
#include "loaders/checkpoint.h"

#include <filesystem>

#include "kernels/check.h"
#include "loaders/checkpoint_common.h"

namespace cllm {

std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  CLLM_CHECK(fs::exists(st), "checkpoint " << path << " does not exist");
  if (fs::is_directory(st)) return detail::open_hf_checkpoint(path);
  if (fs::path(path).extension() == ".gguf") return detail::open_gguf_checkpoint(path);
  CLLM_FAIL("checkpoint " << path << ": unrecognised format (accepted: a .gguf file, or a Hugging Face "
                          "directory with config.json and model.safetensors or model.safetensors.index.json)");
}

}  // namespace cllm
