// Split-K ("flash-decoding") block attention on the tensor cores (mma.sync), fp32 accumulation.
//
// Work decomposition. For kv head H the query rows are the n * g pairs (query i, head of group),
// numbered row = i * g + head_in_group: the g query heads that share a KV head and the block's
// tokens fill one tile's rows together (GQA packing). The context [0, p0+n) is cut into n_chunks
// chunks of chunk_len keys (a multiple of kTile). CTA (chunk, H, row tile) takes kCtaRows query rows
// and one chunk: it streams the chunk through shared memory kTile keys at a time, and every one of
// its rows is scored against that tile, so the K/V bytes are read once for all g * n queries of the
// tile instead of once per query. Each warp owns 16 rows and keeps an online softmax per row
// (running max m, running sum l, unnormalised accumulator acc over head_dim). With one chunk the CTA
// writes the normalised output directly; otherwise it writes (m, l, acc) to the workspace and the
// combine kernel merges the chunks: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c.
//
// Masking: key t is visible to query i when t <= p0 + i and t lies in the CTA's chunk, and with a
// sliding window of w keys (Mistral's sliding_window) also t > p0 + i - w. Masked scores become -inf
// and weigh exactly 0; tile rows past the chunk are zero-filled in shared memory, never loaded, so
// cache rows >= p0+n may hold anything (even NaN). Key tiles of a chunk that lie wholly before the
// window of the CTA's first row are skipped: they would weigh 0 for every row of the CTA. Keys, not
// cache rows, are what all of this counts: a lookahead branch (AttnBlock::base, shift) differs from a
// plain block only in which cache row its keys past `base` are loaded from.
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
#include "kernels/cuda/launch.cuh"

namespace cllm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * detail::kWarp;
constexpr int kCtaRows = kWarps * 16;  // query rows per CTA: 16 per warp, the mma's M
constexpr int kTile = 64;                     // keys per shared-memory tile: lane owns keys lane, lane+32
constexpr int kMaxChunks = 32;                // bounds the workspace

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
  int window;   // keys a query sees, its own included; 0: every earlier key
  float scale;  // 1/sqrt(head_dim), folded into q
};

// 12 bits of block, 10 of chunk (1024 chunks: 131072 keys at 128-key chunks), 10 of row tile.
constexpr int kWorkBlockShift = 20, kWorkChunkShift = 10;
constexpr uint32_t kWorkChunkMask = 1023, kWorkTileMask = 1023;
// A work item that does nothing: plans pad their work lists with it so that the grid (a launch
// parameter) changes rarely while contexts grow, and a CUDA graph can be replayed as is. Never a
// real item: blocks are numbered below 4095, so a real item's top 12 bits are never all ones.
constexpr uint32_t kNoWork = 0xFFFFFFFFu;
static_assert(kMaxChunks <= kWorkChunkMask + 1);

// Four 8x8 bf16 matrices from shared memory; lane l gives the address of row l % 8 of matrix l / 8.
// .trans delivers each matrix transposed.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

// Shared memory of one CTA (bf16 elements): q [kCtaRows][HD + 8], then two stages of k and v
// [kTile][HD + 8] each. The 16-byte row padding puts the 8 rows an ldmatrix phase reads on
// distinct banks.
template <int HD>
constexpr size_t attention_smem_bytes() {
  return static_cast<size_t>(kCtaRows + 4 * kTile) * (HD + 8) * sizeof(__nv_bfloat16);
}

