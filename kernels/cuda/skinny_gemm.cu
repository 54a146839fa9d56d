// Batch-invariant bf16 GEMM y[M, N] = x[M, K] . W[N, K]^T for any M, built for few rows (decoding,
// Jacobi blocks: one pass over W at HBM speed) and correct, deterministic and bit-stable for many.
//
// The reduction order (what makes a row's bits independent of M). K is cut into 32-wide chunks, the
// chunks into groups of 4 (128 elements), and group j belongs to K class j % 8. Every output element
// is  ((((0 + p0) + p1) + ...) + p7)  where p_c is class c's partial: its chunks in increasing order,
// each as two mma k-steps (below), accumulated from 0 in fp32. Nothing in that depends on M or on the
// tile shape, so every variant below (and every M tile of a launch) gives a row the same bits as a
// one-row launch: a token's logits do not depend on how many tokens share its forward.
//
// Bytes: at M <= 32 the weights are everything (a 4096 x 4096 W is 32 MiB, x at M = 16 is 128 KiB), so
// the kernel is built to stream W once with as many 16-byte loads in flight as the SMs can hold:
//  - CTA = 8 warps = 16*RT rows of W (RT "row tiles" of 16) x 8*NT tokens over the whole K; warp w
//    computes K class w (so the CTA reads 8 groups = 2 KiB contiguous of each of its rows per step),
//    UL chunks of its group per load round. The warps' partials are added in shared memory in class
//    order at the end: deterministic, no workspace, no atomics.
//  - N/(16*RT) x M/(8*NT) CTAs, the M tiles of one W tile adjacent in launch order (blockIdx.x), so a
//    W tile read from HBM by the first is an L2 hit for the others. At M <= 16 all CTAs of an
//    N = 4096 projection are co-resident; the wide ones (qkv, gate|up, LM head) take several waves.
//  - Load rounds: a warp's loads of one round (UL chunks) go out together. Registers (stages 0): the
//    warp waits for the round, multiplies it, then issues the next, so the memory pipe idles at each
//    round's end. The ring (stages S): each lane copies its vectors (cp.async) into its own slots of
//    an S-deep ring in shared memory and reads them back S - 1 rounds later, so S - 1 rounds stay
//    in flight all along, without the registers; the first S - 1 rounds of W go out while the kernel
//    before is still finishing. Only where the bytes wait moves; the sums are the same.
//  - W is read with ld.global.nc.L1::no_allocate.L2::256B (streamed past L1, whole 256-byte L2
//    lines requested); x, the small operand every CTA re-reads, with plain ld.global.nc so it stays
//    in L1/L2. Every load is a predicated 16-byte vector; rows >= N, tokens >= M and K past the end
//    (K % 8 == 0) read as zeros and issue no memory request.
//  - Products run on the tensor cores: mma.sync m16n8k16 (bf16 in, fp32 accumulate) with the 16 W rows
//    of a row tile as the A operand and 8 tokens as B. fp32 FMAs on CUDA cores would need M FMAs per
//    weight, as many as HBM delivers weights at M = 16; the tensor cores make the maths free.
//
// Fragment trick. In m16n8k16 lane (g = lane/4, t = lane%4) holds A row g and g+8 at k = 2t, 2t+1 and
// 2t+8, 2t+9, and B (token g) at the same four k. A dot product does not care about the order of k,
// so a 32-wide chunk is mapped onto two mma k-steps s = 0, 1 by
//   virtual k (2t + e) <-> actual 8t + 4s + e,   virtual k (2t + 8 + e) <-> actual 8t + 4s + 2 + e.
// Then lane t needs, for both steps, exactly the 8 contiguous elements [8t, 8t + 8) of its W rows and
// of its token's x row: one 16-byte load each, words 2s and 2s+1 of it feeding step s. No shuffles,
// no shared-memory staging.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/rms_sum.cuh"
#include "kernels/cuda/rope_rotate.cuh"
#include "kernels/cuda/skinny_gemm.cuh"

#include <atomic>
#include <type_traits>

namespace cllm::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * detail::kWarp;
constexpr int kChunk = 32;  // K elements per chunk: 4 lanes x 8

// 16 bytes from global memory, or zeros (and no request) when !pred. W is read once: skip L1 and ask
// L2 for the whole 256-byte line; x is re-read by every CTA: let it stay in L1.
__device__ __forceinline__ void load_w(uint32_t (&v)[4], const void* p, bool pred) {
  asm(
      "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %5, 0;\n\t"
      "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
      "@p ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
      : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
      : "l"(p), "r"(static_cast<int>(pred)));
}

__device__ __forceinline__ void load_x(uint32_t (&v)[4], const void* p, bool pred) {
  asm(
      "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %5, 0;\n\t"
      "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
      "@p ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
      : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
      : "l"(p), "r"(static_cast<int>(pred)));
}

// The normalised input (SkinnyInput::residual): 8 elements bf16((r * inv_rms) * gamma) from two raw
// 16-byte vectors of the fp32 residual and one of gamma, as invoke_add_rmsnorm writes them. Called only
// after every load of the round is issued: converting as each x vector lands would stall the warp
// on it before the round's later W loads go out.
__device__ __forceinline__ void norm_x(uint32_t (&v)[4], const uint32_t (&lo)[4], const uint32_t (&hi)[4],
                                       const uint32_t (&gamma)[4], float inv_rms) {
  detail::Bf16x8 gb;
  memcpy(&gb, gamma, sizeof gb);
  float gf[8], a[8];
  detail::bf16x8_to_float(gb, gf);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    a[e] = __uint_as_float(lo[e]) * inv_rms * gf[e];
    a[e + 4] = __uint_as_float(hi[e]) * inv_rms * gf[e + 4];
  }
  const detail::Bf16x8 ab = detail::float_to_bf16x8(a);
  memcpy(v, &ab, sizeof ab);
}

