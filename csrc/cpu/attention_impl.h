// Body of the CPU attention kernels, compiled once per instruction set.
//
// Included by attention_isa_{generic,avx2,avx512}.cpp, each built with its own target flags
// (CMakeLists.txt) and defining
//   LED_ISA_NS     namespace of this copy (isa_generic, isa_avx2, isa_avx512)
//   LED_VEC_BYTES  SIMD width in bytes (16, 32, 64)
//   LED_MR/LED_NV  register block of the micro-GEMM: LED_MR rows x LED_NV vectors
// Everything except the two entry points lives in an anonymous namespace, so the copies built
// for different instruction sets can never be merged by the linker (an AVX-512 copy of a helper
// must not end up called from the generic path). For the same reason this file instantiates no
// out-of-line library templates (own imin/imax/Buffer, allocation through attention.cpp) and does
// not use the external-linkage inline helpers of cpu_convert.h (it has vectorized conversions).
//
// SIMD is written with GCC/Clang vector extensions (plus max/min intrinsics on x86), so one
// source serves SSE2/NEON (16 bytes), AVX2 (32) and AVX-512 (64); the ISA files are compiled with
// -ffp-contract=fast so that `acc += a * b` becomes an FMA where the target has one.
//
// Algorithm (FlashAttention-2 style, see DESIGN.md / ANCHORS.md):
//  * Rows and keys are cut into tiles of T = 64. Forward: one task per (b, h, query tile) walks
//    its key tiles (the gathered valid global keys first, then the band, or all keys for kernel
//    B) with an online softmax in base 2 (scale * log2(e) folded into the packed queries). It
//    saves per row the max m and log2 of the sum (the logsumexp, kept in two parts).
//  * Layouts avoid per-tile transposes: the query tile is packed once per task as a panel
//    Q^T (D x T) and every product is C = A * B with A read by scalar broadcast straight from the
//    input rows (fp32: in place through the strides; fp16/bf16: a converted copy) and B a packed
//    panel or a probability tile. Forward: S^T = K Q^T (keys x queries), O^T += V^T P^T, so the
//    softmax statistics are vectors along the query axis.
//  * Backward (deterministic, no atomics). Banded kernel, fused (5 products per tile pair): one
//    task per (b, h, segment of consecutive query tiles) walks its query tiles in order; per tile,
//    sweep 1 recomputes P^T = 2^(S^T - m - log2 sum) and dP^T = V dO^T of its key tiles (cached)
//    and reduces delta = sum_j P dP / sum_j P; sweep 2 forms dS and accumulates dQ^T += K^T dS^T
//    and, in a ring of key rows, dV += P^T dO and dK += dS^T (c Q); a key's row is written once no
//    later query tile can see it. Keys near a segment boundary get both sides' parts added after
//    a barrier, as do the global keys (one task per tile of them walks all rows, S = (cQ) K^T
//    recomputing the forward's products bitwise). Global-rows kernel: per slot tile dQ and delta,
//    then per key tile dK / dV with the keys as GEMM rows. Every output element comes from one
//    task in a fixed order, and the split depends on the shape only: gradients are bitwise
//    reproducible for any thread count.
//  * Memory: per thread O(T * (T * kCacheTiles + D) + (2w + 2T) * D) scratch; O(B * H * (M + G * D))
//    for the row statistics and the global keys' gradients, plus 4w * D * 2 floats per segment
//    boundary; never an N x N or N x (2w + 1) matrix.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "led_kernels/cpu_attention.h"

#if defined(__SSE__) || defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#if !defined(LED_ISA_NS) || !defined(LED_VEC_BYTES) || !defined(LED_MR) || !defined(LED_NV)
#error "define LED_ISA_NS, LED_VEC_BYTES, LED_MR and LED_NV before including attention_impl.h"
#endif

