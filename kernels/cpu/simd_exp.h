// exp on 8 fp32 lanes in GCC vector types, for the CPU kernels that compile twice (AVX2+FMA and
// baseline x86-64, picked at load time): one ymm register in the AVX2 clone, two xmm otherwise.
#pragma once
#include <cstdint>

// f32x8 passes by value between inlined helpers of one clone: the ABI note does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace cllm::cpu {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

// exp(x) on 8 lanes (Cephes' expf: x = n ln2 + r, a degree-5 polynomial in r, times 2^n), clamped to
// [-87, 88] (below -87 the result is ~1e-38 instead of 0). One routine for every element, whole
// vectors or a padded tail alike, so a result does not depend on its neighbours.
// Always inlined: each clone must compile it for its own target (an out-of-line copy would pass
// the vector in a different ABI than the AVX2 clone calls it with).
__attribute__((always_inline)) inline f32x8 exp8(f32x8 x) {
  const f32x8 lo = f32x8{} - 87.0f, hi = f32x8{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const f32x8 fx = x * 1.44269504088896341f + 0.5f;
  i32x8 n = __builtin_convertvector(fx, i32x8);  // toward zero: one too many below 0
  const f32x8 fn0 = __builtin_convertvector(n, f32x8);
  n += fn0 > fx ? -1 : 0;                         // floor
  const f32x8 fn = __builtin_convertvector(n, f32x8);
  const f32x8 r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  const f32x8 r2 = r * r;
  f32x8 p = 1.9875691500e-4f * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const f32x8 y = p * r2 + r + 1.0f;
  return y * reinterpret_cast<f32x8>((n + 127) << 23);  // times 2^n: the exponent's bits
}

}  // namespace cllm::cpu

#pragma GCC diagnostic pop