// The qkv epilogue (SkinnyOutput::rope) for output (tok, row) of value x, partner the value of its
// rotation partner, first: row is the pair's first element. As invoke_rope_kv_write: q rows rotated
// into y, k rows rotated into k_cache, v rows copied into v_cache, at the token's cache row.
__device__ __forceinline__ void rope_epilogue(const SkinnyRopeKv& r, __nv_bfloat16* y, int N, int row, int tok, float x,
                                              float partner, bool first) {
  const int pos = r.positions[tok];
  const size_t cache_row = static_cast<size_t>(r.cache_rows != nullptr ? r.cache_rows[tok] : pos) * r.kv_width;
  const int rotated = r.q_width + r.kv_width;
  float value = x;
  if (row < rotated) {
    const int d = row % r.head_dim - (first ? 0 : r.head_dim / 2);
    value = detail::rope_rotated(x, partner, detail::rope_angle(static_cast<float>(pos), r.inv_freq[d]), first);
  }
  const __nv_bfloat16 out = __float2bfloat16_rn(value);
  if (row < r.q_width)
    y[static_cast<size_t>(tok) * N + row] = out;
  else if (row < rotated)
    r.k_cache[cache_row + (row - r.q_width)] = out;
  else
    r.v_cache[cache_row + (row - rotated)] = out;
}

// How the register-tiled kernel gets x (SkinnyInput): bf16 rows, gate | up rows, or the fp32 residual
// normalised on the fly.
enum class XIn { kBf16, kNormed };

// Everything one launch reads and writes besides W (SkinnyInput and SkinnyOutput, flattened).
struct SkinnyIo {
  const void* x;            // kBf16: bf16 [M, K]; kNormed: fp32 residual [M, K]
  const __nv_bfloat16* gamma;  // kNormed: [K]
  const float* parts_in;    // kNormed: [M, rms_segments(K)]
  float eps;
  __nv_bfloat16* y;         // bf16 [M, N], or null: add into res_out
  float* res_out;           // fp32 [M, N]
  float* parts_out;         // [M, rms_segments(N)]
  SkinnyRopeKv rope;        // head_dim > 0: the qkv epilogue (SkinnyOutput::rope)
  bool swiglu;              // the gate|up epilogue (SkinnyOutput::swiglu): y is [M, N / 2]
};

// W row of row `i` (0..15) of 16-row tile `tile`. Plain: tile * 16 + i. Under the RoPE epilogue, a
// tile of the q and k rows holds 8 rotation pairs instead: rows d and d + head_dim / 2 of one head
// as tile rows i and i + 8, which the mma puts in one lane (A rows g and g + 8), and the reduction
// below in threads t and t ^ 2. Under the SwiGLU epilogue (io.swiglu, N = 2F) likewise gate row
// 8 tile + i and up row F + 8 tile + i. Only which CTA computes an output moves, never how.
__device__ __forceinline__ int tile_row(int tile, int i, const SkinnyIo& io, int N) {
  const SkinnyRopeKv& rope = io.rope;
  if (io.swiglu) return tile * 16 >= N ? N : (i < 8 ? 0 : N / 2) + tile * 8 + i % 8;  // N: past the last tile
  const int base = tile * 16;
  if (rope.head_dim == 0 || base >= rope.q_width + rope.kv_width) return base + i;
  const int head0 = base / rope.head_dim * rope.head_dim, pair0 = (base - head0) / 2;
  return head0 + pair0 + (i < 8 ? i : rope.head_dim / 2 + i - 8);
}

// Asks L2 for the 16 bytes at p (a weight the kernel will read), without waiting for them.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

constexpr int kGroup = 4;  // chunks per group: a K class owns whole groups (see the top)
constexpr int kTiledMinM = kSkinnyFusedMaxM + 1;  // rows from which tiled_gemm_kernel (below) takes over

// 16 bytes global -> this lane's slot of the shared-memory ring (the pipelined form below), or zeros
// and no request when !pred: W streamed past L1 with whole 256-byte L2 lines requested, x cached in
// L1 (every CTA on the SM re-reads it), as load_w and load_x. A copy that is off names `base` (the
// operand's first element) instead of p, which may lie past the operand: nothing is read, and no
// L2 line past the operand is asked for either.
__device__ __forceinline__ void copy_w(uint4* slot, const void* p, const void* base, bool pred) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(pred ? p : base),
               "r"(pred ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void copy_x(uint4* slot, const void* p, const void* base, bool pred) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(pred ? p : base), "r"(pred ? 16 : 0)
               : "memory");
}

__device__ __forceinline__ void read_slot(uint32_t (&v)[4], const uint4* slot) {
  const uint4 s = *slot;
  v[0] = s.x, v[1] = s.y, v[2] = s.z, v[3] = s.w;
}

// One load round of a lane: UL chunks of its RT row tiles' W rows (a) and of its NT token tiles' x
// (b; NORMED: b and more hold the two fp32 halves of 8 residual elements, gamma their weights), and
// the products of the round, which both load forms share.
template <int NT, int RT, int UL, bool NORMED>
struct Round {
  // 16-byte vectors of one chunk: W rows, then gamma (NORMED), then per token tile b (and more).
  static constexpr int kVecs = 2 * RT + (NORMED ? 1 + 2 * NT : NT);
  __host__ __device__ static constexpr int a_at(int u, int rt, int h) { return u * kVecs + 2 * rt + h; }
  __host__ __device__ static constexpr int gamma_at(int u) { return u * kVecs + 2 * RT; }
  __host__ __device__ static constexpr int b_at(int u, int nt) { return u * kVecs + 2 * RT + (NORMED ? 1 + 2 * nt : nt); }