// One CTA: kCtaRows query rows (4 warps x 16) of one KV head against one chunk of its keys, on the
// tensor cores (FlashAttention-2's scheme: S = Q K^T and O += P V as mma.sync m16n8k16, the online
// softmax in registers, K/V tiles streamed through shared memory by cp.async, two stages).
// A query row's result depends only on its q, its position and its chunk's keys: every element of
// an mma output depends on its own row, and a key tile that a row cannot see changes none of its
// values (its weights are exactly 0 and the running max stays), so a row gets the same bits in a
// block of any size and among any other rows (the invariance the fixed-chunk plan relies on).
template <int HD>
__global__ void __launch_bounds__(kThreads) attention_partial_kernel(const AttnParams p) {
  constexpr int kPitch = HD + 8;          // elements per shared row
  constexpr int kVecs = HD / 8;           // 16-byte vectors per row
  constexpr int kDimTiles = HD / 8;       // n-tiles of the output
  constexpr int kKSteps = HD / 16;        // k-steps of Q K^T
  extern __shared__ __align__(16) __nv_bfloat16 smem[];
  __nv_bfloat16* q_s = smem;
  __nv_bfloat16* kv_s = smem + kCtaRows * kPitch;  // stage s: k at s * 2 kTile rows, v kTile rows after
  detail::start_after_prior_grids();  // q and this step's K/V rows come from the kernels before

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
  const int g = lane / 4, t = lane % 4;
  const int rows_total = b.n * p.group;
  const int row0 = tile * kCtaRows;
  const int c0 = chunk * b.chunk_len;
  const int c1 = min(c0 + b.chunk_len, b.pos + b.n);  // this chunk's keys: [c0, c1)
  // The first tile any row of this CTA can see (its first row has the lowest position); at least the
  // chunk's last tile, so every CTA runs the loop below once.
  int t_begin = c0;
  if (p.window > 0) {
    const int first_key = b.pos + row0 / p.group - p.window + 1;
    t_begin = c0 + min(max(first_key - c0, 0) / kTile, (c1 - 1 - c0) / kTile) * kTile;
  }
  const size_t cache_row_stride = static_cast<size_t>(p.n_kv) * HD;
  const __nv_bfloat16* k_cache = p.k_cache + b.slot * p.slot_stride + kvh * HD;
  const __nv_bfloat16* v_cache = p.v_cache + b.slot * p.slot_stride + kvh * HD;

  // Q rows (query i = row / group, head kvh * group + row % group); rows past the block are zeros.
  for (int e = threadIdx.x; e < kCtaRows * kVecs; e += kThreads) {
    const int r = e / kVecs, c = e % kVecs, row = row0 + r;
    const bool ok = row < rows_total;
    const int i = ok ? row / p.group : 0, h = kvh * p.group + (ok ? row % p.group : 0);
    detail::cp_async_16(q_s + r * kPitch + c * 8, p.q + static_cast<size_t>(b.q_row + i) * p.q_stride + h * HD + c * 8, ok);
  }
  // Keys [t0, t0 + kTile) of K and V into stage `st`; rows at or past c1 are zeros, never read.
  auto load_tile = [&](int t0, int st) {
    __nv_bfloat16* ks = kv_s + st * 2 * kTile * kPitch;
    __nv_bfloat16* vs = ks + kTile * kPitch;
    for (int e = threadIdx.x; e < kTile * kVecs; e += kThreads) {
      const int j = e / kVecs, c = e % kVecs, key = t0 + j;
      const bool ok = key < c1;
      const int cache_row = key < b.base ? key : key + b.shift;  // AttnBlock: a branch's own rows lie further on
      const size_t off = static_cast<size_t>(ok ? cache_row : 0) * cache_row_stride + c * 8;
      detail::cp_async_16(ks + j * kPitch + c * 8, k_cache + off, ok);
      detail::cp_async_16(vs + j * kPitch + c * 8, v_cache + off, ok);
    }
  };
  // Two tiles in flight from the start (one commit group each, q in the first): a CTA of a
  // fixed-length chunk has only two or three tiles, so waiting for each tile before asking for the
  // next would expose the memory latency once per tile.
  if (c0 < c1) load_tile(t_begin, 0);
  detail::cp_async_commit();
  if (t_begin + kTile < c1) load_tile(t_begin + kTile, 1);
  detail::cp_async_commit();

  // A warp whose 16 rows all lie past the block (at n = 1 on a model without GQA, 3 warps of 4)
  // only helps load the tiles: it skips the maths, which changes no other row's bits.
  const bool warp_has_rows = row0 + warp * 16 < rows_total;  // warp-uniform
  // This lane's rows: r_lo = warp * 16 + g and r_hi = r_lo + 8 of the CTA; the first and last key
  // each may see.
  int first_key[2], last_key[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + warp * 16 + g + 8 * h;
    last_key[h] = row < rows_total ? b.pos + row / p.group : -1;
    first_key[h] = p.window > 0 ? last_key[h] - p.window + 1 : 0;
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this lane's part of the row sum
  float o[kDimTiles][4];
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[d][e] = 0.f;
  uint32_t qf[kKSteps][4];  // A fragments of this warp's 16 q rows

  for (int t0 = t_begin, st = 0; t0 < c1; t0 += kTile, st ^= 1) {
    detail::cp_async_wait_all_but<1>();  // tile t0 (and, first pass, q) landed; tile t0 + kTile may not have
    __syncthreads();
    if (warp_has_rows) {
      if (t0 == t_begin)
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk)
          ldmatrix_x4(qf[kk], q_s + (warp * 16 + lane % 8 + 8 * ((lane / 8) % 2)) * kPitch + kk * 16 + 8 * (lane / 16));
      const __nv_bfloat16* ks = kv_s + st * 2 * kTile * kPitch;
      const __nv_bfloat16* vs = ks + kTile * kPitch;

      // S = Q K^T for 8 key tiles of 8: s[nt] holds keys t0 + 8 nt + 2t (+1) of rows g and g + 8.
      float s[kTile / 8][4];
#pragma unroll
      for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < kKSteps; kk += 2) {
          uint32_t kf[4];  // b0, b1 of k-step kk, then of kk + 1
          ldmatrix_x4(kf, ks + (nt * 8 + lane % 8) * kPitch + kk * 16 + 8 * (lane / 8));
          detail::mma_bf16(s[nt], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], kf[0], kf[1]);
          detail::mma_bf16(s[nt], qf[kk + 1][0], qf[kk + 1][1], qf[kk + 1][2], qf[kk + 1][3], kf[2], kf[3]);
        }
      }
      // Online softmax per row (its 64 keys are spread over the 4 lanes of a quad).
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int visible_end = min(last_key[h], c1 - 1);
        float tile_max = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = t0 + nt * 8 + 2 * t + e;
            float& v = s[nt][2 * h + e];
            v = key <= visible_end && key >= first_key[h] ? v * p.scale : -INFINITY;
            tile_max = fmaxf(tile_max, v);
          }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float m_new = fmaxf(m[h], tile_max);
        const float alpha = m_new == -INFINITY ? 1.f : __expf(m[h] - m_new);  // 0 when m was -inf
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& v = s[nt][2 * h + e];
            v = m_new == -INFINITY ? 0.f : __expf(v - m_new);
            sum += v;
          }
        m[h] = m_new;
        l[h] = l[h] * alpha + sum;
