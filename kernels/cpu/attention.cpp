// Block attention on the CPU: flash-attention style tiling with an online softmax in fp32.
//
// A work item is (kv head g, a block of consecutive queries). Its rows are every (query, head)
// pair of that block whose head maps to g, so one pass over g's keys serves all of them: each
// 64-row key tile (32 KB at head_dim 128) is loaded once and reused by all rows from L1/L2,
// instead of streaming the whole cache once per (query, head) as a naive loop would.
// Per row we keep a running max m, a running denominator l and an unnormalised output acc[hd];
// each tile rescales them by exp(m_old - m_new). Rows see keys 0 .. p0+i (causal), or with a
// sliding window only the last `window` of them; tiles stay aligned to multiples of kKeyTile
// either way, so a row's arithmetic does not depend on the window of any other row.
//
// Results do not depend on the thread count nor on the other blocks of a batch: the query
// blocking changes with them, but every row walks the same key tiles in the same order, so the
// arithmetic is identical (continuous batching relies on this: tests/unit/test_batch_forward.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_exp.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

// The two hot loops are compiled twice, for AVX2+FMA and for baseline x86-64, and picked at load
// time (GCC ifunc), so one portable binary still runs 8-wide FMAs where the CPU has them.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLLM_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLLM_SIMD_CLONES
#endif

constexpr int kKeyTile = 64;       // keys per tile
constexpr int kMaxQueryBlock = 16;  // queries per work item (rows = this * group)

// 8 floats in a GCC/Clang vector: one ymm register in the AVX2 clone, two xmm in the baseline one.
// Explicit vectors because auto-vectorising these reductions without -ffast-math gives shuffles.
// load8 returns f32x8 by value; it is internal and inlined, so GCC's warning that this ABI
// differs between the AVX and baseline clones does not apply. The others take references.
#pragma GCC diagnostic ignored "-Wpsabi"

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}
inline void store8(float* p, const f32x8& v) { std::memcpy(p, &v, sizeof v); }

// Pairwise sums, as one hadd: [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7].
__attribute__((always_inline)) inline f32x8 hadd8(const f32x8& a, const f32x8& b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}
// The sum of 8 lanes in one fixed tree, ((0+1)+(2+3)) + ((4+5)+(6+7)): hsum4 gives every key this
// same tree, so a score does not depend on which keys share its pass.
inline float hsum(const f32x8& v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
inline void hsum4(const f32x8& a, const f32x8& b, const f32x8& c, const f32x8& d, float* out) {
  const f32x8 h = hadd8(hadd8(a, b), hadd8(c, d));  // [a lo, b lo, c lo, d lo | a hi, b hi, c hi, d hi]
  for (int u = 0; u < 4; ++u) out[u] = h[u] + h[u + 4];
}

// s[j] = q · k_j for j < cnt, k_j = k + j * stride. Four keys per pass share each load of q.
CLLM_SIMD_CLONES void scores(const float* q, const float* k, size_t stride, int cnt, int hd, float* s) {
  const int hd8 = hd & ~7;
  int j = 0;
  for (; j + 4 <= cnt; j += 4) {
    const float *k0 = k + j * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
    f32x8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int d = 0; d < hd8; d += 8) {
      const f32x8 x = load8(q + d);
      a0 += x * load8(k0 + d);
      a1 += x * load8(k1 + d);
      a2 += x * load8(k2 + d);
      a3 += x * load8(k3 + d);
    }
    hsum4(a0, a1, a2, a3, s + j);
    for (int d = hd8; d < hd; ++d) {
      s[j] += q[d] * k0[d];
      s[j + 1] += q[d] * k1[d];
      s[j + 2] += q[d] * k2[d];
      s[j + 3] += q[d] * k3[d];
    }
  }
  for (; j < cnt; ++j) {
    const float* kj = k + j * stride;
    f32x8 a = {};
    for (int d = 0; d < hd8; d += 8) a += load8(q + d) * load8(kj + d);
    float sj = hsum(a);
    for (int d = hd8; d < hd; ++d) sj += q[d] * kj[d];
    s[j] = sj;
  }
}

