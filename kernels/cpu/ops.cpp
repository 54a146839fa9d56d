// Fast CPU kernels except attention (kernels/cpu/attention.cpp). GEMM goes to OpenBLAS; the rest
// are memory-bound loops written so GCC vectorises them (independent accumulators, no aliasing
// hazards), split across the persistent pool only when the data is large enough to pay the
// ~5-20 us hand-off.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_exp.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

// Elements per parallel chunk for streaming loops: 64K floats = 256 KB, several microseconds
// of work at memory bandwidth, well above the pool's hand-off cost.
constexpr size_t kStreamGrain = size_t(1) << 16;

// sum of x[i]^2 with 8 independent partial sums so the loop vectorises without -ffast-math.
float sum_squares(const float* x, int n) {
  float part[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) part[u] += x[i + u] * x[i + u];
  float s = 0;
  for (; i < n; ++i) s += x[i] * x[i];
  for (float p : part) s += p;
  return s;
}

// f32x8 travels by value between the inlined helpers; the clones never call each other.
#pragma GCC diagnostic ignored "-Wpsabi"

__attribute__((always_inline)) inline f32x8 silu8(const f32x8& g, const f32x8& u) { return g / (1.0f + exp8(-g)) * u; }

// out[i] = silu(gate[i]) * up[i] for i in [b, e), 8 at a time (exp8; a padded tail).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void silu_mul_range(const float* gate, const float* up, float* out, size_t b, size_t e) {
  size_t i = b;
  for (; i + 8 <= e; i += 8) {  // whole vectors: 32-byte loads and stores (no store-forwarding stalls)
    f32x8 g, u;
    std::memcpy(&g, gate + i, sizeof g);
    std::memcpy(&u, up + i, sizeof u);
    const f32x8 r = silu8(g, u);
    std::memcpy(out + i, &r, sizeof r);
  }
  if (i < e) {  // the tail, padded with zeros
    f32x8 g = {}, u = {};
    for (size_t k = 0; k < e - i; ++k) g[k] = gate[i + k], u[k] = up[i + k];
    const f32x8 r = silu8(g, u);
    for (size_t k = 0; k < e - i; ++k) out[i + k] = r[k];
  }
}

}  // namespace

void matmul_wt(const float* x, const float* w, float* y, int M, int N, int K) {
  CLLM_CHECK(M >= 0 && N >= 0 && K >= 0, "matmul_wt: negative shape " << M << "x" << N << "x" << K);
  if (M == 0 || N == 0) return;
  if (M == 1)  // decode: y[N] = w[N,K] · x[K]; gemv avoids sgemm's packing of w
    cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, 0.0f, y, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}

void rmsnorm(const float* x, const float* weight, float* y, int rows, int dim, float eps) {
  auto run_rows = [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      const float inv = 1.0f / std::sqrt(sum_squares(xr, dim) / float(dim) + eps);
      for (int d = 0; d < dim; ++d) yr[d] = xr[d] * inv * weight[d];  // in place is fine: xr[d] read first
    }
  };
  parallel_for_range(size_t(rows), std::max<size_t>(1, kStreamGrain / std::max(dim, 1)), run_rows);
}

// cos/sin depend only on (token, d), so they are computed once per token and reused by all heads.
// The angle is the fp32 product pos * inv_freq[d], matching HF and ref::rope.
void rope(float* x, const int32_t* positions, int n_tok, int n_heads, int head_dim, const float* inv_freq) {
  constexpr int kMaxHalf = 512;
  CLLM_CHECK(head_dim % 2 == 0 && head_dim / 2 <= kMaxHalf,
             "rope: head_dim must be even and <= " << 2 * kMaxHalf << ", got " << head_dim);
  const int half = head_dim / 2;
  auto run_tokens = [&](size_t t0, size_t t1) {
    float cs[kMaxHalf], sn[kMaxHalf];
    for (size_t t = t0; t < t1; ++t) {
      for (int d = 0; d < half; ++d) {
        const float angle = float(positions[t]) * inv_freq[d];
        cs[d] = std::cos(angle);
        sn[d] = std::sin(angle);
      }
      for (int h = 0; h < n_heads; ++h) {
        float* a = x + (t * n_heads + h) * head_dim;
        float* b = a + half;
        for (int d = 0; d < half; ++d) {
          const float ad = a[d], bd = b[d];
          a[d] = ad * cs[d] - bd * sn[d];
          b[d] = bd * cs[d] + ad * sn[d];
        }
      }
    }
  };
  const size_t per_token = size_t(n_heads) * head_dim;
  parallel_for_range(size_t(n_tok), std::max<size_t>(1, kStreamGrain / std::max<size_t>(per_token, 1)), run_tokens);
}

void silu_mul(const float* gate, const float* up, float* out, size_t n) {
  // exp makes it compute-bound: smaller chunks than the streaming loops.
  parallel_for_range(n, kStreamGrain / 16, [&](size_t b, size_t e) { silu_mul_range(gate, up, out, b, e); });
}

void add_inplace(float* x, const float* y, size_t n) {
  parallel_for_range(n, kStreamGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] += y[i];
  });
}

void embedding(const float* table, const int32_t* ids, float* out, int n, int dim) {
  for (int i = 0; i < n; ++i) {
    CLLM_CHECK(ids[i] >= 0, "embedding: negative token id " << ids[i] << " at " << i);
    std::memcpy(out + size_t(i) * dim, table + size_t(ids[i]) * dim, sizeof(float) * dim);
  }
}

// Two passes: a vectorisable max (8 lanes), then the first index holding it. The second pass
// usually stops early, and scanning for equality gives the lowest index on ties for free.
int32_t argmax(const float* x, int n) {
  CLLM_CHECK(n > 0, "argmax over an empty range");
  float lane[8];
  std::fill(lane, lane + 8, x[0]);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) lane[u] = x[i + u] > lane[u] ? x[i + u] : lane[u];
  float best = lane[0];
  for (int u = 1; u < 8; ++u) best = lane[u] > best ? lane[u] : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  for (i = 0; i < n; ++i)
    if (x[i] == best) return i;
  return 0;  // only reached when best is NaN (x[0] was NaN and nothing compared greater)
}

void set_num_threads(int n) {
  CLLM_CHECK(n >= 1, "set_num_threads: need >= 1 thread, got " << n);
  set_pool_size(n);
  openblas_set_num_threads(n);
}

int num_threads() { return pool_size(); }

}  // namespace cllm::cpu