#pragma unroll
        for (int d = 0; d < kDimTiles; ++d) {
          o[d][2 * h] *= alpha;
          o[d][2 * h + 1] *= alpha;
        }
      }
      // O += P V, P in bf16 as the A operand (keys 16 j .. 16 j + 15 from score tiles 2j, 2j + 1).
#pragma unroll
      for (int j = 0; j < kTile / 16; ++j) {
        const uint32_t a0 = pack_bf16x2(s[2 * j][0], s[2 * j][1]), a1 = pack_bf16x2(s[2 * j][2], s[2 * j][3]);
        const uint32_t a2 = pack_bf16x2(s[2 * j + 1][0], s[2 * j + 1][1]);
        const uint32_t a3 = pack_bf16x2(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
        for (int d = 0; d < kDimTiles; d += 2) {
          uint32_t vf[4];  // b0, b1 of dim tile d, then of d + 1
          ldmatrix_x4_trans(vf, vs + (j * 16 + lane % 8 + 8 * ((lane / 8) % 2)) * kPitch + d * 8 + 8 * (lane / 16));
          detail::mma_bf16(o[d], a0, a1, a2, a3, vf[0], vf[1]);
          detail::mma_bf16(o[d + 1], a0, a1, a2, a3, vf[2], vf[3]);
        }
      }
    }  // warp_has_rows
    __syncthreads();  // every warp is done with stage st: the tile two ahead may go there
    if (t0 + 2 * kTile < c1) load_tile(t0 + 2 * kTile, st);
    detail::cp_async_commit();
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l_row = l[h] + __shfl_xor_sync(0xffffffffu, l[h], 1);
    l_row += __shfl_xor_sync(0xffffffffu, l_row, 2);
    const int row = row0 + warp * 16 + g + 8 * h;
    if (row >= rows_total) continue;
    const int i = row / p.group, head = kvh * p.group + row % p.group;
    if (b.n_chunks == 1) {  // the row's own key is visible to it, so l_row > 0
      // o / l, divided as the combine kernel divides: a row gets the same bits whether its block
      // has one chunk or more (chunks past its position weigh exactly 0).
      __nv_bfloat16* out = p.out + (static_cast<size_t>(b.q_row + i) * p.n_heads + head) * HD;
#pragma unroll
      for (int d = 0; d < kDimTiles; ++d)
        *reinterpret_cast<__nv_bfloat162*>(out + d * 8 + 2 * t) =
            __floats2bfloat162_rn(o[d][2 * h] / l_row, o[d][2 * h + 1] / l_row);
    } else {
      const size_t slot = b.part_base + (static_cast<size_t>(chunk) * b.n + i) * p.n_heads + head;
      float* acc = p.part_acc + slot * HD;
#pragma unroll
      for (int d = 0; d < kDimTiles; ++d)
        *reinterpret_cast<float2*>(acc + d * 8 + 2 * t) = make_float2(o[d][2 * h], o[d][2 * h + 1]);
      if (t == 0) {
        p.part_m[slot] = m[h];
        p.part_l[slot] = l_row;
      }
    }
  }
}

