// data/format/dequant.h — ggml's tensor element types (block sizes, byte sizes) and their dequantisation
// to fp32: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K. Pure loops over bytes; the GGUF
// container (model/gguf.h) owns files, offsets and torch tensors.
#pragma once

#include <cstdint>
#include <string>

namespace uio::format {

// ggml type ids as they appear in a GGUF tensor info (ggml.h `enum ggml_type`).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

// Layout of one ggml type: `block_size` elements are stored in `type_size` bytes.
struct GgmlTypeTraits {
  const char* name;
  int64_t block_size;
  int64_t type_size;
  bool dequantizable;  // uio has a dequantiser for it
};

// Traits of a type id, or nullptr when the id is unknown to uio (a newer ggml, or a corrupt file).
const GgmlTypeTraits* ggml_type_traits(uint32_t type_id);

// "Q4_K", or "unknown type 99".
std::string ggml_type_name(uint32_t type_id);

// The comma-separated names of the dequantisable types, for error messages.
std::string dequantizable_type_names();

// IEEE half and bfloat16 bit patterns -> float (exact; NaN payloads kept).
float fp16_to_fp32(uint16_t bits);
float bf16_to_fp32(uint16_t bits);

// Dequantises `num_blocks` consecutive blocks of `type` from `src` into `dst`
// (num_blocks * block_size floats). Results are bit-identical to gguf-py's `gguf.quants.dequantize`
// (and ggml's reference `dequantize_row_*`): every product and sum is rounded to fp32 in the same order.
// Throws std::invalid_argument for a type without a dequantiser.
void dequantize_blocks(uint32_t type_id, const uint8_t* src, float* dst, int64_t num_blocks);

}  // namespace uio::format
