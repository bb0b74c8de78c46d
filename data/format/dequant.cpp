// data/format/dequant.cpp — ggml block formats -> fp32. Each dequantiser follows ggml's reference
// `dequantize_row_*` (ggml-quants.c) byte for byte; gguf-py's numpy versions compute the same fp32
// products in the same order, so results match it bit for bit. Fused multiply-add would change the
// rounding of `d * q + m`, so contraction is off in this file.
#include "data/format/dequant.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace uio::format {
namespace {

constexpr int64_t kQK = 32;  // elements per legacy block (Q4_0 ... Q8_0)
constexpr int64_t kQKK = 256;  // elements per K-quant super-block

// Indexed by type id; name == nullptr marks an id ggml never assigned (or retired).
constexpr GgmlTypeTraits kTraits[] = {
    {"F32", 1, 4, true},  // 0
    {"F16", 1, 2, true},  // 1
    {"Q4_0", kQK, 2 + 16, true},  // 2
    {"Q4_1", kQK, 2 + 2 + 16, true},  // 3
    {nullptr, 0, 0, false},  // 4 (Q4_2, removed)
    {nullptr, 0, 0, false},  // 5 (Q4_3, removed)
    {"Q5_0", kQK, 2 + 4 + 16, true},  // 6
    {"Q5_1", kQK, 2 + 2 + 4 + 16, true},  // 7
    {"Q8_0", kQK, 2 + 32, true},  // 8
    {"Q8_1", kQK, 4 + 4 + 32, false},  // 9
    {"Q2_K", kQKK, 2 + 2 + kQKK / 16 + kQKK / 4, false},  // 10
    {"Q3_K", kQKK, 2 + kQKK / 4 + kQKK / 8 + 12, false},  // 11
    {"Q4_K", kQKK, 2 + 2 + kQKK / 2 + 12, true},  // 12
    {"Q5_K", kQKK, 2 + 2 + kQKK / 2 + kQKK / 8 + 12, false},  // 13
    {"Q6_K", kQKK, 2 + kQKK / 2 + kQKK / 4 + kQKK / 16, true},  // 14
    {"Q8_K", kQKK, 4 + kQKK + kQKK / 8, false},  // 15
    {"IQ2_XXS", kQKK, 2 + kQKK / 4, false},  // 16
    {"IQ2_XS", kQKK, 2 + kQKK / 4 + kQKK / 32, false},  // 17
    {"IQ3_XXS", kQKK, 2 + kQKK / 4 + kQKK / 8, false},  // 18
    {"IQ1_S", kQKK, 2 + kQKK / 8 + kQKK / 16, false},  // 19
    {"IQ4_NL", kQK, 2 + 16, false},  // 20
    {"IQ3_S", kQKK, 2 + kQKK / 4 + kQKK / 8 + kQKK / 32 + 4, false},  // 21
    {"IQ2_S", kQKK, 2 + kQKK / 4 + kQKK / 16, false},  // 22
    {"IQ4_XS", kQKK, 2 + 2 + kQKK / 2 + kQKK / 64, false},  // 23
    {"I8", 1, 1, false},  // 24
    {"I16", 1, 2, false},  // 25
    {"I32", 1, 4, false},  // 26
    {"I64", 1, 8, false},  // 27
    {"F64", 1, 8, false},  // 28
    {"IQ1_M", kQKK, kQKK / 8 + kQKK / 16 + kQKK / 32, false},  // 29
    {"BF16", 1, 2, true},  // 30
    {nullptr, 0, 0, false},  // 31 (Q4_0_4_4, removed)
    {nullptr, 0, 0, false},  // 32 (Q4_0_4_8, removed)
    {nullptr, 0, 0, false},  // 33 (Q4_0_8_8, removed)
    {"TQ1_0", kQKK, 2 + 4 * 13, false},  // 34
    {"TQ2_0", kQKK, 2 + 64, false},  // 35
    {nullptr, 0, 0, false},  // 36 (IQ4_NL_4_4, removed)
    {nullptr, 0, 0, false},  // 37 (IQ4_NL_4_8, removed)
    {nullptr, 0, 0, false},  // 38 (IQ4_NL_8_8, removed)
    {"MXFP4", kQK, 1 + 16, false},  // 39
};
constexpr uint32_t kNumTypes = sizeof(kTraits) / sizeof(kTraits[0]);

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
float load_fp16(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

// ---- plain floats ----

void dequant_f32(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits = load_u32(src + 4 * i);
    std::memcpy(dst + i, &bits, 4);
  }
}

void dequant_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load_fp16(src + 2 * i);
}

void dequant_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

// ---- legacy 32-element blocks ----

// Q8_0: fp16 d, 32 x int8 q; x = q * d.
void dequant_q8_0(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 34, dst += kQK) {
    const float d = load_fp16(src);
    for (int j = 0; j < kQK; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
  }
}

// Q4_0: fp16 d, 16 bytes of nibbles; element j < 16 is the low nibble of byte j, element j + 16 the
// high nibble; x = d * (q - 8).
void dequant_q4_0(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 18, dst += kQK) {
    const float d = load_fp16(src);
    const uint8_t* qs = src + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = d * static_cast<float>((qs[j] & 0x0F) - 8);
      dst[j + kQK / 2] = d * static_cast<float>((qs[j] >> 4) - 8);
    }
  }
}

// Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; x = d * q + m.
void dequant_q4_1(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 20, dst += kQK) {
    const float d = load_fp16(src), m = load_fp16(src + 2);
    const uint8_t* qs = src + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = d * static_cast<float>(qs[j] & 0x0F) + m;
      dst[j + kQK / 2] = d * static_cast<float>(qs[j] >> 4) + m;
    }
  }
}

// Q5_0: fp16 d, uint32 qh (bit j = fifth bit of element j), 16 bytes of nibbles; x = d * (q - 16).
void dequant_q5_0(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 22, dst += kQK) {
    const float d = load_fp16(src);
    const uint32_t qh = load_u32(src + 2);
    const uint8_t* qs = src + 6;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = (qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
      const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      dst[j] = d * static_cast<float>(lo - 16);
      dst[j + kQK / 2] = d * static_cast<float>(hi - 16);
    }
  }
}

// Q5_1: fp16 d, fp16 m, uint32 qh, 16 bytes of nibbles; x = d * q + m.
void dequant_q5_1(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 24, dst += kQK) {
    const float d = load_fp16(src), m = load_fp16(src + 2);
    const uint32_t qh = load_u32(src + 4);
    const uint8_t* qs = src + 8;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = (qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
      const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      dst[j] = d * static_cast<float>(lo) + m;
      dst[j + kQK / 2] = d * static_cast<float>(hi) + m;
    }
  }
}

// ---- K-quants: 256-element super-blocks ----

// Q4_K's 12 scale bytes pack eight 6-bit scales and eight 6-bit mins (ggml's get_scale_min_k4):
// sub-blocks 0..3 use the low 6 bits of bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 take
// their low 4 bits from byte 8 + j - 4 and their top 2 bits from the top of bytes j - 4 and j.
void q4_k_scale_min(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K: fp16 d, fp16 dmin, 12 scale bytes, 128 bytes of nibbles. Each 32-byte chunk holds two
// 32-element sub-blocks (low nibbles, then high nibbles); x = (d * scale) * q - (dmin * min).
void dequant_q4_k(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 144) {
    const float d = load_fp16(src), dmin = load_fp16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* q = src + 16;
    for (int chunk = 0; chunk < 4; ++chunk, q += 32) {
      uint8_t sc, m;
      q4_k_scale_min(2 * chunk, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      q4_k_scale_min(2 * chunk + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *dst++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

// Q6_K: 128 bytes low nibbles (ql), 64 bytes of 2-bit highs (qh), 16 int8 scales, fp16 d.
// Each 128-element half uses 64 ql bytes and 32 qh bytes; element 32k + l of the half takes its low
// nibble from ql[l + 32 (k & 1)] (shifted by 4 for k >= 2) and bits 2k..2k+1 of qh[l];
// x = (d * scale[e / 16]) * (q - 32).
void dequant_q6_k(const uint8_t* src, float* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 210) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
    const float d = load_fp16(src + 208);
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        dst[l] = (d * static_cast<float>(sc[is + 0])) * static_cast<float>(q1);
        dst[l + 32] = (d * static_cast<float>(sc[is + 2])) * static_cast<float>(q2);
        dst[l + 64] = (d * static_cast<float>(sc[is + 4])) * static_cast<float>(q3);
        dst[l + 96] = (d * static_cast<float>(sc[is + 6])) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type_id) {
  if (type_id >= kNumTypes || kTraits[type_id].name == nullptr) return nullptr;
  return &kTraits[type_id];
}

std::string ggml_type_name(uint32_t type_id) {
  const GgmlTypeTraits* t = ggml_type_traits(type_id);
  return t ? std::string(t->name) : "unknown type " + std::to_string(type_id);
}

std::string dequantizable_type_names() {
  std::string out;
  for (uint32_t id = 0; id < kNumTypes; ++id) {
    if (!kTraits[id].dequantizable) continue;
    if (!out.empty()) out += ", ";
    out += kTraits[id].name;
  }
  return out;
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  const uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf / NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
  } else {
    // Zero or subnormal: mantissa * 2^-24 is exact in fp32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void dequantize_blocks(uint32_t type_id, const uint8_t* src, float* dst, int64_t num_blocks) {
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::F32: return dequant_f32(src, dst, num_blocks);
    case GgmlType::F16: return dequant_f16(src, dst, num_blocks);
    case GgmlType::BF16: return dequant_bf16(src, dst, num_blocks);
    case GgmlType::Q8_0: return dequant_q8_0(src, dst, num_blocks);
    case GgmlType::Q4_0: return dequant_q4_0(src, dst, num_blocks);
    case GgmlType::Q4_1: return dequant_q4_1(src, dst, num_blocks);
    case GgmlType::Q5_0: return dequant_q5_0(src, dst, num_blocks);
    case GgmlType::Q5_1: return dequant_q5_1(src, dst, num_blocks);
    case GgmlType::Q4_K: return dequant_q4_k(src, dst, num_blocks);
    case GgmlType::Q6_K: return dequant_q6_k(src, dst, num_blocks);
    default: break;
  }
  throw std::invalid_argument("dequantize: ggml type " + ggml_type_name(type_id) +
                              " has no dequantiser in uio (supported: " + dequantizable_type_names() + ")");
}

}  // namespace uio::format
