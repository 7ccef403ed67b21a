// The cuda backend's attention kernels (csrc/cuda/attention_fwd.cuh, unchanged) built for the
// CPU emulator of simt_emulator.h, as a small C library for tests/ops/test_cuda_emulated.py
// (loaded with ctypes: plain C types, pointers as integers, errors as a message and a non-zero
// return code instead of an exception crossing the C boundary).
#ifndef LED_SIMT_EMULATOR
#define LED_SIMT_EMULATOR 1
#endif

#include <cstdint>
#include <cstring>
#include <exception>

#include "attention_bwd.cuh"
#include "attention_fwd.cuh"
#include "key_flags.cuh"

namespace {

led_kernels::BNHStrides strides(const int64_t* s) { return led_kernels::BNHStrides{s[0], s[1], s[2]}; }

int report(const std::exception& e, char* error, int error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, e.what(), static_cast<size_t>(error_len) - 1);
    error[error_len - 1] = '\0';
  }
  return 1;
}

// The emulator's own checks of warpgroup products, on one warpgroup: S = A B^T of two 64 x 64
// swizzled tiles of ones (every entry 64), then by `mode`
//   0  a store into B after the wait and a barrier (allowed)
//   1  a store into B before the wait (the hardware may still be reading B: fails)
//   2  a wait with the products not committed (fails)
//   3  D read before the wait, where it must still hold its old value
using CheckTile = led_kernels::cuda_attn::SwizzledTile<64>;

void wgmma_check_kernel(int mode) {
  using namespace led_kernels;
  unsigned char* tiles = cuda_attn::align_tiles<CheckTile>(simt::shared_memory());
  const auto* a = reinterpret_cast<const __half*>(tiles);
  const auto* b = reinterpret_cast<const __half*>(tiles + CheckTile::kBytes);
  const int t = simt::thread_index();
  const uint4 ones{0x3C003C00u, 0x3C003C00u, 0x3C003C00u, 0x3C003C00u};  // eight fp16 ones
  for (size_t c = t; c < 2 * CheckTile::kBytes / 16; c += cuda_attn::kThreads) simt::store_shared_16(tiles + 16 * c, ones);
  simt::fence_proxy_async();
  simt::sync_block();
  float s[8][4] = {};
  simt::wgmma_fence();
  for (int kt = 0; kt < 4; ++kt) {
    simt::wgmma_ss<__half, 64>(s, CheckTile::k_major_desc(a, kt), CheckTile::k_major_desc(b, kt));
  }
  if (mode != 2) simt::wgmma_commit();
  unsigned char* b_chunk = tiles + CheckTile::kBytes + 16 * t;
  if (mode == 1) simt::store_shared_16(b_chunk, ones);
  if (mode == 3 && s[0][0] != 0.0f) simt_emu::fail("check: D changed before its wait");
  simt::wgmma_wait();
  if (s[0][0] != 64.0f || s[7][3] != 64.0f) simt_emu::fail("check: a wrong product");
  if (mode == 0) {
    simt::sync_block();
    simt::store_shared_16(b_chunk, ones);
  }
}

}  // namespace

