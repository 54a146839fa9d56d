#include "kernels/cpu/gemm_quant.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

constexpr int QK = kQuantBlock, G = kQuantGroup;

// One 32-block of x (QuantActivations); |q| <= 127, so the int8 dot products cannot overflow int16
// pairs.
void quantize_block_portable(const float* xb, int8_t* q, float& d, int& sum) {
  float amax = 0;
  for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(xb[i]));
  d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  sum = 0;
  for (int i = 0; i < QK; ++i) {
    const int v = static_cast<int>(std::nearbyint(xb[i] * id));  // nearest even, as cvtps_epi32
    q[i] = static_cast<int8_t>(v);
    sum += v;
  }
}

// Weight element i (0..31) of row r (0..15) of a packed group-block, as an integer.
int packed_weight(QuantFormat f, const uint8_t* blk, int r, int i) {
  const int k = i / 4, j = i % 4;
  if (f == QuantFormat::Q8_0) return static_cast<int>(blk[64 * k + 4 * r + j]) - 128;
  const uint8_t byte = blk[64 * (k % 4) + 4 * r + j];
  return k < 4 ? (byte & 0x0F) : (byte >> 4);
}

// The reference every SIMD path matches bit for bit: per (token, row), per block in k order, the
// exact int dot, then fma(dw * dx, isum, acc) and, for Q4_1, fma(mw, s, acc). out[t * ldo + r]: the
// group's 16 outputs of token t.
void group_portable(const QuantActivations& xq, const QuantMatrix& w, int g, int M, float* out, size_t ldo) {
  const int K = w.cols, nb = K / QK;
  const size_t gb = w.group_block_bytes();
  for (int t = 0; t < M; ++t)
    for (int r = 0; r < G; ++r) {
      float acc = 0;
      for (int b = 0; b < nb; ++b) {
        const size_t gbi = static_cast<size_t>(g) * nb + b, wi = gbi * G + r, xi = static_cast<size_t>(t) * nb + b;
        const uint8_t* blk = w.qs.data() + gbi * gb;
        const int8_t* xb = xq.q.data() + static_cast<size_t>(t) * K + b * QK;
        int isum = 0;
        for (int i = 0; i < QK; ++i) isum += packed_weight(w.format, blk, r, i) * xb[i];
        acc = __builtin_fmaf(w.d[wi] * xq.d[xi], static_cast<float>(isum), acc);
        if (w.format == QuantFormat::Q4_1) acc = __builtin_fmaf(w.m[wi], xq.s[xi], acc);
      }
      out[static_cast<size_t>(t) * ldo + r] = acc;
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

using GroupFn = void (*)(const QuantActivations&, const QuantMatrix&, int, int, float*, size_t);
using QuantizeFn = void (*)(const float*, int8_t*, float&, int&);

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

GroupFn group_fn(QuantPath p) {
  switch (p) {
    case QuantPath::Avx512Vnni: return avx512vnni::group;
    case QuantPath::AvxVnni: return avxvnni::group;
    case QuantPath::Avx2: return avx2::group;
    case QuantPath::Scalar: break;
  }
  return group_portable;
}

// Blocks from which quantize_rows splits the work across the threads: below, the wake-up costs
// more than the ~20 ns a block that it would share.
constexpr size_t kParallelQuantizeBlocks = 512;

void quantize_rows(const float* x, int M, int K, QuantActivations& out, QuantizeFn quantize) {
  CLLM_CHECK(M >= 0 && K > 0 && K % QK == 0,
             "quantize_activations: shape [" << M << ", " << K << "]: columns must be a positive multiple of " << QK);
  const size_t blocks = static_cast<size_t>(M) * (K / QK);
  out.rows = M;
  out.cols = K;
  out.q.resize(static_cast<size_t>(M) * K);
  out.d.resize(blocks);
  out.s.resize(blocks);
  out.c.resize(blocks);
  auto run = [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      int sum = 0;
      quantize(x + b * QK, out.q.data() + b * QK, out.d[b], sum);
      out.s[b] = out.d[b] * static_cast<float>(sum);
      out.c[b] = -128 * sum;
    }
  };
  if (blocks >= kParallelQuantizeBlocks)
    parallel_for_range(blocks, 64, run);
  else
    run(0, blocks);
}

QuantizeFn quantize_fn(QuantPath p) { return p == QuantPath::Scalar ? quantize_block_portable : avx2::quantize_block; }

void check_shapes(const QuantMatrix& w) {
  const size_t gblocks = static_cast<size_t>(w.groups()) * w.blocks_per_row();
  CLLM_CHECK(w.rows > 0 && w.cols > 0 && w.cols % QK == 0 && w.qs.size() == gblocks * w.group_block_bytes() &&
                 w.d.size() == gblocks * G && w.m.size() == (w.format == QuantFormat::Q4_1 ? gblocks * G : 0),
             "quantized matrix [" << w.rows << ", " << w.cols << "] has inconsistent block arrays");
}

void check_path(QuantPath path) {
  CLLM_CHECK(quant_path_supported(path), "quantized GEMM path " << quant_path_name(path) << " is not supported by this CPU");
}

// y = xq . W[r0:r1]^T through `path`.
void matmul_quantized(const QuantActivations& xq, const QuantMatrix& w, float* y, int r0, int r1, QuantPath path) {
  check_path(path);
  check_shapes(w);
  CLLM_CHECK(xq.cols == w.cols && xq.q.size() == static_cast<size_t>(xq.rows) * xq.cols,
             "quantized GEMM: activations [" << xq.rows << ", " << xq.cols << "] against a matrix of " << w.cols
                                             << " columns");
  if (r1 < 0) r1 = w.rows;
  CLLM_CHECK(0 <= r0 && r0 <= r1 && r1 <= w.rows, "row range [" << r0 << ", " << r1 << ") of " << w.rows << " rows");
  const int M = xq.rows;
  if (M <= 0 || r0 == r1) return;
  const int ldy = r1 - r0;
  const GroupFn group = group_fn(path);
  // Whole groups of 16 weight rows per item: each group's blocks are read from memory once per
  // call; a range that cuts a group computes it whole and keeps its own rows.
  const int g0 = r0 / G, g1 = (r1 + G - 1) / G;
  parallel_for_range(static_cast<size_t>(g1 - g0), 1, [&](size_t b, size_t e) {
    thread_local std::vector<float> tile;
    for (int g = g0 + static_cast<int>(b); g < g0 + static_cast<int>(e); ++g) {
      const int n0 = std::max(r0, g * G), n1 = std::min(r1, g * G + G);
      if (n1 - n0 == G) {  // a whole group inside the range: straight into y
        group(xq, w, g, M, y + (n0 - r0), static_cast<size_t>(ldy));
        continue;
      }
      // A group the range cuts (or the padded last one): computed whole, its own rows kept.
      tile.resize(static_cast<size_t>(M) * G);
      group(xq, w, g, M, tile.data(), G);
      for (int t = 0; t < M; ++t)
        std::memcpy(y + static_cast<size_t>(t) * ldy + (n0 - r0), tile.data() + static_cast<size_t>(t) * G + (n0 - g * G),
                    static_cast<size_t>(n1 - n0) * sizeof(float));
    }
  });
}

void matmul(const float* x, const QuantMatrix& w, float* y, int M, int r0, int r1, QuantPath path) {
  check_path(path);  // before quantizing: the quantizer is the path's too
  if (M <= 0) return;
  // The caller's scratch; the workers must see this one, not their own thread_local copies.
  thread_local QuantActivations scratch;
  quantize_rows(x, M, w.cols, scratch, quantize_fn(path));
  matmul_quantized(scratch, w, y, r0, r1, path);
}

}  // namespace

