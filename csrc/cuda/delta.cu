// CUDA kernel of the attention-backward preprocessing  delta = rowsum(dO * O).
//
//   out, grad_out : (B, N, H, D), any strides with stride(D) == 1
//   delta         : (B, H, N) float32, contiguous
//   delta[b, h, i] = sum_d float(grad_out[b, i, h, d]) * float(out[b, i, h, d])
//
// A "row" is one (b, i, h): D contiguous elements in each input. Rows are numbered with h
// fastest, then i, then b, which is memory order for bnhd tensors, so neighbouring groups of a
// warp read neighbouring memory. Each row is reduced by a group of G lanes (G a power of two,
// 1..32) sized so that one pass of 16-byte loads covers D: a warp-per-row would leave most lanes
// idle for the usual D = 64 in half precision (8 lanes x 8 halves cover it).
// The kernel is purely bandwidth-bound (2 loads per multiply-add), so all that matters is wide,
// coalesced loads and enough rows in flight; accumulation is fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"
#include "led_kernels/common.h"

namespace led_kernels {

namespace {

constexpr int kThreads = 256;  // 8 warps: enough to hide load latency, small enough to co-reside

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// VEC consecutive elements loaded as one 16-byte (or, for VEC == 1, element-sized) transaction.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// G lanes cooperate on one row; VEC = elements per load (16 bytes, or 1 when unaligned).
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    delta_kernel(const T* __restrict__ out, const T* __restrict__ gout, float* __restrict__ delta,
                 int64_t N, int64_t H, int64_t D, BNHStrides so, BNHStrides sg, int64_t rows, int G) {
  const int lane_in_group = threadIdx.x & (G - 1);
  const int groups_per_block = kThreads / G;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * groups_per_block + threadIdx.x / G;
  const int64_t group_stride = static_cast<int64_t>(gridDim.x) * groups_per_block;
  const int64_t rows_per_b = N * H;

  // Grid-stride loop over rows. Every lane of a warp runs the same number of iterations
  // (groups never straddle warps and rows are spread evenly), but a trailing partial row set can
  // leave some groups without a row: they still join the shuffles, with acc = 0, because the
  // shuffles below use the full-warp mask.
  const int64_t iters = (rows + group_stride - 1) / group_stride;
  for (int64_t it = 0; it < iters; ++it) {
    const int64_t row = group + it * group_stride;
    const bool valid = row < rows;
    float acc = 0.0f;
    int64_t b = 0, i = 0, h = 0;
    if (valid) {
      b = row / rows_per_b;
      const int64_t rem = row - b * rows_per_b;
      i = rem / H;
      h = rem - i * H;
      const T* o_row = out + b * so.b + i * so.n + h * so.h;
      const T* g_row = gout + b * sg.b + i * sg.n + h * sg.h;
      for (int64_t d = static_cast<int64_t>(lane_in_group) * VEC; d < D; d += static_cast<int64_t>(G) * VEC) {
        const Pack<T, VEC> po = *reinterpret_cast<const Pack<T, VEC>*>(o_row + d);
        const Pack<T, VEC> pg = *reinterpret_cast<const Pack<T, VEC>*>(g_row + d);
#pragma unroll
        for (int k = 0; k < VEC; ++k) acc = fmaf(to_float(pg.v[k]), to_float(po.v[k]), acc);
      }
    }
    // Butterfly reduction inside the G-lane group (width = G keeps groups independent).
    for (int off = G >> 1; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off, G);
    if (valid && lane_in_group == 0) delta[(b * H + h) * N + i] = acc;
  }
}

template <typename T>
bool aligned16(const void* p) {
  return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
}

// 16-byte loads are legal only if every row start is 16-byte aligned: both base pointers and
// every stride (in bytes) must be multiples of 16, and D a multiple of the pack width.
template <typename T>
bool can_vectorize(const DeltaParams& p, int vec) {
  const int64_t bytes = static_cast<int64_t>(sizeof(T));
  auto ok = [&](const BNHStrides& s) {
    return ((s.b * bytes) % 16 == 0) && ((s.n * bytes) % 16 == 0) && ((s.h * bytes) % 16 == 0);
  };
  return p.D % vec == 0 && aligned16<T>(p.out) && aligned16<T>(p.grad_out) && ok(p.o_strides) &&
         ok(p.do_strides);
}

int group_size_for(int64_t chunks) {  // smallest power of two >= chunks, in [1, 32]
  int g = 1;
  while (g < 32 && g < chunks) g <<= 1;
  return g;
}

template <typename T>
void launch(const DeltaParams& p, cudaStream_t stream) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const int64_t rows = p.B * p.N * p.H;
  const bool vec = can_vectorize<T>(p, kVec);
  const int v = vec ? kVec : 1;
  const int G = group_size_for((p.D + v - 1) / v);
  const int64_t groups_per_block = kThreads / G;
  int64_t blocks = (rows + groups_per_block - 1) / groups_per_block;
  // Cap the grid (the kernel loops): 2^20 blocks of 256 threads saturate any current GPU, and
  // gridDim.x must stay below 2^31.
  if (blocks > (int64_t{1} << 20)) blocks = int64_t{1} << 20;
  const T* o = static_cast<const T*>(p.out);
  const T* g = static_cast<const T*>(p.grad_out);
  if (vec) {
    delta_kernel<T, kVec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        o, g, p.delta, p.N, p.H, p.D, p.o_strides, p.do_strides, rows, G);
  } else {
    delta_kernel<T, 1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        o, g, p.delta, p.N, p.H, p.D, p.o_strides, p.do_strides, rows, G);
  }
  check_launch("delta_cuda kernel launch failed");
}

}  // namespace

void delta_cuda(const DeltaParams& p, void* stream_ptr) {
  check_delta_params(p, "delta_cuda");
  if (p.B == 0 || p.N == 0 || p.H == 0) return;  // no rows: a zero-block launch is an error
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  switch (p.dtype) {
    case DType::kFloat32: launch<float>(p, stream); break;
    case DType::kFloat16: launch<__half>(p, stream); break;
    case DType::kBFloat16: launch<__nv_bfloat16>(p, stream); break;
  }
}

}  // namespace led_kernels
