// The CPU attention kernels built for AVX-512F (CMakeLists.txt adds -mavx512f -mavx2 -mfma -mf16c
// to this file only; attention.cpp calls it only when the CPU and OS support avx512f). 6 x 64
// micro-GEMM block: 24 accumulators + 4 B vectors + 1 broadcast of the 32 zmm registers, and a
// 64-wide tile row is exactly 4 vectors.
#if defined(__AVX512F__) && defined(__FMA__)
#define LED_ISA_NS isa_avx512
#define LED_VEC_BYTES 64
#define LED_MR 6
#define LED_NV 4
#include "attention_impl.h"
namespace led_kernels {
bool isa_avx512_compiled() { return true; }
}  // namespace led_kernels
#else
#include <stdexcept>

#include "led_kernels/cpu_attention.h"
namespace led_kernels {
bool isa_avx512_compiled() { return false; }
namespace isa_avx512 {
void attention_fwd(const AttnFwdParams&, int) { throw std::logic_error("led_kernels: avx512 kernels not built"); }
void attention_bwd(const AttnBwdParams&, int) { throw std::logic_error("led_kernels: avx512 kernels not built"); }
}  // namespace isa_avx512
}  // namespace led_kernels
#endif
