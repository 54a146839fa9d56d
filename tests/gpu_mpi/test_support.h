// Shared pieces of the GPU communicator tests and bench.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda/bf16_host.h"
#include "kernels/cuda/cuda_check.cuh"
#include "parallel/comm_nccl.h"

namespace cllm::test {

// The communicator of the test process (test_main.cpp).
NcclComm& gpu_comm();

// Rank r's input for case `seed`: count elements uniform in [-1, 1], as raw element bytes
// (fp32, or bf16 bits). Every rank can rebuild every rank's input, so references need no comm.
inline std::vector<uint8_t> make_input(int r, uint64_t seed, size_t count, CommDType t) {
  std::mt19937_64 g(seed * 1000003u + static_cast<uint64_t>(r) * 7919u + 1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<uint8_t> out(count * comm_dtype_bytes(t));
  for (size_t i = 0; i < count; ++i) {
    const float f = u(g);
    if (t == CommDType::f32) {
      std::memcpy(out.data() + 4 * i, &f, 4);
    } else {
      const uint16_t h = float_to_bf16_bits(f);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

inline float elem(const std::vector<uint8_t>& v, size_t i, CommDType t) {
  if (t == CommDType::f32) {
    float f;
    std::memcpy(&f, v.data() + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, v.data() + 2 * i, 2);
  return bf16_bits_to_float(h);
}

// The IPC contract: per element, ((x0 + x1) + x2) + ... in fp32, rounded once to the dtype.
inline std::vector<uint8_t> rank_order_sum(int nranks, uint64_t seed, size_t count, CommDType t) {
  std::vector<float> acc(count, 0.f);
  for (int r = 0; r < nranks; ++r) {
    const std::vector<uint8_t> x = make_input(r, seed, count, t);
    for (size_t i = 0; i < count; ++i) acc[i] = r == 0 ? elem(x, i, t) : acc[i] + elem(x, i, t);
  }
  std::vector<uint8_t> out(count * comm_dtype_bytes(t));
  for (size_t i = 0; i < count; ++i) {
    if (t == CommDType::f32) {
      std::memcpy(out.data() + 4 * i, &acc[i], 4);
    } else {
      const uint16_t h = float_to_bf16_bits(acc[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

// FNV-1a of a byte range: compared across ranks to check bit-identical results.
inline uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

}  // namespace cllm::test