  uint32_t a[UL][RT][2][4], b[UL][NT][4], more[NORMED ? UL : 1][NORMED ? NT : 1][4];
  uint32_t gamma[NORMED ? UL : 1][4];

  // Normalise x (NORMED), then two mma k-steps per chunk (the fragment trick at the top).
  __device__ __forceinline__ void multiply(float (&acc)[RT][NT][4], const float (&inv_rms)[NT]) {
#pragma unroll
    for (int u = 0; u < UL; ++u)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if constexpr (NORMED) norm_x(b[u][nt], b[u][nt], more[u][nt], gamma[u], inv_rms[nt]);
      }
#pragma unroll
    for (int u = 0; u < UL; ++u)
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int rt = 0; rt < RT; ++rt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
            detail::mma_bf16(acc[rt][nt], a[u][rt][0][2 * s], a[u][rt][1][2 * s], a[u][rt][0][2 * s + 1],
                             a[u][rt][1][2 * s + 1], b[u][nt][2 * s], b[u][nt][2 * s + 1]);
  }
};

// Dynamic shared memory of the pipelined form: STAGES rounds of every lane's vectors.
template <int NT, int RT, int UL, int STAGES, XIn IN>
constexpr size_t ring_bytes() {
  return size_t{STAGES} * UL * Round<NT, RT, UL, IN == XIn::kNormed>::kVecs * kThreads * sizeof(uint4);
}

