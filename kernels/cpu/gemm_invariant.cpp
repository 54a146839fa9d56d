#include "kernels/cpu/gemm_invariant.h"

#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/reduce8.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

// Rows of w handled together: a tile of kTileN * K floats is reused across all M tokens.
constexpr int kTileN = 4;

// Scalar twin of the AVX2 dot below: same 8 partial sums, same final reduction order.
float dot_portable(const float* a, const float* b, int K) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int k = 0;
  for (; k + 8 <= K; k += 8)
    for (int l = 0; l < 8; ++l) acc[l] = __builtin_fmaf(a[k + l], b[k + l], acc[l]);
  float s = detail::sum8_fixed(acc);
  for (; k < K; ++k) s = __builtin_fmaf(a[k], b[k], s);
  return s;
}

// y[m0..m0+MT, n0..n0+NT) for NT weight rows and MT tokens. Each output has its own accumulator
// fed in k order, so the result does not depend on MT or NT. Both are compile-time constants so
// that the accumulators stay in registers (a runtime row count kept them on the stack).
template <int MT, int NT>
__attribute__((target("avx2,fma"))) inline void tile_tokens_avx2(const float* x, const float* w, float* y, int N,
                                                                 int K, int m0, int n0) {
  const int K8 = K & ~7;
  __m256 acc[NT][MT];
  for (int j = 0; j < NT; ++j)
    for (int t = 0; t < MT; ++t) acc[j][t] = _mm256_setzero_ps();
  for (int k = 0; k < K8; k += 8) {
    __m256 xv[MT];
    for (int t = 0; t < MT; ++t) xv[t] = _mm256_loadu_ps(x + static_cast<size_t>(m0 + t) * K + k);
    for (int j = 0; j < NT; ++j) {
      const __m256 wv = _mm256_loadu_ps(w + static_cast<size_t>(n0 + j) * K + k);
      for (int t = 0; t < MT; ++t) acc[j][t] = _mm256_fmadd_ps(wv, xv[t], acc[j][t]);
    }
  }
  for (int j = 0; j < NT; ++j) {
    const float* wr = w + static_cast<size_t>(n0 + j) * K;
    for (int t = 0; t < MT; ++t) {
      const float* xr = x + static_cast<size_t>(m0 + t) * K;
      float s = detail::hsum8_fixed(acc[j][t]);
      for (int k = K8; k < K; ++k) s = __builtin_fmaf(wr[k], xr[k], s);
      y[static_cast<size_t>(m0 + t) * N + n0 + j] = s;
    }
  }
}

// All M tokens for NT weight rows: three tokens share each weight load (12 accumulators with
// NT = 4, plus 3 token vectors and a weight vector: the 16 ymm registers); the rows stay in L1.
template <int NT>
__attribute__((target("avx2,fma"))) void rows_avx2(const float* x, const float* w, float* y, int M, int N, int K,
                                                   int n0) {
  int m = 0;
  for (; m + 3 <= M; m += 3) tile_tokens_avx2<3, NT>(x, w, y, N, K, m, n0);
  if (M - m == 2) tile_tokens_avx2<2, NT>(x, w, y, N, K, m, n0);
  if (M - m == 1) tile_tokens_avx2<1, NT>(x, w, y, N, K, m, n0);
}

__attribute__((target("avx2,fma"))) void tile_avx2(const float* x, const float* w, float* y, int M, int N, int K,
                                                    int n0, int nt) {
  if (nt == kTileN) return rows_avx2<kTileN>(x, w, y, M, N, K, n0);
  for (int j = 0; j < nt; ++j) rows_avx2<1>(x, w, y, M, N, K, n0 + j);  // the last, partial tile
}

void tile_portable(const float* x, const float* w, float* y, int M, int N, int K, int n0, int nt) {
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < nt; ++j)
      y[static_cast<size_t>(m) * N + n0 + j] =
          dot_portable(w + static_cast<size_t>(n0 + j) * K, x + static_cast<size_t>(m) * K, K);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

}  // namespace

void matmul_wt_invariant(const float* x, const float* w, float* y, int M, int N, int K) {
  const int tiles = (N + kTileN - 1) / kTileN;
  // Tokens per pass over a thread's weight tiles: a block of x rows stays in L2 (~256 KB) while
  // the tiles stream past it, instead of all M rows streaming past every tile (a continuous batch
  // has hundreds: 32 sequences x 16). At least 24 rows, so that a large K still reuses each
  // weight tile for many rows. Blocking never changes a sum: every output has its own accumulator.
  const int m_block = std::max(24, (64 << 10) / std::max(K, 1) / 3 * 3);
  parallel_for_range(tiles, 8, [&](size_t begin, size_t end) {
    for (int m0 = 0; m0 < M; m0 += m_block) {
      const int mb = std::min(m_block, M - m0);
      const float* xb = x + static_cast<size_t>(m0) * K;
      float* yb = y + static_cast<size_t>(m0) * N;
      for (int t = static_cast<int>(begin); t < static_cast<int>(end); ++t) {
        const int n0 = t * kTileN, nt = std::min(kTileN, N - n0);
        if (kHaveAvx2)
          tile_avx2(xb, w, yb, mb, N, K, n0, nt);
        else
          tile_portable(xb, w, yb, mb, N, K, n0, nt);
      }
    }
  });
}

}  // namespace cllm::cpu
