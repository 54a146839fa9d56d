// Skinny bf16 GEMM y[M, N] = x[M, K] . W[N, K]^T for M <= 32: one pass over W at HBM speed.
//
// Bytes: at M <= 32 the weights are everything (a 4096 x 4096 W is 32 MiB, x at M = 16 is 128 KiB), so
// the kernel is built to stream W once with as many 16-byte loads in flight as the SMs can hold:
//  - CTA = 8 warps = 16*RT rows of W (RT "row tiles" of 16) over the whole K; the warps split K
//    into 32-wide chunks, warp w taking chunks [w*U, w*U + U) of every group of 8*U chunks, so the CTA
//    reads 8*U*64 contiguous bytes of each of its rows per step. The warps' partial sums are added in
//    shared memory in a fixed order at the end: deterministic, no workspace, no atomics.
//  - N/(16*RT) CTAs: all co-resident for the N = 4096 projections (256 or 128 CTAs), several
//    waves for the wide ones (qkv, gate|up, LM head), which the hardware scheduler balances.
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
#include "kernels/cuda/skinny_gemm.cuh"

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

// c += A . B, m16n8k16, bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// NT: 8-token tiles (M <= 8 NT); RT: 16-row tiles of W per CTA; U: chunks per warp per step.
template <int NT, int RT, int U>
__global__ void __launch_bounds__(kThreads, 2)
    skinny_gemm_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                       __nv_bfloat16* __restrict__ y, int M, int N, int K) {
  const int warp = threadIdx.x / detail::kWarp, lane = threadIdx.x % detail::kWarp;
  const int g = lane / 4, t = lane % 4;
  const int row0 = blockIdx.x * (16 * RT);
  const int n_chunks = (K + kChunk - 1) / kChunk;

  // This lane's W rows (row tile rt, half h: row 16 rt + g + 8 h) and x rows (token 8 nt + g), as
  // element offsets from the CTA's base pointers, which sit at element 8t; invalid rows are never loaded.
  const __nv_bfloat16* w_base = w + static_cast<size_t>(row0) * K + t * 8;
  const __nv_bfloat16* x_base = x + t * 8;
  int w_off[RT][2], x_off[NT];
  bool w_ok[RT][2], x_ok[NT];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = rt * 16 + g + 8 * h;
      w_ok[rt][h] = row0 + r < N;
      w_off[rt][h] = r * K;
    }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int tok = nt * 8 + g;
    x_ok[nt] = tok < M;
    x_off[nt] = tok * K;
  }

  float acc[RT][NT][4];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[rt][nt][e] = 0.f;

  for (int c0 = warp * U; c0 < n_chunks; c0 += kWarps * U) {
    // All of this step's loads first (U * (2 RT + NT) 16-byte vectors in flight), then the maths.
    uint32_t a[U][RT][2][4], b[U][NT][4];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = (c0 + u) * kChunk;
      const bool k_ok = k + t * 8 < K;  // K % 8 == 0: a vector lies wholly inside or outside
#pragma unroll
      for (int rt = 0; rt < RT; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h) load_w(a[u][rt][h], w_base + (w_off[rt][h] + k), k_ok && w_ok[rt][h]);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) load_x(b[u][nt], x_base + (x_off[nt] + k), k_ok && x_ok[nt]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int rt = 0; rt < RT; ++rt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
            mma_bf16(acc[rt][nt], a[u][rt][0][2 * s], a[u][rt][1][2 * s], a[u][rt][0][2 * s + 1],
                     a[u][rt][1][2 * s + 1], b[u][nt][2 * s], b[u][nt][2 * s + 1]);
  }

  // Sum the 8 warps' partials in a fixed order. Accumulator e of lane (g, t) in tile (rt, nt) is
  // W row 16 rt + g + 8 (e / 2), token 8 nt + 2t + (e % 2).
  __shared__ float4 red[kWarps][detail::kWarp];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if (nt * 8 >= M) continue;  // block-uniform
      red[warp][lane] = make_float4(acc[rt][nt][0], acc[rt][nt][1], acc[rt][nt][2], acc[rt][nt][3]);
      __syncthreads();
      if (threadIdx.x < detail::kWarp * 4) {
        const int l = threadIdx.x / 4, e = threadIdx.x % 4;
        float sum = 0.f;
#pragma unroll
        for (int v = 0; v < kWarps; ++v) sum += reinterpret_cast<const float*>(&red[v][l])[e];
        const int row = row0 + rt * 16 + l / 4 + 8 * (e / 2), tok = nt * 8 + 2 * (l % 4) + e % 2;
        if (row < N && tok < M) y[static_cast<size_t>(tok) * N + row] = __float2bfloat16_rn(sum);
      }
      __syncthreads();
    }
}

template <int NT, int RT, int U>
void launch(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
            cudaStream_t stream) {
  const int rows_per_cta = 16 * RT;
  const int blocks = (N + rows_per_cta - 1) / rows_per_cta;
  skinny_gemm_kernel<NT, RT, U><<<blocks, kThreads, 0, stream>>>(x, w, y, M, N, K);
  CLLM_CUDA_LAUNCH_CHECK(stream);
}

}  // namespace

bool skinny_gemm_supported(int M, int N, int K, const void* x, const void* w) {
  return M >= 1 && M <= kSkinnyGemmMaxM && N >= 1 && K >= 8 && K % 8 == 0 && is_aligned(x, 16) &&
         is_aligned(w, 16);
}

void invoke_skinny_gemm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
                        cudaStream_t stream) {
  CLLM_CHECK(skinny_gemm_supported(M, N, K, x, w),
             "skinny_gemm: unsupported M=" << M << " N=" << N << " K=" << K << " (need 1 <= M <= "
                                           << kSkinnyGemmMaxM << ", K % 8 == 0, x and W 16-byte aligned)");
  // Bytes in flight per warp: U * RT * 1 KiB of W. RT = 2 from M = 9 on halves the x re-reads per W
  // byte (every CTA reads all of x once: M*K*2 bytes against 16*RT*K*2 of W), but also halves the
  // CTAs: below N = 4096 (a 135M model's projections: 18-96 CTAs at RT = 2) the GPU is short of
  // CTAs, not of bandwidth, so RT stays 1. U is 4 up to M = 16 whatever RT and NT, so a row's sum
  // runs in the same order at every M <= 16: one of the two conditions for a Jacobi block to equal AR
  // token for token (the attention's chunking is the other, see CudaModelOptions).
  if (M <= 8)
    launch<1, 1, 4>(x, w, y, M, N, K, stream);
  else if (M <= 16 && N < 4096)
    launch<2, 1, 4>(x, w, y, M, N, K, stream);
  else if (M <= 16)
    launch<2, 2, 4>(x, w, y, M, N, K, stream);
  else
    launch<4, 2, 2>(x, w, y, M, N, K, stream);
}

}  // namespace cllm::cuda