// NT: 8-token tiles per CTA; RT: 16-row tiles of W per CTA; UL: chunks per load round (divides
// kGroup; it sets the bytes in flight, never the order of the sums); MIN_CTAS: for __launch_bounds__.
// STAGES: 0, each round loaded into registers and waited for before the next is issued; S >= 2, the
// rounds copied (cp.async) into an S-deep ring in shared memory, S - 1 of them in flight while one
// is multiplied. Each lane copies and reads back only its own slots, so the ring needs no barrier.
// IN: how x is read (XIn). The output goes to io.y, or is added into io.res_out (io.y null).
template <int NT, int RT, int UL, int MIN_CTAS, int STAGES, XIn IN>
__global__ void __launch_bounds__(kThreads, MIN_CTAS)
    skinny_gemm_kernel(const SkinnyIo io, const __nv_bfloat16* __restrict__ w, int M, int N, int K) {
  static_assert(kGroup % UL == 0);
  static_assert(STAGES == 0 || STAGES >= 2);
  constexpr bool NORMED = IN == XIn::kNormed;
  using XElem = std::conditional_t<NORMED, float, __nv_bfloat16>;
  using RoundT = Round<NT, RT, UL, NORMED>;
  const int warp = threadIdx.x / detail::kWarp, lane = threadIdx.x % detail::kWarp;
  const int g = lane / 4, t = lane % 4;
  const int tok0 = blockIdx.x * (8 * NT);  // M tiles vary fastest: CTAs sharing a W tile run together
  const int row0 = blockIdx.y * (16 * RT);
  const int n_groups = (K + kChunk * kGroup - 1) / (kChunk * kGroup);

  // This lane's W rows (row tile rt, half h: tile row g + 8 h, tile_row() below) and x rows (token
  // 8 nt + g), as element offsets from the CTA's base pointers, which sit at element 8t of row0 and
  // token tok0; invalid rows are never loaded.
  const __nv_bfloat16* w_base = w + static_cast<size_t>(row0) * K + t * 8;  // offsets below: rows from row0
  const int x_stride = K;  // elements between x rows
  const XElem* x_base = static_cast<const XElem*>(io.x) + static_cast<size_t>(tok0) * x_stride + t * 8;
  int w_off[RT][2], x_off[NT];
  bool w_ok[RT][2], x_ok[NT];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = tile_row(blockIdx.y * RT + rt, g + 8 * h, io, N);  // within [row0 - head_dim, N)
      w_ok[rt][h] = row < N;
      w_off[rt][h] = (row - row0) * K;
    }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int tok = nt * 8 + g;
    x_ok[nt] = tok0 + tok < M;
    x_off[nt] = tok * x_stride;
  }

  // Warp w = K class w: groups w, w + 8, w + 16, ..., each chunk of a group in order, kGroup / UL
  // load rounds a group. K offset of chunk u of this warp's round r:
  constexpr int kRoundsPerGroup = kGroup / UL;
  const int rounds = (warp < n_groups ? (n_groups - 1 - warp) / kWarps + 1 : 0) * kRoundsPerGroup;
  auto chunk_k = [&](int r, int u) {
    return ((warp + kWarps * (r / kRoundsPerGroup)) * kGroup + (r % kRoundsPerGroup) * UL + u) * kChunk;
  };
  // The ring (STAGES > 0): round r's vector v in slot [r % STAGES][v][thread].
  extern __shared__ uint4 ring[];
  auto slot = [&](int r, int v) {
    return ring + ((r % (STAGES > 0 ? STAGES : 1)) * (UL * RoundT::kVecs) + v) * kThreads + threadIdx.x;
  };
  auto copy_round_w = [&](int r) {
    if (r >= rounds) return;
#pragma unroll
    for (int u = 0; u < UL; ++u) {
      const int k = chunk_k(r, u);
      const bool k_ok = k + t * 8 < K;  // K % 8 == 0: a vector lies wholly inside or outside
#pragma unroll
      for (int rt = 0; rt < RT; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          copy_w(slot(r, RoundT::a_at(u, rt, h)), w_base + (w_off[rt][h] + k), w, k_ok && w_ok[rt][h]);
    }
  };
  auto copy_round_x = [&](int r) {
    if (r >= rounds) return;
#pragma unroll
    for (int u = 0; u < UL; ++u) {
      const int k = chunk_k(r, u);
      const bool k_ok = k + t * 8 < K;
      if constexpr (NORMED) copy_x(slot(r, RoundT::gamma_at(u)), io.gamma + (t * 8 + k), io.gamma, k_ok);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        copy_x(slot(r, RoundT::b_at(u, nt)), x_base + (x_off[nt] + k), io.x, k_ok && x_ok[nt]);
        if constexpr (NORMED)
          copy_x(slot(r, RoundT::b_at(u, nt) + 1), x_base + (x_off[nt] + k + 4), io.x, k_ok && x_ok[nt]);
      }
    }
  };

  // W does not depend on the kernels before this one (kernels/cuda/launch.cuh): while they finish,
  // ask for this warp's first rounds of W (the ring: copied in, one commit group a round; registers:
  // its first group of each row into L2). x is read only after the wait.
  detail::allow_dependents();
  if constexpr (STAGES > 0) {
    for (int r = 0; r < STAGES - 1; ++r) {
      copy_round_w(r);
      detail::cp_async_commit();
    }
  } else if (warp < n_groups) {
#pragma unroll
    for (int c = 0; c < kGroup; ++c) {
      const int k = (warp * kGroup + c) * kChunk;
#pragma unroll
      for (int rt = 0; rt < RT; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (k + t * 8 < K && w_ok[rt][h]) prefetch_l2(w_base + (w_off[rt][h] + k));
    }
  }
  detail::wait_prior_grids();
  if constexpr (STAGES > 0) {
    for (int r = 0; r < STAGES - 1; ++r) {
      copy_round_x(r);
      detail::cp_async_commit();
    }
  }

  // NORMED: each token's inverse rms from the partials of the kernel before (rms_sum.cuh).
  float inv_rms[NT];
  if constexpr (NORMED) {
    __shared__ float inv_s[8 * NT];
    for (int j = warp; j < 8 * NT; j += kWarps) {
      const float inv = tok0 + j < M ? detail::rms_inv_from_partials(
                                           io.parts_in + static_cast<size_t>(tok0 + j) * rms_segments(K), K, io.eps)
                                     : 0.f;
      if (lane == 0) inv_s[j] = inv;
    }
    __syncthreads();
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) inv_rms[nt] = inv_s[nt * 8 + g];
  }

  float acc[RT][NT][4];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[rt][nt][e] = 0.f;

  if constexpr (STAGES > 0) {
    for (int r = 0; r < rounds; ++r) {
      // At most STAGES - 2 groups may still be in flight: those of rounds after r (for r < STAGES - 1
      // the x groups of the first rounds, issued after every W group of them), so round r's W and x
      // have landed. Round r + STAGES - 1 then goes into the slots round r - 1 left: this thread
      // read them into registers and multiplied them last iteration, before these copies issue.
      detail::cp_async_wait_all_but<STAGES - 2>();
      copy_round_w(r + STAGES - 1);
      copy_round_x(r + STAGES - 1);
      detail::cp_async_commit();
      RoundT q;
#pragma unroll
      for (int u = 0; u < UL; ++u) {
#pragma unroll
        for (int rt = 0; rt < RT; ++rt)
#pragma unroll
          for (int h = 0; h < 2; ++h) read_slot(q.a[u][rt][h], slot(r, RoundT::a_at(u, rt, h)));
        if constexpr (NORMED) read_slot(q.gamma[u], slot(r, RoundT::gamma_at(u)));
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          read_slot(q.b[u][nt], slot(r, RoundT::b_at(u, nt)));
          if constexpr (NORMED) read_slot(q.more[u][nt], slot(r, RoundT::b_at(u, nt) + 1));
        }
      }
      q.multiply(acc, inv_rms);
    }
  } else {
    for (int grp = warp; grp < n_groups; grp += kWarps) {
#pragma unroll
      for (int c_in = 0; c_in < kGroup; c_in += UL) {
        // All of this round's loads first (UL * (2 RT + NT) 16-byte vectors in flight), then the maths.
        RoundT q;
#pragma unroll
        for (int u = 0; u < UL; ++u) {
          const int k = (grp * kGroup + c_in + u) * kChunk;
          const bool k_ok = k + t * 8 < K;
#pragma unroll
          for (int rt = 0; rt < RT; ++rt)
#pragma unroll
            for (int h = 0; h < 2; ++h) load_w(q.a[u][rt][h], w_base + (w_off[rt][h] + k), k_ok && w_ok[rt][h]);
          if constexpr (NORMED) load_x(q.gamma[u], io.gamma + (t * 8 + k), k_ok);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            load_x(q.b[u][nt], x_base + (x_off[nt] + k), k_ok && x_ok[nt]);
            if constexpr (NORMED) load_x(q.more[u][nt], x_base + (x_off[nt] + k + 4), k_ok && x_ok[nt]);
          }
        }
        q.multiply(acc, inv_rms);
      }
    }
  }

  // Sum the 8 classes' partials in class order. Accumulator e of lane (g, t) in tile (rt, nt) is
  // W row 16 rt + g + 8 (e / 2), token 8 nt + 2t + (e % 2).
  // Adding into the residual (io.y null): the new residual values of the tile (token, row) go to
  // shared memory too, and one thread per token writes the partial of its 16-row segment.
  __shared__ float4 red[kWarps][detail::kWarp];
  __shared__ float new_res[8][16];
  const bool to_residual = io.y == nullptr;  // block-uniform
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if (tok0 + nt * 8 >= M) continue;  // block-uniform
      red[warp][lane] = make_float4(acc[rt][nt][0], acc[rt][nt][1], acc[rt][nt][2], acc[rt][nt][3]);
      __syncthreads();
      if (threadIdx.x < detail::kWarp * 4) {
        const int l = threadIdx.x / 4, e = threadIdx.x % 4;
        float sum = 0.f;
#pragma unroll
        for (int v = 0; v < kWarps; ++v) sum += reinterpret_cast<const float*>(&red[v][l])[e];
        const int row_in = l / 4 + 8 * (e / 2), tok_in = 2 * (l % 4) + e % 2;
        const int row = tile_row(blockIdx.y * RT + rt, row_in, io, N), tok = tok0 + nt * 8 + tok_in;
        const __nv_bfloat16 out = __float2bfloat16_rn(sum);
        if (io.rope.head_dim > 0) {  // block-uniform; all 128 threads take the shuffle
          const float x = __bfloat162float(out), partner = __shfl_xor_sync(0xffffffffu, x, 2);
          if (row < N && tok < M) rope_epilogue(io.rope, io.y, N, row, tok, x, partner, e / 2 == 0);
        } else if (io.swiglu) {  // block-uniform; the gate thread (e < 2) takes its up value from e + 2
          const float x = __bfloat162float(out), up = __shfl_xor_sync(0xffffffffu, x, 2);
          if (e / 2 == 0 && row < N && tok < M)
            io.y[static_cast<size_t>(tok) * (N / 2) + row] = __float2bfloat16_rn(detail::silu_times(x, up));
        } else if (row < N && tok < M) {
          const size_t at = static_cast<size_t>(tok) * N + row;
          if (to_residual) {
            const float r = io.res_out[at] + __bfloat162float(out);  // as invoke_add_rmsnorm adds it
            io.res_out[at] = r;
            new_res[tok_in][row_in] = r;
          } else {
            io.y[at] = out;
          }
        }
      }
      __syncthreads();
      if (to_residual && threadIdx.x < 8) {
        const int tok = tok0 + nt * 8 + threadIdx.x, seg_row = row0 + rt * 16;
        if (tok < M && seg_row < N)
          io.parts_out[static_cast<size_t>(tok) * rms_segments(N) + seg_row / kRmsSegment] =
              detail::rms_segment_partial(new_res[threadIdx.x], min(kRmsSegment, N - seg_row));
        // the next tile's writes to new_res come after its own __syncthreads
      }
    }
}

