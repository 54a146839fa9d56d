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

// The SIMD paths: the same tiles for each instruction set, each compiled for its own set only.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define CLLM_QUANT_DOT 0
#include "kernels/cpu/gemm_quant_tile.inc"
#undef CLLM_QUANT_DOT
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
namespace avxvnni {
#define CLLM_QUANT_DOT 1
#include "kernels/cpu/gemm_quant_tile.inc"
#undef CLLM_QUANT_DOT
}  // namespace avxvnni
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")
namespace avx512vnni {
#define CLLM_QUANT_DOT 2
#include "kernels/cpu/gemm_quant_tile.inc"
#undef CLLM_QUANT_DOT
}  // namespace avx512vnni
#pragma GCC pop_options

using RowsFn = void (*)(const QuantRows&, const QuantMatrix&, float*, int, int, int, int, int);

bool cpu_has(QuantPath p) {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (p) {
    case QuantPath::Scalar: return true;
    case QuantPath::Avx2: return avx2;
    case QuantPath::AvxVnni: return avx2 && __builtin_cpu_supports("avxvnni");
    case QuantPath::Avx512Vnni:
      return avx2 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw");
  }
  return false;
}

// The best path this CPU runs, chosen once.
QuantPath best_path() {
  for (QuantPath p : {QuantPath::Avx512Vnni, QuantPath::AvxVnni, QuantPath::Avx2})
    if (cpu_has(p)) return p;
  return QuantPath::Scalar;
}

const QuantPath kBestPath = best_path();

RowsFn rows_fn(QuantPath p) {
  switch (p) {
    case QuantPath::Avx512Vnni: return avx512vnni::rows;
    case QuantPath::AvxVnni: return avxvnni::rows;
    case QuantPath::Avx2: return avx2::rows;
    case QuantPath::Scalar: break;
  }
  return rows_portable;
}

void check_shapes(const QuantMatrix& w) {
  const size_t nb = static_cast<size_t>(w.rows) * (w.cols / QK);
  CLLM_CHECK(w.cols % QK == 0 && w.qs.size() == w.rows * w.row_qs_bytes() && w.d.size() == nb &&
                 w.m.size() == (w.format == QuantFormat::Q4_1 ? nb : 0),
             "quantized matrix [" << w.rows << ", " << w.cols << "] has inconsistent block arrays");
}

void matmul(const float* x, const QuantMatrix& w, float* y, int M, int r0, int r1, QuantPath path) {
  CLLM_CHECK(quant_path_supported(path), "quantized GEMM path " << quant_path_name(path) << " is not supported by this CPU");
  check_shapes(w);
  if (r1 < 0) r1 = w.rows;
  CLLM_CHECK(0 <= r0 && r0 <= r1 && r1 <= w.rows, "row range [" << r0 << ", " << r1 << ") of " << w.rows << " rows");
  const int ldy = r1 - r0;
  // The caller's scratch; the workers must see this one, not their own thread_local copies.
  thread_local QuantRows scratch;
  QuantRows& xq = scratch;
  quantize_rows(x, M, w.cols, xq);
  const RowsFn rows = rows_fn(path);
  // Whole weight rows per chunk: each row's blocks are read from memory once per call.
  parallel_for_range(ldy, 16, [&](size_t b, size_t e) {
    const int n0 = r0 + static_cast<int>(b), n1 = r0 + static_cast<int>(e);
    rows(xq, w, y, ldy, r0, M, n0, n1);
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

bool quant_path_supported(QuantPath p) { return cpu_has(p); }

QuantPath quant_best_path() { return kBestPath; }

const char* quant_path_name(QuantPath p) {
  switch (p) {
    case QuantPath::Scalar: return "scalar";
    case QuantPath::Avx2: return "avx2";
    case QuantPath::AvxVnni: return "avx-vnni";
    case QuantPath::Avx512Vnni: return "avx512-vnni";
  }
  return "?";
}

void matmul_wt_quant(const float* x, const QuantMatrix& w, float* y, int M, int r0, int r1) {
  matmul(x, w, y, M, r0, r1, kBestPath);
}

void matmul_wt_quant_path(const float* x, const QuantMatrix& w, float* y, int M, QuantPath path) {
  matmul(x, w, y, M, 0, -1, path);
}

}  // namespace cllm::cpu
