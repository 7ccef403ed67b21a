// The handful of GPU primitives the attention kernels use, behind one small interface.
//
// Compiled by nvcc (__CUDACC__) these are the real instructions: mma.sync m16n8k16 with fp32
// accumulation, ldmatrix (plain and transposed), cp.async, warp shuffles, __syncthreads. Compiled by a host
// compiler with LED_SIMT_EMULATOR defined, the same names come from an emulator (tests/cuda_emu/):
// every CUDA thread of a block is a fiber and every warp collective exchanges the lanes' registers
// exactly as the PTX ISA defines the fragment layouts. The kernels' own code (tiling, masking, the
// online softmax, fragment bookkeeping) is therefore the same source in both builds, and the
// emulated build runs it on the CPU against the reference.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA, "Matrix fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4; every 32-bit register holds two consecutive 16-bit elements:
//   A (16 x 16, row-major):  a[0] = A[g][2t..2t+1]      a[1] = A[g+8][2t..2t+1]
//                            a[2] = A[g][2t+8..2t+9]    a[3] = A[g+8][2t+8..2t+9]
//   B (16 x 8, k x n):       b[0] = B[2t..2t+1][g]      b[1] = B[2t+8..2t+9][g]
//   C, D (16 x 8, fp32):     c[0..1] = C[g][2t..2t+1]   c[2..3] = C[g+8][2t..2t+1]
// ldmatrix.x4 loads four 8 x 8 matrices of 16-bit elements; lanes 8j..8j+7 give the row addresses
// of matrix j, and register j of lane L receives row L/4, elements 2(L%4)..2(L%4)+1 of matrix j
// (.trans: rows 2(L%4) and 2(L%4)+1 of column L/4, i.e. the transposed matrix).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__CUDACC__)

#define LED_DEVICE __device__ __forceinline__
#define LED_HOST_DEVICE __host__ __device__ __forceinline__
// Loops over register arrays must unroll, or the arrays go to local memory.
#define LED_UNROLL _Pragma("unroll")
#define LED_KERNEL __global__

namespace led_kernels {
namespace simt {

LED_DEVICE int thread_index() { return static_cast<int>(threadIdx.x); }
LED_DEVICE int64_t block_index() { return static_cast<int64_t>(blockIdx.x); }
LED_DEVICE void sync_block() { __syncthreads(); }
LED_DEVICE float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
LED_DEVICE int any_sync(int pred) { return __any_sync(0xffffffffu, pred); }
// The lanes whose `pred` is true, as a mask (bit L: lane L).
//
// Two warp-uniform facts about one pair of predicates (any lane has a or b; every lane has a and b)
// must come from ballots, not from two votes: ptxas 13.0 (sm_90, sm_100, sm_120; not sm_8x) computes
// the two votes' predicates in one two-output PLOP3, and when one vote's result is unused it feeds the
// other vote the wrong output. `__any_sync(~0u, a || b)` next to an unused `__any_sync(~0u, !(a && b))`
// compiles to VOTE.ANY(a && b): warps where only a holds skipped their rows (found by the GPU tests at
// head dim 16, where the second vote serves no loop). Ballots are integer votes with one predicate each.
LED_DEVICE uint32_t ballot_sync(bool pred) { return __ballot_sync(0xffffffffu, pred); }

// Dynamic shared memory of the block (the launch's third argument), 16-byte aligned.
LED_DEVICE unsigned char* shared_memory() {
  extern __shared__ __align__(16) unsigned char led_smem[];
  return led_smem;
}

// Bounds checks are the emulator's; on the GPU compute-sanitizer does that job.
LED_DEVICE void check_global(const void*, int) {}

LED_DEVICE uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

LED_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}

LED_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}