template <int NT, int RT, int UL, int MIN_CTAS, int STAGES, XIn IN>
void launch_as(const SkinnyIo& io, const __nv_bfloat16* w, int M, int N, int K, cudaStream_t stream) {
  constexpr auto kernel = skinny_gemm_kernel<NT, RT, UL, MIN_CTAS, STAGES, IN>;
  constexpr size_t smem = STAGES > 0 ? ring_bytes<NT, RT, UL, STAGES, IN>() : 0;
  // The kernel's static arrays (the class reduction, ~6 KiB) come on top of the ring.
  static_assert(smem + 8 * 1024 <= 227 * 1024, "the ring exceeds a CTA's shared memory");
  if constexpr (smem > 0) {
    // Always: past 48 KiB of dynamic and static shared memory together a launch needs the opt-in,
    // and a 48 KiB ring plus the static arrays is past it.
    static const cudaError_t attr =  // once, before any launch (and any graph capture)
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    CLLM_CUDA_CHECK(attr);
  }
  const dim3 grid((M + 8 * NT - 1) / (8 * NT), (N + 16 * RT - 1) / (16 * RT));
  launch_overlapped(kernel, grid, kThreads, smem, stream, io, w, M, N, K);
}

template <int NT, int RT, int UL, int MIN_CTAS, int STAGES>
void launch(const SkinnyIo& io, XIn in, const __nv_bfloat16* w, int M, int N, int K, cudaStream_t stream) {
  switch (in) {
    case XIn::kBf16:
      launch_as<NT, RT, UL, MIN_CTAS, STAGES, XIn::kBf16>(io, w, M, N, K, stream);
      break;
    case XIn::kNormed:
      launch_as<NT, RT, UL, MIN_CTAS, STAGES, XIn::kNormed>(io, w, M, N, K, stream);
      break;
  }
}

// ---- many rows: the same order from shared-memory tiles -------------------------------------------
//
// Above kTiledMinM rows the kernel above re-reads its operands from L2 once per 8 warps' worth of
// products and runs far below the tensor cores' rate. This one stages 128 W rows x 128 tokens of one
// K group in shared memory (cp.async, two stages) and gives each warp a 64-row x 32-token tile of C
// for every K class: it walks the groups class by class (class 0's groups in order, then class 1's,
// ...), accumulating each class from 0 and adding it to the running total at the class's end, and
// feeds the mma the same fragments (the fragment trick above: lane t's 8 elements [8t, 8t + 8) of
// each 32-wide chunk). Each output element therefore sees exactly the sums of the kernel above.
constexpr int kTiledRows = 128, kTiledTokens = 128;
constexpr int kTiledK = kChunk * kGroup;       // one group per stage
constexpr int kTiledPitch = kTiledK + 32;      // elements; 320-byte rows: an LDS.128 phase's rows hit distinct banks
constexpr size_t kTiledSmem = size_t{2} * (kTiledRows + kTiledTokens) * kTiledPitch * sizeof(__nv_bfloat16);

// Group `it` of the class-major walk (class 0's groups c, c + 8, ... first); sets its class.
__device__ __forceinline__ int group_at(int it, int n_groups, int& cls) {
  for (int c = 0; c < kWarps; ++c) {
    const int count = c < n_groups ? (n_groups - 1 - c) / kWarps + 1 : 0;
    if (it < count) {
      cls = c;
      return c + kWarps * it;
    }
    it -= count;
  }
  cls = kWarps;
  return 0;
}

