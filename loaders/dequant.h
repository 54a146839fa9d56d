// Element types the loaders read, and their conversion to fp32.
// Float types (F32/F16/BF16) are 1-element "blocks"; the legacy ggml block formats pack 32 elements:
//   Q8_0: fp16 d, int8 q[32]                       x = q * d                    (34 bytes)
//   Q4_0: fp16 d, uint8 qs[16]                     x = (nibble - 8) * d         (18 bytes)
//   Q4_1: fp16 d, fp16 m, uint8 qs[16]             x = nibble * d + m           (20 bytes)
//   Q5_0: fp16 d, u32 qh, uint8 qs[16]             x = (nibble | qh bit << 4 - 16) * d  (22 bytes)
//   Q5_1: fp16 d, fp16 m, u32 qh, uint8 qs[16]     x = (nibble | qh bit << 4) * d + m   (24 bytes)
// In Q4_* and Q5_*, byte j's low nibble is element j and its high nibble is element j + 16;
// bit j of qh is the fifth bit of element j.
// The k-quants pack 256 elements ("super-blocks") in 8 or 16 sub-blocks with their own scales:
//   Q2_K: uint8 scales[16] (4-bit scale | 4-bit min), 2-bit qs[64], fp16 d, fp16 dmin (84 bytes)
//   Q3_K: 1-bit hmask[32], 2-bit qs[64], 6-bit scales[12], fp16 d                    (110 bytes)
//   Q4_K: fp16 d, fp16 dmin, 6-bit scales and mins[12], 4-bit qs[128]                 (144 bytes)
//   Q5_K: fp16 d, fp16 dmin, 6-bit scales and mins[12], 1-bit qh[32], 4-bit qs[128]   (176 bytes)
//   Q6_K: 4-bit ql[128], 2-bit qh[64], int8 scales[16], fp16 d                        (210 bytes)
//   Q8_K: f32 d, int8 qs[256], int16 bsums[16] (bsums unused here)                    (292 bytes)
// Element order inside a super-block is spelled out in dequant.cpp, next to each decoder.
// The API works on one row (a contiguous run of whole blocks) and a column range inside it, so a
// tensor-parallel rank can convert its slice without touching the rest of the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace cllm {

enum class DType { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K };

const char* dtype_name(DType t);  // "F32", "Q4_1", ...
int64_t dtype_block_elems(DType t);  // elements per block: 1, 32 or 256
int64_t dtype_block_bytes(DType t);  // bytes per block

// Bytes of a row of n elements; throws naming `what` if n is not a multiple of the block size
// or the byte count overflows.
uint64_t dtype_row_bytes(DType t, int64_t n, const std::string& what);

float fp16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);  // round to nearest even; overflow -> inf, NaN kept
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN kept quiet

// dst[0 .. col_end-col_begin) = elements [col_begin, col_end) of the row starting at `row`.
// The caller guarantees the row holds at least col_end elements (rounded up to whole blocks).
void dequantize_row(DType t, const uint8_t* row, int64_t col_begin, int64_t col_end, float* dst);

}  // namespace cllm