template <typename T>
LED_DEVICE void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
LED_DEVICE void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
LED_DEVICE void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x with the hardware approximation (2 ulp; -inf -> 0, NaN -> NaN; subnormal results flush to 0,
// which for probabilities below 2^-126 is what the softmax wants anyway).
LED_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Asynchronous copies (sm_80+): 16 bytes from global to shared memory, or 16 zero bytes when `fill` is
// false (then nothing is read and `src` need only be a valid address). A thread sees its own copies
// after cp_async_wait_all(); other threads see them after a barrier that follows that wait.
LED_DEVICE void cp_async_16(void* smem_dst, const void* src, bool fill) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(smem_dst)), "l"(src),
               "r"(fill ? 16 : 0)
               : "memory");
}
LED_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
LED_DEVICE void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// __syncthreads that also returns whether `pred` held in any thread of the block.
LED_DEVICE int sync_block_or(int pred) { return __syncthreads_or(pred); }

// Warpgroup MMA (sm_90a: the four warps of a block issue it together). wgmma_rs<T, N, kTransB>:
// D[64 x N] += A[64 x 16] B[16 x N], A from registers (warp w holds rows 16w..16w+15 as an
// mma.m16n8k16 A fragment), B in shared memory through a descriptor (smem_desc_128b), K-major
// (kTransB false: B's column n is a 16-element row at n) or MN-major (kTransB true: B's row k holds
// its N elements); D per warp as N / 8 mma.m16n8 C fragments. It runs asynchronously: issue the
// products, wgmma_commit, then wgmma_wait before D is read, with wgmma_pin around (below).
// wgmma_fence orders earlier register writes of A and D before the products; fence_proxy_async
// makes this thread's earlier shared-memory writes (stores, completed cp.async) visible to them,
// before the barrier that publishes them to the other warps. The asm is compiled for sm_90a only
// (other architectures never launch the kernels that use it, and trap if they did).
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr bool kWgmmaCompiled = false;  // this pass compiles device code without wgmma
#else
constexpr bool kWgmmaCompiled = true;
#endif
LED_DEVICE void unreachable() { __trap(); }

LED_DEVICE void fence_proxy_async() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

LED_DEVICE void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

LED_DEVICE void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

LED_DEVICE void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}

// Pins registers at this point of the program: an empty asm that "reads and writes" them, which the
// compiler keeps in order with the wgmma asm. Before wgmma_fence, for the registers the products read
// (their last writes stay above the fence); after wgmma_wait, for those they write or read (their
// next reads and writes stay below the wait). CUTLASS's warpgroup_fence_operand.
template <int kRows>
LED_DEVICE void wgmma_pin(float (&d)[kRows][4]) {
  LED_UNROLL
  for (int i = 0; i < kRows; ++i) {
    asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])::"memory");
  }
}
template <int kRows>
LED_DEVICE void wgmma_pin(uint32_t (&a)[kRows][4]) {
  LED_UNROLL
  for (int i = 0; i < kRows; ++i) {
    asm volatile("" : "+r"(a[i][0]), "+r"(a[i][1]), "+r"(a[i][2]), "+r"(a[i][3])::"memory");
  }
}

#define LED_WGMMA_D4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])

#define LED_WGMMA_RS_N16(DT, TNSP)                                       \
  asm volatile(                                                          \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"                       \
      "wgmma.mma_async.sync.aligned.m64n16k16.f32." DT "." DT " {"       \
      "%0, %1, %2, %3, %4, %5, %6, %7"                                   \
      "}, {%8, %9, %10, %11}, %12, p, 1, 1, " TNSP ";\n}\n"              \
      : LED_WGMMA_D4(0), LED_WGMMA_D4(1)                                 \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define LED_WGMMA_RS_N64(DT, TNSP)                                                     \
  asm volatile(                                                                        \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                     \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." DT "." DT " {"                     \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "         \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" \
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, " TNSP ";\n}\n"                          \
      : LED_WGMMA_D4(0), LED_WGMMA_D4(1), LED_WGMMA_D4(2), LED_WGMMA_D4(3),            \
        LED_WGMMA_D4(4), LED_WGMMA_D4(5), LED_WGMMA_D4(6), LED_WGMMA_D4(7)             \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define LED_WGMMA_RS_N128(DT, TNSP)                                                      \
  asm volatile(                                                                          \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                       \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." DT "." DT " {"                      \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "           \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"   \
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, " TNSP ";\n}\n"                            \
      : LED_WGMMA_D4(0), LED_WGMMA_D4(1), LED_WGMMA_D4(2), LED_WGMMA_D4(3),              \
        LED_WGMMA_D4(4), LED_WGMMA_D4(5), LED_WGMMA_D4(6), LED_WGMMA_D4(7),              \
        LED_WGMMA_D4(8), LED_WGMMA_D4(9), LED_WGMMA_D4(10), LED_WGMMA_D4(11),            \
        LED_WGMMA_D4(12), LED_WGMMA_D4(13), LED_WGMMA_D4(14), LED_WGMMA_D4(15)           \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define LED_WGMMA_SS_N16(DT)                                       \
  asm volatile(                                                    \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"                 \
      "wgmma.mma_async.sync.aligned.m64n16k16.f32." DT "." DT " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7"                             \
      "}, %8, %9, p, 1, 1, 0, 0;\n}\n"                             \
      : LED_WGMMA_D4(0), LED_WGMMA_D4(1)                           \
      : "l"(desc_a), "l"(desc_b), "r"(1))

