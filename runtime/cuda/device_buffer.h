// Owning handles for device memory (cudaMalloc) and pinned host memory (cudaMallocHost).
// Whole cudaMalloc allocations are 256-byte aligned, which is what GemmPlan's default alignment and
// the kernels' 16-byte vector accesses rely on, so every GEMM operand gets a buffer of its own.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "kernels/cuda/cuda_check.cuh"

namespace cllm::cuda {

template <cudaError_t (*Alloc)(void**, size_t), cudaError_t (*Free)(void*)>
class OwnedMemory {
 public:
  OwnedMemory() = default;
  explicit OwnedMemory(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) CLLM_CUDA_CHECK(Alloc(&p_, bytes));
  }
  ~OwnedMemory() {
    if (p_ != nullptr) Free(p_);  // destructors must not throw: status ignored
  }
  OwnedMemory(OwnedMemory&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  OwnedMemory& operator=(OwnedMemory&& o) noexcept {
    if (this != &o) {
      if (p_ != nullptr) Free(p_);
      p_ = std::exchange(o.p_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  OwnedMemory(const OwnedMemory&) = delete;
  OwnedMemory& operator=(const OwnedMemory&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }
  bool empty() const { return p_ == nullptr; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

namespace detail {
inline cudaError_t malloc_device(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
inline cudaError_t malloc_pinned(void** p, size_t bytes) { return cudaMallocHost(p, bytes); }
}  // namespace detail

using DeviceBuffer = OwnedMemory<detail::malloc_device, cudaFree>;
using PinnedBuffer = OwnedMemory<detail::malloc_pinned, cudaFreeHost>;

}  // namespace cllm::cuda
