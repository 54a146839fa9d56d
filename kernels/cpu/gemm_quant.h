// Batch-invariant GEMM on quantized weights: y[M,N] = x[M,K] · W[N,K]^T with W kept in 32-element
// blocks (the ggml Q8_0 and Q4_1 formats, scales widened to fp32 once at load so the inner loop
// has no fp16 conversion). Decoding reads the weights once per step, so reading ~1 byte (Q8_0) or
// ~0.75 byte (Q4_1) per weight instead of 4 is most of the speed-up. As in llama.cpp, each row of
// x is first quantized per 32-block to int8 with an fp32 scale (Q8 activations), and each
// weight-block x activation-block product is an exact int32 dot product:
//   Q8_0: y += (dw * dx) * Σ wq·xq
//   Q4_1: y += (dw * dx) * Σ nib·xq  +  mw * (dx * Σ xq)      (w = nib * dw + mw)
// Batch invariance: the int dot is exact and the fp32 sums run in one fixed order (8 lanes of
// 4 elements each across the blocks in k order, then a fixed lane reduction, then the Q4_1
// offset sum), so a row's result does not depend on M, the tiling or the threads, and the SIMD
// paths (AVX2, AVX-VNNI, AVX-512 VNNI, chosen at run time) and the scalar fallback give the same bits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cllm::cpu {

enum class QuantFormat { Q8_0, Q4_1 };
constexpr int kQuantBlock = 32;  // elements per block

// A [rows, cols] weight matrix in blocks; cols is a multiple of kQuantBlock.
struct QuantMatrix {
  QuantFormat format = QuantFormat::Q8_0;
  int rows = 0, cols = 0;
  // Q8_0: int8 [rows, cols]; Q4_1: [rows, cols / 2] bytes, per block byte j holds element j in its
  // low nibble and element j + 16 in its high nibble (ggml order).
  std::vector<uint8_t> qs;
  std::vector<float> d;  // [rows, cols / 32]: block scales
  std::vector<float> m;  // [rows, cols / 32]: Q4_1 block minimums; empty for Q8_0

  size_t bytes() const { return qs.size() + (d.size() + m.size()) * sizeof(float); }
  // Bytes of one row's quantized values (qs stride).
  size_t row_qs_bytes() const { return format == QuantFormat::Q8_0 ? cols : cols / 2; }
};

// Elements [0, cols) of row r as fp32 (x = q * d, or nib * d + m): the embedding lookup and the
// tests' dequantize-then-multiply reference.
void dequantize_quant_row(const QuantMatrix& w, int r, float* out);

// y[M, r1 - r0] = x[M, w.cols] · W[r0:r1]^T (r1 = -1: w.rows); x is fp32 and is quantized per row
// inside. A row range (the LM head in vocab chunks) gives the same bits as the whole matrix.
void matmul_wt_quant(const float* x, const QuantMatrix& w, float* y, int M, int r0 = 0, int r1 = -1);

// The instruction sets the kernel has a path for, each able to run where the later ones can. All
// give the same bits (the int dot products are exact and the fp32 order is the same).
enum class QuantPath { Scalar, Avx2, AvxVnni, Avx512Vnni };
QuantPath quant_best_path();  // the one matmul_wt_quant uses on this CPU
bool quant_path_supported(QuantPath p);
const char* quant_path_name(QuantPath p);

// matmul_wt_quant through the named path (throws if this CPU lacks it): for the tests.
void matmul_wt_quant_path(const float* x, const QuantMatrix& w, float* y, int M, QuantPath path);

}  // namespace cllm::cpu
