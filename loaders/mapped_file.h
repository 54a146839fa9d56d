// Read-only memory map of a whole file (RAII). Checkpoint tensors are read straight from the map,
// so only the pages a rank touches are ever faulted in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace cllm {

class MappedFile {
 public:
  // Throws cllm::Error naming the path (and errno text) if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;  // nullptr for an empty file
  size_t size_ = 0;
};

}  // namespace cllm
