// Scalar conversions and ggml block dequantization (layouts in dequant.h, matching ggml-quants.c).
#include "loaders/dequant.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"

namespace cllm {

namespace {

constexpr int64_t kQK = 32;  // elements per ggml Q4_0/Q4_1/Q8_0 block

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// Decodes one whole block (32 elements) into out.
void dequantize_block(DType t, const uint8_t* b, float* out) {
  switch (t) {
    case DType::Q8_0: {
      const float d = fp16_to_f32(load_u16(b));
      for (int i = 0; i < kQK; ++i) out[i] = static_cast<float>(static_cast<int8_t>(b[2 + i])) * d;
      return;
    }
    case DType::Q4_0: {
      const float d = fp16_to_f32(load_u16(b));
      const uint8_t* qs = b + 2;
      for (int j = 0; j < kQK / 2; ++j) {
        out[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
        out[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
      }
      return;
    }
    case DType::Q4_1: {
      const float d = fp16_to_f32(load_u16(b));
      const float m = fp16_to_f32(load_u16(b + 2));
      const uint8_t* qs = b + 4;
      for (int j = 0; j < kQK / 2; ++j) {
        out[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
        out[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
      }
      return;
    }
    default:
      CLLM_FAIL("dequantize_block: " << dtype_name(t) << " is not a block type");
  }
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
  }
  return "?";
}

int64_t dtype_block_elems(DType t) {
  return (t == DType::F32 || t == DType::F16 || t == DType::BF16) ? 1 : kQK;
}

int64_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::Q8_0: return 2 + kQK;
    case DType::Q4_0: return 2 + kQK / 2;
    case DType::Q4_1: return 4 + kQK / 2;
  }
  return 0;
}

uint64_t dtype_row_bytes(DType t, int64_t n, const std::string& what) {
  const int64_t be = dtype_block_elems(t);
  CLLM_CHECK(n >= 0 && n % be == 0, what << ": row length " << n << " is not a multiple of the "
                                         << dtype_name(t) << " block size " << be);
  const uint64_t blocks = static_cast<uint64_t>(n / be);
  const uint64_t bb = static_cast<uint64_t>(dtype_block_bytes(t));
  CLLM_CHECK(blocks <= UINT64_MAX / bb, what << ": byte size of " << n << " elements overflows");
  return blocks * bb;
}

float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: normalise the mantissa into an fp32 normal.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7FFF + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

uint16_t f32_to_fp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return sign | 0x7E00;                 // NaN
  if (abs >= 0x477FF000u) return sign | 0x7C00;                // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                                     // below 2^-14: half subnormal or 0
    if (abs < 0x33000000u) return sign;                        // below 2^-25: rounds to 0
    const uint32_t e = abs >> 23;
    const uint32_t mant = (abs & 0x7FFFFF) | 0x800000;         // implicit 1
    const uint32_t shift = 126 - e;                            // 14..24 bits to drop
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  uint32_t h = ((abs >> 13) - (112u << 10));                   // rebias exponent, keep 10 bits
  const uint32_t rem = abs & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;         // carry may bump the exponent
  return sign | static_cast<uint16_t>(h);
}

void dequantize_row(DType t, const uint8_t* row, int64_t col_begin, int64_t col_end, float* dst) {
  const int64_t n = col_end - col_begin;
  if (n <= 0) return;
  switch (t) {
    case DType::F32:
      std::memcpy(dst, row + col_begin * 4, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(load_u16(row + (col_begin + i) * 2));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(row + (col_begin + i) * 2));
      return;
    default:
      break;
  }
  const int64_t bb = dtype_block_bytes(t);
  float block[kQK];
  for (int64_t c = col_begin; c < col_end;) {
    const int64_t blk = c / kQK, in_blk = c % kQK;
    const int64_t take = std::min(kQK - in_blk, col_end - c);
    if (in_blk == 0 && take == kQK) {
      dequantize_block(t, row + blk * bb, dst + (c - col_begin));
    } else {
      dequantize_block(t, row + blk * bb, block);
      std::memcpy(dst + (c - col_begin), block + in_blk, static_cast<size_t>(take) * sizeof(float));
    }
    c += take;
  }
}

}  // namespace cllm