// acc[0, hd) += sum_j p[j] * v_j for j < cnt, v_j = v + j * stride. acc is walked in 32-float
// slices held in registers across all keys, so it is loaded and stored once per tile.
CLLM_SIMD_CLONES void accumulate(const float* p, const float* v, size_t stride, int cnt, int hd, float* acc) {
  int d0 = 0;
  for (; d0 + 32 <= hd; d0 += 32) {
    f32x8 a0 = load8(acc + d0), a1 = load8(acc + d0 + 8), a2 = load8(acc + d0 + 16), a3 = load8(acc + d0 + 24);
    for (int j = 0; j < cnt; ++j) {
      const float* vj = v + j * stride + d0;
      const float pj = p[j];
      a0 += pj * load8(vj);
      a1 += pj * load8(vj + 8);
      a2 += pj * load8(vj + 16);
      a3 += pj * load8(vj + 24);
    }
    store8(acc + d0, a0), store8(acc + d0 + 8, a1), store8(acc + d0 + 16, a2), store8(acc + d0 + 24, a3);
  }
  for (int d = d0; d < hd; ++d)
    for (int j = 0; j < cnt; ++j) acc[d] += p[j] * v[j * stride + d];
}

// s[j] = exp(s[j] - m) for j < cnt, 8 at a time (s has kKeyTile floats: the tail is padded);
// returns their sum: 8 lane sums over j = lane mod 8 in j order, then hsum's tree. All of it is a
// function of the tile's scores alone, so a row's result does not depend on its batch.
CLLM_SIMD_CLONES float probabilities(float* s, int cnt, float m) {
  f32x8 sum = {};
  int j = 0;
  for (; j + 8 <= cnt; j += 8) {
    const f32x8 p = exp8(load8(s + j) - m);
    store8(s + j, p);
    sum += p;
  }
  if (j < cnt) {
    f32x8 v = f32x8{} + m, keep = {};
    for (int u = 0; u < cnt - j; ++u) v[u] = s[j + u], keep[u] = 1.0f;
    const f32x8 p = exp8(v - m) * keep;  // padding lanes: 0
    store8(s + j, p);
    sum += p;
  }
  return hsum(sum);
}

// max(s[j]) for j < cnt (exact in any order).
CLLM_SIMD_CLONES float tile_max(const float* s, int cnt) {
  f32x8 mx = f32x8{} - INFINITY;
  int j = 0;
  for (; j + 8 <= cnt; j += 8) {
    const f32x8 v = load8(s + j);
    mx = v > mx ? v : mx;
  }
  float out = -INFINITY;
  for (int u = 0; u < 8; ++u) out = std::max(out, mx[u]);
  for (; j < cnt; ++j) out = std::max(out, s[j]);
  return out;
}

struct Shape {
  int n, p0, n_heads, n_kv, head_dim, group, window;
  const int32_t* layout;  // AttentionBlock::layout
  int pos(int i) const { return layout ? layout[2 * i] : p0 + i; }      // logical position of query i
  int base(int i) const { return layout ? layout[2 * i + 1] : p0 + i + 1; }  // keys from here on: its lineage
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

  // Logical keys: the last query of the item sees keys < t_end; with a window, its first sees
  // nothing before t_begin (rounded down to a tile: tiles are aligned to logical positions).
  int t_end = 0, t_first = sh.pos(i0);
  for (int i = i0; i < i1; ++i) {
    t_end = std::max(t_end, sh.pos(i) + 1);
    t_first = std::min(t_first, sh.pos(i));
  }
  const int t_begin = sh.window > 0 ? std::max(0, t_first + 1 - sh.window) / kKeyTile * kKeyTile : 0;
  for (int t0 = t_begin; t0 < t_end; t0 += kKeyTile) {
    const int t1 = std::min(t0 + kKeyTile, t_end);
    for (int r = 0; r < rows; ++r) {
      const int i = i0 + r / group;
      const int pos = sh.pos(i);  // the row's logical query position
      const int lim = std::min(t1, pos + 1);
      const int lo = sh.window > 0 ? std::max(t0, pos + 1 - sh.window) : t0;
      if (lim <= lo) continue;  // this tile lies entirely in the row's future or before its window
      const float* qr = &sc.q[size_t(r) * hd];
      float* acc = &sc.acc[size_t(r) * hd];
      const int cnt = lim - lo;
      // Keys [lo, lim) in at most two contiguous runs of cache rows: the shared prefix, then the
      // row's lineage. Each score and each accumulated key is computed alone, in key order, so the
      // split does not change the arithmetic.
      const int base = std::clamp(sh.base(i), lo, lim);
      const int shift = sh.p0 + i - pos;  // cache row of lineage key t: t + shift
      const int n1 = base - lo, n2 = lim - base;
      if (n1 > 0) scores(qr, kg + size_t(lo) * kv_stride, kv_stride, n1, hd, sc.s);
      if (n2 > 0) scores(qr, kg + size_t(base + shift) * kv_stride, kv_stride, n2, hd, sc.s + n1);
      const float m_new = std::max(sc.m[r], tile_max(sc.s, cnt));
      if (m_new > sc.m[r]) {
        const float corr = std::exp(sc.m[r] - m_new);  // 0 on the first tile (m = -inf)
        sc.l[r] *= corr;
        for (int d = 0; d < hd; ++d) acc[d] *= corr;
        sc.m[r] = m_new;
      }
      sc.l[r] += probabilities(sc.s, cnt, m_new);  // scores become probabilities (unnormalised)
      if (n1 > 0) accumulate(sc.s, vg + size_t(lo) * kv_stride, kv_stride, n1, hd, acc);
      if (n2 > 0) accumulate(sc.s + n1, vg + size_t(base + shift) * kv_stride, kv_stride, n2, hd, acc);
    }
  }

