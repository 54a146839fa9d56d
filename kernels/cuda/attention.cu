// Split-K ("flash-decoding") block attention, fp32 accumulation on CUDA cores.
//
// Work decomposition. For kv head H the query rows are the n * g pairs (query i, head of group),
// numbered row = i * g + head_in_group. The context [0, p0+n) is cut into n_chunks chunks of
// chunk_len keys (a multiple of kTile). CTA (chunk, H, row tile) takes kRows query rows and one
// chunk: it streams the chunk through shared memory kTile keys at a time, and every one of its rows
// is scored against that tile, so the K/V bytes are read once for all g * n queries of the tile
// instead of once per query. Each warp owns kRowsPerWarp rows and keeps an online softmax per row
// (running max m, running sum l, unnormalised accumulator acc over head_dim). With one chunk the CTA
// writes the normalised output directly; otherwise it writes (m, l, acc) to the workspace and the
// combine kernel merges the chunks: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c.
//
// Masking: key t is visible to query i when t <= p0 + i and t lies in the CTA's chunk. Masked
// scores become -inf and weigh exactly 0; tile rows past the chunk are zero-filled in shared memory,
// never loaded, so cache rows >= p0+n may hold anything (even NaN).
#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"

namespace cllm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * detail::kWarp;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // query rows per CTA
constexpr int kTile = 64;                     // keys per shared-memory tile: lane owns keys lane, lane+32
constexpr int kMaxChunks = 32;                // bounds the workspace

struct AttnParams {
  const __nv_bfloat16* q;
  int q_stride;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  __nv_bfloat16* out;  // [n, n_heads, head_dim], written when n_chunks == 1
  float* part_acc;     // [n_chunks, n, n_heads, head_dim]
  float* part_m;       // [n_chunks, n, n_heads]
  float* part_l;       // [n_chunks, n, n_heads]
  int n, p0, n_heads, n_kv, group;
  int chunk_len, n_chunks;
  float scale;  // 1/sqrt(head_dim), folded into q
};

__device__ __forceinline__ float2 bf16x2_bits_to_float2(uint32_t bits) {
  __nv_bfloat162 h;
  memcpy(&h, &bits, sizeof(h));
  return __bfloat1622float2(h);
}

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_partial_kernel(const AttnParams p) {
  constexpr int kWords = HD / 2;          // bf16 pairs per K/V row
  constexpr int kPitch = kWords + 1;      // shared row pitch in words; odd, so lane j reading word w
                                          // of row j hits bank (j + w) % 32: no conflicts
  constexpr int kPairsPerLane = HD / 64;  // lane owns words lane + 32 q (dims 2 word, 2 word + 1)
  constexpr int kVecsPerRow = HD / 8;     // 16-byte vectors per K/V row

  __shared__ alignas(16) float q_s[kRows][HD];
  __shared__ uint32_t k_s[kTile][kPitch];
  __shared__ uint32_t v_s[kTile][kPitch];

  const int chunk = blockIdx.x, kvh = blockIdx.y;
  const int warp = threadIdx.x / detail::kWarp, lane = threadIdx.x % detail::kWarp;
  const int rows_total = p.n * p.group;
  const int row0 = blockIdx.z * kRows;
  const int c0 = chunk * p.chunk_len;
  const int c1 = min(c0 + p.chunk_len, p.p0 + p.n);  // this chunk's keys: [c0, c1)
  const size_t cache_row_stride = static_cast<size_t>(p.n_kv) * HD;

  for (int e = threadIdx.x; e < kRows * HD; e += kThreads) {
    const int r = e / HD, d = e % HD, row = row0 + r;
    float val = 0.f;
    if (row < rows_total) {
      const int i = row / p.group, h = kvh * p.group + row % p.group;
      val = __bfloat162float(p.q[static_cast<size_t>(i) * p.q_stride + h * HD + d]) * p.scale;
    }
    q_s[r][d] = val;
  }

  // Warp w owns local rows rr * kWarps + w, so a tile with few rows still spreads them over warps.
  int last_key[kRowsPerWarp];  // p0 + i: the last key the row may see; -1 for padding rows
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][2 * kPairsPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int row = row0 + rr * kWarps + warp;
    last_key[rr] = row < rows_total ? p.p0 + row / p.group : -1;
    m[rr] = -INFINITY;
    l[rr] = 0.f;  // per-lane partial sum, reduced over the warp at the end
#pragma unroll
    for (int x = 0; x < 2 * kPairsPerLane; ++x) acc[rr][x] = 0.f;
  }

  // K/V tiles go global -> registers -> shared memory, software-pipelined: the next tile's loads
  // (kLoadIters 16-byte vectors of K and of V per thread, all issued back to back) are in flight
  // while the current tile is scored, so each tile costs about one memory latency, overlapped.
  constexpr int kLoadIters = kTile * kVecsPerRow / kThreads;
  static_assert(kTile * kVecsPerRow % kThreads == 0);
  uint4 k_reg[kLoadIters], v_reg[kLoadIters];
  auto load_tile = [&](int t0) {
#pragma unroll
    for (int it = 0; it < kLoadIters; ++it) {
      const int e = threadIdx.x + it * kThreads;
      const int j = e / kVecsPerRow, c = e % kVecsPerRow, t = t0 + j;
      k_reg[it] = v_reg[it] = make_uint4(0, 0, 0, 0);
      if (t < c1) {
        const size_t off = static_cast<size_t>(t) * cache_row_stride + kvh * HD + c * 8;
        k_reg[it] = *reinterpret_cast<const uint4*>(p.k_cache + off);
        v_reg[it] = *reinterpret_cast<const uint4*>(p.v_cache + off);
      }
    }
  };
  if (c0 < c1) load_tile(c0);

  for (int t0 = c0; t0 < c1; t0 += kTile) {
    __syncthreads();  // the previous tile is consumed (first pass: q_s is written)
#pragma unroll
    for (int it = 0; it < kLoadIters; ++it) {
      const int e = threadIdx.x + it * kThreads;
      const int j = e / kVecsPerRow, c = e % kVecsPerRow;
      uint32_t* kr = &k_s[j][4 * c];
      uint32_t* vr = &v_s[j][4 * c];
      kr[0] = k_reg[it].x; kr[1] = k_reg[it].y; kr[2] = k_reg[it].z; kr[3] = k_reg[it].w;
      vr[0] = v_reg[it].x; vr[1] = v_reg[it].y; vr[2] = v_reg[it].z; vr[3] = v_reg[it].w;
    }
    __syncthreads();
    if (t0 + kTile < c1) load_tile(t0 + kTile);

    // Scores: lane holds keys t0 + lane (s[.][0]) and t0 + lane + 32 (s[.][1]) for each owned row.
    float s[kRowsPerWarp][2];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) s[rr][0] = s[rr][1] = 0.f;
