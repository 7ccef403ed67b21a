// Declarations of the CPU attention kernels (csrc/cpu/attention*.cpp): forward and backward of
//
//   kind kBanded      (kernel A): query row i of (B, N, H, D) attends the keys
//                     { j : |i - j| <= window, key_flags[j] == 0 }  U  { the valid global keys }
//                     under one fp32 softmax; padding rows (key_flags[i] == 1) and rows with
//                     nothing to attend produce 0.
//   kind kGlobalRows  (kernel B): slot s of q (B, G, H, D) attends every non-padded key
//                     (key_flags[j] != 1) of k/v (B, N, H, D); invalid slots produce 0.
//
// A global slot s of batch element b is valid iff 0 <= global_idx[b, s] < N and
// key_flags[b, global_idx[b, s]] == 2 (led_kernels/masks.py).
//
// Non-finite inputs: a row of q, k or v (or dout) holding a NaN or an inf changes only the rows that
// attend it, which come out NaN (never a silent 0), and the gradients that depend on those rows;
// every other element is bitwise what it would be without it.
//
// The layer mode (the cuda kernels only; the CPU kernels refuse it): both kinds run as the two halves
// of one Longformer layer over the same (B, N, H, D) tensors, kernel B's rows replacing kernel A's
// at the global positions, with no gather or scatter around them.
//   kBanded: a global row (key_flags[i] == 2) is dead in the backward, as a padding row is (its
//            output is kernel B's); the forward is unchanged (its rows there are overwritten).
//   kGlobalRows: q, out, dout and dq are (B, N, H, D) and slot s reads and writes their row
//            global_idx[b, s]; an invalid slot reads zeros and writes nothing. lse and the row
//            count M stay those of the slots (G). With accumulate_kv, the backward adds its dk and
//            dv to what those tensors hold (kernel A's, when both kernels share k and v).
//
// Like delta_cpu, the kernels take raw pointers, sizes and element strides (DESIGN section 5):
// Python allocates every tensor (the kernels' own scratch excepted). Tensors are (B, rows, H, D)
// with stride(D) == 1 and the strides given, except lse, which is (B, H, 2, rows) float32
// contiguous.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "led_kernels/common.h"

