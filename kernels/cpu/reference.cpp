// Naive reference kernels. Written for obviousness, not speed: one thread, textbook loops,
// reductions and transcendental functions in double so the only fp32 rounding is the final store.
#include "kernels/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"

namespace cllm::ref {

void matmul_wt(const float* x, const float* w, float* y, int M, int N, int K) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += double(x[size_t(m) * K + k]) * w[size_t(n) * K + k];
      y[size_t(m) * N + n] = float(acc);
    }
}

void rmsnorm(const float* x, const float* weight, float* y, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + size_t(r) * dim;
    float* yr = y + size_t(r) * dim;
    double ss = 0;
    for (int d = 0; d < dim; ++d) ss += double(xr[d]) * xr[d];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int d = 0; d < dim; ++d) yr[d] = float(xr[d] * inv * weight[d]);
  }
}

// The angle is the fp32 product pos * inv_freq[d], as HF computes it (a float matmul), so at long
// contexts both sides round the angle identically; cos/sin of it are then taken in double.
void rope(float* x, const int32_t* positions, int n_tok, int n_heads, int head_dim, const float* inv_freq) {
  CLLM_CHECK(head_dim % 2 == 0, "rope: head_dim must be even, got " << head_dim);
  const int half = head_dim / 2;
  for (int t = 0; t < n_tok; ++t)
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (size_t(t) * n_heads + h) * head_dim;
      for (int d = 0; d < half; ++d) {
        const double angle = float(float(positions[t]) * inv_freq[d]);
        const double c = std::cos(angle), s = std::sin(angle);
        const double a = v[d], b = v[d + half];
        v[d] = float(a * c - b * s);
        v[d + half] = float(b * c + a * s);
      }
    }
}

void block_attention(const float* q, const float* k, const float* v, float* out, int n, int p0,
                     int n_heads, int n_kv, int head_dim, int window) {
  CLLM_CHECK(n_kv > 0 && n_heads % n_kv == 0, "attention: n_heads " << n_heads << " not a multiple of n_kv " << n_kv);
  const int group = n_heads / n_kv;
  const double scale = 1.0 / std::sqrt(double(head_dim));
  std::vector<double> p;
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < n_heads; ++h) {
      const float* qi = q + (size_t(i) * n_heads + h) * head_dim;
      const int kvh = h / group;
      const int len = p0 + i + 1;  // causal: cache rows 0 .. p0+i
      const int first = window > 0 ? std::max(0, len - window) : 0;  // rows before it are masked
      p.assign(len, 0.0);
      double mx = -INFINITY;
      for (int t = first; t < len; ++t) {
        const float* kt = k + (size_t(t) * n_kv + kvh) * head_dim;
        double s = 0;
        for (int d = 0; d < head_dim; ++d) s += double(qi[d]) * kt[d];
        p[t] = s * scale;
        mx = std::max(mx, p[t]);
      }
      double sum = 0;
      for (int t = first; t < len; ++t) sum += (p[t] = std::exp(p[t] - mx));
      float* o = out + (size_t(i) * n_heads + h) * head_dim;
      for (int d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int t = first; t < len; ++t) acc += p[t] * v[(size_t(t) * n_kv + kvh) * head_dim + d];
        o[d] = float(acc / sum);
      }
    }
}

void silu_mul(const float* gate, const float* up, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = float(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void add_inplace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

void embedding(const float* table, const int32_t* ids, float* out, int n, int dim) {
  for (int i = 0; i < n; ++i)
    std::memcpy(out + size_t(i) * dim, table + size_t(ids[i]) * dim, sizeof(float) * dim);
}

int32_t argmax(const float* x, int n) {
  CLLM_CHECK(n > 0, "argmax over an empty range");
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace cllm::ref
