// Error checks for CUDA runtime and cuBLAS calls: each throws cllm::Error carrying file:line,
// the failing call's text and the library's own message. Usable from .cu and from plain .cpp.
//
// CLLM_CUDA_LAUNCH_CHECK(stream) goes after every kernel launch. It catches launch errors (bad
// configuration, too much shared memory). In debug builds (NDEBUG undefined) it also synchronises
// the stream, so a fault inside the kernel is reported at its launch site rather than at some later
// call; it skips that while the stream is being captured into a CUDA graph, where sync is illegal.
#pragma once
#include <cublas_api.h>
#include <cuda_runtime.h>

#include <string>

#include "core/check.h"

#define CLLM_CUDA_CHECK(call)                                                          \
  do {                                                                                 \
    const cudaError_t cllm_cuda_err_ = (call);                                         \
    if (cllm_cuda_err_ != cudaSuccess)                                                 \
      ::cllm::detail::throw_error(__FILE__, __LINE__,                                  \
                                  std::string(#call) + " failed: " +                   \
                                      cudaGetErrorName(cllm_cuda_err_) + ": " +        \
                                      cudaGetErrorString(cllm_cuda_err_));             \
  } while (0)

#define CLLM_CUBLAS_CHECK(call)                                                        \
  do {                                                                                 \
    const cublasStatus_t cllm_cublas_st_ = (call);                                     \
    if (cllm_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                      \
      ::cllm::detail::throw_error(__FILE__, __LINE__,                                  \
                                  std::string(#call) + " failed: " +                   \
                                      cublasGetStatusString(cllm_cublas_st_));         \
  } while (0)

namespace cllm::detail {
inline void check_launch(cudaStream_t stream, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw_error(file, line, std::string("kernel launch failed: ") + cudaGetErrorString(err));
#ifndef NDEBUG
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CLLM_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture == cudaStreamCaptureStatusNone) {
    const cudaError_t sync_err = cudaStreamSynchronize(stream);
    if (sync_err != cudaSuccess)
      throw_error(file, line, std::string("kernel failed: ") + cudaGetErrorString(sync_err));
  }
#else
  (void)stream;
#endif
}
}  // namespace cllm::detail

#define CLLM_CUDA_LAUNCH_CHECK(stream) ::cllm::detail::check_launch((stream), __FILE__, __LINE__)