namespace led_kernels {

enum class AttnKind : int {
  kBanded = 0,
  kGlobalRows = 1,
};

// Forward. Rows: M = N (kBanded) or M = G (kGlobalRows).
//   q   : (B, M, H, D)      k, v : (B, N, H, D)      out : (B, M, H, D) written, input dtype
//   lse : (B, H, 2, M) float32 written: the softmax statistics of each row in base-2 units of
//         the scaled scores t_j = scale * log2(e) * q.k_j: [.., 0, i] = m = max_j t_j and
//         [.., 1, i] = log2(sum_j 2^(t_j - m)), i.e. logsumexp = (m + log2 sum) * ln(2). A row that
//         attends nothing (padding, invalid slot, empty row) has m = +inf and 0, so that the
//         backward's 2^(t - m) is exactly 0 there. Two numbers instead of one logsumexp: the
//         backward forms 2^((t - m) - log2 sum), whose first difference is exact near the max.
struct AttnFwdParams {
  AttnKind kind;
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  const int8_t* key_flags;    // (B, N) 0 local, 1 padding, 2 global
  const int32_t* global_idx;  // (B, G) or nullptr when G == 0
  int64_t B, M, N, H, D, G;
  int64_t window;             // kBanded only; >= 0
  double scale;  // folded with log2(e) in double, then rounded once (see attention_impl.h)
  BNHStrides q_strides, k_strides, v_strides, o_strides;
  DType dtype;
  bool layer = false;  // the layer mode above (cuda only)
};

// Backward: dq (B, M, H, D), dk and dv (B, N, H, D), all written completely in the input dtype
// (zeros where no gradient flows). lse is the forward's. The backward's delta (sum_j P dP) is
// computed inside, from the recomputed probabilities (see attention_impl.h, bwd_q_tile), so no
// forward output is needed.
struct AttnBwdParams {
  AttnKind kind;
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;
  void* dq;
  void* dk;
  void* dv;
  const int8_t* key_flags;
  const int32_t* global_idx;
  int64_t B, M, N, H, D, G;
  int64_t window;
  double scale;  // folded with log2(e) in double, then rounded once (see attention_impl.h)
  BNHStrides q_strides, k_strides, v_strides, do_strides, dq_strides, dk_strides, dv_strides;
  DType dtype;
  bool layer = false;          // the layer mode above (cuda only)
  bool accumulate_kv = false;  // kGlobalRows in the layer mode: dk += , dv += (cuda only)
};

// The structs above from integer pointers (as Python hands them over), sizes, the (b, n, h) strides
// of each tensor in the fields' order (q, k, v, out / q, k, v, dout, dq, dk, dv) and a dtype code
// (std::invalid_argument for an unknown one). The kind is checked by the kernels' own checks.
inline AttnFwdParams attn_fwd_params(int kind, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
                                     uintptr_t key_flags, uintptr_t global_idx, int64_t B, int64_t M, int64_t N,
                                     int64_t H, int64_t D, int64_t G, int64_t window, double scale,
                                     const BNHStrides (&strides)[4], int dtype_code) {
  AttnFwdParams p;
  p.kind = static_cast<AttnKind>(kind);
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.out = reinterpret_cast<void*>(out);
  p.lse = reinterpret_cast<float*>(lse);
  p.key_flags = reinterpret_cast<const int8_t*>(key_flags);
  p.global_idx = reinterpret_cast<const int32_t*>(global_idx);
  p.B = B, p.M = M, p.N = N, p.H = H, p.D = D, p.G = G;
  p.window = window;
  p.scale = scale;
  p.q_strides = strides[0], p.k_strides = strides[1], p.v_strides = strides[2], p.o_strides = strides[3];
  p.dtype = dtype_from_code(dtype_code);
  return p;
}

inline AttnBwdParams attn_bwd_params(int kind, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t dout, uintptr_t lse,
                                     uintptr_t dq, uintptr_t dk, uintptr_t dv, uintptr_t key_flags,
                                     uintptr_t global_idx, int64_t B, int64_t M, int64_t N, int64_t H, int64_t D,
                                     int64_t G, int64_t window, double scale, const BNHStrides (&strides)[7],
                                     int dtype_code) {
  AttnBwdParams p;
  p.kind = static_cast<AttnKind>(kind);
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.dout = reinterpret_cast<const void*>(dout);
  p.lse = reinterpret_cast<const float*>(lse);
  p.dq = reinterpret_cast<void*>(dq);
  p.dk = reinterpret_cast<void*>(dk);
  p.dv = reinterpret_cast<void*>(dv);
  p.key_flags = reinterpret_cast<const int8_t*>(key_flags);
  p.global_idx = reinterpret_cast<const int32_t*>(global_idx);
  p.B = B, p.M = M, p.N = N, p.H = H, p.D = D, p.G = G;
  p.window = window;
  p.scale = scale;
  p.q_strides = strides[0], p.k_strides = strides[1], p.v_strides = strides[2];
  p.do_strides = strides[3], p.dq_strides = strides[4], p.dk_strides = strides[5], p.dv_strides = strides[6];
  p.dtype = dtype_from_code(dtype_code);
  return p;
}

// num_threads <= 0: the OpenMP default. Both are deterministic: every output element is produced
// by one task in a fixed order and the work split depends on the shape only, so results are
// bitwise equal across runs and thread counts (for a given instruction set).
void attention_fwd_cpu(const AttnFwdParams& p, int num_threads);
void attention_bwd_cpu(const AttnBwdParams& p, int num_threads);

// The instruction set the CPU attention kernels run with on this machine: "avx512", "avx2" or
// "generic": the best one compiled in and supported by the CPU, or the one the environment
// variable LED_KERNELS_CPU_ISA names (read on every call; std::invalid_argument if this machine
// cannot run it).
const char* cpu_attention_isa();

// Every ISA this build can run on this machine, best first (for tests and benchmarks).
std::vector<std::string> cpu_attention_isas();

// 64-byte aligned scratch memory for the kernels (csrc/cpu/attention.cpp). The per-ISA translation
// units allocate only through these non-template functions, built without ISA flags, so that no
// allocator code compiled for AVX-512 can be shared with the generic path (see attention_impl.h).
// Throws std::bad_alloc.
void* cpu_workspace_alloc(size_t bytes);
void cpu_workspace_free(void* p) noexcept;

}  // namespace led_kernels
