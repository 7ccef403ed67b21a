// CPU kernel of the attention-backward preprocessing  delta = rowsum(dO * O).
//
//   out, grad_out : (B, N, H, D), any strides with stride(D) == 1
//   delta         : (B, H, N) float32, contiguous
//   delta[b, h, i] = sum_d float(grad_out[b, i, h, d]) * float(out[b, i, h, d])
//
// Parallel over (b, i) with OpenMP: each (b, i) owns H rows of D contiguous elements in both
// inputs, which is the natural unit of locality for bnhd tensors; the D loop is a SIMD
// reduction in fp32 (the same accumulation precision as the GPU kernels).
#include <cstdint>

#include "led_kernels/common.h"
#include "led_kernels/cpu_convert.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace led_kernels {

namespace {

// Per-dtype load of one element as float. float32 is a plain load; the 16-bit types are read
// as raw uint16_t bits and widened by the exact bit conversions of cpu_convert.h.
struct LoadF32 {
  using storage = float;
  static inline float load(storage x) { return x; }
};
struct LoadF16 {
  using storage = uint16_t;
  static inline float load(storage x) { return cpu::fp16_to_fp32(x); }
};
struct LoadBF16 {
  using storage = uint16_t;
  static inline float load(storage x) { return cpu::bf16_to_fp32(x); }
};

// Dot product of one row: o, g -> D contiguous elements each.
template <typename L>
inline float row_dot(const typename L::storage* __restrict o, const typename L::storage* __restrict g,
                     int64_t D) {
  float acc = 0.0f;
  // `omp simd reduction` lets the compiler reassociate the fp32 sum into vector lanes without
  // -ffast-math (which would be unsafe elsewhere). Built with -fopenmp-simd, it needs no OpenMP
  // runtime, so it vectorizes even when OpenMP itself is not found.
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < D; ++d) {
    acc += L::load(g[d]) * L::load(o[d]);
  }
  return acc;
}

template <typename L>
void delta_cpu_impl(const DeltaParams& p, int num_threads) {
  using S = typename L::storage;
  const S* __restrict out = static_cast<const S*>(p.out);
  const S* __restrict gout = static_cast<const S*>(p.grad_out);
  float* __restrict delta = p.delta;
  const int64_t B = p.B, N = p.N, H = p.H, D = p.D;
  const BNHStrides so = p.o_strides, sg = p.do_strides;

#ifdef _OPENMP
  // Below ~32k multiply-adds the OpenMP fork/join (a few microseconds) costs more than the work.
  const bool parallel = B * N * H * D >= (int64_t{1} << 15);
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (parallel)
#else
  (void)num_threads;
#endif
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < N; ++i) {
      const S* o_bi = out + b * so.b + i * so.n;
      const S* g_bi = gout + b * sg.b + i * sg.n;
      // delta is (B, H, N): for fixed (b, i) the H results are N apart. Scattered 4-byte
      // stores, but only one per D-element row of input, so they do not matter.
      float* d_bi = delta + b * H * N + i;
      for (int64_t h = 0; h < H; ++h) {
        d_bi[h * N] = row_dot<L>(o_bi + h * so.h, g_bi + h * sg.h, D);
      }
    }
  }
}

}  // namespace

void delta_cpu(const DeltaParams& p, int num_threads) {
  check_delta_params(p, "delta_cpu");
  if (p.B == 0 || p.N == 0 || p.H == 0) return;  // no rows: nothing to write
  switch (p.dtype) {
    case DType::kFloat32: delta_cpu_impl<LoadF32>(p, num_threads); break;
    case DType::kFloat16: delta_cpu_impl<LoadF16>(p, num_threads); break;
    case DType::kBFloat16: delta_cpu_impl<LoadBF16>(p, num_threads); break;
  }
}

bool cpu_has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace led_kernels
