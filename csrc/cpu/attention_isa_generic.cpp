// The CPU attention kernels for any target: 16-byte vectors (SSE2 on x86-64, NEON on arm64),
// no target flags. The fallback when the CPU has no AVX2/FMA.
#define LED_ISA_NS isa_generic
#define LED_VEC_BYTES 16
#define LED_MR 4
#define LED_NV 3
#include "attention_impl.h"
