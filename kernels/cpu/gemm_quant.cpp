#include "kernels/cpu/gemm_quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/cpu/reduce8.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

constexpr int QK = kQuantBlock;

// x quantized per row and 32-block, as llama.cpp's Q8_0/Q8_1 activations: q = round(x / d) with
// d = max|x| / 127, so |q| <= 127 (the int8 dot products below cannot overflow int16 pairs).
struct QuantRows {
  std::vector<int8_t> q;  // [M, K]
  std::vector<float> d;   // [M, K / 32]
  std::vector<float> s;   // [M, K / 32]: d * Σ q, the Q4_1 minimum's factor
};

// One scalar routine for every CPU: O(M K), small next to the O(M N K) products.
void quantize_rows(const float* x, int M, int K, QuantRows& out) {
  const int nb = K / QK;
  out.q.resize(static_cast<size_t>(M) * K);
  out.d.resize(static_cast<size_t>(M) * nb);
  out.s.resize(static_cast<size_t>(M) * nb);
  for (size_t b = 0; b < static_cast<size_t>(M) * nb; ++b) {
    const float* xb = x + b * QK;
    float amax = 0;
    for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < QK; ++i) {
      const int q = static_cast<int>(std::nearbyint(xb[i] * id));  // nearest even, as cvtps_epi32
      out.q[b * QK + i] = static_cast<int8_t>(q);
      sum += q;
    }
    out.d[b] = d;
    out.s[b] = d * static_cast<float>(sum);
  }
}

// Weight element i (0..31) of a block as an integer: int8 for Q8_0, the nibble for Q4_1.
int weight_q(QuantFormat f, const uint8_t* wq, int i) {
  if (f == QuantFormat::Q8_0) return static_cast<int8_t>(wq[i]);
  return i < QK / 2 ? (wq[i] & 0x0F) : (wq[i - QK / 2] >> 4);
}

// Scalar twin of the AVX2 path: int32 lane l sums elements 4l..4l+3 (maddubs then madd), each
// block adds (dw * dx) * lane into fp32 lane l, Q4_1 adds mw * s into one offset sum.
// y[t, n - r0] with row stride ldy.
void rows_portable(const QuantRows& xq, const QuantMatrix& w, float* y, int ldy, int r0, int M, int n0, int n1) {
  const int K = w.cols, nb = K / QK;
  const size_t wstride = w.row_qs_bytes(), bbytes = wstride / nb;
  for (int n = n0; n < n1; ++n)
    for (int t = 0; t < M; ++t) {
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, off = 0;
      for (int b = 0; b < nb; ++b) {
        const uint8_t* wq = w.qs.data() + n * wstride + b * bbytes;
        const int8_t* xb = xq.q.data() + static_cast<size_t>(t) * K + b * QK;
        const size_t wb = static_cast<size_t>(n) * nb + b, xbi = static_cast<size_t>(t) * nb + b;
        const float s = w.d[wb] * xq.d[xbi];
        for (int l = 0; l < 8; ++l) {
          int lane = 0;
          for (int i = 4 * l; i < 4 * l + 4; ++i) lane += weight_q(w.format, wq, i) * xb[i];
          acc[l] = __builtin_fmaf(s, static_cast<float>(lane), acc[l]);
        }
        if (w.format == QuantFormat::Q4_1) off = __builtin_fmaf(w.m[wb], xq.s[xbi], off);
      }
      y[static_cast<size_t>(t) * ldy + n - r0] = detail::sum8_fixed(acc) + off;
    }
}

// The 32 weights of block b of a row as bytes: int8 (Q8_0) or nibbles 0..15 (Q4_1), element order.
template <QuantFormat F>
__attribute__((target("avx2,fma"))) inline __m256i load_block(const uint8_t* wq) {
  if constexpr (F == QuantFormat::Q8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq));
  } else {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wq));
    const __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0F));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
    return _mm256_set_m128i(hi, lo);
  }
}

// int32 lane l = Σ w[i] x[i] over i in 4l..4l+3, exact (each int16 pair sum is <= 2*128*127).
template <QuantFormat F>
__attribute__((target("avx2,fma"))) inline __m256 block_dot(__m256i w, const int8_t* x) {
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  __m256i p16;
  if constexpr (F == QuantFormat::Q8_0)  // maddubs wants an unsigned first operand: |w| and x * sign(w)
    p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w));
  else
    p16 = _mm256_maddubs_epi16(w, xv);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// MT tokens t0..t0+MT of weight row n: each block of the row is unpacked once for all MT tokens.
