// The CPU attention kernels built for AVX2 + FMA (CMakeLists.txt adds -mavx2 -mfma -mf16c to
// this file only; attention.cpp calls it only when the CPU reports avx2 and fma). 6 x 16 micro-GEMM
// block: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
#if defined(__AVX2__) && defined(__FMA__)
#define LED_ISA_NS isa_avx2
#define LED_VEC_BYTES 32
#define LED_MR 6
#define LED_NV 2
#include "attention_impl.h"
namespace led_kernels {
bool isa_avx2_compiled() { return true; }
}  // namespace led_kernels
#else
// Built without the flags (non-x86 target or a compiler CMakeLists.txt does not know): nothing
// here, the dispatcher never selects it.
#include <stdexcept>

#include "led_kernels/cpu_attention.h"
namespace led_kernels {
bool isa_avx2_compiled() { return false; }
namespace isa_avx2 {
void attention_fwd(const AttnFwdParams&, int) { throw std::logic_error("led_kernels: avx2 kernels not built"); }
void attention_bwd(const AttnBwdParams&, int) { throw std::logic_error("led_kernels: avx2 kernels not built"); }
}  // namespace isa_avx2
}  // namespace led_kernels
#endif
