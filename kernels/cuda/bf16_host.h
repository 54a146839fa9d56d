// bfloat16 <-> float on the host, with no CUDA headers, so loaders and tests written in plain C++
// can fill and read device bf16 buffers (__nv_bfloat16 has the same 2-byte layout as these bits).
// float -> bf16 rounds to nearest, ties to even, as __float2bfloat16_rn and torch do; NaN stays NaN.
#pragma once
#include <bit>
#include <cstdint>

namespace cllm {

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round half to even on the 16 dropped bits
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_bits_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// The value f holds after a round trip through bf16: what a kernel sees of a bf16 input.
inline float round_to_bf16(float f) { return bf16_bits_to_float(float_to_bf16_bits(f)); }

}  // namespace cllm
