// Batch-invariant bf16 GEMM, built for few rows (decoding, Jacobi blocks): y[M, N] = x[M, K] . W[N, K]^T,
// the layout of every linear layer (W row-major [out, in]), fp32 accumulation, bf16 output.
// At small M the time is the time to stream W once from HBM; the kernel is built for that (see
// skinny_gemm.cu). It takes any M: each output element is reduced over K in one fixed order whatever
// M is, so row i of y has the same bits whether x has 1 row or 1024 (cuBLASLt, gemm.cuh, gives no
// such promise: its algorithm and split-K change with M). Large M run well below cuBLASLt's speed.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cllm::cuda {

// Largest M and N the kernel takes (int32 element offsets inside an M tile and a W tile).
constexpr int kSkinnyGemmMaxM = 4096;
constexpr int kSkinnyGemmMaxN = 1 << 20;

// True when invoke_skinny_gemm accepts the shape and pointers: 1 <= M <= kSkinnyGemmMaxM, 1 <= N <= kSkinnyGemmMaxN,
// K a positive multiple of 8, x and w 16-byte aligned (y needs 2-byte alignment only).
bool skinny_gemm_supported(int M, int N, int K, const void* x, const void* w);

// x: bf16 [M, K], w: bf16 [N, K], y: bf16 [M, N], row-major, contiguous. Neither allocates nor
// synchronises (CUDA-graph capture safe) and is deterministic: the same inputs give the same bits.
// Throws cllm::Error when skinny_gemm_supported() is false.
void invoke_skinny_gemm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int M, int N, int K,
                        cudaStream_t stream);

// The fused forms, for the few-row forwards (at most kSkinnyFusedMaxM rows), each the same bits as
// the kernels it replaces (so a forward may take them or not and a token's logits do not change):
//  - normalised input: x = bf16((residual * inv_rms) * gamma), residual fp32 [M, K], inv_rms from
//    rms_parts [M, rms_segments(K)] (rms_sum.cuh): invoke_add_rmsnorm (x = nullptr), then the GEMM;
//  - output added into the residual: residual fp32 [M, N] += bf16(y), and rms_parts [M,
//    rms_segments(N)] gets the new rows' segment partials for the next normalised input: the GEMM
//    into y, then invoke_add_rmsnorm's add.
// With these, SkinnyOutput::rope and SkinnyOutput::swiglu below, a decode layer's two add + RMSNorm
// kernels, its RoPE + KV write and its silu_mul disappear: the o and down projections add into the
// residual, the qkv and gate|up projections normalise it, the qkv projection writes the rotated q, k
// and v, the gate|up projection writes silu(gate) * up.
constexpr int kSkinnyFusedMaxM = 64;

struct SkinnyInput {  // exactly one of x (bf16) and residual
  const __nv_bfloat16* x = nullptr;
  const float* residual = nullptr;
  const __nv_bfloat16* gamma = nullptr;  // [K], 16-byte aligned
  const float* rms_parts = nullptr;
  float eps = 0.f;
};
// The q|k|v projection's RoPE and KV write in its epilogue (with y, the [M, q | k | v] output): q
// rows rotated into y (its k and v columns are not written), k rows rotated into k_cache and v rows
// copied into v_cache at the token's cache row: invoke_rope_kv_write's bits and layout (rope.cuh).
// head_dim 0: none. Needs head_dim % 16 == 0, q_width and kv_width multiples of it, N = q + 2 kv.
struct SkinnyRopeKv {
  const int32_t* positions = nullptr;   // [M]
  const int32_t* cache_rows = nullptr;  // [M], or null: the positions
  const float* inv_freq = nullptr;      // [head_dim / 2]
  __nv_bfloat16* k_cache = nullptr;     // [rows][kv_width]
  __nv_bfloat16* v_cache = nullptr;
  int q_width = 0, kv_width = 0, head_dim = 0;
};

struct SkinnyOutput {  // exactly one of y and (residual, rms_parts); rope and swiglu only with y, not both
  __nv_bfloat16* y = nullptr;
  float* residual = nullptr;
  float* rms_parts = nullptr;
  SkinnyRopeKv rope;
  // The gate|up projection's SwiGLU in its epilogue: W is [gate rows | up rows] (N = 2F, F % 8 == 0)
  // and y gets bf16 [M, F] = silu(gate) * up, the bits of the GEMM into [M, 2F] then invoke_silu_mul.
  // A W tile holds gate rows j..j+7 and up rows F+j..F+j+7, so each pair meets in one lane pair.
  // Needs N * K < 2^31.
  bool swiglu = false;
};

bool skinny_gemm_fused_supported(int M, int N, int K, const SkinnyInput& in, const SkinnyOutput& out, const void* w);
// Throws cllm::Error when skinny_gemm_fused_supported() is false.
void invoke_skinny_gemm_fused(const SkinnyInput& in, const __nv_bfloat16* w, const SkinnyOutput& out, int M, int N,
                              int K, cudaStream_t stream);

// Tuning: the register-tiled kernel's tile shapes that are built (each gives the same bits; only the
// speed differs): 8*tokens8 tokens x 16*rows16 W rows per CTA, chunks_per_round 32-wide K chunks per
// load round, min_ctas CTAs per SM (the register cap), stages: 0 loads each round into registers and
// waits for it before the next is issued; S >= 2 copies rounds into an S-deep shared-memory ring
// (cp.async), S - 1 rounds in flight while one is multiplied. For benches that time them side by side.
struct SkinnyTileShape {
  int tokens8 = 1, rows16 = 1, chunks_per_round = 4, min_ctas = 2, stages = 0;
  constexpr bool operator==(const SkinnyTileShape& o) const {
    return tokens8 == o.tokens8 && rows16 == o.rows16 && chunks_per_round == o.chunks_per_round &&
           min_ctas == o.min_ctas && stages == o.stages;
  }
  // "NTxRTxUL/minCTAs", and "/sS" for a ring of S stages, as benches and messages name it.
  std::string name() const {
    return std::to_string(tokens8) + "x" + std::to_string(rows16) + "x" + std::to_string(chunks_per_round) + "/" +
           std::to_string(min_ctas) + (stages > 0 ? "/s" + std::to_string(stages) : "");
  }
};
std::vector<SkinnyTileShape> skinny_tile_shapes();
// Whether the default tile shapes below may use the shared-memory ring (SkinnyTileShape::stages):
// off by default (every default shape on register loads); on, for A/B timings, rows up to 16 take it
// (but a normalised input into a projection of 4096 or more outputs at 9-16 rows). Process-wide, as
// set_launch_overlap (launch.cuh): set it before any launch or graph capture. A ring shape reads its
// first rounds of W before the kernel launched before it has finished (launch.cuh): W must not be
// written by that kernel (weights are uploaded before any forward).
void set_skinny_ring(bool on);
bool skinny_ring();
// The shape invoke_skinny_gemm and invoke_skinny_gemm_fused run for M rows into N outputs; normed:
// the input is the fp32 residual normalised on the fly (SkinnyInput::residual).
SkinnyTileShape skinny_default_tile_shape(int M, int N, bool normed = false);
// invoke_skinny_gemm_fused with the given tile shape; throws cllm::Error
// when the shape is not one of skinny_tile_shapes() or the operands are unsupported.
void invoke_skinny_gemm_tiles(const SkinnyTileShape& tiles, const SkinnyInput& in, const __nv_bfloat16* w,
                              const SkinnyOutput& out, int M, int N, int K, cudaStream_t stream);

}  // namespace cllm::cuda
