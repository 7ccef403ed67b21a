// Host-side fp16 / bf16 -> fp32 conversion by bit manipulation.
//
// Why hand-written: the CPU part must build with any C++17 compiler and no libtorch, with a
// portable -O3 (no -march=native, so no F16C and no _Float16 / __bf16 extensions we could rely
// on). Both conversions below are branch-free (selects only), so GCC/Clang can vectorize the
// dot-product loops that call them with plain SSE2.
#pragma once

#include <cstdint>
#include <cstring>

namespace led_kernels {
namespace cpu {

inline float fp32_from_bits(uint32_t w) {
  float f;
  std::memcpy(&f, &w, sizeof(f));  // well-defined type pun; compiles to a register move
  return f;
}

inline uint32_t fp32_to_bits(float f) {
  uint32_t w;
  std::memcpy(&w, &f, sizeof(w));
  return w;
}

// bfloat16 is the top half of an IEEE float32: widening is exact and is just a shift.
inline float bf16_to_fp32(uint16_t h) { return fp32_from_bits(static_cast<uint32_t>(h) << 16); }

// IEEE binary16 -> binary32, exact for every input (normals, subnormals, +-0, +-inf, NaN).
// Scheme of M. Dukhan's FP16 library: normals are rebiased by an exponent offset plus one float
// multiply, subnormals are built with the "magic number" subtraction trick, and a compare on
// the exponent field picks one of the two.
inline float fp16_to_fp32(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;  // drops the sign bit: exponent+mantissa at the top

  // Normal/inf/NaN path: move exponent+mantissa into float position and add 224 to the
  // exponent. A half exponent e becomes e + 224: for inf/NaN (e == 31) that is 255, already
  // float inf/NaN, which the scale leaves alone; for normals the scale by 2^-112 brings it to
  // e - 15 + 127, the correctly rebiased float exponent.
  const uint32_t exp_offset = 0xE0u << 23;
  const float exp_scale = 0x1.0p-112f;
  const float normalized = fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;

  // Subnormal path: the 10-bit mantissa m placed under exponent 126 reads as 0.5 + m * 2^-24;
  // subtracting 0.5 leaves exactly m * 2^-24, the subnormal's value.
  const uint32_t magic_mask = 126u << 23;
  const float magic_bias = 0.5f;
  const float denormalized = fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;

  const uint32_t denormalized_cutoff = 1u << 27;  // exponent field == 0 <=> two_w < 2^27
  const uint32_t bits =
      sign | (two_w < denormalized_cutoff ? fp32_to_bits(denormalized) : fp32_to_bits(normalized));
  return fp32_from_bits(bits);
}

}  // namespace cpu
}  // namespace led_kernels