__global__ void __launch_bounds__(kThreads, 1)
    tiled_gemm_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                      __nv_bfloat16* __restrict__ y, int M, int N, int K) {
  extern __shared__ __align__(16) __nv_bfloat16 tiles[];  // stage s: W rows, then tokens, kTiledPitch each
  detail::start_after_prior_grids();
  const int warp = threadIdx.x / detail::kWarp, lane = threadIdx.x % detail::kWarp;
  const int g = lane / 4, t = lane % 4;
  const int wn = warp % 2, wm = warp / 2;  // this warp's C tile: W rows wn * 64 + [0, 64), tokens wm * 32 + [0, 32)
  const int tok0 = blockIdx.x * kTiledTokens, row0 = blockIdx.y * kTiledRows;
  const int n_groups = (K + kTiledK - 1) / kTiledK;
  constexpr int kVecs = kTiledK / 8;  // 16-byte vectors per staged row

  auto load_group = [&](int grp, int st) {
    __nv_bfloat16* stage = tiles + st * (kTiledRows + kTiledTokens) * kTiledPitch;
    const int k0 = grp * kTiledK;
    for (int e = threadIdx.x; e < (kTiledRows + kTiledTokens) * kVecs; e += kThreads) {
      const int r = e / kVecs, k = k0 + (e % kVecs) * 8;
      const bool is_w = r < kTiledRows;
      const int idx = is_w ? row0 + r : tok0 + r - kTiledRows;
      const bool ok = k < K && idx < (is_w ? N : M);
      const __nv_bfloat16* src = (is_w ? w : x) + (ok ? static_cast<size_t>(idx) * K + k : 0);
      detail::cp_async_16(stage + r * kTiledPitch + (e % kVecs) * 8, src, ok);
    }
    detail::cp_async_commit();
  };

  float total[4][4][4], acc[4][4][4];
#pragma unroll
  for (int rt = 0; rt < 4; ++rt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) total[rt][nt][e] = acc[rt][nt][e] = 0.f;
  // Ends classes up to (not including) `upto`: total += acc, acc = 0 (an empty class adds 0).
  int done_cls = 0;
  auto end_classes = [&](int upto) {
    for (; done_cls < upto; ++done_cls)
#pragma unroll
      for (int rt = 0; rt < 4; ++rt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            total[rt][nt][e] += acc[rt][nt][e];
            acc[rt][nt][e] = 0.f;
          }
  };

  int cls = 0;
  if (n_groups > 0) load_group(group_at(0, n_groups, cls), 0);
  for (int it = 0, st = 0; it < n_groups; ++it, st ^= 1) {
    group_at(it, n_groups, cls);
    detail::cp_async_wait_all();
    __syncthreads();  // this group landed; every warp is done with the other stage
    if (it + 1 < n_groups) {
      int next_cls;
      load_group(group_at(it + 1, n_groups, next_cls), st ^ 1);
    }
    end_classes(cls);
    const __nv_bfloat16* ws = tiles + st * (kTiledRows + kTiledTokens) * kTiledPitch;
    const __nv_bfloat16* xs = ws + kTiledRows * kTiledPitch;
#pragma unroll
    for (int q = 0; q < kGroup; ++q) {
      uint32_t a[4][2][4], b[4][4];
#pragma unroll
      for (int rt = 0; rt < 4; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint4 v = *reinterpret_cast<const uint4*>(ws + (wn * 64 + rt * 16 + g + 8 * h) * kTiledPitch +
                                                          q * kChunk + 8 * t);
          a[rt][h][0] = v.x, a[rt][h][1] = v.y, a[rt][h][2] = v.z, a[rt][h][3] = v.w;
        }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const uint4 v = *reinterpret_cast<const uint4*>(xs + (wm * 32 + nt * 8 + g) * kTiledPitch + q * kChunk + 8 * t);
        b[nt][0] = v.x, b[nt][1] = v.y, b[nt][2] = v.z, b[nt][3] = v.w;
      }
#pragma unroll
      for (int s2 = 0; s2 < 2; ++s2)
#pragma unroll
        for (int rt = 0; rt < 4; ++rt)
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            detail::mma_bf16(acc[rt][nt], a[rt][0][2 * s2], a[rt][1][2 * s2], a[rt][0][2 * s2 + 1],
                             a[rt][1][2 * s2 + 1], b[nt][2 * s2], b[nt][2 * s2 + 1]);
    }
  }
  end_classes(kWarps);

#pragma unroll
  for (int rt = 0; rt < 4; ++rt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + wn * 64 + rt * 16 + g + 8 * (e / 2);
        const int tok = tok0 + wm * 32 + nt * 8 + 2 * t + e % 2;
        if (row < N && tok < M) y[static_cast<size_t>(tok) * N + row] = __float2bfloat16_rn(total[rt][nt][e]);
      }
}

void launch_tiled(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
                  cudaStream_t stream) {
  static const cudaError_t attr =  // once, before any launch (and any graph capture)
      cudaFuncSetAttribute(tiled_gemm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kTiledSmem);
  CLLM_CUDA_CHECK(attr);
  const dim3 grid((M + kTiledTokens - 1) / kTiledTokens, (N + kTiledRows - 1) / kTiledRows);
  launch_overlapped(tiled_gemm_kernel, grid, kThreads, kTiledSmem, stream, x, w, y, M, N, K);
}

// Every register-tiled variant that is built (each the same bits: see the top), for the dispatch
// below and for tuning benches (invoke_skinny_gemm_tiles). Bytes in flight per warp: UL * RT KiB of
// W in bursts of one round (registers), or (STAGES - 1) * UL * RT KiB all along (the ring); x is
// re-read from L2 once per CTA: 8*NT*K*2 bytes against 16*RT*K*2 of W. MIN_CTAS sets the register
// cap (255 at 1, 128 at 2): a cap that is too low makes the compiler spill or serialise the round's
// loads.
using LaunchFn = void (*)(const SkinnyIo&, XIn, const __nv_bfloat16*, int, int, int, cudaStream_t);
struct TileVariant {
  SkinnyTileShape shape;
  LaunchFn fn;
};
#define CLLM_SKINNY_RING(NT, RT, UL, MC, S) \
  TileVariant { SkinnyTileShape{NT, RT, UL, MC, S}, &launch<NT, RT, UL, MC, S> }