extern "C" {

// Global accesses outside [ptr, ptr + bytes) of every registered range fail the launch.
void led_emu_register_range(uintptr_t ptr, uint64_t bytes) {
  led_kernels::simt_emu::global_ranges().push_back({ptr, ptr + bytes});
}

void led_emu_clear_ranges() { led_kernels::simt_emu::global_ranges().clear(); }

// Seeds the schedules of the following launches (each launch takes the next seed).
void led_emu_set_seed(uint64_t seed) { led_kernels::simt_emu::launch_seed() = seed; }

// Kernel launches run so far.
uint64_t led_emu_launch_count() { return led_kernels::simt_emu::launch_count(); }

uint64_t led_emu_fwd_workspace_bytes(int kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  return led_kernels::cuda_attn::fwd_workspace_bytes(static_cast<led_kernels::AttnKind>(kind), B, H, G, N, D);
}

// attention_fwd_cuda's arguments (see attention.cu); strides: 4 x (b, n, h) for q, k, v, out; layer:
// the layer mode (cpu_attention.h).
int led_emu_attention_fwd(int kind, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
                          uintptr_t key_flags, uintptr_t global_idx, int64_t B, int64_t M, int64_t N, int64_t H,
                          int64_t D, int64_t G, int64_t window, double scale, const int64_t* strides12,
                          int dtype_code, uintptr_t workspace, uint64_t workspace_bytes, int layer, char* error,
                          int error_len) {
  try {
    led_kernels::AttnFwdParams p = led_kernels::attn_fwd_params(
        kind, q, k, v, out, lse, key_flags, global_idx, B, M, N, H, D, G, window, scale,
        {strides(strides12), strides(strides12 + 3), strides(strides12 + 6), strides(strides12 + 9)}, dtype_code);
    p.layer = layer != 0;
    led_kernels::cuda_attn::attention_fwd(p, reinterpret_cast<float*>(workspace), workspace_bytes, 0);
    return 0;
  } catch (const std::exception& e) {
    return report(e, error, error_len);
  }
}

// attention_layer_fwd_cuda's arguments; strides: 7 x (b, n, h) for q, k, v, q_global, k_global,
// v_global, out.
int led_emu_attention_layer_fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t qg, uintptr_t kg, uintptr_t vg,
                                uintptr_t out, uintptr_t lse, uintptr_t glse, uintptr_t key_flags,
                                uintptr_t global_idx, int64_t B, int64_t N, int64_t H, int64_t D, int64_t G,
                                int64_t window, double scale, const int64_t* strides21, int dtype_code,
                                uintptr_t workspace, uint64_t workspace_bytes, char* error, int error_len) {
  try {
    const int64_t* s = strides21;
    const led_kernels::AttnFwdParams band = led_kernels::attn_fwd_params(
        0, q, k, v, out, lse, key_flags, global_idx, B, N, N, H, D, G, window, scale,
        {strides(s), strides(s + 3), strides(s + 6), strides(s + 18)}, dtype_code);
    led_kernels::AttnFwdParams glob = led_kernels::attn_fwd_params(
        1, qg, kg, vg, out, glse, key_flags, global_idx, B, G, N, H, D, G, 0, scale,
        {strides(s + 9), strides(s + 12), strides(s + 15), strides(s + 18)}, dtype_code);
    glob.layer = true;
    led_kernels::cuda_attn::attention_layer_fwd(band, glob, reinterpret_cast<float*>(workspace), workspace_bytes, 0);
    return 0;
  } catch (const std::exception& e) {
    return report(e, error, error_len);
  }
}

uint64_t led_emu_bwd_workspace_bytes(int kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  return led_kernels::cuda_attn::bwd_workspace_bytes(static_cast<led_kernels::AttnKind>(kind), B, H, G, N, D);
}

// attention_bwd_cuda's arguments; strides: 8 x (b, n, h) for q, k, v, out, dout, dq, dk, dv.
int led_emu_attention_bwd(int kind, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t dout,
                          uintptr_t lse, uintptr_t dq, uintptr_t dk, uintptr_t dv, uintptr_t key_flags,
                          uintptr_t global_idx, int64_t B, int64_t M, int64_t N, int64_t H, int64_t D, int64_t G,
                          int64_t window, double scale, const int64_t* strides24, int dtype_code, uintptr_t workspace,
                          uint64_t workspace_bytes, int layer, int accumulate_kv, char* error, int error_len) {
  try {
    // strides24: q, k, v, out, dout, dq, dk, dv
    led_kernels::AttnBwdParams p = led_kernels::attn_bwd_params(
        kind, q, k, v, dout, lse, dq, dk, dv, key_flags, global_idx, B, M, N, H, D, G, window, scale,
        {strides(strides24), strides(strides24 + 3), strides(strides24 + 6), strides(strides24 + 12),
         strides(strides24 + 15), strides(strides24 + 18), strides(strides24 + 21)},
        dtype_code);
    p.layer = layer != 0;
    p.accumulate_kv = accumulate_kv != 0;
    const led_kernels::BNHStrides o_strides = strides(strides24 + 9);
    led_kernels::cuda_attn::attention_bwd(p, reinterpret_cast<const void*>(out), o_strides,
                                          reinterpret_cast<float*>(workspace), workspace_bytes, 0);
    return 0;
  } catch (const std::exception& e) {
    return report(e, error, error_len);
  }
}