#define LED_WGMMA_SS_N64(DT)                                                           \
  asm volatile(                                                                        \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                     \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." DT "." DT " {"                     \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "         \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" \
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"                                               \
      : LED_WGMMA_D4(0), LED_WGMMA_D4(1), LED_WGMMA_D4(2), LED_WGMMA_D4(3),            \
        LED_WGMMA_D4(4), LED_WGMMA_D4(5), LED_WGMMA_D4(6), LED_WGMMA_D4(7)             \
      : "l"(desc_a), "l"(desc_b), "r"(1))

// wgmma_ss<T, N>: the same with A in shared memory too (K-major, through its descriptor: row m of A
// is the warpgroup's row m), and both operands K-major.
template <typename T, int N>
LED_DEVICE void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b) {
  static_assert(N == 16 || N == 64, "wgmma_ss: N of 16 or 64");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
  if constexpr (N == 16 && kBf16) LED_WGMMA_SS_N16("bf16");
  if constexpr (N == 16 && !kBf16) LED_WGMMA_SS_N16("f16");
  if constexpr (N == 64 && kBf16) LED_WGMMA_SS_N64("bf16");
  if constexpr (N == 64 && !kBf16) LED_WGMMA_SS_N64("f16");
#else
  (void)d, (void)desc_a, (void)desc_b;
  __trap();
#endif
}

template <typename T, int N, bool kTransB>
LED_DEVICE void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b) {
  static_assert(N == 16 || N == 64 || N == 128, "wgmma_rs: N of 16, 64 or 128");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
#define LED_WGMMA_RS_DISPATCH(NN)                                    \
  if constexpr (N == NN && kBf16 && kTransB) LED_WGMMA_RS_N##NN("bf16", "1"); \
  if constexpr (N == NN && kBf16 && !kTransB) LED_WGMMA_RS_N##NN("bf16", "0"); \
  if constexpr (N == NN && !kBf16 && kTransB) LED_WGMMA_RS_N##NN("f16", "1");  \
  if constexpr (N == NN && !kBf16 && !kTransB) LED_WGMMA_RS_N##NN("f16", "0");
  LED_WGMMA_RS_DISPATCH(16)
  LED_WGMMA_RS_DISPATCH(64)
  LED_WGMMA_RS_DISPATCH(128)
#undef LED_WGMMA_RS_DISPATCH
#else
  (void)d, (void)a, (void)desc_b;
  __trap();
#endif
}

// Whether the current device runs the wgmma kernels: an sm_90 GPU (H100, H200), and sm_90a code in
// this build (only sm_90a has wgmma; CMake defines LED_KERNELS_HAVE_SM90A for it).
inline bool wgmma_launchable() {
#if defined(LED_KERNELS_HAVE_SM90A)
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0;
#else
  return false;
#endif
}

// A 16-byte store to shared memory (a plain st.shared: the generic proxy, so a wgmma that reads it
// needs the storing thread's fence_proxy_async first, as for a cp.async).
LED_DEVICE void store_shared_16(void* dst, uint4 v) { *reinterpret_cast<uint4*>(dst) = v; }

