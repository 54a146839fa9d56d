// Split-K ("flash-decoding") block attention, fp32 accumulation on CUDA cores.
//
// Work decomposition. For kv head H the query rows are the n * g pairs (query i, head of group),
// numbered row = i * g + head_in_group. The context [0, p0+n) is cut into n_chunks chunks of
// chunk_len keys (a multiple of kTile). CTA (chunk, H, row tile) takes kRows query rows and one
// chunk: it streams the chunk through shared memory kTile keys at a time, and every one of its rows
// is scored against that tile, so the K/V bytes are read once for all g * n queries of the tile
// instead of once per query. Each warp owns RPW rows (4, or 1 for decoding; see kRowsPerWarp) and keeps an online softmax per row
// (running max m, running sum l, unnormalised accumulator acc over head_dim). With one chunk the CTA
// writes the normalised output directly; otherwise it writes (m, l, acc) to the workspace and the
// combine kernel merges the chunks: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c.
//
// Masking: key t is visible to query i when t <= p0 + i and t lies in the CTA's chunk. Masked
// scores become -inf and weigh exactly 0; tile rows past the chunk are zero-filled in shared memory,
// never loaded, so cache rows >= p0+n may hold anything (even NaN).
//
// Batches (continuous batching). The same kernels serve several blocks, each in its own KV slot:
// a CTA then reads its (block, chunk, row tile) from a work list in device memory instead of from
// blockIdx, and the block's descriptor (query rows, position, slot, chunking) from a table beside
// it. One chunk length serves the whole batch, chosen so the total CTA count is about two per SM,
// which also balances long and short contexts (a long context gets more chunks). The combine pass
// runs over every row; rows of single-chunk blocks were written directly and return at once.
// The single-sequence path passes its one descriptor by value (no dependent load at the start).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"

namespace cllm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * detail::kWarp;
// Query rows per warp: 4 when a (block, KV head) has more than kWarps query rows (Jacobi blocks,
// GQA groups), else 1 (decoding with few heads per KV head: 4 would compute 4x the rows it keeps).
// Each row is computed by one warp the same way in both, so the choice never changes the bits.
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // query rows per CTA at 4 rows per warp
int rows_per_warp(int max_rows_per_kv_head) { return max_rows_per_kv_head <= kWarps ? 1 : kRowsPerWarp; }
constexpr int kTile = 64;                     // keys per shared-memory tile: lane owns keys lane, lane+32
constexpr int kMaxChunks = 32;                // bounds the workspace
constexpr int kFewRows = 64;                  // query rows per KV head of a batch launched at 1 row per warp

struct AttnParams {
  const __nv_bfloat16* q;
  int q_stride;
  const __nv_bfloat16* k_cache;  // slot 0, row 0
  const __nv_bfloat16* v_cache;
  size_t slot_stride;  // elements between KV slots
  __nv_bfloat16* out;  // [rows, n_heads, head_dim], a block's rows written directly when its n_chunks == 1
  // Partial results, [P] slots of (acc [head_dim], m, l); block b's slot of (chunk c, query i, head h)
  // is part_base + (c * n + i) * n_heads + h.
  float* part_acc;  // [P, head_dim]
  float* part_m;    // [P]
  float* part_l;    // [P]
  AttnBlockDesc one;                // the block, when work == nullptr (single sequence)
  const AttnBlockDesc* blocks;      // batched: [count]
  const uint32_t* work;             // batched: [items] (block << 20 | chunk << 10 | row tile)
  const int32_t* row_block;         // batched: [rows] block of each query row
  int n_heads, n_kv, group;
  float scale;  // 1/sqrt(head_dim), folded into q
};

