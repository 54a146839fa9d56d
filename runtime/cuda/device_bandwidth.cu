#include "runtime/cuda/device_bandwidth.h"

#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "kernels/cuda/cuda_check.cuh"
#include "runtime/cuda/device_buffer.h"

namespace cllm::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kBlocksPerSm = 4;  // 2048 resident threads per SM on Hopper
constexpr int kUnroll = 4;       // independent 16-byte loads in flight per thread

// XOR-folds every 16-byte word of src[0, n_vec). The fold is stored only when it equals a value it
// practically never takes, which keeps the loads alive without a store stream of its own.
__global__ void __launch_bounds__(kThreads) read_kernel(const uint4* __restrict__ src, size_t n_vec,
                                                        uint32_t* __restrict__ sink) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  for (; i + (kUnroll - 1) * stride < n_vec; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldcs(src + i + u * stride);  // streaming: no L2 reuse
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n_vec; i += stride) {
    const uint4 v = __ldcs(src + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
}

// Best time of `reps` runs of enqueue(stream) after one warm-up, in seconds.
template <typename F>
double best_seconds(int reps, cudaStream_t stream, F enqueue) {
  cudaEvent_t start = nullptr, stop = nullptr;
  CLLM_CUDA_CHECK(cudaEventCreate(&start));
  CLLM_CUDA_CHECK(cudaEventCreate(&stop));
  double best = 1e30;
  try {
    enqueue(stream);
    for (int r = 0; r < reps; ++r) {
      CLLM_CUDA_CHECK(cudaEventRecord(start, stream));
      enqueue(stream);
      CLLM_CUDA_CHECK(cudaEventRecord(stop, stream));
      CLLM_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      best = std::min(best, ms * 1e-3);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace

double measure_device_read_bandwidth_gbs(size_t bytes, int reps) {
  CLLM_CHECK(bytes >= 16 && reps >= 1, "device read bandwidth: needs bytes >= 16 and reps >= 1");
  const size_t n_vec = bytes / sizeof(uint4);
  int device = 0, sms = 0;
  CLLM_CUDA_CHECK(cudaGetDevice(&device));
  CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = sms * kBlocksPerSm;
  DeviceBuffer src(n_vec * sizeof(uint4)), sink(blocks * sizeof(uint32_t));
  CLLM_CUDA_CHECK(cudaMemset(src.as<void>(), 0x5a, src.bytes()));  // touch every page before timing
  const double s = best_seconds(reps, nullptr, [&](cudaStream_t stream) {
    read_kernel<<<blocks, kThreads, 0, stream>>>(src.as<const uint4>(), n_vec, sink.as<uint32_t>());
    CLLM_CUDA_CHECK(cudaGetLastError());  // not CLLM_CUDA_LAUNCH_CHECK: its debug sync would enter the timing
  });
  return static_cast<double>(src.bytes()) / s / 1e9;
}

double measure_device_copy_bandwidth_gbs(size_t bytes, int reps) {
  CLLM_CHECK(bytes >= 16 && reps >= 1, "device copy bandwidth: needs bytes >= 16 and reps >= 1");
  DeviceBuffer src(bytes), dst(bytes);
  CLLM_CUDA_CHECK(cudaMemset(src.as<void>(), 0x5a, bytes));
  CLLM_CUDA_CHECK(cudaMemset(dst.as<void>(), 0, bytes));
  const double s = best_seconds(reps, nullptr, [&](cudaStream_t stream) {
    CLLM_CUDA_CHECK(cudaMemcpyAsync(dst.as<void>(), src.as<const void>(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * static_cast<double>(bytes) / s / 1e9;
}

}  // namespace cllm::cuda
