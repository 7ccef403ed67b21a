// The cuda backend's attention kernels, instantiated for the GPU. The kernels and their launch
// logic live in attention_{common,fwd,bwd}.cuh, shared with the CPU emulator build of
// tests/cuda_emu/, which runs the same source against the reference.
#include <cuda_runtime.h>

#include "attention_bwd.cuh"
#include "attention_fwd.cuh"
#include "cuda_check.h"
#include "key_flags.cuh"
#include "led_kernels/cuda_attention.h"

namespace led_kernels {

size_t attention_fwd_cuda_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  return cuda_attn::fwd_workspace_bytes(kind, B, H, G, N, D);
}

size_t attention_bwd_cuda_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  return cuda_attn::bwd_workspace_bytes(kind, B, H, G, N, D);
}

void attention_fwd_cuda(const AttnFwdParams& p, float* workspace, size_t workspace_bytes, void* stream) {
  cuda_attn::attention_fwd(p, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
  check_launch("attention_fwd_cuda kernel launch failed");
}

void attention_layer_fwd_cuda(const AttnFwdParams& band, const AttnFwdParams& glob, float* workspace,
                              size_t workspace_bytes, void* stream) {
  cuda_attn::attention_layer_fwd(band, glob, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
  check_launch("attention_layer_fwd_cuda kernel launch failed");
}

void attention_bwd_cuda(const AttnBwdParams& p, const void* out, BNHStrides o_strides, float* workspace,
                        size_t workspace_bytes, void* stream) {
  cuda_attn::attention_bwd(p, out, o_strides, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
  check_launch("attention_bwd_cuda kernel launch failed");
}

void attention_layer_bwd_cuda(const AttnBwdParams& band, const AttnBwdParams& glob, const void* out,
                              BNHStrides o_strides, float* band_workspace, size_t band_workspace_bytes,
                              float* glob_workspace, size_t glob_workspace_bytes, void* stream) {
  cuda_attn::attention_layer_bwd(band, glob, out, o_strides, band_workspace, band_workspace_bytes, glob_workspace,
                                 glob_workspace_bytes, static_cast<cudaStream_t>(stream));
  check_launch("attention_layer_bwd_cuda kernel launch failed");
}

void key_flags_cuda(const uint8_t* pad, int64_t pad_sb, int64_t pad_sn, const int32_t* global_idx, int8_t* flags,
                    int64_t B, int64_t N, int64_t G, void* stream) {
  cuda_attn::key_flags(cuda_attn::KeyFlagsArgs{pad, pad_sb, pad_sn, global_idx, flags, N, G}, B,
                       static_cast<cudaStream_t>(stream));
  check_launch("key_flags_cuda kernel launch failed");
}

}  // namespace led_kernels