// A 32-bit store to (load from) global memory at a 4-byte aligned address.
LED_DEVICE void store_u32(void* dst, uint32_t v) { *reinterpret_cast<uint32_t*>(dst) = v; }
LED_DEVICE uint32_t load_u32(const void* src) { return *reinterpret_cast<const uint32_t*>(src); }

}  // namespace simt
}  // namespace led_kernels

#define LED_LAUNCH(kernel, grid, threads, smem_bytes, stream, ...) \
  kernel<<<(grid), (threads), (smem_bytes), (stream)>>>(__VA_ARGS__)

// Dynamic shared memory above 48 KiB needs an opt-in per kernel (sm_80: up to 163 KiB, sm_90: 227 KiB).
#define LED_SET_SMEM_LIMIT(kernel, smem_bytes)                                                   \
  do {                                                                                          \
    if ((smem_bytes) > 48 * 1024) {                                                              \
      const cudaError_t led_attr_err_ = cudaFuncSetAttribute(                                    \
          kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes));    \
      if (led_attr_err_ != cudaSuccess) {                                                        \
        (void)cudaGetLastError();                                                                \
        throw std::runtime_error(std::string("led_kernels: cannot give a kernel ") +            \
                                 std::to_string(smem_bytes) + " bytes of shared memory: " +      \
                                 cudaGetErrorString(led_attr_err_));                              \
      }                                                                                         \
    }                                                                                           \
  } while (0)

#elif defined(LED_SIMT_EMULATOR)

#include "simt_emulator.h"  // tests/cuda_emu/: the same names, run on the CPU

#else
#error "simt.cuh: compile with nvcc, or define LED_SIMT_EMULATOR (tests/cuda_emu/) for the CPU emulator"
#endif

namespace led_kernels {
namespace simt {

// Two floats rounded to the 16-bit type and packed as one mma operand register (low = first).
template <typename T>
LED_DEVICE uint32_t pack2(float lo, float hi);

template <>
LED_DEVICE uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &h, 4);  // (a pointer cast would break strict aliasing in the host build)
  return bits;
}

template <>
LED_DEVICE uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &h, 4);
  return bits;
}

// A 16-bit element given by its bits, as float.
template <typename T>
LED_DEVICE float bits_to_float(uint16_t bits);
template <>
LED_DEVICE float bits_to_float<__half>(uint16_t bits) {
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}
template <>
LED_DEVICE float bits_to_float<__nv_bfloat16>(uint16_t bits) {
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}

template <typename T>
LED_DEVICE float to_float(T x);
template <>
LED_DEVICE float to_float<__half>(__half x) { return __half2float(x); }
template <>
LED_DEVICE float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
LED_DEVICE T from_float(float x);
template <>
LED_DEVICE __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
LED_DEVICE __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }


// The shared-memory descriptor of a wgmma operand (wgmma_rs) in a 128-byte-swizzled tile: start
// address, leading and stride byte offsets in 16-byte units (bits 0, 16, 32), swizzle mode 1 (128
// bytes, bits 62-63), base offset 0 (the tile is 1024-byte aligned).
LED_DEVICE uint64_t smem_desc_128b(const void* start, uint32_t leading_bytes, uint32_t stride_bytes) {
  return static_cast<uint64_t>((smem_address(start) >> 4) & 0x3FFFu) |
         (static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFFu) << 32) | (uint64_t{1} << 62);
}

// The descriptor of the operand `bytes` (a multiple of 16) further on: its start field (bits 0-13,
// the address / 16) advanced. Shared addresses stay below 2^18 (228 KiB per SM), so the field never
// carries into the leading-byte offset above it; only the low word changes.
LED_DEVICE uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  return (desc & 0xFFFFFFFF00000000ull) | (static_cast<uint32_t>(desc) + (bytes >> 4));
}

#ifdef LED_SIMT_EMULATOR
namespace detail {
template <typename T>
float element(uint32_t reg, int which) {
  return bits_to_float<T>(static_cast<uint16_t>(which ? reg >> 16 : reg & 0xFFFFu));
}
}  // namespace detail
#endif

}  // namespace simt
}  // namespace led_kernels
