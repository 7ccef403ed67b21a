// Declarations of the cuda backend's attention kernels (csrc/cuda/attention.cu): the same two
// kinds, arguments and saved statistics as the CPU kernels (cpu_attention.h), on device memory,
// enqueued on a stream. float16 and bfloat16 inputs, head dims 16, 32, 64 and 128.
#pragma once

#include <cstddef>
#include <cstdint>

#include "led_kernels/cpu_attention.h"

namespace led_kernels {

#ifdef LED_KERNELS_WITH_CUDA
// Bytes of device workspace the forward / backward need for these sizes (the backward's delta,
// the partial sums of the sweeps split into chunks). Python allocates it (DESIGN section 5).
size_t attention_fwd_cuda_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D);
size_t attention_bwd_cuda_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D);

// Forward (see cpu_attention.h for the semantics and the saved statistics). `stream` is a
// cudaStream_t passed as an opaque pointer. Throws std::invalid_argument for arguments the kernels
// cannot take and std::runtime_error for CUDA errors.
void attention_fwd_cuda(const AttnFwdParams& p, float* workspace, size_t workspace_bytes, void* stream);

// The layer mode's forward (cpu_attention.h): kernel A over `band`'s rows, then kernel B over
// `glob`'s slots (glob.layer), whose rows go into A's output at the global positions, in one launch
// where the kernels can share it (unless LED_KERNELS_FUSED_FORWARD=0). The results are those of
// attention_fwd_cuda(band) then attention_fwd_cuda(glob), bit for bit; `workspace` is glob's.
void attention_layer_fwd_cuda(const AttnFwdParams& band, const AttnFwdParams& glob, float* workspace,
                              size_t workspace_bytes, void* stream);

// Backward: writes dq, dk and dv completely. `out` / `o_strides` are the forward's output (its
// rows give delta = dO . O). Deterministic: the same inputs give the same bits.
void attention_bwd_cuda(const AttnBwdParams& p, const void* out, BNHStrides o_strides, float* workspace,
                        size_t workspace_bytes, void* stream);

// The layer mode's backward (cpu_attention.h): attention_bwd_cuda(band) (band.layer: its global rows
// dead) then attention_bwd_cuda(glob) (glob.layer, glob.accumulate_kv as given), with kernel B's dQ
// chunks inside kernel A's dQ launch where they can be (unless LED_KERNELS_FUSED_BACKWARD=0); the same
// bits either way. Each kernel has its workspace (attention_bwd_cuda_workspace_bytes of its kind).
void attention_layer_bwd_cuda(const AttnBwdParams& band, const AttnBwdParams& glob, const void* out,
                              BNHStrides o_strides, float* band_workspace, size_t band_workspace_bytes,
                              float* glob_workspace, size_t glob_workspace_bytes, void* stream);

// flags (B, N) int8 contiguous: 1 where pad (a (B, N) bool tensor as bytes with element strides
// pad_sb, pad_sn; null: no padding), else 2 at the positions global_idx (B, G) int32 contiguous
// names, else 0 (led_kernels.masks.key_flags).
void key_flags_cuda(const uint8_t* pad, int64_t pad_sb, int64_t pad_sn, const int32_t* global_idx, int8_t* flags,
                    int64_t B, int64_t N, int64_t G, void* stream);
#endif

}  // namespace led_kernels