#pragma unroll 8
    for (int w = 0; w < kWords; ++w) {
      const float2 ka = bf16x2_bits_to_float2(k_s[lane][w]);
      const float2 kb = bf16x2_bits_to_float2(k_s[lane + 32][w]);
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const float2 qv = *reinterpret_cast<const float2*>(&q_s[rr * kWarps + warp][2 * w]);
        s[rr][0] += qv.x * ka.x + qv.y * ka.y;
        s[rr][1] += qv.x * kb.x + qv.y * kb.y;
      }
    }

    // Online softmax update; p[rr][*] become the weights of this lane's two keys.
    float pw[kRowsPerWarp][2];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int visible_end = min(last_key[rr], c1 - 1);  // keys t0 + j with t0 + j <= visible_end
      const float sa = t0 + lane <= visible_end ? s[rr][0] : -INFINITY;
      const float sb = t0 + lane + 32 <= visible_end ? s[rr][1] : -INFINITY;
      const float m_new = fmaxf(m[rr], detail::warp_max(fmaxf(sa, sb)));  // warp-uniform
      if (m_new == -INFINITY) {  // nothing visible yet for this row
        pw[rr][0] = pw[rr][1] = 0.f;
        continue;
      }
      const float alpha = __expf(m[rr] - m_new);  // 0 when m was -inf
      pw[rr][0] = __expf(sa - m_new);
      pw[rr][1] = __expf(sb - m_new);
      m[rr] = m_new;
      l[rr] = l[rr] * alpha + pw[rr][0] + pw[rr][1];
#pragma unroll
      for (int x = 0; x < 2 * kPairsPerLane; ++x) acc[rr][x] *= alpha;
    }

    // acc += P . V: key j's weight comes from lane j (keys j and j + 32), V row j from shared memory.
#pragma unroll 4
    for (int j = 0; j < 32; ++j) {
      float2 va[kPairsPerLane], vb[kPairsPerLane];
#pragma unroll
      for (int q = 0; q < kPairsPerLane; ++q) {
        va[q] = bf16x2_bits_to_float2(v_s[j][lane + 32 * q]);
        vb[q] = bf16x2_bits_to_float2(v_s[j + 32][lane + 32 * q]);
      }
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const float wa = __shfl_sync(0xffffffffu, pw[rr][0], j);
        const float wb = __shfl_sync(0xffffffffu, pw[rr][1], j);
#pragma unroll
        for (int q = 0; q < kPairsPerLane; ++q) {
          acc[rr][2 * q] += wa * va[q].x + wb * vb[q].x;
          acc[rr][2 * q + 1] += wa * va[q].y + wb * vb[q].y;
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const float l_row = detail::warp_sum(l[rr]);
    const int row = row0 + rr * kWarps + warp;
    if (row >= rows_total) continue;
    const int i = row / p.group, h = kvh * p.group + row % p.group;
    const size_t slot = (static_cast<size_t>(chunk) * p.n + i) * p.n_heads + h;
    if (p.n_chunks == 1) {  // key 0 is visible to every row, so l_row > 0
      const float inv_l = 1.f / l_row;
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(p.out + slot * HD);
#pragma unroll
      for (int q = 0; q < kPairsPerLane; ++q)
        o[lane + 32 * q] = __floats2bfloat162_rn(acc[rr][2 * q] * inv_l, acc[rr][2 * q + 1] * inv_l);
    } else {
      float2* a = reinterpret_cast<float2*>(p.part_acc + slot * HD);
#pragma unroll
      for (int q = 0; q < kPairsPerLane; ++q) a[lane + 32 * q] = make_float2(acc[rr][2 * q], acc[rr][2 * q + 1]);
      if (lane == 0) {
        p.part_m[slot] = m[rr];
        p.part_l[slot] = l_row;
      }
    }
  }
}