#define CLLM_SKINNY_VARIANT(NT, RT, UL, MC) CLLM_SKINNY_RING(NT, RT, UL, MC, 0)
constexpr TileVariant kTileVariants[] = {
    CLLM_SKINNY_VARIANT(1, 1, 4, 2), CLLM_SKINNY_VARIANT(1, 1, 2, 2), CLLM_SKINNY_VARIANT(1, 1, 4, 1),
    CLLM_SKINNY_VARIANT(1, 2, 2, 2), CLLM_SKINNY_VARIANT(1, 2, 4, 1), CLLM_SKINNY_VARIANT(2, 1, 4, 2),
    CLLM_SKINNY_VARIANT(2, 1, 2, 2), CLLM_SKINNY_VARIANT(2, 1, 4, 1), CLLM_SKINNY_VARIANT(2, 2, 4, 2),
    CLLM_SKINNY_VARIANT(2, 2, 2, 2), CLLM_SKINNY_VARIANT(2, 2, 4, 1), CLLM_SKINNY_VARIANT(2, 2, 2, 1),
    CLLM_SKINNY_VARIANT(4, 1, 2, 2), CLLM_SKINNY_VARIANT(4, 2, 2, 2), CLLM_SKINNY_VARIANT(4, 2, 1, 2),
    CLLM_SKINNY_VARIANT(4, 2, 2, 1), CLLM_SKINNY_VARIANT(4, 1, 4, 1), CLLM_SKINNY_VARIANT(8, 2, 1, 1),
    CLLM_SKINNY_VARIANT(8, 1, 2, 1), CLLM_SKINNY_VARIANT(8, 1, 1, 2), CLLM_SKINNY_VARIANT(8, 2, 2, 1),
    // The ring: shared memory a CTA = STAGES x UL x (2 RT + NT) x 4 KiB (normalised input: 2 RT + 1 + 2 NT).
    CLLM_SKINNY_RING(1, 1, 1, 2, 4), CLLM_SKINNY_RING(1, 1, 1, 2, 6), CLLM_SKINNY_RING(1, 1, 2, 2, 3),
    CLLM_SKINNY_RING(1, 2, 1, 2, 4), CLLM_SKINNY_RING(2, 1, 1, 2, 3), CLLM_SKINNY_RING(2, 1, 1, 2, 4),
    CLLM_SKINNY_RING(2, 2, 1, 1, 4), CLLM_SKINNY_RING(4, 1, 1, 2, 3),
};
#undef CLLM_SKINNY_VARIANT
#undef CLLM_SKINNY_RING

// The built variant of a tile shape; throws when it is not one of kTileVariants.
const TileVariant& find_variant(const SkinnyTileShape& s) {
  for (const TileVariant& v : kTileVariants)
    if (v.shape == s) return v;
  CLLM_FAIL("skinny_gemm: tile shape " << s.name() << " is not built (skinny_tile_shapes())");
}

// The variant for M rows into N outputs: speed only (see the top). Chosen by `cllm_gpu_bench
// --tile-sweep` on 1x H100 (docs/benchmarks.md): the fastest shape for the sum of a layer's
// projections, at the 7B shape (N >= 4096) and at the 135M one (below: few CTAs, so smaller tiles).
// Against the shapes before (RT = 2 from 9 rows on) the 7B layer's GEMMs take 3% less at M <= 8,
// 16% less at M = 16, 8% at 32 and 5% at 64; the 135M layer's 24% and 42% less at 32 and 64.
// A normalised input (XIn::kNormed) is fp32, and every CTA re-reads all M rows of it from L2: at the
// 7B shape and M = 16 that is 256 KiB per CTA against 128 KiB of W in a 16-row tile, so at 9-16 rows
// a wide projection takes 32-row tiles (RT = 2), which halve that traffic: 8-9% less time for the 7B
// qkv and gate|up projections at M = 16 (1x H100 tile sweep, docs/benchmarks.md). At M <= 8 the
// 32-row tile was 14-17% slower than the plain shape.
//
// The ring (set_skinny_ring, off by default): at M <= 16 a W tile's rounds stream through shared
// memory, several in flight along the whole K instead of one round at a time (not for a normalised
// input into a wide projection at 9-16 rows, whose 32-row register tiles halve its fp32 reads). Its
// shapes below are first picks by the bytes each keeps in flight (5 KiB of W a warp at M <= 8 on
// wide projections, 2-3 KiB elsewhere), not yet timed: the tile sweep (`cllm_gpu_bench
// --tile-sweep`) times every built shape.
std::atomic<bool> ring_on{false};
SkinnyTileShape pick_tile_shape(int M, int N, bool normed) {
  const bool wide = N >= 4096;
  if (ring_on.load(std::memory_order_relaxed) && M <= 16) {
    if (M <= 8) return wide && !normed ? SkinnyTileShape{1, 1, 1, 2, 6} : SkinnyTileShape{1, 1, 1, 2, 4};
    if (!normed || !wide) return wide ? SkinnyTileShape{2, 1, 1, 2, 4} : SkinnyTileShape{2, 1, 1, 2, 3};
  }
  if (normed && wide && M > 8 && M <= 16) return {2, 2, 4, 1};
  if (M <= 8) return {1, 1, 2, 2};
  if (M <= 16) return wide ? SkinnyTileShape{2, 1, 4, 2} : SkinnyTileShape{1, 1, 4, 2};
  if (M <= 32) return wide ? SkinnyTileShape{4, 2, 2, 1} : SkinnyTileShape{2, 1, 4, 1};
  return wide ? SkinnyTileShape{8, 1, 1, 2} : SkinnyTileShape{4, 1, 2, 2};
}

