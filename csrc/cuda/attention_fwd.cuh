// Forward kernels of the cuda backend: kernel A (banded rows) and kernel B (global rows), with
// tensor-core MMA (mma.sync m16n8k16, fp32 accumulation), FlashAttention-2 style.
//
// One block = 4 warps = 64 query rows; each warp owns 16 rows and keeps their Q fragments, output
// accumulator and softmax statistics in registers. Keys come in tiles of 64 rows of K and V,
// staged in shared memory (rows padded by 8 elements so that ldmatrix reads are free of bank
// conflicts) and consumed by
//   S = Q K^T           (ldmatrix of K, mma)                 # [16, 64] per warp, fp32
//   online softmax      (base 2: t = scale * log2(e) * s)   rows reduced over the 4 lanes of a quad
//   O += P V            (P re-packed from S's accumulator layout into A fragments, ldmatrix.trans of V)
//
// Kernel A, query tile [i0, i0 + 64): the band's key tiles [i0 - w, i0 + 63 + w] (clipped; keys
// that are padding or global are masked there), then the global keys, gathered by global_idx
// into tiles of their own and attended by every row; one softmax over both.
// Kernel B, slot tile [s0, s0 + 64) of q_global: every non-padded key of k_global / v_global. With
// few slots a (b, h) pair would leave the GPU idle, so the keys are split into chunks: each chunk
// writes an unnormalized partial output with its (max, sum) and combine_kernel merges them.
//
// Non-finite values: masked keys' V rows are zeroed in shared memory, and a V row holding a NaN or
// an inf is zeroed too while its score is made NaN (`poison`) for the rows that attend it, so the
// NaN reaches exactly those rows (0 * NaN in P V would otherwise spread it to every row of the tile).
//
// The statistics saved per row are the cpu backend's (cpu_attention.h): m = max_j t_j and log2 of
// l = sum_j 2^(t_j - m); a row that attends nothing (padding, invalid slot) gets m = +inf, 0 and
// an output of 0.
//
// This header holds the kernels and their launch logic; csrc/cuda/attention.cu instantiates them
// for the GPU, tests/cuda_emu/ for the CPU emulator (see simt.cuh).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "led_kernels/cpu_attention.h"
#include "simt.cuh"

