// The per-key flags every attention kernel reads, in one launch (the same values as
// led_kernels.masks.key_flags, whose aten version takes five launches on every layer's call):
//   flags[b, j] = 1 where key_padding_mask[b, j] (padding wins), else 2 where j is named by a slot of
//   global_idx[b, :] (0 <= j < N; -1 and out-of-range slots name nothing), else 0.
// One block per batch element: its threads fill the row, meet at a barrier, then write the global
// slots' positions (a slot's position may be any thread's, hence the barrier).
#pragma once

#include "attention_common.cuh"

namespace led_kernels {
namespace cuda_attn {

struct KeyFlagsArgs {
  const uint8_t* pad;  // (B, N) bool as bytes, or null
  int64_t pad_sb, pad_sn;
  const int32_t* global_idx;  // (B, G) contiguous, or null when G == 0
  int8_t* flags;              // (B, N) contiguous
  int64_t N, G;
};

LED_KERNEL void __launch_bounds__(kThreads) key_flags_kernel(KeyFlagsArgs a) {
  const int64_t b = simt::block_index();
  int8_t* row = a.flags + b * a.N;
  for (int64_t j = simt::thread_index(); j < a.N; j += kThreads) {
    const bool pad = a.pad != nullptr && a.pad[b * a.pad_sb + j * a.pad_sn] != 0;
    simt::check_global(row + j, 1);
    row[j] = pad ? 1 : 0;
  }
  simt::sync_block();
  for (int64_t s = simt::thread_index(); s < a.G; s += kThreads) {
    const int32_t j = a.global_idx[b * a.G + s];
    if (j >= 0 && j < a.N && row[j] == 0) row[j] = 2;
  }
}

template <typename Stream>
void key_flags(const KeyFlagsArgs& a, int64_t B, Stream stream) {
  if (B < 0 || a.N < 0 || a.G < 0) throw std::invalid_argument("key_flags_cuda: negative size");
  if (a.G > 0 && a.global_idx == nullptr) throw std::invalid_argument("key_flags_cuda: global_idx is null with G > 0");
  if (a.N == 0) return;
  auto kernel = key_flags_kernel;
  if (launchable(B)) LED_LAUNCH(kernel, B, kThreads, 0, stream, a);
}

}  // namespace cuda_attn
}  // namespace led_kernels
