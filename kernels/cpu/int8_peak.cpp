// The dot-product chains: kChains accumulators, each updated once per round, so the rounds are
// limited by the instruction's throughput and not its latency (12 chains cover 4-6 cycles of
// latency at two instructions a cycle). The empty asm keeps the compiler from folding the
// constant-operand updates across rounds.
#include "kernels/cpu/int8_peak.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "core/check.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

constexpr int kChains = 12;
constexpr uint64_t kRounds = uint64_t{1} << 21;  // per thread and run: ~25M dot instructions

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")
int32_t chains_avx512vnni() {
  __m512i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_epi32(c);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (uint64_t r = 0; r < kRounds; ++r)
    for (int c = 0; c < kChains; ++c) {
      acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
      asm volatile("" : "+v"(acc[c]));
    }
  __m512i sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_epi32(sum, acc[c]);
  return _mm512_reduce_add_epi32(sum);
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
int32_t chains_avxvnni() {
  __m256i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_epi32(c);
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  for (uint64_t r = 0; r < kRounds; ++r)
    for (int c = 0; c < kChains; ++c) {
      acc[c] = _mm256_dpbusd_avx_epi32(acc[c], a, b);
      asm volatile("" : "+v"(acc[c]));
    }
  __m256i sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_epi32(sum, acc[c]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int32_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
int32_t chains_avx2() {
  __m256i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_epi32(c);
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  for (uint64_t r = 0; r < kRounds; ++r)
    for (int c = 0; c < kChains; ++c) {
      // The AVX2 kernel's dot: u8 x s8 pairs summed to int16, int16 pairs to int32, then added.
      acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
      asm volatile("" : "+v"(acc[c]));
    }
  __m256i sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_epi32(sum, acc[c]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int32_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}
#pragma GCC pop_options

}  // namespace

double measure_int8_gmacs(QuantPath path, int reps) {
  CLLM_CHECK(reps >= 1, "int8 peak: reps must be >= 1");
  CLLM_CHECK(quant_path_supported(path), "int8 peak: this CPU has no " << quant_path_name(path) << " path");
  int32_t (*chains)() = nullptr;
  int lanes = 0;  // int32 lanes per dot instruction
  switch (path) {
    case QuantPath::Avx512Vnni: chains = chains_avx512vnni, lanes = 16; break;
    case QuantPath::AvxVnni: chains = chains_avxvnni, lanes = 8; break;
    case QuantPath::Avx2: chains = chains_avx2, lanes = 8; break;
    case QuantPath::Scalar: return 0;
  }
  const int threads = pool_size();
  std::atomic<int64_t> sink{0};
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(static_cast<size_t>(threads), [&](size_t) { sink += chains(); });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  CLLM_CHECK(sink.load() != 0, "int8 peak: the chains' sums were lost");
  const double macs = static_cast<double>(threads) * kRounds * kChains * lanes * 4;
  return macs / best / 1e9;
}

}  // namespace cllm::cpu