namespace led_kernels {
namespace cuda_attn {

constexpr int kBlockM = 64;  // query rows per block (4 warps x 16)
constexpr int kBlockN = 64;  // keys per tile
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kSplitTargetBlocks = 256;  // kernel B: split keys until about this many blocks run
constexpr int kMinChunkTiles = 4;        // ... but never into chunks of fewer key tiles

// Shared-memory row of a staged tile, in elements: D plus 8, so that the 8 rows one ldmatrix
// phase reads start in 8 different 16-byte bank groups.
template <int D>
constexpr int smem_row() {
  return D + 8;
}

template <int D>
constexpr size_t smem_bytes() {
  // K tile, V tile (Q is staged in the K tile before the loop), key positions, key poison
  return 2 * static_cast<size_t>(kBlockN) * smem_row<D>() * 2 + kBlockN * sizeof(int32_t) + kBlockN * sizeof(float);
}

// Where the keys of a tile come from.
enum class KeySource : int {
  kBand = 0,         // positions j0 + r, local keys only (padding and global keys masked)
  kGlobalSlots = 1,  // positions global_idx[b, s0 + r], valid global keys only
  kNonPadded = 2,    // positions j0 + r, every key that is not padding (kernel B)
};

// Everything a forward kernel reads, passed by value. Sizes are int64; positions fit in int32
// (the launcher checks N < 2^31).
struct FwdArgs {
  const void* q;  // (B, M, H, D): the query rows (N rows for kernel A, G slots for kernel B)
  const void* k;  // (B, N, H, D)
  const void* v;
  void* out;   // (B, M, H, D)
  float* lse;  // (B, H, 2, M)
  const int8_t* key_flags;    // (B, N) 0 local, 1 padding, 2 global
  const int32_t* global_idx;  // (B, G) or null when G == 0
  int64_t B, M, N, H, G;
  int64_t window;
  float scale_log2;  // scale * log2(e)
  BNHStrides qs, ks, vs, os;
  bool aligned;  // every row start of q, k, v is 16-byte aligned: vector loads
  // kernel B split: chunks of chunk_keys keys (a multiple of kBlockN); partials when chunks > 1
  int64_t chunk_keys, chunks;
  float* part_o;   // (B, H, chunks, G, D) unnormalized outputs
  float* part_ml;  // (B, H, chunks, 2, G) max and sum
};

template <typename T>
LED_DEVICE bool is_nonfinite_bits(uint16_t bits);
template <>
LED_DEVICE bool is_nonfinite_bits<__half>(uint16_t bits) {
  return (bits & 0x7C00u) == 0x7C00u;
}
template <>
LED_DEVICE bool is_nonfinite_bits<__nv_bfloat16>(uint16_t bits) {
  return (bits & 0x7F80u) == 0x7F80u;
}

// 8 consecutive elements (16 bytes) of one row, or zeros.
struct Chunk8 {
  uint32_t w[4];
};

template <typename T>
LED_DEVICE Chunk8 load_chunk(const T* src, bool aligned) {
  Chunk8 c;
  simt::check_global(src, 16);
  if (aligned) {
    const uint4 v = *reinterpret_cast<const uint4*>(src);
    c.w[0] = v.x, c.w[1] = v.y, c.w[2] = v.z, c.w[3] = v.w;
  } else {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    for (int i = 0; i < 4; ++i) c.w[i] = static_cast<uint32_t>(s[2 * i]) | (static_cast<uint32_t>(s[2 * i + 1]) << 16);
  }
  return c;
}

LED_DEVICE void store_chunk(void* smem_dst, const Chunk8& c) {
  uint4 v;
  v.x = c.w[0], v.y = c.w[1], v.z = c.w[2], v.w = c.w[3];
  *reinterpret_cast<uint4*>(smem_dst) = v;
}

template <typename T>
LED_DEVICE bool chunk_nonfinite(const Chunk8& c) {
  bool bad = false;
  for (int i = 0; i < 4; ++i) {
    bad |= is_nonfinite_bits<T>(static_cast<uint16_t>(c.w[i] & 0xFFFFu));
    bad |= is_nonfinite_bits<T>(static_cast<uint16_t>(c.w[i] >> 16));
  }
  return bad;
}

// Rows [row0, row0 + 64) of a (B, rows, H, D) tensor into a padded shared tile; rows at or past
// `rows` are zero.
template <typename T, int D>
LED_DEVICE void load_query_tile(const FwdArgs& a, T* tile, int64_t b, int64_t h, int64_t row0) {
  constexpr int kChunks = D / 8;
  const T* base = static_cast<const T*>(a.q) + b * a.qs.b + h * a.qs.h;
  for (int c = simt::thread_index(); c < kBlockM * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const int64_t row = row0 + r;
    Chunk8 x = {{0, 0, 0, 0}};
    if (row < a.M) x = load_chunk(base + row * a.qs.n + col, a.aligned);
    store_chunk(tile + r * smem_row<D>() + col, x);
  }
}

// The position of key r of a tile, or -1 when no query row may attend it.
LED_DEVICE int32_t key_position(const FwdArgs& a, KeySource src, int64_t b, int64_t base, int r) {
  const int8_t* flags = a.key_flags + b * a.N;
  if (src == KeySource::kGlobalSlots) {
    const int64_t s = base + r;
    if (s >= a.G) return -1;
    const int32_t j = a.global_idx[b * a.G + s];
    return (j >= 0 && j < a.N && flags[j] == 2) ? j : -1;
  }
  const int64_t j = base + r;
  if (j >= a.N) return -1;
  const int8_t f = flags[j];
  const bool ok = src == KeySource::kBand ? f == 0 : f != 1;
  return ok ? static_cast<int32_t>(j) : -1;
}

// One tile of K and V rows into shared memory, with each row's position and poison. The lanes
// that hold one row are D/8 consecutive lanes of a warp (D/8 divides 32), so a row's "any
// non-finite" is a shuffle reduction among them.
template <typename T, int D>
LED_DEVICE void load_key_tile(const FwdArgs& a, KeySource src, int64_t b, int64_t h, int64_t base, T* ks, T* vs,
                              int32_t* key_pos, float* poison) {
  constexpr int kChunks = D / 8;
  static_assert(kChunks <= 32 && (32 % kChunks) == 0, "a row's chunks must sit in one warp");
  static_assert((kBlockN * kChunks) % kThreads == 0, "whole passes only (every lane joins the shuffles)");
  const T* kbase = static_cast<const T*>(a.k) + b * a.ks.b + h * a.ks.h;
  const T* vbase = static_cast<const T*>(a.v) + b * a.vs.b + h * a.vs.h;
  for (int c = simt::thread_index(); c < kBlockN * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const int32_t j = key_position(a, src, b, base, r);
    Chunk8 kx = {{0, 0, 0, 0}}, vx = {{0, 0, 0, 0}};
    if (j >= 0) {
      kx = load_chunk(kbase + j * a.ks.n + col, a.aligned);
      vx = load_chunk(vbase + j * a.vs.n + col, a.aligned);
    }
    float bad = chunk_nonfinite<T>(vx) ? 1.0f : 0.0f;
    for (int off = 1; off < kChunks; off <<= 1) bad = fmaxf(bad, simt::shfl_xor(bad, off));
    if (bad != 0.0f) vx = Chunk8{{0, 0, 0, 0}};
    store_chunk(ks + r * smem_row<D>() + col, kx);
    store_chunk(vs + r * smem_row<D>() + col, vx);
    if (col == 0) {
      key_pos[r] = j;
      poison[r] = bad != 0.0f ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    }
  }
}

// One warp's 16 query rows: Q fragments, output accumulator and softmax statistics.
// Lane (g, t) = (lane / 4, lane % 4) holds rows g and g + 8 (x = 0, 1 below).
template <typename T, int D>
struct WarpRows {
  uint32_t q[D / 16][4];  // A fragments of Q, one per 16 dims
  float o[D / 8][4];      // C fragments of O, one per 8 dims
  float m[2];             // running max (base 2), -inf before any key
  float l[2];             // running sum of 2^(t - m) over this lane's columns (quad-reduced at the end)

