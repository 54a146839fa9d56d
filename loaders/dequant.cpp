// Scalar conversions and ggml block dequantization (layouts in dequant.h, matching ggml-quants.c).
#include "loaders/dequant.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"

namespace cllm {

namespace {

constexpr int64_t kQK = 32;    // elements per Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 block
constexpr int64_t kQK_K = 256; // elements per k-quant super-block

// Every decoder below forms each value with the same float32 operations, in the same order, as
// the gguf package's numpy dequantize (gguf/quants.py) and ggml-quants.c, so results are
// bit-exact; dequant.cpp is built with -ffp-contract=off so no multiply-add gets fused.

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}
float load_f32(const uint8_t* p) {
  const uint32_t bits = load_u32(p);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Q4_K/Q5_K: 8 sub-blocks of 32, each with a 6-bit scale sc[j] and min m[j] packed in 12 bytes:
// j < 4: sc = s[j] & 63, m = s[j+4] & 63; j >= 4: the low 4 bits come from s[j+4] (scale low
// nibble, min high nibble) and the top 2 bits from the spare top bits of s[j-4] / s[j].
void k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
    *m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

// Q5_0/Q5_1: 5-bit value of element e (0..31): low nibble from qs, fifth bit from qh.
int q5_value(const uint8_t* qs, uint32_t qh, int e) {
  const int nib = e < 16 ? (qs[e] & 0x0F) : (qs[e - 16] >> 4);
  return nib | static_cast<int>((qh >> e) & 1) << 4;
}

// Decodes one whole block (dtype_block_elems(t) elements) into out.
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
    case DType::Q5_0: {
      const float d = fp16_to_f32(load_u16(b));
      const uint32_t qh = load_u32(b + 2);
      for (int e = 0; e < kQK; ++e) out[e] = d * static_cast<float>(q5_value(b + 6, qh, e) - 16);
      return;
    }
    case DType::Q5_1: {
      const float d = fp16_to_f32(load_u16(b));
      const float m = fp16_to_f32(load_u16(b + 2));
      const uint32_t qh = load_u32(b + 4);
      for (int e = 0; e < kQK; ++e) out[e] = d * static_cast<float>(q5_value(b + 8, qh, e)) + m;
      return;
    }
    case DType::Q2_K: {
      // Element e = half*128 + s*32 + l takes bits 2s..2s+1 of qs[half*32 + l]; sub-block e/16.
      const uint8_t* scales = b;
      const uint8_t* qs = b + 16;
      const float d = fp16_to_f32(load_u16(b + 80)), dmin = fp16_to_f32(load_u16(b + 82));
      for (int e = 0; e < kQK_K; ++e) {
        const int half = e / 128, s = (e / 32) % 4, l = e % 32, g = e / 16;
        const float dl = d * static_cast<float>(scales[g] & 0x0F);
        const float ml = dmin * static_cast<float>(scales[g] >> 4);
        out[e] = dl * static_cast<float>((qs[half * 32 + l] >> (2 * s)) & 3) - ml;
      }
      return;
    }
    case DType::Q3_K: {
      // Low 2 bits as in Q2_K; the third bit of element e is bit e/32 of hmask[e%32], and a
      // clear bit subtracts 4. 16 signed 6-bit scales: low nibbles in bytes 0..7 (g < 8: low
      // half of byte g, else high half of byte g-8), top 2 bits in bytes 8..11 (bits 2*(g/4) of
      // byte 8 + g%4); the value is that 6-bit number - 32.
      const uint8_t* hmask = b;
      const uint8_t* qs = b + 32;
      const uint8_t* sc = b + 96;
      const float d = fp16_to_f32(load_u16(b + 108));
      for (int e = 0; e < kQK_K; ++e) {
        const int half = e / 128, s = (e / 32) % 4, l = e % 32, g = e / 16;
        const int lo = g < 8 ? (sc[g] & 0x0F) : (sc[g - 8] >> 4);
        const int hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
        const float dl = d * static_cast<float>((lo | hi << 4) - 32);
        const int q = ((qs[half * 32 + l] >> (2 * s)) & 3) - (((hmask[l] >> (e / 32)) & 1) ? 0 : 4);
        out[e] = dl * static_cast<float>(q);
      }
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      // Element e = c*64 + h*32 + l is nibble h of qs[c*32 + l], sub-block j = e/32; Q5_K adds
      // bit e/32 of qh[l] as the fifth bit.
      const bool five = t == DType::Q5_K;
      const float d = fp16_to_f32(load_u16(b)), dmin = fp16_to_f32(load_u16(b + 2));
      const uint8_t* scales = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* qs = b + (five ? 48 : 16);
      for (int j = 0; j < 8; ++j) {
        int sc = 0, m = 0;
        k_scale_min(scales, j, &sc, &m);
        const float dj = d * static_cast<float>(sc), mj = dmin * static_cast<float>(m);
        for (int l = 0; l < 32; ++l) {
          int q = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0F;
          if (five) q |= ((qh[l] >> j) & 1) << 4;
          out[j * 32 + l] = dj * static_cast<float>(q) - mj;
        }
      }
      return;
    }
    case DType::Q6_K: {
      // Element e = half*128 + h*64 + k: low 4 bits are nibble h of ql[half*64 + k]; with
      // k = s'*32 + l (so e = half*128 + s*32 + l, s = 2h + s'), the top 2 bits are bits 2s..2s+1
      // of qh[half*32 + l]. 16 sub-blocks of 16 with int8 scales; value - 32.
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = fp16_to_f32(load_u16(b + 208));
      for (int e = 0; e < kQK_K; ++e) {
        const int half = e / 128, h = (e / 64) % 2, k = e % 64, s = (e / 32) % 4, l = e % 32;
        const int lo = (ql[half * 64 + k] >> (4 * h)) & 0x0F;
        const int hi = (qh[half * 32 + l] >> (2 * s)) & 3;
        out[e] = d * static_cast<float>(sc[e / 16]) * static_cast<float>((lo | hi << 4) - 32);
      }
      return;
    }
    case DType::Q8_K: {
      const float d = load_f32(b);
      for (int e = 0; e < kQK_K; ++e) out[e] = d * static_cast<float>(static_cast<int8_t>(b[4 + e]));
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
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q2_K: return "Q2_K";
    case DType::Q3_K: return "Q3_K";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
    case DType::Q8_K: return "Q8_K";
  }
  return "?";
}

int64_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: return 1;
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: return kQK;
    default: return kQK_K;
  }
}

