// The dot-product chains, written in assembly so that every accumulator stays in its register (the
// compiler keeps an array of vectors on the stack, and the stores and loads then set the pace, not
// the dot instruction): each round issues one dot per chain, the chains independent of each other,
// so the rounds are limited by the instruction's throughput and not by its latency.
#include "kernels/cpu/int8_peak.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "core/check.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

constexpr uint64_t kRounds = uint64_t{1} << 20;  // per thread and run

#define CLLM_DOT4(op, a, b, r0, r1, r2, r3) \
  op " " a ", " b ", " r0 "\n\t" op " " a ", " b ", " r1 "\n\t" op " " a ", " b ", " r2 "\n\t" op " " a ", " b ", " r3 "\n\t"

// 24 chains of vpdpbusd on zmm registers: 24 x 16 int32 lanes x 4 multiply-adds a round.
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")
uint64_t chains_avx512vnni(uint64_t rounds) {
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  asm volatile(
      "1:\n\t"  //
      CLLM_DOT4("vpdpbusd", "%[b]", "%[a]", "%%zmm2", "%%zmm3", "%%zmm4", "%%zmm5")
      CLLM_DOT4("vpdpbusd", "%[b]", "%[a]", "%%zmm6", "%%zmm7", "%%zmm8", "%%zmm9")
      CLLM_DOT4("vpdpbusd", "%[b]", "%[a]", "%%zmm10", "%%zmm11", "%%zmm12", "%%zmm13")
      CLLM_DOT4("vpdpbusd", "%[b]", "%[a]", "%%zmm14", "%%zmm15", "%%zmm16", "%%zmm17")
      CLLM_DOT4("vpdpbusd", "%[b]", "%[a]", "%%zmm18", "%%zmm19", "%%zmm20", "%%zmm21")
      CLLM_DOT4("vpdpbusd", "%[b]", "%[a]", "%%zmm22", "%%zmm23", "%%zmm24", "%%zmm25")
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      : [n] "+r"(rounds)
      : [a] "v"(a), [b] "v"(b)
      : "cc", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
        "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25");
  return 24 * 16 * 4;
}
#pragma GCC pop_options

// 12 chains of the VEX vpdpbusd on ymm registers: 12 x 8 lanes x 4 a round.
#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
uint64_t chains_avxvnni(uint64_t rounds) {
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  asm volatile(
      "1:\n\t"  //
      CLLM_DOT4("%{vex%} vpdpbusd", "%[b]", "%[a]", "%%ymm2", "%%ymm3", "%%ymm4", "%%ymm5")
      CLLM_DOT4("%{vex%} vpdpbusd", "%[b]", "%[a]", "%%ymm6", "%%ymm7", "%%ymm8", "%%ymm9")
      CLLM_DOT4("%{vex%} vpdpbusd", "%[b]", "%[a]", "%%ymm10", "%%ymm11", "%%ymm12", "%%ymm13")
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      : [n] "+r"(rounds)
      : [a] "x"(a), [b] "x"(b)
      : "cc", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13");
  return 12 * 8 * 4;
}
#pragma GCC pop_options

// The AVX2 kernel's dot, 4 chains: u8 x s8 pairs summed to int16 (vpmaddubsw), int16 pairs to int32
// (vpmaddwd with ones), added into the accumulator: 4 x 8 lanes x 4 a round.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
uint64_t chains_avx2(uint64_t rounds) {
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  asm volatile(
      "1:\n\t"  //
      CLLM_DOT4("vpmaddubsw", "%[b]", "%[a]", "%%ymm6", "%%ymm7", "%%ymm8", "%%ymm9")
      CLLM_DOT4("vpmaddwd", "%[ones]", "%%ymm6", "%%ymm6", "%%ymm7", "%%ymm8", "%%ymm9")
      "vpaddd %%ymm6, %%ymm2, %%ymm2\n\t"
      "vpaddd %%ymm7, %%ymm3, %%ymm3\n\t"
      "vpaddd %%ymm8, %%ymm4, %%ymm4\n\t"
      "vpaddd %%ymm9, %%ymm5, %%ymm5\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      : [n] "+r"(rounds)
      : [a] "x"(a), [b] "x"(b), [ones] "x"(ones)
      : "cc", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9");
  return 4 * 8 * 4;
}
#pragma GCC pop_options

#undef CLLM_DOT4

}  // namespace

double measure_int8_gmacs(QuantPath path, int reps) {
  CLLM_CHECK(reps >= 1, "int8 peak: reps must be >= 1");
  CLLM_CHECK(quant_path_supported(path), "int8 peak: this CPU has no " << quant_path_name(path) << " path");
  uint64_t (*chains)(uint64_t) = nullptr;  // runs the rounds, returns multiply-adds per round
  switch (path) {
    case QuantPath::Avx512Vnni: chains = chains_avx512vnni; break;
    case QuantPath::AvxVnni: chains = chains_avxvnni; break;
    case QuantPath::Avx2: chains = chains_avx2; break;
    case QuantPath::Scalar: return 0;
  }
  const int threads = pool_size();
  uint64_t per_round = 0;
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(static_cast<size_t>(threads), [&](size_t i) {
      const uint64_t m = chains(kRounds);
      if (i == 0) per_round = m;
    });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return static_cast<double>(threads) * kRounds * per_round / best / 1e9;
}

}  // namespace cllm::cpu