  LED_DEVICE void init(const T* q_tile, int warp, int lane) {
    const int j = lane / 8, r = lane % 8;
    for (int kt = 0; kt < D / 16; ++kt) {
      simt::ldmatrix_x4(q[kt], q_tile + (warp * 16 + r + 8 * (j & 1)) * smem_row<D>() + kt * 16 + 8 * (j >> 1));
    }
    for (int dn = 0; dn < D / 8; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
  }

  // Attend one staged key tile. row[x] = the query position of row x (for the window test);
  // banded = apply |row - key| <= window (false: every valid key of the tile is attended).
  LED_DEVICE void attend(const T* ks, const T* vs, const int32_t* key_pos, const float* poison, int lane,
                         const int64_t (&row)[2], bool banded, int64_t window, float scale_log2) {
    const int j = lane / 8, r = lane % 8, t = lane % 4;
    float s[kBlockN / 8][4];  // [8 key groups][rows g, g+8 x 2 keys]
    for (int nt = 0; nt < kBlockN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    // S = Q K^T: K rows are B's columns, so plain ldmatrix of K gives B fragments.
    for (int kt = 0; kt < D / 16; ++kt) {
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t kb[4];
        simt::ldmatrix_x4(kb, ks + (np * 16 + r + 8 * (j >> 1)) * smem_row<D>() + kt * 16 + 8 * (j & 1));
        simt::mma_16816<T>(s[2 * np], q[kt], kb[0], kb[1]);
        simt::mma_16816<T>(s[2 * np + 1], q[kt], kb[2], kb[3]);
      }
    }
    // Mask, scale, row max.
    float tile_max[2] = {-INFINITY, -INFINITY};
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      for (int e = 0; e < 4; ++e) {
        const int col = nt * 8 + 2 * t + (e & 1);
        const int x = e >> 1;
        const int32_t kp = key_pos[col];
        const bool keep = kp >= 0 && (!banded || (row[x] - kp <= window && kp - row[x] <= window));
        const float v = keep ? s[nt][e] * scale_log2 + poison[col] : -INFINITY;
        s[nt][e] = v;
        tile_max[x] = fmaxf(tile_max[x], v);
      }
    }
    float alpha[2];
    float m_use[2];
    for (int x = 0; x < 2; ++x) {
      tile_max[x] = fmaxf(tile_max[x], simt::shfl_xor(tile_max[x], 1));
      tile_max[x] = fmaxf(tile_max[x], simt::shfl_xor(tile_max[x], 2));
      const float m_new = fmaxf(m[x], tile_max[x]);
      m_use[x] = m_new == -INFINITY ? 0.0f : m_new;  // nothing attended yet: keep p = 0, not NaN
      alpha[x] = simt::fast_exp2(m[x] - m_use[x]);
      m[x] = m_new;
    }
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      for (int e = 0; e < 4; ++e) {
        const float p = simt::fast_exp2(s[nt][e] - m_use[e >> 1]);
        s[nt][e] = p;
      }
    }
    for (int x = 0; x < 2; ++x) {
      float sum = 0.0f;
      for (int nt = 0; nt < kBlockN / 8; ++nt) sum += s[nt][2 * x] + s[nt][2 * x + 1];
      l[x] = l[x] * alpha[x] + sum;
    }
    for (int dn = 0; dn < D / 8; ++dn) {
      o[dn][0] *= alpha[0], o[dn][1] *= alpha[0];
      o[dn][2] *= alpha[1], o[dn][3] *= alpha[1];
    }
    // O += P V: P's accumulator layout for keys [16kk, 16kk + 16) is exactly an A fragment once
    // packed to 16 bits; V rows are B's rows, so ldmatrix.trans gives B fragments.
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = simt::pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = simt::pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = simt::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = simt::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        simt::ldmatrix_x4_trans(vb, vs + (kk * 16 + r + 8 * (j & 1)) * smem_row<D>() + dp * 16 + 8 * (j >> 1));
        simt::mma_16816<T>(o[2 * dp], pa, vb[0], vb[1]);
        simt::mma_16816<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
  }