int64_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::Q8_0: return 2 + kQK;
    case DType::Q4_0: return 2 + kQK / 2;
    case DType::Q4_1: return 4 + kQK / 2;
    case DType::Q5_0: return 2 + 4 + kQK / 2;
    case DType::Q5_1: return 4 + 4 + kQK / 2;
    case DType::Q2_K: return 16 + kQK_K / 4 + 4;
    case DType::Q3_K: return kQK_K / 8 + kQK_K / 4 + 12 + 2;
    case DType::Q4_K: return 4 + 12 + kQK_K / 2;
    case DType::Q5_K: return 4 + 12 + kQK_K / 8 + kQK_K / 2;
    case DType::Q6_K: return kQK_K / 2 + kQK_K / 4 + 16 + 2;
    case DType::Q8_K: return 4 + kQK_K + 2 * 16;
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
  const int64_t bb = dtype_block_bytes(t), be = dtype_block_elems(t);
  float block[kQK_K];
  for (int64_t c = col_begin; c < col_end;) {
    const int64_t blk = c / be, in_blk = c % be;
    const int64_t take = std::min(be - in_blk, col_end - c);
    if (in_blk == 0 && take == be) {
      dequantize_block(t, row + blk * bb, dst + (c - col_begin));
    } else {
      dequantize_block(t, row + blk * bb, block);
      std::memcpy(dst + (c - col_begin), block + in_blk, static_cast<size_t>(take) * sizeof(float));
    }
    c += take;
  }
}

}  // namespace cllm