// The register-tiled kernel with the given tile shape; fused inputs and outputs take it up to
// kTiledMinM - 1 rows.
void launch_register_tiled(const SkinnyTileShape& tiles, const SkinnyIo& io, XIn in, const __nv_bfloat16* w, int M,
                           int N, int K, cudaStream_t stream) {
  find_variant(tiles).fn(io, in, w, M, N, K, stream);
}

// SkinnyInput and SkinnyOutput, flattened, and how x is read.
SkinnyIo make_io(const SkinnyInput& in, const SkinnyOutput& out, XIn& mode) {
  mode = in.residual != nullptr ? XIn::kNormed : XIn::kBf16;
  const void* x = in.residual != nullptr ? static_cast<const void*>(in.residual) : in.x;
  return SkinnyIo{x, in.gamma, in.rms_parts, in.eps, out.y, out.residual, out.rms_parts, out.rope, out.swiglu};
}

}  // namespace

bool skinny_gemm_supported(int M, int N, int K, const void* x, const void* w) {
  return M >= 1 && M <= kSkinnyGemmMaxM && N >= 1 && N <= kSkinnyGemmMaxN && K >= 8 && K % 8 == 0 &&
         K <= (1 << 24) && is_aligned(x, 16) && is_aligned(w, 16);
}

void invoke_skinny_gemm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
                        cudaStream_t stream) {
  CLLM_CHECK(skinny_gemm_supported(M, N, K, x, w),
             "skinny_gemm: unsupported M=" << M << " N=" << N << " K=" << K << " (need 1 <= M <= "
                                           << kSkinnyGemmMaxM << ", N <= " << kSkinnyGemmMaxN
                                           << ", K % 8 == 0, x and W 16-byte aligned)");
  if (M < kTiledMinM)
    launch_register_tiled(pick_tile_shape(M, N, false),
                          SkinnyIo{x, nullptr, nullptr, 0.f, y, nullptr, nullptr, SkinnyRopeKv{}, false}, XIn::kBf16,
                          w, M, N, K, stream);
  else
    launch_tiled(x, w, y, M, N, K, stream);
}

// The fused forms' shape limits: the register-tiled kernel.
static bool fused_shape_supported(int M, int N, int K, const void* x, const void* w) {
  return M <= kSkinnyFusedMaxM && skinny_gemm_supported(M, N, K, x, w);
}

bool skinny_gemm_fused_supported(int M, int N, int K, const SkinnyInput& in, const SkinnyOutput& out,
                                 const void* w) {
  const void* x = in.residual != nullptr ? static_cast<const void*>(in.residual) : in.x;
  const bool input_ok = in.residual != nullptr
                            ? in.x == nullptr && in.gamma != nullptr && in.rms_parts != nullptr &&
                                  is_aligned(in.gamma, 16)
                            : in.x != nullptr;
  const SkinnyRopeKv& r = out.rope;
  const bool rope_ok = r.head_dim == 0 ||
                       (out.y != nullptr && r.head_dim % 16 == 0 && r.q_width % r.head_dim == 0 &&
                        r.kv_width % r.head_dim == 0 && N == r.q_width + 2 * r.kv_width && r.positions != nullptr &&
                        r.inv_freq != nullptr && r.k_cache != nullptr && r.v_cache != nullptr);
  // (row offsets from the CTA's first row reach N / 2 rows under SwiGLU: int32 element offsets)
  const bool swiglu_ok =
      !out.swiglu || (out.y != nullptr && r.head_dim == 0 && N % 16 == 0 && static_cast<int64_t>(N) * K < (1ll << 31));
  const bool output_ok = rope_ok && swiglu_ok &&
                         (out.y != nullptr ? out.residual == nullptr && out.rms_parts == nullptr
                                           : out.residual != nullptr && out.rms_parts != nullptr);
  return input_ok && output_ok && fused_shape_supported(M, N, K, x, w);
}

void invoke_skinny_gemm_fused(const SkinnyInput& in, const __nv_bfloat16* w, const SkinnyOutput& out, int M, int N,
                              int K, cudaStream_t stream) {
  invoke_skinny_gemm_tiles(pick_tile_shape(M, N, in.residual != nullptr), in, w, out, M, N, K, stream);
}

std::vector<SkinnyTileShape> skinny_tile_shapes() {
  std::vector<SkinnyTileShape> shapes;
  for (const TileVariant& v : kTileVariants) shapes.push_back(v.shape);
  return shapes;
}

SkinnyTileShape skinny_default_tile_shape(int M, int N, bool normed) { return pick_tile_shape(M, N, normed); }

void set_skinny_ring(bool on) { ring_on.store(on, std::memory_order_relaxed); }
bool skinny_ring() { return ring_on.load(std::memory_order_relaxed); }

void invoke_skinny_gemm_tiles(const SkinnyTileShape& tiles, const SkinnyInput& in, const __nv_bfloat16* w,
                              const SkinnyOutput& out, int M, int N, int K, cudaStream_t stream) {
  CLLM_CHECK(skinny_gemm_fused_supported(M, N, K, in, out, w),
             "skinny_gemm_fused: unsupported M=" << M << " N=" << N << " K=" << K << " (need 1 <= M <= "
                                                 << kSkinnyFusedMaxM << ", N <= " << kSkinnyGemmMaxN
                                                 << ", K % 8 == 0, 16-byte aligned inputs, one input form and "
                                                    "one output form: skinny_gemm.cuh)");
  XIn mode;
  const SkinnyIo io = make_io(in, out, mode);
  launch_register_tiled(tiles, io, mode, w, M, N, K, stream);
}

}  // namespace cllm::cuda