  // The row sums over the quad (every lane ends with the full sums).
  LED_DEVICE void reduce_sums() {
    for (int x = 0; x < 2; ++x) {
      l[x] += simt::shfl_xor(l[x], 1);
      l[x] += simt::shfl_xor(l[x], 2);
    }
  }
};

// Row `row` of the output and its statistics: normalized, or 0 / (+inf, 0) when `live` is false or
// the row attended nothing.
template <typename T, int D>
LED_DEVICE void write_row(const FwdArgs& a, const WarpRows<T, D>& w, int x, int64_t b, int64_t h, int64_t row,
                          bool live, int t) {
  const bool attended = live && w.l[x] != 0.0f;  // NaN sums stay: that row attended a NaN
  const float inv = attended ? 1.0f / w.l[x] : 0.0f;
  T* dst = static_cast<T*>(a.out) + b * a.os.b + row * a.os.n + h * a.os.h;
  for (int dn = 0; dn < D / 8; ++dn) {
    const float o0 = attended ? w.o[dn][2 * x] * inv : 0.0f;
    const float o1 = attended ? w.o[dn][2 * x + 1] * inv : 0.0f;
    const uint32_t packed = simt::pack2<T>(o0, o1);
    simt::check_global(dst + dn * 8 + 2 * t, 4);
    *reinterpret_cast<uint32_t*>(dst + dn * 8 + 2 * t) = packed;
  }
  if (t == 0) {
    float* lse = a.lse + (b * a.H + h) * 2 * a.M;
    simt::check_global(lse + row, 4);
    simt::check_global(lse + a.M + row, 4);
    lse[row] = attended ? w.m[x] : INFINITY;
    lse[a.M + row] = attended ? log2f(w.l[x]) : 0.0f;
  }
}

// Kernel A. Blocks: (query tile fastest, then head, then batch).
template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) banded_fwd_kernel(FwdArgs a) {
  unsigned char* smem = simt::shared_memory();
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + kBlockN * smem_row<D>();
  int32_t* key_pos = reinterpret_cast<int32_t*>(vs + kBlockN * smem_row<D>());
  float* poison = reinterpret_cast<float*>(key_pos + kBlockN);

  const int64_t tiles = (a.N + kBlockM - 1) / kBlockM;
  const int64_t bid = simt::block_index();
  const int64_t i0 = (bid % tiles) * kBlockM;
  const int64_t h = (bid / tiles) % a.H;
  const int64_t b = bid / (tiles * a.H);
  const int warp = simt::thread_index() / 32, lane = simt::thread_index() % 32;

  load_query_tile<T, D>(a, ks, b, h, i0);
  simt::sync_block();
  WarpRows<T, D> w;
  w.init(ks, warp, lane);

  const int64_t row[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
  const int64_t last_row = (i0 + kBlockM < a.N ? i0 + kBlockM : a.N) - 1;
  const int64_t lo = a.window >= i0 ? 0 : i0 - a.window;
  const int64_t hi = a.window >= a.N - last_row ? a.N - 1 : last_row + a.window;
  for (int64_t j0 = (lo / kBlockN) * kBlockN; j0 <= hi; j0 += kBlockN) {
    simt::sync_block();  // every warp is done with the previous tile (or with Q)
    load_key_tile<T, D>(a, KeySource::kBand, b, h, j0, ks, vs, key_pos, poison);
    simt::sync_block();
    w.attend(ks, vs, key_pos, poison, lane, row, true, a.window, a.scale_log2);
  }
  for (int64_t s0 = 0; s0 < a.G; s0 += kBlockN) {
    simt::sync_block();
    load_key_tile<T, D>(a, KeySource::kGlobalSlots, b, h, s0, ks, vs, key_pos, poison);
    simt::sync_block();
    w.attend(ks, vs, key_pos, poison, lane, row, false, 0, a.scale_log2);
  }
  w.reduce_sums();
  const int8_t* flags = a.key_flags + b * a.N;
  for (int x = 0; x < 2; ++x) {
    if (row[x] < a.N) write_row<T, D>(a, w, x, b, h, row[x], flags[row[x]] != 1, lane % 4);
  }
}

// Whether slot s of batch element b is a valid global row (cpu_attention.h).
LED_DEVICE bool slot_valid(const FwdArgs& a, int64_t b, int64_t s) {
  const int32_t j = a.global_idx[b * a.G + s];
  return j >= 0 && j < a.N && a.key_flags[b * a.N + j] == 2;
}

// Kernel B. Blocks: (key chunk fastest, then slot tile, head, batch). With one chunk the rows are
// finished here; otherwise each chunk's partial goes to the workspace for combine_kernel.
template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) global_fwd_kernel(FwdArgs a) {
  unsigned char* smem = simt::shared_memory();
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + kBlockN * smem_row<D>();
  int32_t* key_pos = reinterpret_cast<int32_t*>(vs + kBlockN * smem_row<D>());
  float* poison = reinterpret_cast<float*>(key_pos + kBlockN);

  const int64_t slot_tiles = (a.G + kBlockM - 1) / kBlockM;
  const int64_t bid = simt::block_index();
  const int64_t chunk = bid % a.chunks;
  const int64_t s0 = ((bid / a.chunks) % slot_tiles) * kBlockM;
  const int64_t h = (bid / (a.chunks * slot_tiles)) % a.H;
  const int64_t b = bid / (a.chunks * slot_tiles * a.H);
  const int warp = simt::thread_index() / 32, lane = simt::thread_index() % 32;

  load_query_tile<T, D>(a, ks, b, h, s0);
  simt::sync_block();
  WarpRows<T, D> w;
  w.init(ks, warp, lane);

  const int64_t unused_row[2] = {0, 0};
  const int64_t k_begin = chunk * a.chunk_keys;
  const int64_t k_end = k_begin + a.chunk_keys < a.N ? k_begin + a.chunk_keys : a.N;
  for (int64_t j0 = k_begin; j0 < k_end; j0 += kBlockN) {
    simt::sync_block();
    load_key_tile<T, D>(a, KeySource::kNonPadded, b, h, j0, ks, vs, key_pos, poison);
    simt::sync_block();
    w.attend(ks, vs, key_pos, poison, lane, unused_row, false, 0, a.scale_log2);
  }
  w.reduce_sums();
  const int t = lane % 4;
  for (int x = 0; x < 2; ++x) {
    const int64_t s = s0 + warp * 16 + lane / 4 + 8 * x;
    if (s >= a.G) continue;
    if (a.chunks == 1) {
      write_row<T, D>(a, w, x, b, h, s, slot_valid(a, b, s), t);
      continue;
    }
    const int64_t part = (b * a.H + h) * a.chunks + chunk;
    float* po = a.part_o + (part * a.G + s) * D;
    for (int dn = 0; dn < D / 8; ++dn) {
      simt::check_global(po + dn * 8 + 2 * t, 8);
      po[dn * 8 + 2 * t] = w.o[dn][2 * x];
      po[dn * 8 + 2 * t + 1] = w.o[dn][2 * x + 1];
    }
    if (t == 0) {
      float* ml = a.part_ml + part * 2 * a.G;
      simt::check_global(ml + s, 4);
      simt::check_global(ml + a.G + s, 4);
      ml[s] = w.m[x];
      ml[a.G + s] = w.l[x];
    }
  }
}

