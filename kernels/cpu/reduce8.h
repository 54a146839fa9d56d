// The fixed reduction of 8 fp32 partial sums that the batch-invariant CPU GEMMs share: lanes
// (l, l+4) first, then ((0+1)+(2+3)). The AVX2 and scalar forms give the same bits.
#pragma once
#include <immintrin.h>

namespace cllm::cpu::detail {

inline float sum8_fixed(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

__attribute__((target("avx2,fma"))) inline float hsum8_fixed(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // acc[l] + acc[l+4]
  float t[4];
  _mm_storeu_ps(t, s);
  return (t[0] + t[1]) + (t[2] + t[3]);
}

}  // namespace cllm::cpu::detail