  for (int r = 0; r < rows; ++r) {
    float* dst = out + (size_t(i0 + r / group) * sh.n_heads + g * group + r % group) * hd;
    const float inv = 1.0f / sc.l[r];
    for (int d = 0; d < hd; ++d) dst[d] = sc.acc[size_t(r) * hd + d] * inv;
  }
}

}  // namespace

void batch_attention(const float* q, float* out, const AttentionBlock* blocks, int count, int n_heads, int n_kv,
                     int head_dim) {
  CLLM_CHECK(count >= 0 && head_dim > 0, "attention: bad shape count=" << count << " head_dim=" << head_dim);
  CLLM_CHECK(n_kv > 0 && n_heads % n_kv == 0, "attention: n_heads " << n_heads << " not a multiple of n_kv " << n_kv);
  int rows = 0;
  for (int b = 0; b < count; ++b) {
    CLLM_CHECK(blocks[b].n >= 0 && blocks[b].p0 >= 0 && blocks[b].window >= 0,
               "attention: bad block " << b << ": n=" << blocks[b].n << " p0=" << blocks[b].p0
                                       << " window=" << blocks[b].window);
    for (int i = 0; blocks[b].layout && i < blocks[b].n; ++i) {
      const int q = blocks[b].layout[2 * i], base = blocks[b].layout[2 * i + 1];
      CLLM_CHECK(0 <= base && base <= q && q <= blocks[b].p0 + i,
                 "attention: block " << b << " row " << i << " at cache row " << blocks[b].p0 + i
                                     << " has logical position " << q << " and base " << base
                                     << " (need 0 <= base <= position <= cache row)");
    }
    rows += blocks[b].n;
  }
  if (rows == 0) return;

  // A work item is (block, kv head, query block of that block). Enough items for ~4 per thread
  // (dynamic scheduling evens out the causal imbalance), but query blocks as large as possible,
  // since each one reads its kv head's keys once.
  struct Item {
    int b, g, i0, i1;
    size_t first_row;  // of the block, in q / out
    double cost;       // keys read x rows: the most expensive items go first
  };
  const int want_items = 4 * num_threads();
  const int blocks_per_head = std::max(1, (want_items + n_kv * count - 1) / (n_kv * count));
  std::vector<Item> items;
  size_t first_row = 0;
  for (int b = 0; b < count; ++b) {
    const int n = blocks[b].n;
    const int qblock = std::clamp((n + blocks_per_head - 1) / std::max(1, blocks_per_head), 1, kMaxQueryBlock);
    for (int i0 = 0; i0 < n; i0 += qblock)
      for (int g = 0; g < n_kv; ++g) {
        const int i1 = std::min(n, i0 + qblock);
        items.push_back({b, g, i0, i1, first_row, double(blocks[b].p0 + i1) * (i1 - i0)});
      }
    first_row += size_t(n);
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& c) { return a.cost > c.cost; });

  const size_t row_floats = size_t(n_heads) * head_dim;
  parallel_for(items.size(), [&](size_t i) {
    thread_local Scratch sc;
    const Item& it = items[i];
    const AttentionBlock& blk = blocks[it.b];
    const Shape sh{blk.n, blk.p0, n_heads, n_kv, head_dim, n_heads / n_kv, blk.window, blk.layout};
    attend_block(q + it.first_row * row_floats, blk.k, blk.v, out + it.first_row * row_floats, sh, it.g, it.i0,
                 it.i1, sc);
  });
}

void block_attention(const float* q, const float* k, const float* v, float* out, int n, int p0,
                     int n_heads, int n_kv, int head_dim, int window) {
  CLLM_CHECK(n >= 0 && p0 >= 0 && head_dim > 0, "attention: bad shape n=" << n << " p0=" << p0 << " head_dim=" << head_dim);
  const AttentionBlock block{k, v, n, p0, window};
  batch_attention(q, out, &block, 1, n_heads, n_kv, head_dim);
}

}  // namespace cllm::cpu