// One block per (query row, head), one thread per dimension: merge the chunks' partial softmaxes.
__global__ void attention_combine_kernel(const AttnParams p, int head_dim) {
  detail::start_after_prior_grids();
  const int row = blockIdx.x / p.n_heads, h = blockIdx.x % p.n_heads;
  const int blk = p.work == nullptr ? 0 : p.row_block[row];
  if (blk < 0) return;  // a row no block covers
  const AttnBlockDesc b = p.work == nullptr ? p.one : p.blocks[blk];
  if (b.n_chunks == 1) return;  // written by the partial kernel
  const int d = threadIdx.x;
  const size_t stride = static_cast<size_t>(b.n) * p.n_heads;  // between chunks
  const size_t r = b.part_base + static_cast<size_t>(row - b.q_row) * p.n_heads + h;
  // kBatch chunks' values are loaded before any is used, so a context of C chunks costs about
  // 2 C / kBatch dependent trips to L2 instead of 2 C. The sums still run over c = 0, 1, ... in
  // order, and the maximum is exact in any order: the same bits as one chunk at a time.
  constexpr int kBatch = 8;
  float m_max = -INFINITY;
  for (int c0 = 0; c0 < b.n_chunks; c0 += kBatch) {
    float mv[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) mv[j] = c0 + j < b.n_chunks ? p.part_m[(c0 + j) * stride + r] : -INFINITY;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) m_max = fmaxf(m_max, mv[j]);
  }
  float num = 0.f, den = 0.f;
  for (int c0 = 0; c0 < b.n_chunks; c0 += kBatch) {
    float mv[kBatch], lv[kBatch], av[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const bool ok = c0 + j < b.n_chunks;
      const size_t at = (c0 + j) * stride + r;
      mv[j] = ok ? p.part_m[at] : 0.f;
      lv[j] = ok ? p.part_l[at] : 0.f;
      av[j] = ok ? p.part_acc[at * head_dim + d] : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (c0 + j >= b.n_chunks) break;
      const float w = __expf(mv[j] - m_max);  // 0 for chunks the row cannot see
      den += w * lv[j];
      num += w * av[j];
    }
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

template <int HD>
void launch_partial(const AttnParams& p, dim3 grid, cudaStream_t stream) {
  constexpr size_t kSmem = attention_smem_bytes<HD>();
  static const cudaError_t attr =  // once per head size, before any launch (and any graph capture)
      cudaFuncSetAttribute(attention_partial_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  CLLM_CUDA_CHECK(attr);
  launch_overlapped(attention_partial_kernel<HD>, grid, kThreads, kSmem, stream, p);
}

void launch(const AttnParams& p, dim3 grid, int head_dim, bool combine, int combine_rows, cudaStream_t stream) {
  if (head_dim == 64)
    launch_partial<64>(p, grid, stream);
  else
    launch_partial<128>(p, grid, stream);
  if (combine) launch_overlapped(attention_combine_kernel, combine_rows * p.n_heads, head_dim, 0, stream, p, head_dim);
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
                            cudaStream_t stream, int window) {
  check_shape(q_stride, k_cache, v_cache, out, workspace, n_heads, n_kv, head_dim);
  CLLM_CHECK(n >= 0 && p0 >= 0 && window >= 0, "attention: bad n " << n << " / p0 " << p0 << " / window " << window);
  if (n == 0) return;

  const int group = n_heads / n_kv;
  const int ctx = p0 + n;
  const int row_tiles = ceil_div(n * group, kCtaRows);
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
  p.one = AttnBlockDesc{0, p0, n, 0, chunk_len, n_chunks, 0, 0, 0, {0, 0, 0}};
  p.n_heads = n_heads;
  p.n_kv = n_kv;
  p.group = group;
  p.window = window;
  p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  launch(p, dim3(n_chunks, n_kv, row_tiles), head_dim, n_chunks > 1, n, stream);
}

size_t batched_attention_table_bytes(int max_rows, int max_blocks, int n_heads, int n_kv) {
  const int group = n_kv > 0 ? std::max(1, n_heads / n_kv) : 1;
  const size_t items = static_cast<size_t>(ceil_div(max_rows * group, kCtaRows)) + max_blocks + kSplitItems;
  return align16(sizeof(AttnBlockDesc) * max_blocks) + align16(4 * items) + align16(4 * static_cast<size_t>(max_rows));
}

size_t attention_partials_bytes(size_t partials, int head_dim) {
  return partials * (static_cast<size_t>(head_dim) + 2) * sizeof(float);
}

void plan_batched_attention(const AttnBlock* blocks, int count, int n_heads, int n_kv, int head_dim,
                            size_t workspace_bytes, size_t table_bytes, int chunk_keys, BatchedAttentionPlan& plan,
                            int window) {
  CLLM_CHECK(window >= 0, "batched attention: window " << window << " is negative");
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
  const int cta_rows = kCtaRows;
  int rows = 0, max_ctx = 0;
  double tile_keys = 0;  // sum over blocks of row tiles x context: the work to spread
  for (int b = 0; b < count; ++b) {
    const AttnBlock& k = blocks[b];
    CLLM_CHECK(k.n > 0 && k.pos >= 0 && k.q_row >= 0 && k.slot >= 0,
               "batched attention: block " << b << " has n " << k.n << ", pos " << k.pos << ", q_row " << k.q_row
                                           << ", slot " << k.slot);
    CLLM_CHECK(k.shift == 0 || (k.base >= 0 && k.base <= k.pos && k.shift > 0),
               "batched attention: block " << b << " at position " << k.pos << " has base " << k.base << " and shift "
                                           << k.shift << " (need 0 <= base <= pos and shift >= 0)");
    CLLM_CHECK(ceil_div(k.n * group, cta_rows) <= static_cast<int>(kWorkTileMask) + 1,
               "batched attention: block " << b << " of " << k.n << " queries x group " << group << " exceeds "
                                           << (kWorkTileMask + 1) * cta_rows << " rows");
    const int tiles = ceil_div(k.n * group, cta_rows);
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
  plan.window = window;
  plan.count = count;
  plan.rows = rows;
  plan.items = items;
  plan.chunk_len = chunk_len;
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
    descs[b] = AttnBlockDesc{k.q_row, k.pos,      k.n,   k.slot,   chunk_len, chunks, static_cast<int32_t>(part_base),
                             k.shift ? k.base : 0, k.shift, {0, 0, 0}};
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
  p.window = plan.window;
  p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  launch(p, dim3(plan.items, n_kv, 1), head_dim, plan.combine, plan.rows, stream);
}

}  // namespace cllm::cuda
