// Block attention on the CPU: flash-attention style tiling with an online softmax in fp32.
//
// A work item is (kv head g, a block of consecutive queries). Its rows are every (query, head)
// pair of that block whose head maps to g, so one pass over g's keys serves all of them: each
// 64-row key tile (32 KB at head_dim 128) is loaded once and reused by all rows from L1/L2,
// instead of streaming the whole cache once per (query, head) as a naive loop would.
// Per row we keep a running max m, a running denominator l and an unnormalised output acc[hd];
// each tile rescales them by exp(m_old - m_new). Rows see keys 0 .. p0+i (causal).
//
// Results do not depend on the thread count: the query blocking changes with it, but every row
// walks the same key tiles in the same order, so the arithmetic is identical.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

constexpr int kKeyTile = 64;       // keys per tile
constexpr int kMaxQueryBlock = 16;  // queries per work item (rows = this * group)

float dot(const float* a, const float* b, int n) {
  float part[8] = {};
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int u = 0; u < 8; ++u) part[u] += a[d + u] * b[d + u];
  float s = 0;
  for (; d < n; ++d) s += a[d] * b[d];
  for (float p : part) s += p;
  return s;
}

struct Shape {
  int n, p0, n_heads, n_kv, head_dim, group;
};

// Scratch reused across calls on the same thread; sized by rows * head_dim.
struct Scratch {
  std::vector<float> q, acc, m, l;
  float s[kKeyTile];
};

void attend_block(const float* q, const float* k, const float* v, float* out, const Shape& sh, int g,
                  int i0, int i1, Scratch& sc) {
  const int hd = sh.head_dim, group = sh.group;
  const int rows = (i1 - i0) * group;
  const size_t kv_stride = size_t(sh.n_kv) * hd;  // floats between consecutive cache rows
  const float* kg = k + size_t(g) * hd;
  const float* vg = v + size_t(g) * hd;
  const float scale = 1.0f / std::sqrt(float(hd));

  sc.q.resize(size_t(rows) * hd);
  sc.acc.assign(size_t(rows) * hd, 0.0f);
  sc.m.assign(rows, -INFINITY);
  sc.l.assign(rows, 0.0f);
  for (int r = 0; r < rows; ++r) {  // row r = (query i0 + r / group, head g * group + r % group)
    const float* src = q + (size_t(i0 + r / group) * sh.n_heads + g * group + r % group) * hd;
    for (int d = 0; d < hd; ++d) sc.q[size_t(r) * hd + d] = src[d] * scale;
  }

  const int t_end = sh.p0 + i1;  // exclusive: the last query of the block sees rows < p0 + i1
  for (int t0 = 0; t0 < t_end; t0 += kKeyTile) {
    const int t1 = std::min(t0 + kKeyTile, t_end);
    for (int r = 0; r < rows; ++r) {
      const int lim = std::min(t1, sh.p0 + i0 + r / group + 1);
      if (lim <= t0) continue;  // this tile lies entirely in the row's future
      const float* qr = &sc.q[size_t(r) * hd];
      float* acc = &sc.acc[size_t(r) * hd];
      float tile_max = -INFINITY;
      for (int t = t0; t < lim; ++t) {
        sc.s[t - t0] = dot(qr, kg + t * kv_stride, hd);
        tile_max = std::max(tile_max, sc.s[t - t0]);
      }
      const float m_new = std::max(sc.m[r], tile_max);
      if (m_new > sc.m[r]) {
        const float corr = std::exp(sc.m[r] - m_new);  // 0 on the first tile (m = -inf)
        sc.l[r] *= corr;
        for (int d = 0; d < hd; ++d) acc[d] *= corr;
        sc.m[r] = m_new;
      }
      float l = sc.l[r];
      for (int t = t0; t < lim; ++t) {
        const float p = std::exp(sc.s[t - t0] - m_new);
        l += p;
        const float* vt = vg + t * kv_stride;
        for (int d = 0; d < hd; ++d) acc[d] += p * vt[d];
      }
      sc.l[r] = l;
    }
  }

  for (int r = 0; r < rows; ++r) {
    float* dst = out + (size_t(i0 + r / group) * sh.n_heads + g * group + r % group) * hd;
    const float inv = 1.0f / sc.l[r];
    for (int d = 0; d < hd; ++d) dst[d] = sc.acc[size_t(r) * hd + d] * inv;
  }
}

}  // namespace

void block_attention(const float* q, const float* k, const float* v, float* out, int n, int p0,
                     int n_heads, int n_kv, int head_dim) {
  CLLM_CHECK(n >= 0 && p0 >= 0 && head_dim > 0, "attention: bad shape n=" << n << " p0=" << p0 << " head_dim=" << head_dim);
  CLLM_CHECK(n_kv > 0 && n_heads % n_kv == 0, "attention: n_heads " << n_heads << " not a multiple of n_kv " << n_kv);
  if (n == 0) return;
  const Shape sh{n, p0, n_heads, n_kv, head_dim, n_heads / n_kv};

  // Enough items for ~4 per thread (dynamic scheduling evens out the causal imbalance), but
  // blocks as large as possible, since each block reads its kv head's keys once.
  const int want_items = 4 * num_threads();
  const int blocks_per_head = std::max(1, (want_items + n_kv - 1) / n_kv);
  const int qblock = std::clamp((n + blocks_per_head - 1) / blocks_per_head, 1, kMaxQueryBlock);
  const int n_qblocks = (n + qblock - 1) / qblock;

  parallel_for(size_t(n_kv) * n_qblocks, [&](size_t item) {
    thread_local Scratch sc;
    const int g = int(item % n_kv);
    const int i0 = (n_qblocks - 1 - int(item / n_kv)) * qblock;  // longest (latest) blocks first
    attend_block(q, k, v, out, sh, g, i0, std::min(n, i0 + qblock), sc);
  });
}

}  // namespace cllm::cpu
