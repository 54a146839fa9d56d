// Host-staged device all-reduce (see device_all_reduce.h): bf16 device rows -> pinned host ->
// fp32 -> Comm::all_reduce_sum (rank order, fp32) -> bf16 -> device.
#include "runtime/cuda/device_all_reduce.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/bf16_host.h"
#include "kernels/cuda/cuda_check.cuh"

namespace cllm::cuda {

void DeviceAllReduce::wait(cudaStream_t stream, const CommPhase&) { CLLM_CUDA_CHECK(cudaStreamSynchronize(stream)); }

namespace {

class HostStagedAllReduce final : public DeviceAllReduce {
 public:
  explicit HostStagedAllReduce(Comm& comm) : comm_(comm) {}

  void sum_bf16(__nv_bfloat16* data, size_t count, cudaStream_t stream, const CommPhase& phase) override {
    if (count == 0) return;
    if (bits_.bytes() < count * sizeof(uint16_t)) bits_ = PinnedBuffer(count * sizeof(uint16_t));  // grows once
    uint16_t* bits = bits_.as<uint16_t>();
    CLLM_CUDA_CHECK(cudaMemcpyAsync(bits, data, count * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream));
    CLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
    f32_.resize(count);
    for (size_t i = 0; i < count; ++i) f32_[i] = bf16_bits_to_float(bits[i]);
    comm_.all_reduce_sum(f32_.data(), count, phase);
    for (size_t i = 0; i < count; ++i) bits[i] = float_to_bf16_bits(f32_[i]);
    // The copy reads bits_ when the stream reaches it; the next call first synchronises the stream.
    CLLM_CUDA_CHECK(cudaMemcpyAsync(data, bits, count * sizeof(uint16_t), cudaMemcpyHostToDevice, stream));
  }
  bool capturable() const override { return false; }
  const char* name() const override { return "host"; }

 private:
  Comm& comm_;
  PinnedBuffer bits_;
  std::vector<float> f32_;
};

}  // namespace

std::unique_ptr<DeviceAllReduce> make_host_staged_all_reduce(Comm& comm) {
  return std::make_unique<HostStagedAllReduce>(comm);
}

}  // namespace cllm::cuda
