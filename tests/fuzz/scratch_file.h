// For the harnesses whose entry point reads a path, not bytes: each input is written to one scratch
// file of this process (/tmp/cllm_fuzz_<stem>_<pid><ext>), which is removed at exit.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

namespace cllm::fuzz {

inline const std::string& write_scratch_file(const char* stem, const char* ext, const uint8_t* data, size_t size) {
  struct ScratchFile {
    std::string path;
    ~ScratchFile() { std::remove(path.c_str()); }
  };
  static const ScratchFile file{std::string("/tmp/cllm_fuzz_") + stem + "_" + std::to_string(::getpid()) + ext};
  std::ofstream out(file.path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return file.path;
}

}  // namespace cllm::fuzz