// One block per (query, head), one thread per dimension: merge the chunks' partial softmaxes.
__global__ void attention_combine_kernel(const AttnParams p, int head_dim) {
  const size_t rows = static_cast<size_t>(p.n) * p.n_heads;
  const size_t r = blockIdx.x;
  const int d = threadIdx.x;
  float m_max = -INFINITY;
  for (int c = 0; c < p.n_chunks; ++c) m_max = fmaxf(m_max, p.part_m[c * rows + r]);
  float num = 0.f, den = 0.f;
  for (int c = 0; c < p.n_chunks; ++c) {
    const float w = __expf(p.part_m[c * rows + r] - m_max);  // 0 for chunks the row cannot see
    den += w * p.part_l[c * rows + r];
    num += w * p.part_acc[(c * rows + r) * head_dim + d];
  }
  p.out[r * head_dim + d] = __float2bfloat16_rn(num / den);
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace

size_t block_attention_workspace_bytes(int max_n, int n_heads, int head_dim) {
  return static_cast<size_t>(kMaxChunks) * max_n * n_heads * (head_dim + 2) * sizeof(float);
}

void invoke_block_attention(const __nv_bfloat16* q, int q_stride, const __nv_bfloat16* k_cache,
                            const __nv_bfloat16* v_cache, __nv_bfloat16* out, void* workspace,
                            size_t workspace_bytes, int n, int p0, int n_heads, int n_kv, int head_dim,
                            cudaStream_t stream) {
  CLLM_CHECK(head_dim == 64 || head_dim == 128, "attention: head_dim " << head_dim << " not in {64, 128}");
  CLLM_CHECK(n_kv > 0 && n_heads % n_kv == 0, "attention: n_heads " << n_heads << " % n_kv " << n_kv << " != 0");
  CLLM_CHECK(n >= 0 && p0 >= 0 && q_stride >= n_heads * head_dim, "attention: bad n/p0/q_stride");
  CLLM_CHECK(is_aligned(k_cache, 16) && is_aligned(v_cache, 16) && is_aligned(out, 4) && is_aligned(workspace, 8),
             "attention: k_cache/v_cache must be 16-byte aligned, out 4-byte, workspace 8-byte");
  if (n == 0) return;

  const int group = n_heads / n_kv;
  const int ctx = p0 + n;
  const int row_tiles = ceil_div(n * group, kRows);
  // Enough chunks for about two CTAs per SM, at least one tile per chunk, at most kMaxChunks.
  int device = 0, sm_count = 0;
  CLLM_CUDA_CHECK(cudaGetDevice(&device));
  CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const int max_chunks = std::min(kMaxChunks, ceil_div(ctx, kTile));
  const int want = ceil_div(2 * sm_count, n_kv * row_tiles);
  const int chunks_guess = std::max(1, std::min(want, max_chunks));
  const int chunk_len = ceil_div(ceil_div(ctx, chunks_guess), kTile) * kTile;
  const int n_chunks = ceil_div(ctx, chunk_len);

  const size_t slots = static_cast<size_t>(n_chunks) * n * n_heads;
  CLLM_CHECK(n_chunks == 1 || workspace_bytes >= slots * (head_dim + 2) * sizeof(float),
             "attention: workspace of " << workspace_bytes << " bytes < block_attention_workspace_bytes(" << n
                                        << ", " << n_heads << ", " << head_dim << ")");
  float* ws = static_cast<float*>(workspace);
  const AttnParams p{q,       q_stride, k_cache, v_cache,   out,       ws,    ws + slots * head_dim,
                     ws + slots * (head_dim + 1), n, p0,   n_heads, n_kv, group, chunk_len,
                     n_chunks, 1.f / std::sqrt(static_cast<float>(head_dim))};
  const dim3 grid(n_chunks, n_kv, row_tiles);
  if (head_dim == 64)
    attention_partial_kernel<64><<<grid, kThreads, 0, stream>>>(p);
  else
    attention_partial_kernel<128><<<grid, kThreads, 0, stream>>>(p);
  CLLM_CUDA_LAUNCH_CHECK(stream);
  if (n_chunks > 1) {
    attention_combine_kernel<<<n * n_heads, head_dim, 0, stream>>>(p, head_dim);
    CLLM_CUDA_LAUNCH_CHECK(stream);
  }
}

}  // namespace cllm::cuda