// Merges kernel B's chunks: one warp per (b, h, slot), lanes over the head dim.
template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) combine_kernel(FwdArgs a) {
  const int64_t row = simt::block_index() * kWarps + simt::thread_index() / 32;
  const int lane = simt::thread_index() % 32;
  if (row >= a.B * a.H * a.G) return;  // whole warps: no collective below
  const int64_t s = row % a.G;
  const int64_t h = (row / a.G) % a.H;
  const int64_t b = row / (a.G * a.H);
  const int64_t part0 = (b * a.H + h) * a.chunks;
  float m = -INFINITY;
  for (int64_t c = 0; c < a.chunks; ++c) m = fmaxf(m, a.part_ml[(part0 + c) * 2 * a.G + s]);
  const float m_use = m == -INFINITY ? 0.0f : m;
  float l = 0.0f;
  for (int64_t c = 0; c < a.chunks; ++c) {
    const float* ml = a.part_ml + (part0 + c) * 2 * a.G;
    l += ml[a.G + s] * simt::fast_exp2(ml[s] - m_use);
  }
  const bool attended = slot_valid(a, b, s) && l != 0.0f;
  const float inv = attended ? 1.0f / l : 0.0f;
  T* dst = static_cast<T*>(a.out) + b * a.os.b + s * a.os.n + h * a.os.h;
  for (int d = lane; d < D; d += 32) {
    float acc = 0.0f;
    for (int64_t c = 0; c < a.chunks; ++c) {
      const float* ml = a.part_ml + (part0 + c) * 2 * a.G;
      acc += a.part_o[((part0 + c) * a.G + s) * D + d] * simt::fast_exp2(ml[s] - m_use);
    }
    simt::check_global(dst + d, 2);
    dst[d] = simt::from_float<T>(attended ? acc * inv : 0.0f);
  }
  if (lane == 0) {
    float* lse = a.lse + (b * a.H + h) * 2 * a.G;
    lse[s] = attended ? m : INFINITY;
    lse[a.G + s] = attended ? log2f(l) : 0.0f;
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

// Kernel B's chunk size: split the keys until about kSplitTargetBlocks blocks run, but keep at
// least kMinChunkTiles tiles per chunk. Depends on the sizes only (not on the GPU), so results
// are the same on every device.
inline int64_t global_chunk_keys(int64_t B, int64_t H, int64_t G, int64_t N) {
  const int64_t key_tiles = (N + kBlockN - 1) / kBlockN;
  const int64_t blocks = B * H * ((G + kBlockM - 1) / kBlockM);
  int64_t chunks = blocks >= kSplitTargetBlocks ? 1 : (kSplitTargetBlocks + blocks - 1) / blocks;
  const int64_t max_chunks = key_tiles / kMinChunkTiles > 1 ? key_tiles / kMinChunkTiles : 1;
  if (chunks > max_chunks) chunks = max_chunks;
  const int64_t tiles_per_chunk = (key_tiles + chunks - 1) / chunks;
  return (tiles_per_chunk > 0 ? tiles_per_chunk : 1) * kBlockN;
}

inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Bytes of workspace attention_fwd needs (kernel B's partials), 0 when it needs none.
inline size_t fwd_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  if (kind != AttnKind::kGlobalRows || B * H * G == 0 || N == 0) return 0;
  const int64_t chunks = ceil_div(N, global_chunk_keys(B, H, G, N));
  if (chunks <= 1) return 0;
  return static_cast<size_t>(B * H * chunks * G * (D + 2)) * sizeof(float);
}

inline bool row_starts_aligned(const void* p, const BNHStrides& s, int elem_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (s.b * elem_bytes) % 16 == 0 &&
         (s.n * elem_bytes) % 16 == 0 && (s.h * elem_bytes) % 16 == 0;
}

template <typename T, int D, typename Stream>
void launch_fwd(const AttnFwdParams& p, float* workspace, Stream stream) {
  FwdArgs a;
  a.q = p.q, a.k = p.k, a.v = p.v, a.out = p.out, a.lse = p.lse;
  a.key_flags = p.key_flags, a.global_idx = p.global_idx;
  a.B = p.B, a.M = p.M, a.N = p.N, a.H = p.H, a.G = p.G, a.window = p.window;
  a.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  a.qs = p.q_strides, a.ks = p.k_strides, a.vs = p.v_strides, a.os = p.o_strides;
  a.aligned = row_starts_aligned(p.q, p.q_strides, 2) && row_starts_aligned(p.k, p.k_strides, 2) &&
              row_starts_aligned(p.v, p.v_strides, 2);
  a.chunk_keys = p.N, a.chunks = 1, a.part_o = nullptr, a.part_ml = nullptr;
  constexpr size_t smem = smem_bytes<D>();
  if (p.kind == AttnKind::kBanded) {
    const int64_t blocks = p.B * p.H * ceil_div(p.N, kBlockM);
    auto kernel = banded_fwd_kernel<T, D>;  // (a template-id would split the macro's arguments)
    LED_LAUNCH(kernel, blocks, kThreads, smem, stream, a);
    return;
  }
  a.chunk_keys = global_chunk_keys(p.B, p.H, p.G, p.N);
  a.chunks = p.N > 0 ? ceil_div(p.N, a.chunk_keys) : 1;  // no keys: one pass writes the zero rows
  if (a.chunks > 1) {
    a.part_o = workspace;
    a.part_ml = workspace + p.B * p.H * a.chunks * p.G * D;
  }
  const int64_t blocks = p.B * p.H * ceil_div(p.G, kBlockM) * a.chunks;
  auto kernel = global_fwd_kernel<T, D>;
  LED_LAUNCH(kernel, blocks, kThreads, smem, stream, a);
  if (a.chunks > 1) {
    auto combine = combine_kernel<T, D>;
    LED_LAUNCH(combine, ceil_div(p.B * p.H * p.G, kWarps), kThreads, 0, stream, a);
  }
}

// Checks what the kernels rely on; throws std::invalid_argument naming the problem.
inline void check_fwd_params(const AttnFwdParams& p, size_t workspace_bytes, const char* who) {
  auto bad = [&](const std::string& what) { throw std::invalid_argument(std::string(who) + ": " + what); };
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) bad("float16 or bfloat16 inputs only");
  if (p.D != 16 && p.D != 32 && p.D != 64 && p.D != 128) bad("head dim must be 16, 32, 64 or 128");
  if (p.B < 0 || p.M < 0 || p.N < 0 || p.H < 0 || p.G < 0 || p.window < 0) bad("negative size or window");
  if (p.N >= (int64_t{1} << 31) || p.M >= (int64_t{1} << 31)) bad("sequence length must be below 2^31");
  if (p.kind == AttnKind::kBanded && p.M != p.N) bad("banded rows must equal N");
  if (p.kind == AttnKind::kGlobalRows && p.M != p.G) bad("global rows must equal G");
  if (p.G > 0 && p.global_idx == nullptr) bad("global_idx is null with G > 0");
  if (reinterpret_cast<uintptr_t>(p.out) % 4 != 0 || p.o_strides.b % 2 || p.o_strides.n % 2 || p.o_strides.h % 2) {
    bad("out rows must be 4-byte aligned");
  }
  if (workspace_bytes < fwd_workspace_bytes(p.kind, p.B, p.H, p.G, p.N, p.D)) bad("workspace too small");
}

template <typename Stream>
void attention_fwd(const AttnFwdParams& p, float* workspace, size_t workspace_bytes, Stream stream) {
  check_fwd_params(p, workspace_bytes, "attention_fwd_cuda");
  if (p.B * p.H * p.M == 0) return;
  const bool half = p.dtype == DType::kFloat16;
  switch (p.D) {
    case 16: half ? launch_fwd<__half, 16>(p, workspace, stream) : launch_fwd<__nv_bfloat16, 16>(p, workspace, stream); break;
    case 32: half ? launch_fwd<__half, 32>(p, workspace, stream) : launch_fwd<__nv_bfloat16, 32>(p, workspace, stream); break;
    case 64: half ? launch_fwd<__half, 64>(p, workspace, stream) : launch_fwd<__nv_bfloat16, 64>(p, workspace, stream); break;
    default: half ? launch_fwd<__half, 128>(p, workspace, stream) : launch_fwd<__nv_bfloat16, 128>(p, workspace, stream); break;
  }
}

}  // namespace cuda_attn
}  // namespace led_kernels