template <QuantFormat F, int MT>
__attribute__((target("avx2,fma"))) void tile_avx2(const QuantRows& xq, const QuantMatrix& w, float* y, int ldy,
                                                   int r0, int n, int t0) {
  const int K = w.cols, nb = K / QK;
  const size_t wstride = w.row_qs_bytes(), bbytes = wstride / nb;
  const uint8_t* wrow = w.qs.data() + n * wstride;
  const float* wd = w.d.data() + static_cast<size_t>(n) * nb;
  __m256 acc[MT];
  float off[MT];
  for (int t = 0; t < MT; ++t) acc[t] = _mm256_setzero_ps(), off[t] = 0;
  for (int b = 0; b < nb; ++b) {
    const __m256i wv = load_block<F>(wrow + b * bbytes);
    for (int t = 0; t < MT; ++t) {
      const size_t xbi = static_cast<size_t>(t0 + t) * nb + b;
      const __m256 lanes = block_dot<F>(wv, xq.q.data() + xbi * QK);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xq.d[xbi]), lanes, acc[t]);
      if constexpr (F == QuantFormat::Q4_1) off[t] = __builtin_fmaf(w.m[static_cast<size_t>(n) * nb + b], xq.s[xbi], off[t]);
    }
  }
  for (int t = 0; t < MT; ++t) y[static_cast<size_t>(t0 + t) * ldy + n - r0] = detail::hsum8_fixed(acc[t]) + off[t];
}

template <QuantFormat F>
__attribute__((target("avx2,fma"))) void rows_avx2(const QuantRows& xq, const QuantMatrix& w, float* y, int ldy,
                                                   int r0, int M, int n0, int n1) {
  for (int n = n0; n < n1; ++n) {
    int t = 0;
    for (; t + 4 <= M; t += 4) tile_avx2<F, 4>(xq, w, y, ldy, r0, n, t);
    for (; t < M; ++t) tile_avx2<F, 1>(xq, w, y, ldy, r0, n, t);
  }
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

void check_shapes(const QuantMatrix& w) {
  const size_t nb = static_cast<size_t>(w.rows) * (w.cols / QK);
  CLLM_CHECK(w.cols % QK == 0 && w.qs.size() == w.rows * w.row_qs_bytes() && w.d.size() == nb &&
                 w.m.size() == (w.format == QuantFormat::Q4_1 ? nb : 0),
             "quantized matrix [" << w.rows << ", " << w.cols << "] has inconsistent block arrays");
}

void matmul(const float* x, const QuantMatrix& w, float* y, int M, int r0, int r1, bool avx2) {
  check_shapes(w);
  if (r1 < 0) r1 = w.rows;
  CLLM_CHECK(0 <= r0 && r0 <= r1 && r1 <= w.rows, "row range [" << r0 << ", " << r1 << ") of " << w.rows << " rows");
  const int ldy = r1 - r0;
  // The caller's scratch; the workers must see this one, not their own thread_local copies.
  thread_local QuantRows scratch;
  QuantRows& xq = scratch;
  quantize_rows(x, M, w.cols, xq);
  // Whole weight rows per chunk: each row's blocks are read from memory once per call.
  parallel_for_range(ldy, 16, [&](size_t b, size_t e) {
    const int n0 = r0 + static_cast<int>(b), n1 = r0 + static_cast<int>(e);
    if (!avx2)
      rows_portable(xq, w, y, ldy, r0, M, n0, n1);
    else if (w.format == QuantFormat::Q8_0)
      rows_avx2<QuantFormat::Q8_0>(xq, w, y, ldy, r0, M, n0, n1);
    else
      rows_avx2<QuantFormat::Q4_1>(xq, w, y, ldy, r0, M, n0, n1);
  });
}

}  // namespace

void dequantize_quant_row(const QuantMatrix& w, int r, float* out) {
  const int nb = w.cols / QK;
  const size_t bbytes = w.row_qs_bytes() / nb;
  for (int b = 0; b < nb; ++b) {
    const uint8_t* wq = w.qs.data() + r * w.row_qs_bytes() + b * bbytes;
    const size_t wb = static_cast<size_t>(r) * nb + b;
    const float mn = w.format == QuantFormat::Q4_1 ? w.m[wb] : 0.0f;
    for (int i = 0; i < QK; ++i) out[b * QK + i] = static_cast<float>(weight_q(w.format, wq, i)) * w.d[wb] + mn;
  }
}

void matmul_wt_quant(const float* x, const QuantMatrix& w, float* y, int M, int r0, int r1) {
  matmul(x, w, y, M, r0, r1, kHaveAvx2);
}

void matmul_wt_quant_portable(const float* x, const QuantMatrix& w, float* y, int M) { matmul(x, w, y, M, 0, -1, false); }

}  // namespace cllm::cpu