// 12 bits of block, 10 of chunk (1024 chunks: 131072 keys at kInvariantChunkKeys), 10 of row tile.
constexpr int kWorkBlockShift = 20, kWorkChunkShift = 10;
constexpr uint32_t kWorkChunkMask = 1023, kWorkTileMask = 1023;
// A work item that does nothing: plans pad their work lists with it so that the grid (a launch
// parameter) changes rarely while contexts grow, and a CUDA graph can be replayed as is. Never a
// real item: blocks are numbered below 4095, so a real item's top 12 bits are never all ones.
constexpr uint32_t kNoWork = 0xFFFFFFFFu;
static_assert(kMaxChunks <= kWorkChunkMask + 1);

__device__ __forceinline__ float2 bf16x2_bits_to_float2(uint32_t bits) {
  __nv_bfloat162 h;
  memcpy(&h, &bits, sizeof(h));
  return __bfloat1622float2(h);
}

template <int HD, int RPW>
__global__ void __launch_bounds__(kThreads) attention_partial_kernel(const AttnParams p) {
  constexpr int kCtaRows = kWarps * RPW;
  constexpr int kWords = HD / 2;          // bf16 pairs per K/V row
  constexpr int kPitch = kWords + 1;      // shared row pitch in words; odd, so lane j reading word w
                                          // of row j hits bank (j + w) % 32: no conflicts
  constexpr int kPairsPerLane = HD / 64;  // lane owns words lane + 32 q (dims 2 word, 2 word + 1)
  constexpr int kVecsPerRow = HD / 8;     // 16-byte vectors per K/V row

  __shared__ alignas(16) float q_s[kCtaRows][HD];
  __shared__ uint32_t k_s[kTile][kPitch];
  __shared__ uint32_t v_s[kTile][kPitch];

  AttnBlockDesc b;
  int chunk, tile;
  if (p.work == nullptr) {
    b = p.one;
    chunk = blockIdx.x;
    tile = blockIdx.z;
  } else {
    const uint32_t w = p.work[blockIdx.x];
    if (w == kNoWork) return;  // padding: the whole CTA leaves before any barrier
    b = p.blocks[w >> kWorkBlockShift];
    chunk = static_cast<int>((w >> kWorkChunkShift) & kWorkChunkMask);
    tile = static_cast<int>(w & kWorkTileMask);
  }
  const int kvh = blockIdx.y;
  const int warp = threadIdx.x / detail::kWarp, lane = threadIdx.x % detail::kWarp;
  const int rows_total = b.n * p.group;
  const int row0 = tile * kCtaRows;
  const int c0 = chunk * b.chunk_len;
  const int c1 = min(c0 + b.chunk_len, b.pos + b.n);  // this chunk's keys: [c0, c1)
  const size_t cache_row_stride = static_cast<size_t>(p.n_kv) * HD;
  const __nv_bfloat16* k_cache = p.k_cache + b.slot * p.slot_stride;
  const __nv_bfloat16* v_cache = p.v_cache + b.slot * p.slot_stride;

  for (int e = threadIdx.x; e < kCtaRows * HD; e += kThreads) {
    const int r = e / HD, d = e % HD, row = row0 + r;
    float val = 0.f;
    if (row < rows_total) {
      const int i = row / p.group, h = kvh * p.group + row % p.group;
      val = __bfloat162float(p.q[static_cast<size_t>(b.q_row + i) * p.q_stride + h * HD + d]) * p.scale;
    }
    q_s[r][d] = val;
  }

  // Warp w owns local rows rr * kWarps + w, so a tile with few rows still spreads them over warps.
  int last_key[RPW];  // p0 + i: the last key the row may see; -1 for padding rows
  float m[RPW], l[RPW], acc[RPW][2 * kPairsPerLane];
#pragma unroll
  for (int rr = 0; rr < RPW; ++rr) {
    const int row = row0 + rr * kWarps + warp;
    last_key[rr] = row < rows_total ? b.pos + row / p.group : -1;
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
        k_reg[it] = *reinterpret_cast<const uint4*>(k_cache + off);
        v_reg[it] = *reinterpret_cast<const uint4*>(v_cache + off);
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
    float s[RPW][2];
#pragma unroll
    for (int rr = 0; rr < RPW; ++rr) s[rr][0] = s[rr][1] = 0.f;
#pragma unroll 8
    for (int w = 0; w < kWords; ++w) {
      const float2 ka = bf16x2_bits_to_float2(k_s[lane][w]);
      const float2 kb = bf16x2_bits_to_float2(k_s[lane + 32][w]);
#pragma unroll
      for (int rr = 0; rr < RPW; ++rr) {
        const float2 qv = *reinterpret_cast<const float2*>(&q_s[rr * kWarps + warp][2 * w]);
        s[rr][0] += qv.x * ka.x + qv.y * ka.y;
        s[rr][1] += qv.x * kb.x + qv.y * kb.y;
      }
    }

    // Online softmax update; p[rr][*] become the weights of this lane's two keys.
    float pw[RPW][2];
#pragma unroll
    for (int rr = 0; rr < RPW; ++rr) {
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
      for (int rr = 0; rr < RPW; ++rr) {
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
  for (int rr = 0; rr < RPW; ++rr) {
    const float l_row = detail::warp_sum(l[rr]);
    const int row = row0 + rr * kWarps + warp;
    if (row >= rows_total) continue;
    const int i = row / p.group, h = kvh * p.group + row % p.group;
    if (b.n_chunks == 1) {  // key 0 is visible to every row, so l_row > 0
      // acc / l, divided as the combine kernel divides: a query row then gets the same bits whether
      // its block has one chunk or more (chunks past its position weigh exactly 0), so a token's
      // attention does not depend on how many tokens its block holds, provided the block and the lone
      // token were planned the same chunk length. The planner derives it from the context and the
      // row tiles, so near some lengths they differ (a 16-token block against one token: contexts
      // 1862-2047 for 9 heads over 3 KV heads; 16-token windows below each multiple of ~528 for 32
      // over 32): there Jacobi may round differently from AR.
      const size_t out_row = static_cast<size_t>(b.q_row + i) * p.n_heads + h;
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(p.out + out_row * HD);
#pragma unroll
      for (int q = 0; q < kPairsPerLane; ++q)
        o[lane + 32 * q] = __floats2bfloat162_rn(acc[rr][2 * q] / l_row, acc[rr][2 * q + 1] / l_row);
    } else {
      const size_t slot = b.part_base + (static_cast<size_t>(chunk) * b.n + i) * p.n_heads + h;
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

// One block per (query row, head), one thread per dimension: merge the chunks' partial softmaxes.
__global__ void attention_combine_kernel(const AttnParams p, int head_dim) {
  const int row = blockIdx.x / p.n_heads, h = blockIdx.x % p.n_heads;
  const int blk = p.work == nullptr ? 0 : p.row_block[row];
  if (blk < 0) return;  // a row no block covers
  const AttnBlockDesc b = p.work == nullptr ? p.one : p.blocks[blk];
  if (b.n_chunks == 1) return;  // written by the partial kernel
  const int d = threadIdx.x;
  const size_t stride = static_cast<size_t>(b.n) * p.n_heads;  // between chunks
  const size_t r = b.part_base + static_cast<size_t>(row - b.q_row) * p.n_heads + h;
  float m_max = -INFINITY;
  for (int c = 0; c < b.n_chunks; ++c) m_max = fmaxf(m_max, p.part_m[c * stride + r]);
  float num = 0.f, den = 0.f;
  for (int c = 0; c < b.n_chunks; ++c) {
    const float w = __expf(p.part_m[c * stride + r] - m_max);  // 0 for chunks the row cannot see
    den += w * p.part_l[c * stride + r];
    num += w * p.part_acc[(c * stride + r) * head_dim + d];
  }
  p.out[(static_cast<size_t>(row) * p.n_heads + h) * head_dim + d] = __float2bfloat16_rn(num / den);
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }
int round_up(int a, int m) { return ceil_div(a, m) * m; }

int sm_count() {
  int device = 0, count = 0;
  CLLM_CUDA_CHECK(cudaGetDevice(&device));
  CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

void check_shape(int q_stride, const void* k_cache, const void* v_cache, const void* out, const void* workspace,
                 int n_heads, int n_kv, int head_dim) {
  CLLM_CHECK(head_dim == 64 || head_dim == 128, "attention: head_dim " << head_dim << " not in {64, 128}");
  CLLM_CHECK(n_kv > 0 && n_heads % n_kv == 0, "attention: n_heads " << n_heads << " % n_kv " << n_kv << " != 0");
  CLLM_CHECK(q_stride >= n_heads * head_dim, "attention: q_stride " << q_stride << " < n_heads * head_dim");
  CLLM_CHECK(is_aligned(k_cache, 16) && is_aligned(v_cache, 16) && is_aligned(out, 4) && is_aligned(workspace, 8),
             "attention: k_cache/v_cache must be 16-byte aligned, out 4-byte, workspace 8-byte");
}

// Partial-result arrays inside the workspace for P slots: acc [P, head_dim], then m [P], then l [P].
void set_partials(AttnParams& p, void* workspace, size_t partials, int head_dim) {
  float* ws = static_cast<float*>(workspace);
  p.part_acc = ws;
  p.part_m = ws + partials * head_dim;
  p.part_l = p.part_m + partials;
}

void launch(const AttnParams& p, dim3 grid, int head_dim, int rpw, bool combine, int combine_rows,
            cudaStream_t stream) {
  if (head_dim == 64 && rpw == 1)
    attention_partial_kernel<64, 1><<<grid, kThreads, 0, stream>>>(p);
  else if (head_dim == 64)
    attention_partial_kernel<64, kRowsPerWarp><<<grid, kThreads, 0, stream>>>(p);
  else if (rpw == 1)
    attention_partial_kernel<128, 1><<<grid, kThreads, 0, stream>>>(p);
  else
    attention_partial_kernel<128, kRowsPerWarp><<<grid, kThreads, 0, stream>>>(p);
  CLLM_CUDA_LAUNCH_CHECK(stream);
  if (combine) {
    attention_combine_kernel<<<combine_rows * p.n_heads, head_dim, 0, stream>>>(p, head_dim);
    CLLM_CUDA_LAUNCH_CHECK(stream);
  }
}

size_t align16(size_t x) { return (x + 15) / 16 * 16; }

// Spare work items beyond one per (block, row tile), for splitting contexts into chunks: about two
// CTAs per SM need ~2 * 132 / n_kv on an H200, far below this.
constexpr int kSplitItems = 2048;

}  // namespace

size_t block_attention_workspace_bytes(int max_n, int n_heads, int head_dim) {
  return static_cast<size_t>(kMaxChunks) * max_n * n_heads * (head_dim + 2) * sizeof(float);
}

void invoke_block_attention(const __nv_bfloat16* q, int q_stride, const __nv_bfloat16* k_cache,
                            const __nv_bfloat16* v_cache, __nv_bfloat16* out, void* workspace,
                            size_t workspace_bytes, int n, int p0, int n_heads, int n_kv, int head_dim,
                            cudaStream_t stream) {
  check_shape(q_stride, k_cache, v_cache, out, workspace, n_heads, n_kv, head_dim);
  CLLM_CHECK(n >= 0 && p0 >= 0, "attention: bad n " << n << " / p0 " << p0);
  if (n == 0) return;

  const int group = n_heads / n_kv;
  const int ctx = p0 + n;
  const int rpw = rows_per_warp(n * group);
  const int row_tiles = ceil_div(n * group, kWarps * rpw);
  // Enough chunks for about two CTAs per SM, at least one tile per chunk, at most kMaxChunks.
  const int max_chunks = std::min(kMaxChunks, ceil_div(ctx, kTile));
  const int want = ceil_div(2 * sm_count(), n_kv * row_tiles);
  const int chunks_guess = std::max(1, std::min(want, max_chunks));
  const int chunk_len = ceil_div(ceil_div(ctx, chunks_guess), kTile) * kTile;
  const int n_chunks = ceil_div(ctx, chunk_len);

  const size_t partials = n_chunks > 1 ? static_cast<size_t>(n_chunks) * n * n_heads : 0;
  CLLM_CHECK(workspace_bytes >= partials * (head_dim + 2) * sizeof(float),
             "attention: workspace of " << workspace_bytes << " bytes < block_attention_workspace_bytes(" << n
                                        << ", " << n_heads << ", " << head_dim << ")");
  AttnParams p{};
  p.q = q;
  p.q_stride = q_stride;
  p.k_cache = k_cache;
  p.v_cache = v_cache;
  p.slot_stride = 0;
  p.out = out;
  set_partials(p, workspace, partials, head_dim);
  p.one = AttnBlockDesc{0, p0, n, 0, chunk_len, n_chunks, 0, 0};
  p.n_heads = n_heads;
  p.n_kv = n_kv;
  p.group = group;
  p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  launch(p, dim3(n_chunks, n_kv, row_tiles), head_dim, rpw, n_chunks > 1, n, stream);
}

size_t batched_attention_table_bytes(int max_rows, int max_blocks, int n_heads, int n_kv) {
  const int group = n_kv > 0 ? std::max(1, n_heads / n_kv) : 1;
  const size_t items = static_cast<size_t>(ceil_div(max_rows * group, kRows)) + max_blocks + kSplitItems;
  return align16(sizeof(AttnBlockDesc) * max_blocks) + align16(4 * items) + align16(4 * static_cast<size_t>(max_rows));
}

size_t attention_partials_bytes(size_t partials, int head_dim) {
  return partials * (static_cast<size_t>(head_dim) + 2) * sizeof(float);
}

void plan_batched_attention(const AttnBlock* blocks, int count, int n_heads, int n_kv, int head_dim,
                            size_t workspace_bytes, size_t table_bytes, int chunk_keys, BatchedAttentionPlan& plan) {
  CLLM_CHECK(chunk_keys >= 0 && chunk_keys % kTile == 0,
             "batched attention: chunk_keys " << chunk_keys << " is not a multiple of " << kTile);
  const bool fixed = chunk_keys > 0;
  if (fixed) workspace_bytes = table_bytes = SIZE_MAX;  // the caller sizes both after planning
  CLLM_CHECK(head_dim == 64 || head_dim == 128, "attention: head_dim " << head_dim << " not in {64, 128}");
  CLLM_CHECK(n_kv > 0 && n_heads % n_kv == 0, "attention: n_heads " << n_heads << " % n_kv " << n_kv << " != 0");
  CLLM_CHECK(count > 0 && count < (1 << (32 - kWorkBlockShift)),
             "batched attention: " << count << " blocks, expected 1.." << (1 << (32 - kWorkBlockShift)) - 1);
  static_assert((1 << (32 - kWorkBlockShift)) - 1 >= 1024, "a step of kMaxRows one-token blocks must fit");
  const int group = n_heads / n_kv;
  int max_n = 0, total_n = 0;
  for (int b = 0; b < count; ++b) max_n = std::max(max_n, blocks[b].n), total_n += blocks[b].n;
  // The chunk length is planned with the row tiles of rows_per_warp(max_n * group), as ever; the
  // launch may then cut the rows finer. Few query rows in all (one Jacobi block): 4-row CTAs, so
  // the GPU gets 4x the CTAs of a quarter of the work each; a step that small is latency-bound.
  // Rows per warp never change a row's bits, and the chunking stays what it was, so this changes
  // speed only.
  const int plan_cta_rows = kWarps * rows_per_warp(max_n * group);
  const int rpw = total_n * group <= kFewRows ? 1 : rows_per_warp(max_n * group), cta_rows = kWarps * rpw;
  int rows = 0, max_ctx = 0;
  double tile_keys = 0;  // sum over blocks of row tiles x context: the work to spread
  for (int b = 0; b < count; ++b) {
    const AttnBlock& k = blocks[b];
    CLLM_CHECK(k.n > 0 && k.pos >= 0 && k.q_row >= 0 && k.slot >= 0,
               "batched attention: block " << b << " has n " << k.n << ", pos " << k.pos << ", q_row " << k.q_row
                                           << ", slot " << k.slot);
    CLLM_CHECK(ceil_div(k.n * group, cta_rows) <= static_cast<int>(kWorkTileMask) + 1,
               "batched attention: block " << b << " of " << k.n << " queries x group " << group << " exceeds "
                                           << (kWorkTileMask + 1) * cta_rows << " rows");
    const int tiles = ceil_div(k.n * group, plan_cta_rows);
    rows = std::max(rows, k.q_row + k.n);
    max_ctx = std::max(max_ctx, k.pos + k.n);
    tile_keys += static_cast<double>(tiles) * (k.pos + k.n);
  }
  const int target = 2 * sm_count();
  const int full = round_up(max_ctx, kTile);  // one chunk per block
  int chunk_len = std::max(kTile, round_up(ceil_div(max_ctx, kMaxChunks), kTile));
  chunk_len = std::max(chunk_len, round_up(static_cast<int>(std::ceil(n_kv * tile_keys / target)), kTile));
  chunk_len = fixed ? chunk_keys : std::min(chunk_len, full);
  int items = 0;
  size_t partials = 0, bytes = 0;
  for (;;) {
    items = 0;
    partials = 0;
    for (int b = 0; b < count; ++b) {
      const int chunks = ceil_div(blocks[b].pos + blocks[b].n, chunk_len);
      items += ceil_div(blocks[b].n * group, cta_rows) * chunks;
      if (chunks > 1) partials += static_cast<size_t>(chunks) * blocks[b].n * n_heads;
    }
    bytes = align16(sizeof(AttnBlockDesc) * count) + align16(4 * static_cast<size_t>(items)) +
            align16(4 * static_cast<size_t>(rows));
    if (fixed || (attention_partials_bytes(partials, head_dim) <= workspace_bytes && bytes <= table_bytes)) break;
    CLLM_CHECK(chunk_len < full, "batched attention: the table of " << count << " blocks over " << rows
                                                                   << " rows needs " << bytes << " bytes, more than "
                                                                   << table_bytes);
    chunk_len = std::min(2 * chunk_len, full);
  }
  // Pad the work list to a power of two when the table has room: the grid then changes at
  // doublings of the work only (a context growing by one token rarely changes the launch).
  const int real_items = items;
  int padded = 1;
  while (padded < items) padded *= 2;
  const size_t padded_bytes = bytes + align16(4 * static_cast<size_t>(padded)) - align16(4 * static_cast<size_t>(items));
  if (fixed || padded_bytes <= table_bytes) {
    items = padded;
    bytes = padded_bytes;
  }

  plan.n_heads = n_heads;
  plan.n_kv = n_kv;
  plan.head_dim = head_dim;
  plan.count = count;
  plan.rows = rows;
  plan.items = items;
  plan.chunk_len = chunk_len;
  plan.rows_per_warp = rpw;
  plan.partials = partials;
  plan.combine = partials > 0;
  plan.work_offset = align16(sizeof(AttnBlockDesc) * count);
  plan.row_block_offset = plan.work_offset + align16(4 * static_cast<size_t>(items));
  plan.table.assign(bytes, 0);
  auto* descs = reinterpret_cast<AttnBlockDesc*>(plan.table.data());
  auto* work = reinterpret_cast<uint32_t*>(plan.table.data() + plan.work_offset);
  auto* row_block = reinterpret_cast<int32_t*>(plan.table.data() + plan.row_block_offset);
  std::fill(row_block, row_block + rows, -1);
  size_t part_base = 0;
  int item = 0;
  for (int b = 0; b < count; ++b) {
    const AttnBlock& k = blocks[b];
    const int chunks = ceil_div(k.pos + k.n, chunk_len), tiles = ceil_div(k.n * group, cta_rows);
    CLLM_CHECK(chunks <= static_cast<int>(kWorkChunkMask) + 1,
               "batched attention: block " << b << " needs " << chunks << " chunks of " << chunk_len << " keys, more than "
                                           << kWorkChunkMask + 1);
    descs[b] = AttnBlockDesc{k.q_row, k.pos, k.n, k.slot, chunk_len, chunks, static_cast<int32_t>(part_base), 0};
    if (chunks > 1) part_base += static_cast<size_t>(chunks) * k.n * n_heads;
    for (int c = 0; c < chunks; ++c)
      for (int t = 0; t < tiles; ++t)
        work[item++] = static_cast<uint32_t>(b) << kWorkBlockShift | static_cast<uint32_t>(c) << kWorkChunkShift |
                       static_cast<uint32_t>(t);
    for (int i = 0; i < k.n; ++i) {
      CLLM_CHECK(row_block[k.q_row + i] < 0, "batched attention: blocks " << row_block[k.q_row + i] << " and " << b
                                                                          << " share query row " << k.q_row + i);
      row_block[k.q_row + i] = b;
    }
  }
  CLLM_CHECK(item == real_items, "batched attention: planned " << real_items << " work items, wrote " << item);
  std::fill(work + item, work + items, kNoWork);
  CLLM_CHECK(part_base <= static_cast<size_t>(INT32_MAX), "batched attention: partial results overflow int32");
}

void invoke_batched_attention(const __nv_bfloat16* q, int q_stride, const __nv_bfloat16* k_cache,
                              const __nv_bfloat16* v_cache, size_t slot_stride, __nv_bfloat16* out,
                              void* workspace, size_t workspace_bytes, const BatchedAttentionPlan& plan,
                              const void* table_dev, int n_heads, int n_kv, int head_dim, cudaStream_t stream) {
  check_shape(q_stride, k_cache, v_cache, out, workspace, n_heads, n_kv, head_dim);
  CLLM_CHECK(plan.n_heads == n_heads && plan.n_kv == n_kv && plan.head_dim == head_dim,
             "batched attention: plan made for " << plan.n_heads << "/" << plan.n_kv << "/" << plan.head_dim
                                                 << " heads/kv/head_dim, launched with " << n_heads << "/" << n_kv
                                                 << "/" << head_dim);
  CLLM_CHECK(slot_stride % 8 == 0, "batched attention: slot_stride " << slot_stride << " not a multiple of 8");
  CLLM_CHECK(workspace_bytes >= plan.partials * (head_dim + 2) * sizeof(float),
             "batched attention: workspace of " << workspace_bytes << " bytes is smaller than the plan's "
                                                << plan.partials * (head_dim + 2) * sizeof(float));
  CLLM_CHECK(is_aligned(table_dev, 16), "batched attention: the device table must be 16-byte aligned");
  if (plan.items == 0) return;
  const char* table = static_cast<const char*>(table_dev);
  AttnParams p{};
  p.q = q;
  p.q_stride = q_stride;
  p.k_cache = k_cache;
  p.v_cache = v_cache;
  p.slot_stride = slot_stride;
  p.out = out;
  // Partial slots laid out for the whole workspace, not for this plan's count: the addresses are
  // launch parameters, and must not change with the context (see BatchedAttentionPlan::launch_shape).
  set_partials(p, workspace, workspace_bytes / ((head_dim + 2) * sizeof(float)), head_dim);
  p.blocks = reinterpret_cast<const AttnBlockDesc*>(table);
  p.work = reinterpret_cast<const uint32_t*>(table + plan.work_offset);
  p.row_block = reinterpret_cast<const int32_t*>(table + plan.row_block_offset);
  p.n_heads = n_heads;
  p.n_kv = n_kv;
  p.group = n_heads / n_kv;
  p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  launch(p, dim3(plan.items, n_kv, 1), head_dim, plan.rows_per_warp, plan.combine, plan.rows, stream);
}

}  // namespace cllm::cuda