namespace led_kernels {
namespace LED_ISA_NS {

void attention_fwd(const AttnFwdParams& p, int num_threads);
void attention_bwd(const AttnBwdParams& p, int num_threads);

namespace {

constexpr int W = LED_VEC_BYTES / 4;  // floats per vector
constexpr int T = 64;                 // rows per query tile and keys per key tile
constexpr int kCacheTiles = 32;       // key tiles whose P^T / dP^T bwd_q_tile keeps (1 MiB)
// Banded backward: split a (b, h) into segments when B * H is below this. A function of the shape
// only, so gradients do not depend on the thread count; small, because every boundary between two
// segments costs 2 x 2w x D x 2 floats of scratch and enough (b, h) pairs balance by themselves.
constexpr int64_t kSegmentTasks = 8;
constexpr int MR = LED_MR;
constexpr int NV = LED_NV;
static_assert(T % W == 0, "tile size must be a multiple of the vector width");

constexpr float kInf = std::numeric_limits<float>::infinity();

typedef float vf __attribute__((vector_size(LED_VEC_BYTES)));
typedef int32_t vi __attribute__((vector_size(LED_VEC_BYTES)));
typedef uint32_t vu __attribute__((vector_size(LED_VEC_BYTES)));
typedef uint16_t vh __attribute__((vector_size(LED_VEC_BYTES / 2)));

// Own min/max/clamp and buffer type rather than <algorithm> / std::vector: this file is compiled
// once per instruction set, and an out-of-line template instance (e.g. vector<float>::resize built
// with -mavx512f) is a weak symbol that the linker may let the generic path call on a CPU without
// AVX-512. Everything here has internal linkage; allocation goes through attention.cpp.
template <typename X>
inline X imin(X a, X b) { return a < b ? a : b; }
template <typename X>
inline X imax(X a, X b) { return a < b ? b : a; }
template <typename X>
inline X iclamp(X x, X lo, X hi) { return imin(imax(x, lo), hi); }

template <typename E>
struct Buffer {  // 64-byte aligned, uninitialized; elements are written before they are read
  E* p = nullptr;
  explicit Buffer(size_t n) : p(n > 0 ? static_cast<E*>(cpu_workspace_alloc(n * sizeof(E))) : nullptr) {}
  ~Buffer() { cpu_workspace_free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  E& operator[](size_t i) const { return p[i]; }
};

// ---------------------------------------------------------------------------------------------
// SIMD helpers
// ---------------------------------------------------------------------------------------------

inline vf ld(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}
inline void st(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
// Broadcast. Not `vf{} + x`: without -ffast-math 0 + x is not folded (x may be -0), which would
// put an add on the critical path of every micro-GEMM broadcast; x - (+0) == x for every x, so
// the compiler drops the subtraction and emits a plain broadcast.
inline vf splat(float x) { return x - vf{}; }
// Casts between same-size vector types reinterpret the bits (GCC/Clang vector extensions).
inline vf as_f(vu x) { return (vf)x; }
inline vu as_u(vf x) { return (vu)x; }
// Bitwise select (portable across GCC and Clang, unlike the vector ?: operator).
inline vf sel(vi mask, vf a, vf b) {
  const vu m = (vu)mask;
  return as_f((m & as_u(a)) | (~m & as_u(b)));
}
inline vu selu(vi mask, vu a, vu b) {
  const vu m = (vu)mask;
  return (m & a) | (~m & b);
}
// max/min with the constant first: where x is NaN the result is x (NaN propagates), as with the
// x86 max/min instructions when x is their second operand.
// (AVX-512: the zero-masked forms with a full mask, because GCC's _mm512_max_ps passes an
// "undefined" vector that -Wmaybe-uninitialized reports under LTO.)
#if LED_VEC_BYTES == 64 && defined(__AVX512F__)
inline vf vmax(vf c, vf x) { return (vf)_mm512_maskz_max_ps(static_cast<__mmask16>(0xFFFF), (__m512)c, (__m512)x); }
inline vf vmin(vf c, vf x) { return (vf)_mm512_maskz_min_ps(static_cast<__mmask16>(0xFFFF), (__m512)c, (__m512)x); }
#elif LED_VEC_BYTES == 32 && defined(__AVX__)
inline vf vmax(vf c, vf x) { return (vf)_mm256_max_ps((__m256)c, (__m256)x); }
inline vf vmin(vf c, vf x) { return (vf)_mm256_min_ps((__m256)c, (__m256)x); }
#elif LED_VEC_BYTES == 16 && defined(__SSE__)
inline vf vmax(vf c, vf x) { return (vf)_mm_max_ps((__m128)c, (__m128)x); }
inline vf vmin(vf c, vf x) { return (vf)_mm_min_ps((__m128)c, (__m128)x); }
#else
inline vf vmax(vf c, vf x) { return sel(c > x, c, x); }
inline vf vmin(vf c, vf x) { return sel(c < x, c, x); }
#endif

// 2^x with ~2e-7 relative error (Cephes exp2f polynomial on [-0.5, 0.5]). x is clamped to
// [-127, 126]; at x = -127 the exponent field built below is 0, so the result is exactly 0 for
// every x <= -127 (and for x in (-127, -126.5), whose true value is a denormal): in particular
// exp2(-inf) == 0, which the masked scores rely on (a row with no key must not pick up tiny
// weights). NaN propagates. Only x <= ~0 occurs (scores minus a running max or the logsumexp).
inline vf vexp2(vf x) {
  const vf xc = vmin(splat(126.0f), vmax(splat(-127.0f), x));
  // n = floor(xc + 0.5) by truncating a positive number (no portable vector floor)
  const vi n = __builtin_convertvector(xc + 127.5f, vi) - 127;
  const vf f = xc - __builtin_convertvector(n, vf);  // in [-0.5, 0.5)
  vf px = splat(1.535336188319500e-4f);
  px = px * f + 1.339887440266574e-3f;
  px = px * f + 9.618437357674640e-3f;
  px = px * f + 5.550332471162809e-2f;
  px = px * f + 2.402264791363012e-1f;
  px = px * f + 6.931472028550421e-1f;
  const vf pow2n = as_f(((vu)n + 127u) << 23);  // 2^n for n in [-126, 126], 0 for n = -127
  return (px * f + 1.0f) * pow2n;
}

// ---------------------------------------------------------------------------------------------
// dtype conversions (vectorized versions of cpu_convert.h; see there for the derivations)
// ---------------------------------------------------------------------------------------------

inline vf f16_to_f32(vu h) {  // h: zero-extended binary16 bits
  const vu w = h << 16;
  const vu sign = w & 0x80000000u;
  const vu two_w = w + w;
  const vf normalized = as_f((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const vf denormalized = as_f((two_w >> 17) | (126u << 23)) - 0.5f;
  const vi is_denormal = two_w < (1u << 27);
  return as_f(sign | selu(is_denormal, as_u(denormalized), as_u(normalized)));
}

// float -> binary16, round to nearest even (M. Dukhan's FP16 library, fp16_ieee_from_fp32_value).
inline vu f32_to_f16(vf f) {
  const vf abs_f = as_f(as_u(f) & 0x7FFFFFFFu);
  vf base = (abs_f * 0x1.0p+112f) * 0x1.0p-110f;  // overflow -> inf, then a normal scale
  const vu w = as_u(f);
  const vu shl1_w = w + w;
  const vu sign = w & 0x80000000u;
  vu bias = shl1_w & 0xFF000000u;
  bias = selu(bias < 0x71000000u, vu{} + 0x71000000u, bias);
  base = as_f((bias >> 1) + 0x07800000u) + base;
  const vu bits = as_u(base);
  const vu exp_bits = (bits >> 13) & 0x00007C00u;
  const vu mantissa_bits = bits & 0x00000FFFu;
  const vu nonsign = exp_bits + mantissa_bits;
  return (sign >> 16) | selu(shl1_w > 0xFF000000u, vu{} + 0x7E00u, nonsign);
}

// float -> bfloat16, round to nearest even, NaN kept quiet.
inline vu f32_to_bf16(vf f) {
  const vu w = as_u(f);
  const vu rounded = (w + (0x7FFFu + ((w >> 16) & 1u))) >> 16;
  return selu(f != f, (w >> 16) | 0x40u, rounded);
}

// DT: 0 float32, 1 float16, 2 bfloat16 (the DType codes).
template <int DT>
struct Elem {
  using S = uint16_t;
};
template <>
struct Elem<0> {
  using S = float;
};

template <int DT>
inline vf load_vec(const typename Elem<DT>::S* p) {
  if constexpr (DT == 0) {
    return ld(p);
  } else {
    vh h;
    std::memcpy(&h, p, sizeof(h));
    const vu w = __builtin_convertvector(h, vu);
    if constexpr (DT == 1) {
      return f16_to_f32(w);
    } else {
      return as_f(w << 16);
    }
  }
}

template <int DT>
inline void store_vec(typename Elem<DT>::S* p, vf x) {
  if constexpr (DT == 0) {
    st(p, x);
  } else {
    const vu bits = DT == 1 ? f32_to_f16(x) : f32_to_bf16(x);
    const vh h = __builtin_convertvector(bits, vh);
    std::memcpy(p, &h, sizeof(h));
  }
}

// dst[0:n] = mult * float(src[0:n])
template <int DT>
inline void load_row(const typename Elem<DT>::S* src, int n, float mult, float* dst) {
  using S = typename Elem<DT>::S;
  int i = 0;
  for (; i + W <= n; i += W) st(dst + i, load_vec<DT>(src + i) * mult);
  if (i < n) {  // tail through a zero-padded vector: no read past the row
    S tmp[W] = {};
    float out[W];
    std::memcpy(tmp, src + i, sizeof(S) * (n - i));
    st(out, load_vec<DT>(tmp) * mult);
    std::memcpy(dst + i, out, sizeof(float) * (n - i));
  }
}

// dst[0:n] = convert(mult * src[0:n])
template <int DT>
inline void store_row(typename Elem<DT>::S* dst, int n, float mult, const float* src) {
  using S = typename Elem<DT>::S;
  int i = 0;
  for (; i + W <= n; i += W) store_vec<DT>(dst + i, ld(src + i) * mult);
  if (i < n) {
    float tmp[W] = {};
    S out[W];
    std::memcpy(tmp, src + i, sizeof(float) * (n - i));
    store_vec<DT>(out, ld(tmp) * mult);
    std::memcpy(dst + i, out, sizeof(S) * (n - i));
  }
}

// ---------------------------------------------------------------------------------------------
// micro-GEMM:  C (M x N) (+)= A (M x K) * B (K x N)
//   A(m, k) = A[m * ars + k * acs] (scalar broadcasts, so any layout and stride is free),
//   B row k at B + k * ldb and C row m at C + m * ldc, N a multiple of W (panels are padded).
// A register block of mr x nv vectors accumulates the whole K loop, so C is read/written once.
// ---------------------------------------------------------------------------------------------

// kSafe: a product with a zero factor adds nothing, even when the other factor is NaN or inf. The
// attention products multiply probabilities (or dS) that are exactly 0 for masked pairs with rows of
// K, V, Q or dO, so a non-finite row would otherwise reach every row of its tile (0 * NaN = NaN);
// callers take this path only for operands holding a non-finite value (rows_nonfinite). The kept
// products are the same fused multiply-adds as the fast path's, so finite results are bitwise equal.
template <int mr, int nv, bool kAcc, bool kSafe>
inline void ukernel(int K, const float* __restrict A, ptrdiff_t ars, ptrdiff_t acs, const float* __restrict B,
                    ptrdiff_t ldb, float* __restrict C, ptrdiff_t ldc) {
  vf c[mr][nv];
#pragma GCC unroll 16
  for (int m = 0; m < mr; ++m) {
#pragma GCC unroll 16
    for (int v = 0; v < nv; ++v) c[m][v] = kAcc ? ld(C + m * ldc + v * W) : vf{};
  }
  for (int k = 0; k < K; ++k) {
    const float* bk = B + k * ldb;
    const float* ak = A + k * acs;
    vf b[nv];
#pragma GCC unroll 16
    for (int v = 0; v < nv; ++v) b[v] = ld(bk + v * W);
#pragma GCC unroll 16
    for (int m = 0; m < mr; ++m) {
      const vf a = splat(ak[m * ars]);
      if constexpr (kSafe) {
        const vi a_nz = a != vf{};
#pragma GCC unroll 16
        for (int v = 0; v < nv; ++v) c[m][v] = sel(a_nz & (b[v] != vf{}), c[m][v] + a * b[v], c[m][v]);
      } else {
#pragma GCC unroll 16
        for (int v = 0; v < nv; ++v) c[m][v] += a * b[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < mr; ++m) {
#pragma GCC unroll 16
    for (int v = 0; v < nv; ++v) st(C + m * ldc + v * W, c[m][v]);
  }
}

template <int mr, bool kAcc, bool kSafe>
inline void ukernel_nv(int nv, int K, const float* A, ptrdiff_t ars, ptrdiff_t acs, const float* B, ptrdiff_t ldb,
                       float* C, ptrdiff_t ldc) {
  switch (nv) {
    case 1: ukernel<mr, 1, kAcc, kSafe>(K, A, ars, acs, B, ldb, C, ldc); break;
    case 2: if constexpr (NV >= 2) ukernel<mr, 2, kAcc, kSafe>(K, A, ars, acs, B, ldb, C, ldc); break;
    case 3: if constexpr (NV >= 3) ukernel<mr, 3, kAcc, kSafe>(K, A, ars, acs, B, ldb, C, ldc); break;
    case 4: if constexpr (NV >= 4) ukernel<mr, 4, kAcc, kSafe>(K, A, ars, acs, B, ldb, C, ldc); break;
    default: break;
  }
}

template <bool kAcc, bool kSafe = false>
void gemm(int M, int N, int K, const float* A, ptrdiff_t ars, ptrdiff_t acs, const float* B, ptrdiff_t ldb, float* C,
          ptrdiff_t ldc) {
  static_assert(NV >= 1 && NV <= 4 && MR >= 1 && MR <= 8, "register block out of range");
  for (int n0 = 0; n0 < N; n0 += NV * W) {
    const int nv = imin(NV, (N - n0) / W);
    const float* Bn = B + n0;
    float* Cn = C + n0;
    int m0 = 0;
    for (; m0 + MR <= M; m0 += MR) {
      ukernel_nv<MR, kAcc, kSafe>(nv, K, A + m0 * ars, ars, acs, Bn, ldb, Cn + m0 * ldc, ldc);
    }
    const float* At = A + m0 * ars;
    float* Ct = Cn + m0 * ldc;
    switch (M - m0) {  // row tail
      case 0: break;
      case 1: ukernel_nv<1, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      case 2: if constexpr (MR > 2) ukernel_nv<2, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      case 3: if constexpr (MR > 3) ukernel_nv<3, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      case 4: if constexpr (MR > 4) ukernel_nv<4, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      case 5: if constexpr (MR > 5) ukernel_nv<5, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      case 6: if constexpr (MR > 6) ukernel_nv<6, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      case 7: if constexpr (MR > 7) ukernel_nv<7, kAcc, kSafe>(nv, K, At, ars, acs, Bn, ldb, Ct, ldc); break;
      default: break;
    }
  }
}

// C (+)= A * B as gemm, through the safe products when `safe` (see ukernel).
template <bool kAcc>
inline void gemm_nan_safe(bool safe, int M, int N, int K, const float* A, ptrdiff_t ars, ptrdiff_t acs, const float* B,
                          ptrdiff_t ldb, float* C, ptrdiff_t ldc) {
  if (safe) {
    gemm<kAcc, true>(M, N, K, A, ars, acs, B, ldb, C, ldc);
  } else {
    gemm<kAcc, false>(M, N, K, A, ars, acs, B, ldb, C, ldc);
  }
}

// Whether rows 0 .. n of a float block (row stride `stride`, `cols` columns) hold a NaN or an inf:
// x * 0 is 0 for every finite x and NaN otherwise, so one accumulator tells. A pass over a tile's
// operand rows costs ~1/(2T) of the products that read them.
inline bool rows_nonfinite(const float* p, ptrdiff_t stride, int n, int64_t cols) {
  vf acc = vf{};
  float tail = 0.0f;
  for (int r = 0; r < n; ++r) {
    const float* row = p + r * stride;
    int64_t d = 0;
    for (; d + W <= cols; d += W) acc += ld(row + d) * 0.0f;
    for (; d < cols; ++d) tail += row[d] * 0.0f;
  }
  float lanes[W];
  st(lanes, acc);
  bool bad = tail != tail;
  for (int i = 0; i < W; ++i) bad |= lanes[i] != lanes[i];
  return bad;
}

// ---------------------------------------------------------------------------------------------
// Problem description shared by the tasks
// ---------------------------------------------------------------------------------------------

inline int round_up_w(int n) { return (n + W - 1) / W * W; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A (B, rows, H, D) tensor with element strides; stride(D) == 1.
template <typename S>
struct View {
  S* p;
  BNHStrides s;
  S* row(int64_t b, int64_t r, int64_t h) const { return p + b * s.b + r * s.n + h * s.h; }
};

struct Problem {
  AttnKind kind;
  int64_t B, M, N, H, D, G;
  int64_t w;    // kBanded: window clamped to N
  float scale;  // softmax scale
  float c;      // scale * log2(e): folded into the packed queries/keys (base-2 softmax)
  float dk_mult;  // scale / c: dK is accumulated against c * Q
  const int8_t* flags;
  const int32_t* gidx;
  // kBanded: positions of the valid global keys per batch element, compacted, in slot order
  // (gpos[b * G + t], t < gcount[b]); filled by prepare_globals.
  const int32_t* gpos = nullptr;
  const int32_t* gcount = nullptr;
  int32_t gmax = 0;

  // kBanded: row i is a real token unless padding. kGlobalRows: slot s is valid.
  bool row_valid(int64_t b, int64_t r) const {
    if (kind == AttnKind::kBanded) return flags[b * N + r] != 1;
    const int32_t pos = gidx[b * G + r];
    return pos >= 0 && pos < N && flags[b * N + pos] == 2;
  }
  // Key j is excluded from the band (kBanded: not local) or from the dense rows (padding).
  bool key_excluded(int64_t b, int64_t j) const {
    const int8_t f = flags[b * N + j];
    return kind == AttnKind::kBanded ? f != 0 : f == 1;
  }
};

// gpos: B * G entries, gcount: B entries (owned by the caller).
void prepare_globals(Problem& pb, int32_t* gpos, int32_t* gcount) {
  pb.gpos = gpos;
  pb.gcount = gcount;
  pb.gmax = 0;
  for (int64_t b = 0; b < pb.B; ++b) {
    int32_t cnt = 0;
    if (pb.kind == AttnKind::kBanded) {
      for (int64_t s = 0; s < pb.G; ++s) {
        const int32_t pos = pb.gidx[b * pb.G + s];
        if (pos >= 0 && pos < pb.N && pb.flags[b * pb.N + pos] == 2) gpos[b * pb.G + cnt++] = pos;
      }
    }
    gcount[b] = cnt;
    pb.gmax = imax(pb.gmax, cnt);
  }
}

// Per-thread scratch, carved out of one allocation made before the parallel region (so an
// allocation failure throws to Python instead of terminating inside OpenMP).
struct ScratchShape {
  int64_t D;
  bool cache;         // backward: the P^T / dP^T cache of bwd_q_tile
  int64_t ring_rows;  // banded backward: rows of the dK / dV key accumulators (0: none)
};

struct Scratch {
  float* qT;    // D x T   panel: c * Q^T, or K^T of gathered global keys (backward)
  float* doT;   // D x T   panel: dO^T, or V^T of gathered global keys (backward)
  float* acc0;  // D x T   O^T / dQ^T / dK^T accumulator
  float* acc1;  // D x T   dV^T accumulator
  float* s;     // T x T   scores / probabilities
  float* dp;    // T x T   dP / dS
  float* ka;    // T x D   fp32 rows of K (converted or gathered)
  float* va;    // T x D   fp32 rows of V
  float* qa;    // T x Dp  fp32 rows of c * Q (backward; Dp = D rounded up to W, zero padded)
  float* da;    // T x Dp  fp32 rows of dO (backward)
  float* m;     // T       running max (base 2); backward: sum_j P dP
  float* l;     // T       running sum; backward: sum_j P
  float* rmax;  // T       row max of the scaled base-2 scores (forward statistics)
  float* rlog;  // T       log2 of the row sum of exp2(s - rmax)
  float* dlt;   // T       delta (backward)
  float* bias;  // T       0 for a key that may be attended, -inf otherwise
  float* mult;  // T       per-row output multiplier; backward: 1 / sum_j P
  float* stage; // T x D   transposition staging (pack_T / unpack_T)
  float* cache; // kCacheTiles x 2 x T x T   backward: P^T and dP^T of a query tile's key tiles (or null)
  float* ring_k;  // ring_rows x Dp   banded backward: dK rows of the keys in flight (or null)
  float* ring_v;  // ring_rows x Dp   dV rows

  // Floats needed (carve == false) or the buffers laid out from base (carve == true).
  static size_t layout(const ScratchShape& sh, float* base, Scratch* out) {
    const size_t pad = 16;  // keep every buffer 64-byte aligned relative to the base
    auto r = [&](size_t n) { return (n + pad - 1) / pad * pad; };
    const size_t dp_cols = static_cast<size_t>(round_up_w(static_cast<int>(sh.D)));
    const size_t dt = r(static_cast<size_t>(sh.D) * T), dpt = r(dp_cols * T), tt = r(T * T), v = r(T);
    const size_t ring = r(dp_cols * static_cast<size_t>(sh.ring_rows));
    size_t used = 0;
    auto take = [&](size_t n) {
      float* q = base != nullptr ? base + used : nullptr;
      used += n;
      return q;
    };
    Scratch s{};
    s.qT = take(dt);
    s.doT = take(dt);
    s.acc0 = take(dt);
    s.acc1 = take(dt);
    s.s = take(tt);
    s.dp = take(tt);
    s.ka = take(dt);
    s.va = take(dt);
    s.qa = take(dpt);
    s.da = take(dpt);
    s.m = take(v);
    s.l = take(v);
    s.rmax = take(v);
    s.rlog = take(v);
    s.dlt = take(v);
    s.bias = take(v);
    s.mult = take(v);
    s.stage = take(dt);
    s.cache = sh.cache ? take(2 * kCacheTiles * tt) : nullptr;
    s.ring_k = ring > 0 ? take(ring) : nullptr;
    s.ring_v = ring > 0 ? take(ring) : nullptr;
    if (out != nullptr) *out = s;
    return used;
  }
};

struct ScratchPool {
  ScratchShape shape;
  size_t per_thread;
  Buffer<float> mem;
  ScratchPool(int threads, const ScratchShape& sh)
      : shape(sh), per_thread(Scratch::layout(sh, nullptr, nullptr)), mem(per_thread * static_cast<size_t>(threads)) {}
  Scratch get(int thread) {
    Scratch s;
    Scratch::layout(shape, mem.p + per_thread * static_cast<size_t>(thread), &s);
    return s;
  }
};

int thread_count(int num_threads) {
#ifdef _OPENMP
  return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  (void)num_threads;
  return 1;
#endif
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// ---------------------------------------------------------------------------------------------
// Operand staging
// ---------------------------------------------------------------------------------------------

// Rows r0 .. r0+n of (b, h) as fp32 rows: float32 inputs are used in place (ld = the row
// stride), others are converted into buf (ld = D).
template <int DT>
const float* rows_f32(const View<const typename Elem<DT>::S>& x, int64_t b, int64_t h, int64_t r0, int n,
                      int64_t D, float* buf, ptrdiff_t* ld) {
  if constexpr (DT == 0) {
    *ld = x.s.n;
    return x.row(b, r0, h);
  } else {
    for (int i = 0; i < n; ++i) load_row<DT>(x.row(b, r0 + i, h), static_cast<int>(D), 1.0f, buf + i * D);
    *ld = D;
    return buf;
  }
}

// Rows at positions pos[0:n] of (b, h), gathered into buf as fp32 rows (ld = D).
template <int DT>
void gather_f32(const View<const typename Elem<DT>::S>& x, int64_t b, int64_t h, const int32_t* pos, int n,
                int64_t D, float* buf) {
  for (int i = 0; i < n; ++i) load_row<DT>(x.row(b, pos[i], h), static_cast<int>(D), 1.0f, buf + i * D);
}

// panel[d * T + i] = mult * x[row(i)][d] for i < n, 0 for n <= i < round_up_w(n); row(i) is
// r0 + i, or pos[i] when pos is given. A scalar transpose with d outermost: the 64 source rows
// are touched together (their cache misses overlap) and no load reads a just-written vector
// (a narrow load from a wide store that has not committed stalls on store forwarding).
// fp16/bf16 rows are first converted into `stage` (T x D) by whole tiles for the same reason.
template <int DT>
void pack_T(const View<const typename Elem<DT>::S>& x, int64_t b, int64_t h, int64_t r0, const int32_t* pos, int n,
            int64_t D, float mult, float* panel, float* stage) {
  const int np = round_up_w(n);
  const float* rows[T];
  if constexpr (DT == 0) {
    for (int i = 0; i < n; ++i) rows[i] = x.row(b, pos != nullptr ? pos[i] : r0 + i, h);
  } else {
    for (int i = 0; i < n; ++i) {
      load_row<DT>(x.row(b, pos != nullptr ? pos[i] : r0 + i, h), static_cast<int>(D), 1.0f, stage + i * D);
      rows[i] = stage + i * D;
    }
  }
  for (int64_t d = 0; d < D; ++d) {
    float* dst = panel + d * T;
    for (int i = 0; i < n; ++i) dst[i] = mult * rows[i][d];
    for (int i = n; i < np; ++i) dst[i] = 0.0f;
  }
}

// out[r0 + i][d] = mult[i] * panel[d * T + i] for i < n, converted to the output dtype. A row with
// multiplier 0 is exactly 0, whatever its accumulator holds (a padding row that met a NaN key).
template <int DT>
void unpack_T(const View<typename Elem<DT>::S>& out, int64_t b, int64_t h, int64_t r0, int n, int64_t D,
              const float* panel, const float* mult, float* stage) {
  if constexpr (DT == 0) {
    for (int i = 0; i < n; ++i) {
      float* dst = out.row(b, r0 + i, h);
      const float mi = mult[i];
      if (mi == 0.0f) {
        std::memset(dst, 0, sizeof(float) * D);
        continue;
      }
      for (int64_t d = 0; d < D; ++d) dst[d] = mi * panel[d * T + i];
    }
  } else {
    for (int i = 0; i < n; ++i) {
      const float mi = mult[i];
      if (mi == 0.0f) {
        std::memset(stage + i * D, 0, sizeof(float) * D);
        continue;
      }
      for (int64_t d = 0; d < D; ++d) stage[i * D + d] = mi * panel[d * T + i];
    }
    for (int i = 0; i < n; ++i) store_row<DT>(out.row(b, r0 + i, h), static_cast<int>(D), 1.0f, stage + i * D);
  }
}

template <int DT>
void zero_rows(const View<typename Elem<DT>::S>& out, int64_t b, int64_t h, int64_t r0, int n, int64_t D) {
  using S = typename Elem<DT>::S;
  for (int i = 0; i < n; ++i) std::memset(out.row(b, r0 + i, h), 0, sizeof(S) * D);
}

// Prefetches rows r0 .. r0+n (clipped to [0, rows)) of (b, h). The rows of a tile are far apart
// (the row stride of a fused projection is several KiB), so the hardware prefetchers do not
// follow them; fetching the next tile while the current one is computed hides the misses.
template <typename S>
inline void prefetch_rows(const View<const S>& x, int64_t b, int64_t h, int64_t r0, int64_t n, int64_t rows,
                          int64_t D) {
  const int64_t end = imin(r0 + n, rows);
  const int64_t bytes = D * static_cast<int64_t>(sizeof(S));
  for (int64_t r = imax<int64_t>(r0, 0); r < end; ++r) {
    const char* p = reinterpret_cast<const char*>(x.row(b, r, h));
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
  }
}

// ---------------------------------------------------------------------------------------------
// Key tiles seen by a query tile (forward and bwd_q_tile)
// ---------------------------------------------------------------------------------------------

struct KeyTile {
  int n;               // keys
  const float* k;      // fp32 rows, row stride ks
  ptrdiff_t ks;
  const float* v;
  ptrdiff_t vs;
  int64_t p0;          // position of key 0 (contiguous tiles); -1 for gathered global keys
  bool key_mask;       // some key of the tile is excluded (Problem::key_excluded)
  bool band_mask;      // some (query, key) pair of the tile is outside the band
};

// Calls fn(KeyTile) for every key tile that query rows r0 .. r0+n of (b, h) attend: the gathered
// valid global keys (kBanded), then the band tiles (kBanded) or all key tiles (kGlobalRows).
// Tiles without any attendable key are skipped.
template <int DT, typename Fn>
void for_each_key_tile(const Problem& pb, const View<const typename Elem<DT>::S>& k,
                       const View<const typename Elem<DT>::S>& v, int64_t b, int64_t h, int64_t r0, int n,
                       Scratch& s, Fn&& fn) {
  const int64_t D = pb.D;
  if (pb.kind == AttnKind::kBanded) {
    const int32_t cnt = pb.gcount[b];
    const int32_t* pos = pb.gpos + b * pb.G;
    for (int32_t t0 = 0; t0 < cnt; t0 += T) {
      const int tn = imin<int>(T, cnt - t0);
      gather_f32<DT>(k, b, h, pos + t0, tn, D, s.ka);
      gather_f32<DT>(v, b, h, pos + t0, tn, D, s.va);
      fn(KeyTile{tn, s.ka, static_cast<ptrdiff_t>(D), s.va, static_cast<ptrdiff_t>(D), -1, false, false});
    }
  }
  int64_t lo = 0, hi = pb.N;
  if (pb.kind == AttnKind::kBanded) {
    lo = imax<int64_t>(0, r0 - pb.w);
    hi = imin<int64_t>(pb.N, r0 + n + pb.w);
  }
  prefetch_rows(k, b, h, lo, T, hi, D);
  prefetch_rows(v, b, h, lo, T, hi, D);
  for (int64_t j0 = lo; j0 < hi; j0 += T) {
    const int tn = static_cast<int>(imin<int64_t>(T, hi - j0));
    prefetch_rows(k, b, h, j0 + T, T, hi, D);  // the next tile, while this one is computed
    prefetch_rows(v, b, h, j0 + T, T, hi, D);
    int excluded = 0;
    for (int j = 0; j < tn; ++j) excluded += pb.key_excluded(b, j0 + j);
    if (excluded == tn) continue;
    bool band_mask = false;
    if (pb.kind == AttnKind::kBanded) {
      // every pair is inside the band iff the farthest corners are
      band_mask = !((j0 + tn - 1 - r0 <= pb.w) && (r0 + n - 1 - j0 <= pb.w));
    }
    ptrdiff_t ks, vs;
    const float* kp = rows_f32<DT>(k, b, h, j0, tn, D, s.ka, &ks);
    const float* vp = rows_f32<DT>(v, b, h, j0, tn, D, s.va, &vs);
    fn(KeyTile{tn, kp, ks, vp, vs, j0, excluded > 0, band_mask});
  }
}

// Sets the excluded entries of a transposed score tile S^T (kt.n key rows x np query columns,
// row stride T; query column i is row r0 + i) to -inf.
inline void mask_scores_T(const Problem& pb, int64_t b, const KeyTile& kt, int64_t r0, int np, float* S) {
  if (!kt.key_mask && !kt.band_mask) return;
  for (int j = 0; j < kt.n; ++j) {
    float* row = S + j * T;
    const int64_t pj = kt.p0 + j;
    if (kt.key_mask && pb.key_excluded(b, pj)) {
      for (int i = 0; i < np; ++i) row[i] = -kInf;
      continue;
    }
    if (kt.band_mask) {
      // query i sees key pj iff pj - w <= r0 + i <= pj + w
      const int64_t first = iclamp<int64_t>(pj - pb.w - r0, 0, np);
      const int64_t last = iclamp<int64_t>(pj + pb.w - r0 + 1, 0, np);
      for (int64_t i = 0; i < first; ++i) row[i] = -kInf;
      for (int64_t i = last; i < np; ++i) row[i] = -kInf;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: one query tile
// ---------------------------------------------------------------------------------------------

constexpr int kChunks = T / W;  // vectors per tile row

// Tasks per OpenMP scheduling chunk: small enough to rebalance when a thread is preempted (the
// 2-core machines this runs on are shared), large enough that neighbouring tiles, which share
// most of their key tiles, usually run on the same core.
#ifndef LED_TASK_CHUNK
#define LED_TASK_CHUNK 2
#endif

// One online-softmax step on a transposed score tile S^T (n key rows x np query columns, row
// stride T, base-2 units): per query column, the running max m and sum l are updated, S^T is
// overwritten by the probabilities exp2(S - m) and the accumulator rows acc[d] (D x np, row
// stride T) are rescaled. Vectorized along the query axis, with one independent max / sum chain
// per vector of columns.
inline void online_softmax_T(float* S, int n, int np, float* m, float* l, float* acc, int64_t D) {
  const int nc = np / W;
  vf mt[kChunks], mu[kChunks], sum[kChunks];
  for (int c = 0; c < kChunks; ++c) mt[c] = splat(-kInf);
  for (int j = 0; j < n; ++j) {
    const float* row = S + j * T;
    for (int c = 0; c < nc; ++c) mt[c] = vmax(mt[c], ld(row + c * W));
  }
  vf alpha[kChunks];
  for (int c = 0; c < nc; ++c) {
    const vf mo = ld(m + c * W);
    const vf mn = vmax(mo, mt[c]);
    mu[c] = sel(mn == splat(-kInf), vf{}, mn);  // nothing attended yet: any finite shift
    alpha[c] = vexp2(mo - mu[c]);               // 0 while mo == -inf
    st(m + c * W, mn);
    sum[c] = vf{};
  }
  for (int j = 0; j < n; ++j) {
    float* row = S + j * T;
    for (int c = 0; c < nc; ++c) {
      const vf p = vexp2(ld(row + c * W) - mu[c]);
      st(row + c * W, p);
      sum[c] += p;
    }
  }
  for (int c = 0; c < nc; ++c) st(l + c * W, ld(l + c * W) * alpha[c] + sum[c]);
  for (int64_t d = 0; d < D; ++d) {
    float* arow = acc + d * T;
    for (int c = 0; c < nc; ++c) st(arow + c * W, ld(arow + c * W) * alpha[c]);
  }
}

template <int DT>
struct FwdArgs {
  using S = typename Elem<DT>::S;
  View<const S> q, k, v;
  View<S> out;
  float* lse;
};

template <int DT>
void fwd_tile(const Problem& pb, const FwdArgs<DT>& a, int64_t b, int64_t h, int64_t r0, Scratch& s) {
  const int64_t D = pb.D;
  const int n = static_cast<int>(imin<int64_t>(T, pb.M - r0));
  const int np = round_up_w(n);
  float* lse_max = a.lse + (b * pb.H + h) * 2 * pb.M + r0;  // (B, H, 2, M): row max, then log2(sum)
  float* lse_log = lse_max + pb.M;

  bool any_valid = false;
  for (int i = 0; i < n; ++i) {
    const bool ok = pb.row_valid(b, r0 + i);
    s.mult[i] = ok ? 1.0f : 0.0f;
    any_valid |= ok;
  }
  if (!any_valid) {
    zero_rows<DT>(a.out, b, h, r0, n, D);
    for (int i = 0; i < n; ++i) {
      lse_max[i] = kInf;
      lse_log[i] = 0.0f;
    }
    return;
  }

  pack_T<DT>(a.q, b, h, r0, nullptr, n, D, pb.c, s.qT, s.stage);
  prefetch_rows(a.q, b, h, r0 + T, T, pb.M, D);  // likely this thread's next task (LED_TASK_CHUNK)
  for (int i = 0; i < np; ++i) {
    s.m[i] = -kInf;
    s.l[i] = 0.0f;
  }
  for (int64_t d = 0; d < D; ++d) std::memset(s.acc0 + d * T, 0, sizeof(float) * np);

  for_each_key_tile<DT>(pb, a.k, a.v, b, h, r0, n, s, [&](const KeyTile& kt) {
    // S^T (kt.n x np) = K (kt.n x D) * Q^T (D x np), in base-2 units
    gemm<false>(kt.n, np, static_cast<int>(D), kt.k, kt.ks, 1, s.qT, T, s.s, T);
    mask_scores_T(pb, b, kt, r0, np, s.s);
    online_softmax_T(s.s, kt.n, np, s.m, s.l, s.acc0, D);
    // O^T (D x np) += V^T (D x kt.n) * P^T (kt.n x np); masked pairs have P = 0 (see ukernel)
    const bool safe = (kt.key_mask || kt.band_mask) && rows_nonfinite(kt.v, kt.vs, kt.n, D);
    gemm_nan_safe<true>(safe, static_cast<int>(D), np, kt.n, kt.v, 1, kt.vs, s.s, T, s.acc0, T);
  });

  for (int i = 0; i < n; ++i) {
    const float l = s.l[i];
    // NaN l: the row attended a non-finite score or value; it stays NaN (never silently 0)
    if (s.mult[i] != 0.0f && !(l <= 0.0f)) {
      s.mult[i] = 1.0f / l;
      lse_max[i] = s.m[i];
      lse_log[i] = std::log2(l);
    } else {  // padding / invalid slot / nothing to attend: 0, and exp2(s - inf) == 0 in backward
      s.mult[i] = 0.0f;
      lse_max[i] = kInf;
      lse_log[i] = 0.0f;
    }
  }
  unpack_T<DT>(a.out, b, h, r0, n, D, s.acc0, s.mult, s.stage);
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// dS = P (dP - delta) / sum P, and exactly 0 where P is: dP is NaN on every row next to a non-finite
// value row, masked pairs included, and a row's delta is NaN when the row attended one.
inline vf ds_of(vf p, vf dp, vf delta, vf inv_sum) { return sel(p != vf{}, p * (dp - delta) * inv_sum, vf{}); }

template <int DT>
struct BwdArgs {
  using S = typename Elem<DT>::S;
  View<const S> q, k, v, dout;
  const float* lse;  // (B, H, 2, M) forward statistics
  View<S> dq, dk, dv;
  float* delta;  // (B, H, M) sum_j P dP / sum_j P, written by bwd_q_tile
  float* isig;   // (B, H, M) 1 / sum_j P (0 for rows that attend nothing)
  float* gk;  // kBanded: (B, H, G, D) fp32 gradients of the gathered global keys (scaled)
  float* gv;
};

// The banded kernel's global keys (gathered, positions pos[0:n], compacted slots gslot0 ..):
// their dK / dV collect from every query row, so one task per tile of them walks all query tiles
// after the fused pass has produced every row's delta (S = (cQ) K^T, dP = dO V^T, dV^T += dO^T P,
// dK^T += (cQ)^T dS), and writes float32 rows of gk / gv for scatter_global_grads.
template <int DT>
void bwd_global_keys_tile(const Problem& pb, const BwdArgs<DT>& a, int64_t b, int64_t h, const int32_t* pos, int n,
                          int64_t gslot0, Scratch& s) {
  const int64_t D = pb.D;
  const int Di = static_cast<int>(D);
  const int nkp = round_up_w(n);
  for (int j = 0; j < nkp; ++j) s.bias[j] = j < n ? 0.0f : -kInf;  // padding columns
  for (int64_t d = 0; d < D; ++d) {
    std::memset(s.acc0 + d * T, 0, sizeof(float) * nkp);
    std::memset(s.acc1 + d * T, 0, sizeof(float) * nkp);
  }
  pack_T<DT>(a.k, b, h, 0, pos, n, D, 1.0f, s.qT, s.stage);   // K^T
  pack_T<DT>(a.v, b, h, 0, pos, n, D, 1.0f, s.doT, s.stage);  // V^T
  const float* max_bh = a.lse + (b * pb.H + h) * 2 * pb.M;
  const float* log_bh = max_bh + pb.M;
  const float* delta_bh = a.delta + (b * pb.H + h) * pb.M;
  const float* isig_bh = a.isig + (b * pb.H + h) * pb.M;
  for (int64_t r0 = 0; r0 < pb.M; r0 += T) {
    const int rn = static_cast<int>(imin<int64_t>(T, pb.M - r0));
    bool any = false;
    for (int i = 0; i < rn; ++i) any |= max_bh[r0 + i] != kInf;  // +inf: the row attends nothing
    if (!any) continue;
    prefetch_rows(a.q, b, h, r0 + T, T, pb.M, D);
    prefetch_rows(a.dout, b, h, r0 + T, T, pb.M, D);
    // The queries scaled by c, as in the forward's packed panel: every score below is then the
    // same sum of the same fp32 products fma(k, c*q, acc) in the same order as the forward's, so
    // it is bitwise equal and 2^(s - max) matches the saved statistics exactly.
    for (int i = 0; i < rn; ++i) load_row<DT>(a.q.row(b, r0 + i, h), Di, pb.c, s.qa + i * D);
    const float* cQ = s.qa;
    ptrdiff_t dld;
    const float* dO = rows_f32<DT>(a.dout, b, h, r0, rn, D, s.da, &dld);
    // S (rn x nkp) = (c Q) (rn x D) * K^T (D x nkp);  dP (rn x nkp) = dO (rn x D) * V^T (D x nkp)
    gemm<false>(rn, nkp, Di, cQ, D, 1, s.qT, T, s.s, T);
    gemm<false>(rn, nkp, Di, dO, dld, 1, s.doT, T, s.dp, T);
    // rows that attend nothing get P = dS = 0 below, but their Q / dO rows still meet them
    const bool safe = rows_nonfinite(cQ, D, rn, D) || rows_nonfinite(dO, dld, rn, D);
    for (int i = 0; i < rn; ++i) {
      float* srow = s.s + i * T;
      float* drow = s.dp + i * T;
      if (max_bh[r0 + i] == kInf) {
        std::memset(srow, 0, sizeof(float) * nkp);
        std::memset(drow, 0, sizeof(float) * nkp);
        continue;
      }
      const vf vmx = splat(max_bh[r0 + i]), vlg = splat(log_bh[r0 + i]);
      const vf vdelta = splat(delta_bh[r0 + i]), vis = splat(isig_bh[r0 + i]);
      for (int c0 = 0; c0 < nkp; c0 += W) {
        // (s - max) first: exact for the scores near the max, which carry the weight
        const vf pv = vexp2((ld(srow + c0) + ld(s.bias + c0) - vmx) - vlg);
        st(srow + c0, pv);
        st(drow + c0, ds_of(pv, ld(drow + c0), vdelta, vis));
      }
    }
    // dV^T (D x nkp) += dO^T (D x rn) * P (rn x nkp);  dK^T += (c Q)^T (D x rn) * dS (rn x nkp)
    gemm_nan_safe<true>(safe, Di, nkp, rn, dO, 1, dld, s.s, T, s.acc1, T);
    gemm_nan_safe<true>(safe, Di, nkp, rn, cQ, 1, D, s.dp, T, s.acc0, T);
  }
  float* gk = a.gk + ((b * pb.H + h) * pb.G + gslot0) * D;
  float* gv = a.gv + ((b * pb.H + h) * pb.G + gslot0) * D;
  for (int j = 0; j < n; ++j) {
    for (int64_t d = 0; d < D; ++d) {
      gk[j * D + d] = pb.dk_mult * s.acc0[d * T + j];
      gv[j * D + d] = s.acc1[d * T + j];
    }
  }
}

// The global-rows kernel's dK / dV of one key tile (positions j0 .. j0+n, padding keys get 0):
// its rows are the few global slots, so the tile is worked in the transposed layout with the
// keys as GEMM rows, reading K and V in place, and dK / dV come out as rows (no transposes):
// per slot tile, S^T = K (c Q)^T (the forward's product), dP^T = V dO^T, then
// dV (n x dp) += P^T dO and dK += dS^T (c Q), accumulated in ring_k / ring_v (T x dp).
template <int DT>
void bwd_global_rows_keys_tile(const Problem& pb, const BwdArgs<DT>& a, int64_t b, int64_t h, int64_t j0, int n,
                               Scratch& s) {
  const int64_t D = pb.D;
  const int Di = static_cast<int>(D);
  const int dp = round_up_w(Di);
  std::memset(s.ring_k, 0, sizeof(float) * n * dp);
  std::memset(s.ring_v, 0, sizeof(float) * n * dp);
  int excluded = 0;
  for (int j = 0; j < n; ++j) excluded += pb.key_excluded(b, j0 + j);
  if (excluded < n) {
    const KeyTile kt = [&] {
      ptrdiff_t ks, vs;
      const float* kp = rows_f32<DT>(a.k, b, h, j0, n, D, s.ka, &ks);
      const float* vp = rows_f32<DT>(a.v, b, h, j0, n, D, s.va, &vs);
      return KeyTile{n, kp, ks, vp, vs, j0, excluded > 0, false};
    }();
    prefetch_rows(a.k, b, h, j0 + T, T, pb.N, D);
    prefetch_rows(a.v, b, h, j0 + T, T, pb.N, D);
    const float* max_bh = a.lse + (b * pb.H + h) * 2 * pb.M;
    const float* log_bh = max_bh + pb.M;
    for (int64_t r0 = 0; r0 < pb.M; r0 += T) {
      const int rn = static_cast<int>(imin<int64_t>(T, pb.M - r0));
      const int np = round_up_w(rn);
      bool any = false;
      for (int i = 0; i < np; ++i) {
        const int64_t o = (b * pb.H + h) * pb.M + r0 + i;
        s.rmax[i] = i < rn ? max_bh[r0 + i] : kInf;
        s.rlog[i] = i < rn ? log_bh[r0 + i] : 0.0f;
        s.dlt[i] = i < rn ? a.delta[o] : 0.0f;
        s.mult[i] = i < rn ? a.isig[o] : 0.0f;
        any |= s.rmax[i] != kInf;
      }
      if (!any) continue;
      pack_T<DT>(a.q, b, h, r0, nullptr, rn, D, pb.c, s.qT, s.stage);
      pack_T<DT>(a.dout, b, h, r0, nullptr, rn, D, 1.0f, s.doT, s.stage);
      for (int i = 0; i < rn; ++i) {
        float* cq = s.qa + i * dp;
        float* dd = s.da + i * dp;
        load_row<DT>(a.q.row(b, r0 + i, h), Di, pb.c, cq);
        load_row<DT>(a.dout.row(b, r0 + i, h), Di, 1.0f, dd);
        for (int d = Di; d < dp; ++d) cq[d] = dd[d] = 0.0f;
      }
      gemm<false>(n, np, Di, kt.k, kt.ks, 1, s.qT, T, s.s, T);   // S^T
      mask_scores_T(pb, b, kt, r0, np, s.s);                      // padding keys
      gemm<false>(n, np, Di, kt.v, kt.vs, 1, s.doT, T, s.dp, T);  // dP^T
      for (int c0 = 0; c0 < np; c0 += W) {
        const vf mx = ld(s.rmax + c0), lg = ld(s.rlog + c0), dl = ld(s.dlt + c0), is = ld(s.mult + c0);
        const vi dead = mx == splat(kInf);
        for (int j = 0; j < n; ++j) {
          const vf sv = ld(s.s + j * T + c0);
          const vf pv = sel((sv == splat(-kInf)) | dead, vf{}, vexp2((sv - mx) - lg));
          st(s.s + j * T + c0, pv);
          st(s.dp + j * T + c0, ds_of(pv, ld(s.dp + j * T + c0), dl, is));  // dS^T
        }
      }
      const bool safe = rows_nonfinite(s.qa, dp, rn, Di) || rows_nonfinite(s.da, dp, rn, Di);
      gemm_nan_safe<true>(safe, n, dp, rn, s.s, T, 1, s.da, dp, s.ring_v, dp);   // dV += P^T dO
      gemm_nan_safe<true>(safe, n, dp, rn, s.dp, T, 1, s.qa, dp, s.ring_k, dp);  // dK += dS^T (c Q)
    }
  }
  for (int j = 0; j < n; ++j) {
    store_row<DT>(a.dk.row(b, j0 + j, h), Di, pb.dk_mult, s.ring_k + j * dp);
    store_row<DT>(a.dv.row(b, j0 + j, h), Di, 1.0f, s.ring_v + j * dp);
  }
}

// Banded backward, fused: the dK / dV rows of the keys a run of consecutive query tiles is
// working on. Keys ks .. ke are mapped to ring rows (j - ks) mod rows; a key enters (zeroed) when a
// key tile first reaches it and leaves (flush) once no later query tile of the run can see it.
// At most T + 2w keys are in flight, so rows = min(2w + 2T, N + T) never collide.
struct KeyAcc {
  float* k;       // rows x dp: sum_i dS_ij (c q_i)   (times scale / c when written)
  float* v;       // rows x dp: sum_i P_ij dO_i
  int64_t rows;
  int dp;         // D rounded up to W
  int64_t ks;     // first key of the run
  int64_t inited;   // keys ks .. inited have a (zeroed or accumulated) row
  int64_t flushed;  // keys ks .. flushed have left

  float* krow(int64_t j) const { return k + ((j - ks) % rows) * dp; }
  float* vrow(int64_t j) const { return v + ((j - ks) % rows) * dp; }
  void ensure(int64_t upto) {
    for (; inited < upto; ++inited) {
      std::memset(krow(inited), 0, sizeof(float) * dp);
      std::memset(vrow(inited), 0, sizeof(float) * dp);
    }
  }
};

// dV rows += P^T (kt.n x n) * dO (n x dp) and dK rows += dS^T (kt.n x n) * (c Q) (n x dp) for the
// key tile kt (contiguous positions kt.p0 ..), split where the ring wraps.
// safe: cQ or dO hold a non-finite row (see ukernel).
inline void key_acc_add(KeyAcc& acc, const KeyTile& kt, const float* P, const float* dS, int n, const float* cQ,
                        const float* dO, bool safe) {
  acc.ensure(kt.p0 + kt.n);
  for (int done = 0; done < kt.n;) {
    const int64_t idx = (kt.p0 + done - acc.ks) % acc.rows;
    const int cnt = static_cast<int>(imin<int64_t>(kt.n - done, acc.rows - idx));
    gemm_nan_safe<true>(safe, cnt, acc.dp, n, P + done * T, T, 1, dO, acc.dp, acc.v + idx * acc.dp, acc.dp);
    gemm_nan_safe<true>(safe, cnt, acc.dp, n, dS + done * T, T, 1, cQ, acc.dp, acc.k + idx * acc.dp, acc.dp);
    done += cnt;
  }
}

// Backward of one query tile: dQ, the rows' delta, and (with acc) the band keys' dK / dV parts.
//
// delta is computed here as sum_j P dP / sum_j P from the probabilities exactly as the backward
// recomputes them (every other use recomputes the same bits), not as rowsum(dO * O) from the
// forward's output: O went through the online softmax's rescalings and a long fp32 sum, and the
// mismatch between the two, times the mean key, dominates dQ's error whenever keys share a large
// common component (biased projections). Dividing by sum_j P also cancels the rounding of the
// saved log-sum. Sweep 1 computes and caches P^T and dP^T of every key tile (up to kCacheTiles,
// the rest are recomputed in sweep 2) and reduces the two sums with 4 partial accumulators per
// tile; sweep 2 forms dS^T = P^T (dP^T - delta) / sum P and dQ^T += K^T dS^T.
//
// With acc (banded kernel), sweep 2 also accumulates every band key tile's dK / dV rows:
// dV += P^T dO, dK += dS^T (c Q) (see bwd_banded_segment). Without (global rows kernel), the rows'
// delta is left for bwd_global_rows_keys_tile.
template <int DT>
void bwd_q_tile(const Problem& pb, const BwdArgs<DT>& a, int64_t b, int64_t h, int64_t r0, Scratch& s,
                KeyAcc* acc) {
  const int64_t D = pb.D;
  const int Di = static_cast<int>(D);
  const int n = static_cast<int>(imin<int64_t>(T, pb.M - r0));
  const int np = round_up_w(n);
  const int64_t row0 = (b * pb.H + h) * pb.M + r0;  // (B, H, M) offset of the tile's first row
  const float* max_r = a.lse + (b * pb.H + h) * 2 * pb.M + r0;
  const float* log_r = max_r + pb.M;
  bool any = false;
  for (int i = 0; i < np; ++i) {
    s.rmax[i] = i < n ? max_r[i] : kInf;
    s.rlog[i] = i < n ? log_r[i] : 0.0f;
    s.l[i] = 0.0f;  // sum_j P
    s.m[i] = 0.0f;  // sum_j P dP
    any |= s.rmax[i] != kInf;
  }
  if (!any) {
    zero_rows<DT>(a.dq, b, h, r0, n, D);
    for (int i = 0; i < n; ++i) a.delta[row0 + i] = a.isig[row0 + i] = 0.0f;
    return;
  }
  pack_T<DT>(a.q, b, h, r0, nullptr, n, D, pb.c, s.qT, s.stage);
  pack_T<DT>(a.dout, b, h, r0, nullptr, n, D, 1.0f, s.doT, s.stage);
  bool rows_safe = false;  // the key GEMMs meet a non-finite Q or dO row
  if (acc != nullptr) {  // row-major c * Q and dO, zero padded to dp columns: B of the key GEMMs
    for (int i = 0; i < n; ++i) {
      float* cq = s.qa + i * acc->dp;
      float* dd = s.da + i * acc->dp;
      load_row<DT>(a.q.row(b, r0 + i, h), Di, pb.c, cq);
      load_row<DT>(a.dout.row(b, r0 + i, h), Di, 1.0f, dd);
      for (int d = Di; d < acc->dp; ++d) cq[d] = dd[d] = 0.0f;
    }
    rows_safe = rows_nonfinite(s.qa, acc->dp, n, Di) || rows_nonfinite(s.da, acc->dp, n, Di);
  }
  prefetch_rows(a.q, b, h, r0 + T, T, pb.M, D);
  prefetch_rows(a.dout, b, h, r0 + T, T, pb.M, D);

  // P^T and dP^T (kt.n x np each, row stride T) of one key tile, into P and dP; with sums, also
  // sum_j P and sum_j P dP added to s.l and s.m (4 partial sums per tile: short fp32 chains).
  auto probs = [&](const KeyTile& kt, float* P, float* dP, bool sums) {
    // S^T (kt.n x np) = K * (c Q^T): the forward's product, so P matches its statistics
    gemm<false>(kt.n, np, Di, kt.k, kt.ks, 1, s.qT, T, P, T);
    mask_scores_T(pb, b, kt, r0, np, P);
    // dP^T (kt.n x np) = V (kt.n x D) * dO^T (D x np)
    gemm<false>(kt.n, np, Di, kt.v, kt.vs, 1, s.doT, T, dP, T);
    for (int c0 = 0; c0 < np; c0 += W) {
      const vf mx = ld(s.rmax + c0), lg = ld(s.rlog + c0);
      // exactly 0 for masked pairs and rows that attend nothing, even next to a non-finite score
      // (a padding row's NaN query) or statistic (a row that attended a non-finite value)
      const vi dead = mx == splat(kInf);
      vf sp[4] = {}, spd[4] = {};
      for (int j = 0; j < kt.n; ++j) {
        const vf sv = ld(P + j * T + c0);
        const vf pv = sel((sv == splat(-kInf)) | dead, vf{}, vexp2((sv - mx) - lg));
        st(P + j * T + c0, pv);
        sp[j & 3] += pv;
        spd[j & 3] += sel(pv != vf{}, pv * ld(dP + j * T + c0), vf{});
      }
      if (sums) {
        st(s.l + c0, ld(s.l + c0) + ((sp[0] + sp[1]) + (sp[2] + sp[3])));
        st(s.m + c0, ld(s.m + c0) + ((spd[0] + spd[1]) + (spd[2] + spd[3])));
      }
    }
  };

  int tile = 0;
  for_each_key_tile<DT>(pb, a.k, a.v, b, h, r0, n, s, [&](const KeyTile& kt) {
    const bool cached = tile < kCacheTiles;
    float* P = cached ? s.cache + tile * 2 * T * T : s.s;
    float* dP = cached ? P + T * T : s.dp;
    probs(kt, P, dP, true);
    ++tile;
  });
  for (int i = 0; i < np; ++i) {
    const float sum = s.l[i];
    s.dlt[i] = sum > 0.0f ? s.m[i] / sum : 0.0f;
    s.mult[i] = sum > 0.0f ? 1.0f / sum : 0.0f;
    if (i < n) {
      a.delta[row0 + i] = s.dlt[i];
      a.isig[row0 + i] = s.mult[i];
    }
  }

  for (int64_t d = 0; d < D; ++d) std::memset(s.acc0 + d * T, 0, sizeof(float) * np);
  tile = 0;
  for_each_key_tile<DT>(pb, a.k, a.v, b, h, r0, n, s, [&](const KeyTile& kt) {
    float* P = s.s;
    float* dP = s.dp;
    if (tile < kCacheTiles) {
      P = s.cache + tile * 2 * T * T;
      dP = P + T * T;
    } else {
      probs(kt, P, dP, false);
    }
    for (int c0 = 0; c0 < np; c0 += W) {
      const vf dl = ld(s.dlt + c0), is = ld(s.mult + c0);
      for (int j = 0; j < kt.n; ++j) {
        st(dP + j * T + c0, ds_of(ld(P + j * T + c0), ld(dP + j * T + c0), dl, is));  // dS^T
      }
    }
    // dQ^T (D x np) += K^T (D x kt.n) * dS^T (kt.n x np)
    gemm_nan_safe<true>(rows_nonfinite(kt.k, kt.ks, kt.n, D), Di, np, kt.n, kt.k, 1, kt.ks, dP, T, s.acc0, T);
    if (acc != nullptr && kt.p0 >= 0) key_acc_add(*acc, kt, P, dP, n, s.qa, s.da, rows_safe);
    ++tile;
  });
  for (int i = 0; i < n; ++i) s.mult[i] = pb.scale;
  unpack_T<DT>(a.dq, b, h, r0, n, D, s.acc0, s.mult, s.stage);
}

// Banded backward, fused: the query tiles of a (b, h) are split into runs ("segments") of at
// least 2w + T rows, a number that depends on the shape only (so results do not depend on the
// thread count). Keys within w of a boundary between two segments are seen by both: each side
// writes its part to a float32 scratch and reduce_boundary adds the two in a fixed order.
struct SegPlan {
  int64_t qtiles;  // query tiles per (b, h)
  int64_t len;     // query tiles per segment (the last one may be shorter)
  int64_t count;   // segments per (b, h)
  int64_t zone;    // keys per boundary zone: 2w
  int dp;

  SegPlan(const Problem& pb, int64_t BH) {
    qtiles = ceil_div(pb.N, T);
    const int64_t min_len = ceil_div(2 * pb.w + T, T);
    // enough independent runs for a many-core machine when B * H is small
    const int64_t want = imax<int64_t>(1, ceil_div(kSegmentTasks, imax<int64_t>(BH, 1)));
    count = imax<int64_t>(1, imin<int64_t>(want, qtiles / min_len));
    len = ceil_div(qtiles, count);
    count = ceil_div(qtiles, len);
    zone = 2 * pb.w;
    dp = round_up_w(static_cast<int>(pb.D));
  }
  // boundary scratch of boundary k (between segments k and k + 1) of (b, h): side 0 is written
  // by segment k, side 1 by segment k + 1; each holds dK then dV, zone x dp floats
  size_t boundary_floats() const { return static_cast<size_t>(zone) * dp * 4; }
};

template <int DT>
void bwd_banded_segment(const Problem& pb, const BwdArgs<DT>& a, const SegPlan& sp, int64_t b, int64_t h,
                        int64_t seg, float* bnd, Scratch& s) {
  const int64_t D = pb.D, w = pb.w;
  const int64_t r_begin = seg * sp.len * T, r_end = imin<int64_t>(pb.N, (seg + 1) * sp.len * T);
  const int64_t ks = imax<int64_t>(0, r_begin - w), ke = imin<int64_t>(pb.N, r_end + w);
  const int64_t bh = b * pb.H + h;
  // boundary zones: [r_begin - w, r_begin + w) shared with the previous segment, and
  // [r_end - w, r_end + w) shared with the next one
  const bool left = seg > 0, right = seg + 1 < sp.count;
  const int64_t left_lo = r_begin - w, left_hi = r_begin + w, right_lo = r_end - w;
  float* left_buf = left ? bnd + ((bh * (sp.count - 1) + seg - 1) * 2 + 1) * sp.boundary_floats() / 2 : nullptr;
  float* right_buf = right ? bnd + ((bh * (sp.count - 1) + seg) * 2 + 0) * sp.boundary_floats() / 2 : nullptr;
  const size_t half = static_cast<size_t>(sp.zone) * sp.dp;  // dK part, then dV part

  KeyAcc acc{s.ring_k, s.ring_v, imin<int64_t>(2 * w + 2 * T, pb.N + T), sp.dp, ks, ks, ks};
  auto flush = [&](int64_t upto) {
    acc.ensure(upto);
    for (int64_t j = acc.flushed; j < upto; ++j) {
      const float* kr = acc.krow(j);
      const float* vr = acc.vrow(j);
      float* zone = nullptr;
      if (left && j >= left_lo && j < left_hi) {
        zone = left_buf + (j - left_lo) * sp.dp;
      } else if (right && j >= right_lo) {
        zone = right_buf + (j - right_lo) * sp.dp;
      }
      if (zone != nullptr) {
        std::memcpy(zone, kr, sizeof(float) * sp.dp);
        std::memcpy(zone + half, vr, sizeof(float) * sp.dp);
      } else {
        store_row<DT>(a.dk.row(b, j, h), static_cast<int>(D), pb.dk_mult, kr);
        store_row<DT>(a.dv.row(b, j, h), static_cast<int>(D), 1.0f, vr);
      }
    }
    acc.flushed = imax(acc.flushed, upto);
  };
  for (int64_t r0 = r_begin; r0 < r_end; r0 += T) {
    bwd_q_tile<DT>(pb, a, b, h, r0, s, &acc);
    // keys below r0 + T - w are seen by no later row
    flush(r0 + T >= r_end ? ke : imin<int64_t>(ke, r0 + T - w));
  }
}

// After the segments: keys within w of boundary k of (b, h) get the sum of both sides' parts.
template <int DT>
void reduce_boundary(const Problem& pb, const BwdArgs<DT>& a, const SegPlan& sp, int64_t b, int64_t h, int64_t k,
                     const float* bnd, float* tmp) {
  const int64_t D = pb.D, bh = b * pb.H + h;
  const int64_t e = (k + 1) * sp.len * T;  // first row of segment k + 1
  const size_t half = static_cast<size_t>(sp.zone) * sp.dp;
  const float* lo_side = bnd + ((bh * (sp.count - 1) + k) * 2 + 0) * sp.boundary_floats() / 2;
  const float* hi_side = lo_side + sp.boundary_floats() / 2;
  for (int64_t j = imax<int64_t>(0, e - pb.w); j < imin<int64_t>(pb.N, e + pb.w); ++j) {
    const int64_t o = (j - (e - pb.w)) * sp.dp;
    for (int part = 0; part < 2; ++part) {
      const size_t off = part * half + o;
      for (int d = 0; d < sp.dp; d += W) st(tmp + d, ld(lo_side + off + d) + ld(hi_side + off + d));
      if (part == 0) {
        store_row<DT>(a.dk.row(b, j, h), static_cast<int>(D), pb.dk_mult, tmp);
      } else {
        store_row<DT>(a.dv.row(b, j, h), static_cast<int>(D), 1.0f, tmp);
      }
    }
  }
}

// After the barrier: the global keys' gradients (gk/gv, per compacted slot) to their rows of
// dk/dv, which the band pass left at 0. Repeated positions (not produced by global_indices, but
// allowed) are summed in slot order.
template <int DT>
void scatter_global_grads(const Problem& pb, const BwdArgs<DT>& a, int64_t b, int64_t h, float* acc_k, float* acc_v) {
  const int64_t D = pb.D;
  const int32_t cnt = pb.gcount[b];
  const int32_t* pos = pb.gpos + b * pb.G;
  const float* gk = a.gk + (b * pb.H + h) * pb.G * D;
  const float* gv = a.gv + (b * pb.H + h) * pb.G * D;
  for (int32_t t = 0; t < cnt;) {
    int32_t e = t + 1;
    std::memcpy(acc_k, gk + t * D, sizeof(float) * D);
    std::memcpy(acc_v, gv + t * D, sizeof(float) * D);
    for (; e < cnt && pos[e] == pos[t]; ++e) {
      for (int64_t d = 0; d < D; ++d) {
        acc_k[d] += gk[e * D + d];
        acc_v[d] += gv[e * D + d];
      }
    }
    store_row<DT>(a.dk.row(b, pos[t], h), static_cast<int>(D), 1.0f, acc_k);
    store_row<DT>(a.dv.row(b, pos[t], h), static_cast<int>(D), 1.0f, acc_v);
    t = e;
  }
}

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------

Problem make_problem(AttnKind kind, int64_t B, int64_t M, int64_t N, int64_t H, int64_t D, int64_t G,
                     int64_t window, double scale, const int8_t* flags, const int32_t* gidx, int32_t* gpos,
                     int32_t* gcount) {
  Problem pb;
  pb.kind = kind;
  pb.B = B;
  pb.M = M;
  pb.N = N;
  pb.H = H;
  pb.D = D;
  pb.G = gidx != nullptr ? G : 0;
  pb.w = imin<int64_t>(window, N);
  // One rounding each: an error e in c acts as a softmax temperature 1 + e, a relative error of
  // ~e * (s_max - s_j) in every probability, so c must not carry the roundings of a float scale
  // times a float log2(e).
  pb.scale = static_cast<float>(scale);
  pb.c = static_cast<float>(scale * 1.4426950408889634);
  // c == 0 (scale 0, or below float's range): the packed queries are 0 and so is dK = scale * dS^T Q
  pb.dk_mult = pb.c != 0.0f ? static_cast<float>(scale / static_cast<double>(pb.c)) : 0.0f;
  pb.flags = flags;
  pb.gidx = gidx;
  prepare_globals(pb, gpos, gcount);
  return pb;
}

// Work below which OpenMP's fork/join costs more than it saves (multiply-adds, roughly).
constexpr double kParallelWork = 2e5;

template <int DT>
void fwd_impl(const AttnFwdParams& p, int num_threads) {
  using S = typename Elem<DT>::S;
  const int64_t G = p.global_idx != nullptr ? p.G : 0;
  Buffer<int32_t> gpos(static_cast<size_t>(p.B * G)), gcount(static_cast<size_t>(p.B));
  const Problem pb = make_problem(p.kind, p.B, p.M, p.N, p.H, p.D, p.G, p.window, p.scale, p.key_flags,
                                  p.global_idx, gpos.p, gcount.p);
  FwdArgs<DT> a{{static_cast<const S*>(p.q), p.q_strides},
                {static_cast<const S*>(p.k), p.k_strides},
                {static_cast<const S*>(p.v), p.v_strides},
                {static_cast<S*>(p.out), p.o_strides},
                p.lse};
  const int64_t tiles = ceil_div(pb.M, T);
  const int64_t tasks = pb.B * pb.H * tiles;
  const int64_t keys_per_row = pb.kind == AttnKind::kBanded ? 2 * pb.w + 1 + pb.gmax : pb.N;
  const bool parallel = static_cast<double>(pb.B * pb.H * pb.M) * keys_per_row * pb.D >= kParallelWork;
  const int threads = parallel ? static_cast<int>(imin<int64_t>(thread_count(num_threads), tasks)) : 1;
  ScratchPool pool(imax(threads, 1), ScratchShape{pb.D, false, 0});
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    Scratch s = pool.get(thread_id());
#ifdef _OPENMP
#pragma omp for schedule(dynamic, LED_TASK_CHUNK)
#endif
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t bh = t / tiles;
      fwd_tile<DT>(pb, a, bh / pb.H, bh % pb.H, (t % tiles) * T, s);
    }
  }
}

template <int DT>
void bwd_impl(const AttnBwdParams& p, int num_threads) {
  using S = typename Elem<DT>::S;
  const int64_t G = p.global_idx != nullptr ? p.G : 0;
  Buffer<int32_t> gpos(static_cast<size_t>(p.B * G)), gcount(static_cast<size_t>(p.B));
  const Problem pb = make_problem(p.kind, p.B, p.M, p.N, p.H, p.D, p.G, p.window, p.scale, p.key_flags,
                                  p.global_idx, gpos.p, gcount.p);
  const bool banded = pb.kind == AttnKind::kBanded;
  // fp32 gradients of the gathered global keys (kBanded), per (b, h, compacted slot); every slot
  // below gcount[b] is written by its bwd_global_keys_tile task before the scatter reads it
  const size_t gsize = banded && pb.gmax > 0 ? static_cast<size_t>(pb.B * pb.H * pb.G * pb.D) : 0;
  Buffer<float> gk(gsize), gv(gsize);
  // per-row statistics, written for every row by bwd_q_tile
  Buffer<float> delta(static_cast<size_t>(pb.B * pb.H * pb.M)), isig(static_cast<size_t>(pb.B * pb.H * pb.M));
  BwdArgs<DT> a{{static_cast<const S*>(p.q), p.q_strides},
                {static_cast<const S*>(p.k), p.k_strides},
                {static_cast<const S*>(p.v), p.v_strides},
                {static_cast<const S*>(p.dout), p.do_strides},
                p.lse,
                {static_cast<S*>(p.dq), p.dq_strides},
                {static_cast<S*>(p.dk), p.dk_strides},
                {static_cast<S*>(p.dv), p.dv_strides},
                delta.p,
                isig.p,
                gk.p,
                gv.p};

  const int64_t BH = pb.B * pb.H;
  const int64_t keys_per_row = banded ? 2 * pb.w + 1 + pb.gmax : pb.N;
  const bool parallel = static_cast<double>(BH * pb.M) * keys_per_row * pb.D * 2.5 >= kParallelWork;
  const int64_t gtiles = banded ? ceil_div(pb.gmax, T) : 0;
  const int64_t n_g = BH * gtiles;

  if (banded) {
    // Fused: per (b, h, segment) one task walks its query tiles in order (dQ, delta, and the
    // band keys' dK / dV); then the global keys' tiles (they need every row's delta)
    // and the segment boundaries; then the global keys' rows.
    const SegPlan sp(pb, BH);
    const int64_t n_seg = BH * sp.count, n_bnd = BH * (sp.count - 1);
    Buffer<float> bnd(static_cast<size_t>(n_bnd) * sp.boundary_floats());
    const int threads =
        parallel ? static_cast<int>(imin<int64_t>(thread_count(num_threads), imax(n_seg, n_g + n_bnd))) : 1;
    ScratchPool pool(imax(threads, 1), ScratchShape{pb.D, true, imin<int64_t>(2 * pb.w + 2 * T, pb.N + T)});
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
      Scratch s = pool.get(thread_id());
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t t = 0; t < n_seg; ++t) {
        const int64_t bh = t / sp.count;
        bwd_banded_segment<DT>(pb, a, sp, bh / pb.H, bh % pb.H, t % sp.count, bnd.p, s);
      }
      // (implicit barrier: every row's delta is known, every boundary side written)
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t t = 0; t < n_g + n_bnd; ++t) {
        if (t < n_g) {
          const int64_t bh = t / gtiles, b = bh / pb.H, h = bh % pb.H;
          const int64_t t0 = (t % gtiles) * T;
          const int64_t cnt = pb.gcount[b];
          if (t0 < cnt) {
            const int tn = static_cast<int>(imin<int64_t>(T, cnt - t0));
            bwd_global_keys_tile<DT>(pb, a, b, h, pb.gpos + b * pb.G + t0, tn, t0, s);
          }
        } else {
          const int64_t u = t - n_g, bh = u / (sp.count - 1);
          reduce_boundary<DT>(pb, a, sp, bh / pb.H, bh % pb.H, u % (sp.count - 1), bnd.p, s.stage);
        }
      }
      // (implicit barrier: the band keys' rows are written, zeros at the global keys)
      if (gtiles > 0) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t bh = 0; bh < BH; ++bh) scatter_global_grads<DT>(pb, a, bh / pb.H, bh % pb.H, s.ka, s.va);
      }
    }
    return;
  }

  // Global rows: slot tiles (dQ, delta), then key tiles (dK / dV of all keys).
  const int64_t ktiles = ceil_div(pb.N, T);
  const int64_t qtiles = ceil_div(pb.M, T);
  const int64_t n_k = BH * ktiles, n_q = BH * qtiles;
  const int threads =
      parallel ? static_cast<int>(imin<int64_t>(thread_count(num_threads), imax(n_q, n_k))) : 1;
  ScratchPool pool(imax(threads, 1), ScratchShape{pb.D, true, T});
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    Scratch s = pool.get(thread_id());
#ifdef _OPENMP
#pragma omp for schedule(dynamic, LED_TASK_CHUNK)
#endif
    for (int64_t t = 0; t < n_q; ++t) {
      const int64_t bh = t / qtiles;
      bwd_q_tile<DT>(pb, a, bh / pb.H, bh % pb.H, (t % qtiles) * T, s, nullptr);
    }
    // (implicit barrier: every row's delta is known)
#ifdef _OPENMP
#pragma omp for schedule(dynamic, LED_TASK_CHUNK)
#endif
    for (int64_t u = 0; u < n_k; ++u) {
      const int64_t bh = u / ktiles;
      const int64_t j0 = (u % ktiles) * T;
      bwd_global_rows_keys_tile<DT>(pb, a, bh / pb.H, bh % pb.H, j0, static_cast<int>(imin<int64_t>(T, pb.N - j0)),
                                    s);
    }
  }
}

}  // namespace

void attention_fwd(const AttnFwdParams& p, int num_threads) {
  switch (p.dtype) {
    case DType::kFloat32: fwd_impl<0>(p, num_threads); break;
    case DType::kFloat16: fwd_impl<1>(p, num_threads); break;
    case DType::kBFloat16: fwd_impl<2>(p, num_threads); break;
  }
}

void attention_bwd(const AttnBwdParams& p, int num_threads) {
  switch (p.dtype) {
    case DType::kFloat32: bwd_impl<0>(p, num_threads); break;
    case DType::kFloat16: bwd_impl<1>(p, num_threads); break;
    case DType::kBFloat16: bwd_impl<2>(p, num_threads); break;
  }
}

}  // namespace LED_ISA_NS
}  // namespace led_kernels