// attention_layer_bwd_cuda's arguments; pointers: q, k, v, q_global, k_global, v_global, out, dout,
// lse, glse, dq, dk, dv, dq_global, dk_global, dv_global, key_flags, global_idx; strides: 14 x
// (b, n, h) for q, k, v, q_global, k_global, v_global, out, dout, dq, dk, dv, dq_global, dk_global,
// dv_global.
int led_emu_attention_layer_bwd(const uintptr_t* ptrs18, int64_t B, int64_t N, int64_t H, int64_t D, int64_t G,
                                int64_t window, double scale, const int64_t* strides42, int dtype_code,
                                uintptr_t workspace, uint64_t workspace_bytes, uintptr_t glob_workspace,
                                uint64_t glob_workspace_bytes, int accumulate_kv, char* error, int error_len) {
  try {
    const uintptr_t* p = ptrs18;
    const int64_t* s = strides42;
    led_kernels::AttnBwdParams band = led_kernels::attn_bwd_params(
        0, p[0], p[1], p[2], p[7], p[8], p[10], p[11], p[12], p[16], p[17], B, N, N, H, D, G, window, scale,
        {strides(s), strides(s + 3), strides(s + 6), strides(s + 21), strides(s + 24), strides(s + 27),
         strides(s + 30)},
        dtype_code);
    band.layer = true;
    led_kernels::AttnBwdParams glob = led_kernels::attn_bwd_params(
        1, p[3], p[4], p[5], p[7], p[9], p[13], p[14], p[15], p[16], p[17], B, G, N, H, D, G, 0, scale,
        {strides(s + 9), strides(s + 12), strides(s + 15), strides(s + 21), strides(s + 33), strides(s + 36),
         strides(s + 39)},
        dtype_code);
    glob.layer = true;
    glob.accumulate_kv = accumulate_kv != 0;
    led_kernels::cuda_attn::attention_layer_bwd(band, glob, reinterpret_cast<const void*>(p[6]), strides(s + 18),
                                                reinterpret_cast<float*>(workspace), workspace_bytes,
                                                reinterpret_cast<float*>(glob_workspace), glob_workspace_bytes, 0);
    return 0;
  } catch (const std::exception& e) {
    return report(e, error, error_len);
  }
}

// Runs wgmma_check_kernel(mode): 0 when the emulator let it finish, else 1 and its message.
int led_emu_wgmma_check(int mode, char* error, int error_len) {
  try {
    led_kernels::simt_emu::run(wgmma_check_kernel, 1, led_kernels::cuda_attn::kThreads,
                               2 * CheckTile::kBytes + CheckTile::kAlign, mode);
    return 0;
  } catch (const std::exception& e) {
    return report(e, error, error_len);
  }
}

int led_emu_key_flags(uintptr_t pad, int64_t pad_sb, int64_t pad_sn, uintptr_t global_idx, uintptr_t flags, int64_t B,
                      int64_t N, int64_t G, char* error, int error_len) {
  try {
    led_kernels::cuda_attn::key_flags(
        led_kernels::cuda_attn::KeyFlagsArgs{reinterpret_cast<const uint8_t*>(pad), pad_sb, pad_sn,
                                             reinterpret_cast<const int32_t*>(global_idx),
                                             reinterpret_cast<int8_t*>(flags), N, G},
        B, 0);
    return 0;
  } catch (const std::exception& e) {
    return report(e, error, error_len);
  }
}

}  // extern "C"