namespace detail {

void* alloc_weights(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  const size_t size = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
  if (align == kHuge) madvise(p, size, MADV_HUGEPAGE);  // advice only: without it, 4 KB pages
  return p;
}

void free_weights(void* p) noexcept { std::free(p); }

}  // namespace detail

QuantMatrix pack_quant(QuantFormat f, int rows, int cols, const uint8_t* qs, const float* d, const float* m) {
  CLLM_CHECK(rows > 0 && cols > 0 && cols % QK == 0,
             "quantized matrix [" << rows << ", " << cols << "]: columns must be a positive multiple of " << QK);
  CLLM_CHECK(f == QuantFormat::Q8_0 || m != nullptr, "Q4_1 matrix [" << rows << ", " << cols << "] without minimums");
  QuantMatrix w;
  w.format = f;
  w.rows = rows;
  w.cols = cols;
  const int nb = cols / QK;
  const size_t gb = w.group_block_bytes(), gblocks = static_cast<size_t>(w.groups()) * nb;
  const size_t src_bb = f == QuantFormat::Q8_0 ? QK : QK / 2;  // quant bytes per block in ggml order
  // Padding rows: value 0 (stored 128 for Q8_0), scale 0.
  w.qs.assign(gblocks * gb, f == QuantFormat::Q8_0 ? 0x80 : 0);
  w.d.assign(gblocks * G, 0.0f);
  if (f == QuantFormat::Q4_1) w.m.assign(gblocks * G, 0.0f);
  for (int n = 0; n < rows; ++n)
    for (int b = 0; b < nb; ++b) {
      const size_t src = static_cast<size_t>(n) * nb + b, gbi = static_cast<size_t>(n / G) * nb + b;
      const int r = n % G;
      const uint8_t* in = qs + src * src_bb;
      uint8_t* out = w.qs.data() + gbi * gb;
      if (f == QuantFormat::Q8_0)
        for (int i = 0; i < QK; ++i) out[64 * (i / 4) + 4 * r + i % 4] = in[i] ^ 0x80;
      else
        for (int j = 0; j < QK / 2; ++j) out[64 * (j / 4) + 4 * r + j % 4] = in[j];
      w.d[gbi * G + r] = d[src];
      if (f == QuantFormat::Q4_1) w.m[gbi * G + r] = m[src];
    }
  return w;
}

void dequantize_quant_row(const QuantMatrix& w, int r, float* out) {
  const int nb = w.blocks_per_row();
  for (int b = 0; b < nb; ++b) {
    const size_t gbi = static_cast<size_t>(r / G) * nb + b, wi = gbi * G + r % G;
    const uint8_t* blk = w.qs.data() + gbi * w.group_block_bytes();
    const float mn = w.format == QuantFormat::Q4_1 ? w.m[wi] : 0.0f;
    for (int i = 0; i < QK; ++i) out[b * QK + i] = static_cast<float>(packed_weight(w.format, blk, r % G, i)) * w.d[wi] + mn;
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

void quantize_activations(const float* x, int M, int K, QuantActivations& out) {
  quantize_rows(x, M, K, out, quantize_fn(kBestPath));
}

void matmul_wt_quant(const QuantActivations& xq, const QuantMatrix& w, float* y, int r0, int r1) {
  matmul_quantized(xq, w, y, r0, r1, kBestPath);
}

void matmul_wt_quant_path(const float* x, const QuantMatrix& w, float* y, int M, QuantPath path, int r0, int r1) {
  matmul(x, w, y, M, r0, r1, path);
}

}  // namespace cllm::cpu
