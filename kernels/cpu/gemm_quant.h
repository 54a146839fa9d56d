// Batch-invariant GEMM on quantized weights: y[M,N] = x[M,K] · W[N,K]^T with W kept in 32-element
// blocks (the ggml Q8_0 and Q4_1 formats; Q4_0 is Q4_1 with minimum -8 d). Decoding reads the
// weights once per step, so reading ~1 byte (Q8_0) or ~0.75 byte (Q4_1) per weight instead of 4 is
// most of the speed-up. As in llama.cpp, each row of x is first quantized per 32-block to int8
// with an fp32 scale (Q8 activations), and each weight-block x activation-block product is an
// exact int32 dot product over the whole block:
//   Q8_0: y = fma(dw * dx, Σ wq·xq, y)
//   Q4_1: y = fma(dw * dx, Σ nib·xq, y);  y = fma(mw, dx * Σ xq, y)     (w = nib * dw + mw)
// over the blocks in k order. Batch invariance: the int dot is exact and every (row, token)
// output runs this one fp32 chain, whatever M, the tiling or the threads, so a row's result does
// not depend on how many rows share the GEMM, and the SIMD paths (AVX2, AVX-VNNI, AVX-512 VNNI,
// chosen at run time) and the scalar fallback give the same bits.
//
// Weight layout (packed at load): rows in groups of 16 (the last one padded with zero blocks);
// for each group and block, 8 chunks of 64 bytes, chunk k holding elements 4k..4k+3 of the 16 rows
// in row order. One int8 dot instruction (vpdpbusd) on a chunk and 4 broadcast activation bytes
// adds 4 products into each of 16 rows' int32 lanes, so a block's 32 products land in its row's
// lane without horizontal sums, and the fp32 scale/accumulate steps serve 16 rows at once. Each
// unpacked group-block is reused for up to 8 tokens from registers.
//   Q8_0: 512 bytes per group-block, value + 128 as uint8 (vpdpbusd's unsigned operand; the
//         activation sum x -128 is subtracted back, exactly).
//   Q4_1: 256 bytes per group-block, 4 chunks whose low nibbles are chunks 0..3 and high nibbles
//         chunks 4..7 (element 4c + j low, 16 + 4c + j high: ggml's byte 4c + j of the row's block).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cllm::cpu {

namespace detail {
void* alloc_weights(size_t bytes);  // 64-byte aligned; from 2 MB on, on transparent huge pages
void free_weights(void* p) noexcept;
}  // namespace detail

// Allocator of the packed quants: a large matrix (the LM head, tens of MB) streams through the
// TLB once per step, and 2 MB pages cut its misses.
template <class T>
struct WeightAllocator {
  using value_type = T;
  WeightAllocator() = default;
  template <class U>
  WeightAllocator(const WeightAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(detail::alloc_weights(n * sizeof(T))); }
  void deallocate(T* p, size_t) noexcept { detail::free_weights(p); }
  template <class U>
  bool operator==(const WeightAllocator<U>&) const { return true; }
};

enum class QuantFormat { Q8_0, Q4_1 };
constexpr int kQuantBlock = 32;  // elements per block
constexpr int kQuantGroup = 16;  // weight rows interleaved per group

// A [rows, cols] weight matrix in the packed layout above; cols is a multiple of kQuantBlock.
struct QuantMatrix {
  QuantFormat format = QuantFormat::Q8_0;
  int rows = 0, cols = 0;
  std::vector<uint8_t, WeightAllocator<uint8_t>> qs;  // [groups, cols / 32, group_block_bytes()]
  std::vector<float> d;     // [groups, cols / 32, 16]: block scales
  std::vector<float> m;     // [groups, cols / 32, 16]: Q4_1 block minimums; empty for Q8_0

  int groups() const { return (rows + kQuantGroup - 1) / kQuantGroup; }
  int blocks_per_row() const { return cols / kQuantBlock; }
  size_t group_block_bytes() const { return format == QuantFormat::Q8_0 ? 512 : 256; }
  size_t bytes() const { return qs.size() + (d.size() + m.size()) * sizeof(float); }
};

// Packs a matrix given in ggml's block order, row-major: qs holds each row's blocks back to back
// (Q8_0: 32 int8 per block; Q4_1: 16 bytes per block, byte j = element j low nibble, j + 16
// high), d and m (Q4_1 only; null for Q8_0) one value per block, [rows, cols / 32].
QuantMatrix pack_quant(QuantFormat f, int rows, int cols, const uint8_t* qs, const float* d, const float* m);

// Elements [0, cols) of row r as fp32 (x = q * d, or nib * d + m): the embedding lookup and the
// tests' dequantize-then-multiply reference.
void dequantize_quant_row(const QuantMatrix& w, int r, float* out);

// x[M, K] quantized per row and 32-block, as llama.cpp's Q8_0/Q8_1 activations: q = round(x / d)
// with d = max|x| / 127 (so |q| <= 127), s = d * Σ q (the Q4_1 minimum's factor) and c = -128 Σ q
// (taking back Q8_0's stored + 128). The GEMMs below take x in this form, so layers that read the
// same input (q, k and v; gate and up) quantize it once.
struct QuantActivations {
  int rows = 0, cols = 0;
  std::vector<int8_t> q;   // [M, K]
  std::vector<float> d;    // [M, K / 32]
  std::vector<float> s;    // [M, K / 32]
  std::vector<int32_t> c;  // [M, K / 32]
};
// out = x[M, K] quantized (K a positive multiple of 32); large inputs are split across the threads,
// which does not change a value (each block is its own).
void quantize_activations(const float* x, int M, int K, QuantActivations& out);

// y[M, r1 - r0] = x[M, w.cols] · W[r0:r1]^T (r1 = -1: w.rows); x is fp32 and is quantized per row
// inside. A row range (the LM head in vocab chunks) gives the same bits as the whole matrix.
void matmul_wt_quant(const float* x, const QuantMatrix& w, float* y, int M, int r0 = 0, int r1 = -1);
// The same from x already quantized (xq.cols == w.cols): the same bits.
void matmul_wt_quant(const QuantActivations& xq, const QuantMatrix& w, float* y, int r0 = 0, int r1 = -1);

// The instruction sets the kernel has a path for, each able to run where the later ones can. All
// give the same bits (the int dot products are exact and the fp32 order is the same).
enum class QuantPath { Scalar, Avx2, AvxVnni, Avx512Vnni };
QuantPath quant_best_path();  // the one matmul_wt_quant uses on this CPU
bool quant_path_supported(QuantPath p);
const char* quant_path_name(QuantPath p);

// matmul_wt_quant through the named path (throws if this CPU lacks it): for the tests.
void matmul_wt_quant_path(const float* x, const QuantMatrix& w, float* y, int M, QuantPath path, int r0 = 0,
                          int r1 = -1);

}  // namespace cllm::cpu
