// Forward kernels of the cuda backend: kernel A (banded rows) and kernel B (global rows), with
// tensor-core MMA (mma.sync m16n8k16, fp32 accumulation), FlashAttention-2 style.
//
// One block = 4 warps; each warp owns 16 x RB query rows (RB = 1 or 2 blocks of 16) and keeps their
// Q fragments, output accumulators and softmax statistics in registers. Keys come in tiles of 64
// rows of K and V, copied by cp.async into two shared-memory stages (the next tile's copy in flight
// while this one is computed on; rows padded by 8 elements so that ldmatrix reads are free of bank
// conflicts; see PipedKeySmem) and consumed by
//   S = Q K^T           (ldmatrix of K, mma)                 # [16, 64] per row block, fp32
//   online softmax      (base 2: t = scale * log2(e) * s)   rows reduced over the 4 lanes of a quad
//   O += P V            (P re-packed from S's accumulator layout into A fragments, ldmatrix.trans of V)
// Tiles whose keys are all attendable and finite skip the per-entry mask where the band covers a
// row block whole; a tile with no attendable key is skipped, and one whose keys past the first 16
// are all masked (the global keys of a layer with few global tokens) computes only those 16. The
// main-loop variants (RB) are FwdVariant below.
//
// Kernel A, query tile [i0, i0 + 64 RB): the band's key tiles [i0 - w, i0 + 64 RB - 1 + w]
// (clipped; keys that are padding or global are masked there), then the global keys, gathered by
// global_idx into tiles of their own and attended by every row; one softmax over both.
// Kernel B, slot tile [s0, s0 + 64) of q_global: every non-padded key of k_global / v_global. With
// few slots a (b, h) pair would leave the GPU idle, so the keys are split into chunks: each chunk
// writes an unnormalized partial output with its (max, sum) and combine_kernel merges them. In the
// layer mode (cpu_attention.h) kernel B's query and output rows are those of kernel A's tensors at
// the slots' positions (RowMap), so it overwrites A's rows there; when B is split, its chunks run as
// extra blocks of A's launch (layer_fwd_kernel, attention_layer_fwd).
//
// Non-finite values: V is the tensor contracted over keys here (see attention_common.cuh).
//
// The statistics saved per row are the cpu backend's (cpu_attention.h): m = max_j t_j and log2 of
// l = sum_j 2^(t_j - m); a row that attends nothing (padding, invalid slot) gets m = +inf, 0 and
// an output of 0.
//
// This header holds the kernels and their launch logic; csrc/cuda/attention.cu instantiates them
// for the GPU, tests/cuda_emu/ for the CPU emulator (see simt.cuh).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "attention_common.cuh"

namespace led_kernels {
namespace cuda_attn {

// Everything a forward kernel reads, passed by value. Positions fit in int32 (N < 2^31 - 256 checked).
struct FwdArgs {
  const void* q;  // (B, M, H, D): the query rows (N rows for kernel A, G slots for kernel B)
  const void* k;  // (B, N, H, D)
  const void* v;
  void* out;   // (B, M, H, D)
  RowMap rows;  // where the rows of q and out are stored (kernel B in the layer mode: at global_idx)
  bool lean;    // kernel A walks its lean runs (lean_runs_enabled)
  float* lse;  // (B, H, 2, M)
  const int8_t* key_flags;    // (B, N) 0 local, 1 padding, 2 global
  const int32_t* global_idx;  // (B, G) or null when G == 0
  int64_t B, M, N, H, G;
  int64_t window;
  float scale_log2;  // scale * log2(e)
  BNHStrides qs, ks, vs, os;
  // kernel B split: chunks of chunk_keys keys (a multiple of kBlockN); partials when chunks > 1
  int64_t chunk_keys, chunks;
  float* part_o;   // (B, H, chunks, G, D) unnormalized outputs
  float* part_ml;  // (B, H, chunks, 2, G) max and sum
};

// A lane's row reductions over the entries it holds of a 16 x kCols accumulator (for_each_entry's
// layout: entry e of group nt is in row e >> 1): `combine` of `value(nt, e)` over each row's 2 kCols / 8
// entries, as a tree of kParts partial results per row instead of one chain, whose dependent
// instructions (each waiting out the last one's latency) were the longest path through a tile's
// softmax.
template <int kCols, int kParts, typename Combine, typename Value>
LED_DEVICE void reduce_rows(float (&out)[2], Combine combine, Value value) {
  constexpr int kEntries = kCols / 4;  // per row
  static_assert(kEntries % kParts == 0 && (kParts & (kParts - 1)) == 0, "whole partials, a tree of them");
  LED_UNROLL
  for (int x = 0; x < 2; ++x) {
    float part[kParts];
    LED_UNROLL
    for (int i = 0; i < kEntries; ++i) {
      const float v = value(i / 2, 2 * x + i % 2);
      part[i % kParts] = i < kParts ? v : combine(part[i % kParts], v);
    }
    LED_UNROLL
    for (int width = kParts / 2; width > 0; width /= 2) {
      LED_UNROLL
      for (int k = 0; k < width; ++k) part[k] = combine(part[k], part[k + width]);
    }
    out[x] = part[0];
  }
}

// One warp's 16 x RB query rows (RB blocks of 16): Q fragments, output accumulators and softmax
// statistics. Lane (g, t) = (lane / 4, lane % 4) holds rows g and g + 8 (x = 0, 1 below) of each
// block. With Tile::kQShared (one block of 16 per warp) the warpgroup's 64 query rows stay in shared
// memory and the products read them there: the 4 D / 16 registers of the fragments are free.
template <typename T, int D, int RB, typename Tile = PaddedTile<D>>
struct WarpRows {
  using QTile = typename WithRows<Tile, RB * kBlockM>::type;  // the layout the query rows are staged in
  static_assert(!Tile::kQShared || RB == 1, "the products read a warpgroup's 64 query rows from shared memory");

  // partial results per row in the softmax's reductions (reduce_rows): four with one block of rows
  // per warp; two with two (rows32) or registers capped (wgmma2g's 128), and one (a chain) for
  // rows32 at D = 16, which kept 168 registers by spilling otherwise (offline sm_90a)
  static constexpr int kRowParts = RB == 1 && Tile::kGroups == 1 ? 4 : D == 16 ? 1 : 2;

  uint32_t q[RB][D / 16][4];  // A fragments of Q, one per 16 dims (unused with Tile::kQShared)
  const T* q_tile;            // the staged query rows (read by the products with Tile::kQShared)
  float o[RB][D / 8][4];      // C fragments of O, one per 8 dims
  float m[RB][2];             // running max (base 2), -inf before any key
  float l[RB][2];             // running sum of 2^(t - m) over this lane's columns (quad-reduced at the end)
  // With Tile::kOverlap (attend_overlapped): the last lean tile's P as the A fragments of its O += P V,
  // and its staged V, whose product has not been issued yet (`pending`)
  uint32_t p_pending[kBlockN / 16][4];
  const T* v_pending;
  bool pending;

  // (staged_q: the block's staged query rows; with Tile::kGroups > 1, one 64-row tile per warpgroup)
  LED_DEVICE void init(const T* staged_q, int warp, int lane) {
    q_tile = staged_q + (warp / 4) * (Tile::kBytes / sizeof(T)) * (Tile::kGroups > 1);
    LED_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      if constexpr (!Tile::kQShared) load_a_fragments<D, QTile>(q[rb], staged_q, (warp * RB + rb) * 16, lane);
      LED_UNROLL
      for (int dn = 0; dn < D / 8; ++dn) o[rb][dn][0] = o[rb][dn][1] = o[rb][dn][2] = o[rb][dn][3] = 0.0f;
      m[rb][0] = m[rb][1] = -INFINITY;
      l[rb][0] = l[rb][1] = 0.0f;
    }
    pending = false;
  }

  // After a tile's row maxima (this lane's part, base 2): the new running max, the scores of block rb
  // replaced by their exponent `exp_of(score, max)`, and the sums and outputs rescaled. The hooks are
  // attend_overlapped's: `after_max()` once the maxima are reduced over the quad (it issues the
  // product that adds into O meanwhile), `before_rescale()` before O is rescaled (it waits for it).
  template <int kCols, typename ExpOf, typename AfterMax = void (*)(), typename BeforeRescale = void (*)()>
  LED_DEVICE void update_rows(float (&s)[kCols / 8][4], int rb, float (&tile_max)[2], ExpOf exp_of,
                              AfterMax after_max = [] {}, BeforeRescale before_rescale = [] {}) {
    float alpha[2];
    float m_use[2];
    LED_UNROLL
    for (int x = 0; x < 2; ++x) {
      tile_max[x] = fmaxf(tile_max[x], simt::shfl_xor(tile_max[x], 1));
      tile_max[x] = fmaxf(tile_max[x], simt::shfl_xor(tile_max[x], 2));
      const float m_new = fmaxf(m[rb][x], tile_max[x]);
      m_use[x] = m_new == -INFINITY ? 0.0f : m_new;  // nothing attended yet: keep p = 0, not NaN
      alpha[x] = simt::fast_exp2(m[rb][x] - m_use[x]);
      m[rb][x] = m_new;
    }
    after_max();
    LED_UNROLL
    for (int nt = 0; nt < kCols / 8; ++nt) {
      LED_UNROLL
      for (int e = 0; e < 4; ++e) s[nt][e] = exp_of(s[nt][e], m_use[e >> 1]);
    }
    float sum[2];
    reduce_rows<kCols, kRowParts>(sum, [](float u, float v) { return u + v; }, [&](int nt, int e) { return s[nt][e]; });
    LED_UNROLL
    for (int x = 0; x < 2; ++x) l[rb][x] = l[rb][x] * alpha[x] + sum[x];
    before_rescale();
    LED_UNROLL
    for (int dn = 0; dn < D / 8; ++dn) {
      o[rb][dn][0] *= alpha[0], o[rb][dn][1] *= alpha[0];
      o[rb][dn][2] *= alpha[1], o[rb][dn][3] *= alpha[1];
    }
  }

  // The online softmax of block rb's tile of raw scores s, every entry attended. A full block keeps its
  // raw scores: the row max of scale * s is |scale| times the max of sign(scale) * s (exactly so:
  // rounding is monotonic), and the exponent applies the scale in its FFMA (one instruction per score
  // fewer, as FlashAttention-2).
  template <int kCols, typename AfterMax = void (*)(), typename BeforeRescale = void (*)()>
  LED_DEVICE void softmax_full(float (&s)[kCols / 8][4], int rb, float scale_log2, AfterMax after_max = [] {},
                               BeforeRescale before_rescale = [] {}) {
    float tile_max[2];
    auto max = [](float u, float v) { return fmaxf(u, v); };
    if (scale_log2 >= 0.0f) {
      reduce_rows<kCols, kRowParts>(tile_max, max, [&](int nt, int e) { return s[nt][e]; });
    } else {
      reduce_rows<kCols, kRowParts>(tile_max, max, [&](int nt, int e) { return -s[nt][e]; });
    }
    tile_max[0] *= fabsf(scale_log2);
    tile_max[1] *= fabsf(scale_log2);
    update_rows<kCols>(
        s, rb, tile_max, [&](float x, float m_use) { return simt::fast_exp2(fmaf(x, scale_log2, -m_use)); },
        after_max, before_rescale);
  }

  // A lean tile with Tile::kOverlap (wgmma16o; FlashAttention-3's overlap of the softmax with the
  // products): once this tile's S = Q K^T has landed and its row maxima are known, O += P V of the lean
  // tile before (pending) is issued, and the exponents and row sums run while the tensor cores add it
  // into O, which is waited for only before its rescale. (Issued before the maxima, ptxas moved the
  // wait above the quad's shuffles, and only the maxima overlapped it.) This tile's P V is left
  // pending for the next visit: a lean tile issues it beside its own softmax, any other visit first
  // (flush_pending), and so does the end of the walk. Its V stays staged until then: a third V stage
  // (OverlapQTile; K keeps two) keeps the next tile's copy out of it.
  LED_DEVICE void attend_overlapped(const T* ks, const T* vs, float scale_log2) {
    static_assert(Tile::kOverlap && Tile::kQShared && RB == 1, "one warpgroup's rows, Q in shared memory");
    float s[kBlockN / 8][4];  // [key groups of 8][rows g, g+8 x 2 keys]
    LED_UNROLL
    for (int nt = 0; nt < kBlockN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    simt::wgmma_pin(s);
    simt::wgmma_fence();
    issue_smem_a_tile_t<T, D, kBlockN>(s, q_tile, ks);
    simt::wgmma_commit();
    simt::wgmma_wait();
    simt::wgmma_pin(s);
    // Each branch issues and waits for its own products (block-uniform): a product issued in a branch
    // after a fence outside it made ptxas serialize every wgmma of the kernel (C7520).
    if (pending) {
      softmax_full<kBlockN>(
          s, 0, scale_log2,
          [&] {
            simt::wgmma_pin(o[0]);  // (last rescaled by the previous tile)
            simt::wgmma_pin(p_pending);
            simt::wgmma_fence();
            issue_pending();
            simt::wgmma_commit();
          },
          [&] {
            simt::wgmma_pin(s);  // (the exponents stay above the wait)
            simt::wgmma_wait();
            simt::wgmma_pin(o[0]);
            simt::wgmma_pin(p_pending);
          });
    } else {  // the run's first tile
      softmax_full<kBlockN>(s, 0, scale_log2);
    }
    LED_UNROLL
    for (int kk = 0; kk < kBlockN / 16; ++kk) pack_p_fragment<T, kBlockN>(p_pending[kk], s, kk);
    v_pending = vs;
    pending = true;
  }

  // Issues the pending O += P V (no fence, commit or wait).
  LED_DEVICE void issue_pending() { issue_p_tile<T, D, kBlockN>(o[0], p_pending, v_pending); }

  // The pending O += P V, computed now (before any tile that is not lean, and after the walk).
  LED_DEVICE void flush_pending() {
    if constexpr (Tile::kOverlap) {
      if (!pending) return;  // (block-uniform)
      simt::wgmma_pin(o[0]);
      simt::wgmma_pin(p_pending);
      simt::wgmma_fence();
      issue_pending();
      simt::wgmma_commit();
      simt::wgmma_wait();
      simt::wgmma_pin(o[0]);
      simt::wgmma_pin(p_pending);
      pending = false;
    }
  }

  // Attend one staged key tile (its first kCols keys: the others are masked). row[rb][x] = the query
  // position of row x of block rb (for the window test); banded = apply |row - key| <= window (false:
  // every valid key of the tile is attended); full[rb] = every entry of block rb's 16 x 64 scores is
  // attended (no mask needed); poison = the tile's poison row (NaN for a zeroed non-finite V row).
  // kLean: every block is full (a lean tile, see LeanRun: the masked path is not compiled in).
  template <int kCols = kBlockN, bool kLean = false>
  LED_DEVICE void attend(const T* ks, const T* vs, const int32_t* key_pos, const float* poison, int lane,
                         const int32_t (&row)[RB][2], bool banded, const bool (&full)[RB], int64_t window,
                         float scale_log2) {
    float s[RB][kCols / 8][4];  // [block][key groups of 8][rows g, g+8 x 2 keys]
    LED_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      LED_UNROLL
      for (int nt = 0; nt < kCols / 8; ++nt) s[rb][nt][0] = s[rb][nt][1] = s[rb][nt][2] = s[rb][nt][3] = 0.0f;
    }
    if constexpr (Tile::kQShared) {
      wgmma_smem_a_tile_t<T, D, kCols>(s[0], q_tile, ks);
    } else {
      product_a_tile_t<Tile, T, D, RB, kCols>(s, q, ks, lane);
    }
    LED_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      // Each kind of block runs its own row max, exponent and sums (the shared part is update_rows):
      // with one path merging into the other between the max and the exponent, the raw scores of a
      // full block and the masked ones of the other ended in different registers, and the merge cost
      // a move per score.
      if (kLean || full[rb]) {
        softmax_full<kCols>(s[rb], rb, scale_log2);
      } else {
        const AttendRange range[2] = {attend_range(row[rb][0], banded, window),
                                      attend_range(row[rb][1], banded, window)};
        float tile_max[2] = {-INFINITY, -INFINITY};
        for_each_entry<kCols>(lane, [&](int nt, int e, int col) {
          const bool keep = range[e >> 1].keeps(key_pos[col]);
          s[rb][nt][e] = keep ? s[rb][nt][e] * scale_log2 + poison[col] : -INFINITY;
          if (kRowParts == 1) tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[rb][nt][e]);
        });
        if (kRowParts > 1) {
          reduce_rows<kCols, kRowParts>(tile_max, [](float u, float v) { return fmaxf(u, v); },
                                        [&](int nt, int e) { return s[rb][nt][e]; });
        }
        update_rows<kCols>(s[rb], rb, tile_max, [](float x, float m_use) { return simt::fast_exp2(x - m_use); });
      }
    }
    product_p_tile<Tile, T, D, RB, kCols>(o, s, vs, lane);
  }

  // The row sums over the quad (every lane ends with the full sums).
  LED_DEVICE void reduce_sums() {
    LED_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      LED_UNROLL
      for (int x = 0; x < 2; ++x) {
        l[rb][x] += simt::shfl_xor(l[rb][x], 1);
        l[rb][x] += simt::shfl_xor(l[rb][x], 2);
      }
    }
  }
};

// Row `row` (row x of block rb) of the output and its statistics: normalized, or 0 / (+inf, 0) when
// `live` is false or the row attended nothing. The output goes to row `out_row` (none when -1).
template <typename T, int D, int RB, typename Tile>
LED_DEVICE void write_row(const FwdArgs& a, const WarpRows<T, D, RB, Tile>& w, int rb, int x, int64_t b, int64_t h,
                          int64_t row, int64_t out_row, bool live, int t) {
  const float l = w.l[rb][x];
  const bool attended = live && l != 0.0f;  // NaN sums stay: that row attended a NaN
  const float inv = attended ? 1.0f / l : 0.0f;
  if (out_row >= 0) {
    T* dst = static_cast<T*>(a.out) + b * a.os.b + out_row * a.os.n + h * a.os.h;
    store_acc_row<T, D>(dst, w.o[rb], x, inv, t, !attended);
  }
  if (t == 0) {
    float* lse = a.lse + (b * a.H + h) * 2 * a.M;
    simt::check_global(lse + row, 4);
    simt::check_global(lse + a.M + row, 4);
    lse[row] = attended ? w.m[rb][x] : INFINITY;
    lse[a.M + row] = attended ? log2f(l) : 0.0f;
  }
}

template <typename T>
LED_DEVICE KeySet<T> fwd_keys(const FwdArgs& a) {
  return KeySet<T>{Rows<T>{static_cast<const T*>(a.k), a.ks, a.N}, Rows<T>{static_cast<const T*>(a.v), a.vs, a.N},
                   a.key_flags, a.global_idx, a.N, a.G};
}

// The forward's main-loop variants of kernel A, chosen by the environment variable
// LED_KERNELS_CUDA_FWD so that a GPU session can measure them against each other (unset or empty:
// wgmma16 where the wgmma kernels run, rows32 elsewhere):
//   rows32   32 query rows per warp, each K / V fragment read from shared memory once for two 16-row
//            blocks (half the ldmatrix traffic per MMA; FlashAttention-2's choice); D = 128 runs
//            rows16
//   rows16   16 rows per warp (fewer registers, more blocks per SM)
//   wgmma    head dims 64 and 128 on sm_90 (H100, H200), with an extension built for sm_90a
//            (LED_KERNELS_CUDA_ARCHS containing 90a): the block's two products per tile as warpgroup
//            MMAs (wgmma) on 128-byte-swizzled tiles (SwizzledTile), over 128 query rows per block
//            at D = 64 (two halves of 64, as rows32) and 64 at D = 128 (the registers of two halves
//            would not fit); other head dims run rows32. Refused where it cannot run.
//   wgmma16  the same with 64 query rows per block at D = 64 too: 155 registers against wgmma's 251,
//            so three blocks per SM instead of two, which the latency-bound main loop needs more than
//            the halved K / V traffic per row (on an H100 at N = 16384, w = 512: 0.335 ms against
//            0.382 for wgmma and 0.408 for rows32 in one run; benchmarks/results/h100-sxm-wgmma-session.log).
//   wgmma16s wgmma16 with the block's query rows kept in shared memory (SharedQTile), read by the
//            S products through a descriptor: 128 registers instead of 155 at D = 64 (offline
//            sm_90a), so four blocks fit an SM, for 8 KiB more shared memory per block.
//   wgmma2g  wgmma16s with two warpgroups per block (GroupedQTile): 128 query rows, each warpgroup
//            its 64 (its own Q tile and accumulators), both reading every key tile that the first
//            one copies and checks: per query row, half the key-tile loads from L2 and half the
//            per-tile barriers and bookkeeping of wgmma16s, at the same warps per SM (two blocks
//            of 8 warps at D = 64, whose registers are capped at 128 for it); a warpgroup skips the
//            products of a band tile outside its rows' windows (the block's first and last).
//   wgmma16o wgmma16s whose lean tiles overlap their softmax with the tensor cores (WarpRows::
//            attend_overlapped, FlashAttention-3's intra-warpgroup overlap): once a tile's S has
//            landed and its row maxima are reduced, the tile before's O += P V is issued, the
//            exponents and row sums run while it adds into O, and O waits for it only before its
//            rescale. The pending P fragments cost registers (156 against 128 at D = 64, offline
//            sm_90a: three blocks per SM) and the tile before's V a third stage of V tiles (8 KiB
//            more shared memory per block at D = 64).
// Kernel B always runs 16 rows per warp with mma.sync (its 64 slots per block are often mostly
// empty, and its sweep is bound by memory).
enum class FwdVariant : int {
  kRows32 = 0,
  kRows16 = 1,
  kWgmma = 2,
  kWgmma16 = 3,
  kWgmma16s = 4,
  kWgmma2g = 5,
  kWgmma16o = 6
};

inline FwdVariant fwd_variant() {
  const char* env = std::getenv("LED_KERNELS_CUDA_FWD");
  if (env == nullptr || *env == '\0') return simt::wgmma_launchable() ? FwdVariant::kWgmma16 : FwdVariant::kRows32;
  if (std::strcmp(env, "rows32") == 0) return FwdVariant::kRows32;
  if (std::strcmp(env, "rows16") == 0) return FwdVariant::kRows16;
  for (const auto& [name, variant] : {std::make_pair("wgmma", FwdVariant::kWgmma),
                                      std::make_pair("wgmma16", FwdVariant::kWgmma16),
                                      std::make_pair("wgmma16s", FwdVariant::kWgmma16s),
                                      std::make_pair("wgmma2g", FwdVariant::kWgmma2g),
                                      std::make_pair("wgmma16o", FwdVariant::kWgmma16o)}) {
    if (std::strcmp(env, name) == 0) {
      require_wgmma("LED_KERNELS_CUDA_FWD", env);
      return variant;
    }
  }
  throw std::invalid_argument(
      std::string("LED_KERNELS_CUDA_FWD must be rows32, rows16, wgmma, wgmma16, wgmma16s, wgmma2g or wgmma16o, got '") +
      env +
      "'");
}

// The main loop of both forward kernels over the tiles of `tiles` (see walk_key_tiles). The
// block's rows are [block_row0, block_row0 + block_rows) (kernel A; their window decides which band
// keys some row does not attend). A warp whose rows attend nothing (`warp_live` false: padding rows,
// slots past G or invalid) only helps copy the tiles; its rows are written as zeros anyway.
template <typename T, int D, int RB, typename Tile>
LED_DEVICE void attend_tiles(const FwdArgs& a, WarpRows<T, D, RB, Tile>& w, const KeySet<T>& keys,
                             const TileList& tiles, int64_t b, int64_t h, const int32_t (&row)[RB][2],
                             int64_t block_row0, int64_t block_rows, bool warp_live,
                             const PipedKeySmem<T, D, Tile>& sm, int lane) {
  auto needs_check = [&](const int32_t* key_pos, bool banded, int32_t j0, int r) {
    return key_pos[r] < 0 || (banded && !window_covers(block_row0, block_rows, j0 + r, 1, a.window));
  };
  // With several warpgroups per block, one whose rows' windows miss a band tile skips its products,
  // which would add exact zeros (wgmma is the warpgroup's, so the skip is too): the tiles starting in
  // [r0 - w - 63, r0 + 63 + w] meet the windows of its rows [r0, r0 + 63] (attend_range's bounds).
  static_assert(kBlockM == kBlockN, "the range is centred on the warpgroup's first row");
  const AttendRange group_tiles =
      attend_range(row[0][0] - (lane / 4) - 16 * (simt::thread_index() / 32 % 4), true, a.window + kBlockN - 1);
  auto visit = [&](const T* ks, const T* vs, const int32_t* key_pos, const float* poison, bool poisoned, bool banded,
                   int32_t j0, bool lean) {
    if (Tile::kGroups > 1 && banded && !group_tiles.keeps(j0)) return;
    if (lean) {  // every row attends every key: no positions, mask or poison
      if (!Tile::kSwizzled && !warp_live) return;
      if constexpr (Tile::kOverlap) {
        w.attend_overlapped(ks, vs, a.scale_log2);
        return;
      }
      const bool full[RB] = {};
      w.template attend<kBlockN, true>(ks, vs, key_pos, poison, lane, row, banded, full, a.window, a.scale_log2);
      return;
    }
    // (the pending P V goes into O before this tile rescales it, and its V's stage takes the copy of
    // the tile after next once the next barrier is passed)
    w.flush_pending();
    const TileOccupancy keys_in = tile_occupancy(key_pos, lane);
    // (it would add exact zeros; wgmma is the whole warpgroup's, so there every warp computes)
    if ((!Tile::kSwizzled && !warp_live) || !keys_in.any()) return;
    const bool clean = !poisoned && keys_in.all();
    bool full[RB];
    LED_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      // (row[rb][0] - lane / 4: the first of the warp's rows in block rb)
      full[rb] = clean && (!banded || window_covers(row[rb][0] - lane / 4, 16, j0, kBlockN, a.window));
    }
    if (keys_in.past_narrow()) {
      w.attend(ks, vs, key_pos, poison, lane, row, banded, full, a.window, a.scale_log2);
    } else {  // e.g. the global keys of a layer with few global tokens (never a clean tile: no mask skipped)
      w.template attend<kNarrowCols>(ks, vs, key_pos, poison, lane, row, banded, full, a.window, a.scale_log2);
    }
  };
  walk_key_tiles<T, D, Contracted::kValue>(keys, tiles, b, h, sm, needs_check, visit);
  w.flush_pending();
}

// Kernel A: blocks of 64 x RB query rows (query tile fastest, then head, then batch), each warp
// owning 16 x RB consecutive rows; K and V tiles staged as Tile (SwizzledTile: wgmma).
template <typename T, int D, int RB, typename Tile>
LED_DEVICE void banded_fwd_block(const FwdArgs& a, int64_t bid) {
  static_assert(Tile::kGroups == 1 || (Tile::kQShared && RB == 1), "warpgroups of 64 rows read from shared memory");
  constexpr int kRows = RB * kBlockM * Tile::kGroups;
  using QStage = typename WithRows<Tile, kRows>::type;  // (as the products read them)
  static_assert(QStage::kBytes <= (Tile::kQShared ? Tile::kSharedRowTiles : 2) * Tile::kBytes,
                "Q is staged in stage 1's K and V tiles, or in tiles of its own");
  const PipedKeySmem<T, D, Tile> sm(simt::shared_memory());
  const Rows<T> q{static_cast<const T*>(a.q), a.qs, a.M};
  const KeySet<T> keys = fwd_keys<T>(a);

  const int64_t tiles = ceil_div(a.N, kRows);
  const int64_t i0 = (bid % tiles) * kRows;
  const int64_t h = (bid / tiles) % a.H;
  const int64_t b = bid / (tiles * a.H);
  const int warp = simt::thread_index() / 32, lane = simt::thread_index() % 32;

  using Warp = WarpRows<T, D, RB, Tile>;
  const int64_t warp_row0 = i0 + warp * 16 * RB;
  int32_t row[RB][2];  // (positions below N + 128 < 2^31: see attend_range)
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    row[rb][0] = static_cast<int32_t>(warp_row0 + 16 * rb + lane / 4);
    row[rb][1] = row[rb][0] + 8;
  }
  TileList list = TileList::band(i0, kRows, a.N, a.window, a.G);
  if (!rows_have_live(a.key_flags, a.N, b, i0, kRows, false, lane)) list.band_tiles = list.extra_tiles = 0;
  const bool warp_live = rows_have_live(a.key_flags, a.N, b, warp_row0, 16 * RB, false, lane);
  if (a.lean) {
    list.lean = band_lean_run<kThreads * Tile::kGroups>(a.key_flags, a.N, b, list.j_first, list.band_tiles, i0, kRows,
                                                        a.window);
  }

  prepare_key_walk<T, D, Tile>(keys, list, b, sm);
  load_row_tile<T, D, kRows, QStage, kThreads * Tile::kGroups>(q, a.rows, b, h, i0, sm.row_area());
  // (stored by this proxy, read by the products' async proxy with Tile::kQShared)
  if constexpr (Tile::kQShared) simt::fence_proxy_async();
  simt::sync_block();
  Warp w;
  w.init(sm.row_area(), warp, lane);
  attend_tiles<T, D, RB, Tile>(a, w, keys, list, b, h, row, i0, kRows, warp_live, sm, lane);
  w.reduce_sums();
  const int8_t* flags = a.key_flags + b * a.N;
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    LED_UNROLL
    for (int x = 0; x < 2; ++x) {
      const int64_t i = row[rb][x];
      if (i < a.N) write_row(a, w, rb, x, b, h, i, i, flags[i] != 1, lane % 4);
    }
  }
}

template <typename T, int D, int RB, typename Tile>
LED_KERNEL void __launch_bounds__(kThreads) banded_fwd_kernel(FwdArgs a) {
  block_or_trap<Tile>([&](auto tile) { banded_fwd_block<T, D, RB, decltype(tile)>(a, simt::block_index()); });
}

// The same with several warpgroups per block (wgmma2g): at D = 64 two blocks per SM, so at most 128
// registers per thread (a kernel of its own: naming a minimum of blocks changes ptxas's register
// allocation even where it asks for one).
template <typename T, int D, typename Tile>
LED_KERNEL void __launch_bounds__(kThreads * Tile::kGroups, D == 64 ? 2 : 1) grouped_fwd_kernel(FwdArgs a) {
  block_or_trap<Tile>([&](auto tile) { banded_fwd_block<T, D, 1, decltype(tile)>(a, simt::block_index()); });
}

// Kernel B. Blocks: (key chunk fastest, then slot tile, head, batch). With one chunk the rows are
// finished here; otherwise each chunk's partial goes to the workspace for combine_kernel.
template <typename T, int D>
LED_DEVICE void global_fwd_block(const FwdArgs& a, int64_t bid) {
  const PipedKeySmem<T, D> sm(simt::shared_memory());
  const Rows<T> q{static_cast<const T*>(a.q), a.qs, a.M};
  const KeySet<T> keys = fwd_keys<T>(a);

  const int64_t slot_tiles = ceil_div(a.G, kBlockM);
  const int64_t chunk = bid % a.chunks;
  const int64_t s0 = ((bid / a.chunks) % slot_tiles) * kBlockM;
  const int64_t h = (bid / (a.chunks * slot_tiles)) % a.H;
  const int64_t b = bid / (a.chunks * slot_tiles * a.H);
  const int warp = simt::thread_index() / 32, lane = simt::thread_index() % 32;

  const int32_t unused_row[1][2] = {{0, 0}};
  const TileList list = TileList::chunk_keys(chunk * a.chunk_keys, a.chunk_keys, a.N);
  // (one global token: one warp of four has a slot)
  const int64_t lane_slot = s0 + warp * 16 + lane % 16;
  const bool warp_live =
      simt::any_sync(lane_slot < a.G && slot_valid(a.key_flags, a.global_idx, a.N, a.G, b, lane_slot));

  prepare_key_walk<T, D>(keys, list, b, sm);
  load_row_tile<T, D>(q, a.rows, b, h, s0, sm.row_area());
  simt::sync_block();
  WarpRows<T, D, 1> w;
  w.init(sm.row_area(), warp, lane);
  attend_tiles(a, w, keys, list, b, h, unused_row, 0, 0, warp_live, sm, lane);
  w.reduce_sums();
  const int t = lane % 4;
  LED_UNROLL
  for (int x = 0; x < 2; ++x) {
    const int64_t s = s0 + warp * 16 + lane / 4 + 8 * x;
    if (s >= a.G) continue;
    if (a.chunks == 1) {
      const bool valid = slot_valid(a.key_flags, a.global_idx, a.N, a.G, b, s);
      write_row(a, w, 0, x, b, h, s, a.rows(b, s), valid, t);
      continue;
    }
    const int64_t part = (b * a.H + h) * a.chunks + chunk;
    store_acc_row_f32<D>(a.part_o + (part * a.G + s) * D, w.o[0], x, 1.0f, t);
    if (t == 0) {
      float* ml = a.part_ml + part * 2 * a.G;
      simt::check_global(ml + s, 4);
      simt::check_global(ml + a.G + s, 4);
      ml[s] = w.m[0][x];
      ml[a.G + s] = w.l[0][x];
    }
  }
}

template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) global_fwd_kernel(FwdArgs a) {
  global_fwd_block<T, D>(a, simt::block_index());
}

// Which main loops run the layer in one launch (offline sm_90a registers): not wgmma2g (blocks of two
// warpgroups); not wgmma16s at head dim 64, whose 128 registers give four blocks per SM alone, which
// the layer kernel keeps only by spilling (kernel B's path takes 139 registers alone); not head dim
// 16, where the layer kernel takes 185 registers against kernel A's 163 (three blocks per SM -> two).
template <int D, typename Tile>
constexpr bool layer_fusable() {
  return Tile::kGroups == 1 && D != 16 && !(D == 64 && Tile::kQShared && !Tile::kOverlap);
}

// The layer kernel's blocks per SM (its launch bounds): at head dim 64 kernel A's wgmma loops keep
// three blocks alone (wgmma16 155 registers, wgmma16o 156), which B's path would take to two for
// wgmma16o (171 registers, offline sm_90a); elsewhere A's loops need more registers than B's.
template <int D, int RB, typename Tile>
constexpr int layer_min_blocks() {
  return D == 64 && RB == 1 && Tile::kSwizzled ? 3 : 1;
}

// The layer's forward in one launch (LED_KERNELS_FUSED_FORWARD, on by default; when kernel B is split
// into key chunks): kernel A's query tiles of each (batch, head), then kernel B's chunk blocks of the
// same pair, so that B's sweep over all keys, bound by memory latency with one warp of four computing
// at a few global tokens, runs beside A's compute-bound tiles instead of after them, and reads the
// pair's keys while A's blocks have them in L2. The two write disjoint memory (B only its partials;
// combine_kernel writes the global rows afterwards, over A's). Blocks take both kernels' shared memory
// and registers, the larger of each.
template <typename T, int D, int RB, typename Tile>
LED_KERNEL void __launch_bounds__(kThreads, (layer_min_blocks<D, RB, Tile>())) layer_fwd_kernel(FwdArgs a, FwdArgs g) {
  static_assert(layer_fusable<D, Tile>(), "see layer_fusable");
  // (per (batch, head): A's query tiles, B's chunks)
  const LayerBlock block =
      layer_block(simt::block_index(), ceil_div(a.N, RB * kBlockM), ceil_div(g.G, kBlockM) * g.chunks);
  block_or_trap<Tile>([&](auto tile) {
    if (block.band) {
      banded_fwd_block<T, D, RB, decltype(tile)>(a, block.bid);
    } else {
      global_fwd_block<T, D>(g, block.bid);
    }
  });
}

// Merges kernel B's chunks: one warp per (b, h, slot). The chunks' statistics are read with the lanes
// over the chunks and reduced across the warp (butterflies: every lane ends with the same, fixed-order
// result), the partial outputs by sum_chunk_rows.
template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) combine_kernel(FwdArgs a) {
  SlotRow r;
  if (!warp_slot_row(a.B, a.H, a.G, r)) return;  // (whole warps: no collective below for them)
  const int lane = simt::thread_index() % 32;
  const int64_t b = r.b, h = r.h, s = r.s;
  const int64_t part0 = (b * a.H + h) * a.chunks;
  auto stats = [&](int64_t c) { return a.part_ml + (part0 + c) * 2 * a.G; };  // (max, sum) of chunk c
  float m = -INFINITY;
  for (int64_t c = lane; c < a.chunks; c += 32) m = fmaxf(m, stats(c)[s]);
  LED_UNROLL
  for (int mask = 16; mask > 0; mask >>= 1) m = fmaxf(m, simt::shfl_xor(m, mask));
  const float m_use = m == -INFINITY ? 0.0f : m;
  float l = 0.0f;
  for (int64_t c = lane; c < a.chunks; c += 32) l += stats(c)[a.G + s] * simt::fast_exp2(stats(c)[s] - m_use);
  LED_UNROLL
  for (int mask = 16; mask > 0; mask >>= 1) l += simt::shfl_xor(l, mask);
  float acc[4];
  sum_chunk_rows<D>(
      acc, a.chunks, [&](int64_t c) { return a.part_o + ((part0 + c) * a.G + s) * D; },
      [&](int64_t c) { return simt::fast_exp2(stats(c)[s] - m_use); }, lane);
  const bool attended = slot_valid(a.key_flags, a.global_idx, a.N, a.G, b, s) && l != 0.0f;
  const float inv = attended ? 1.0f / l : 0.0f;
  const int64_t out_row = a.rows(b, s);
  if (out_row >= 0 && lane < D / 4) {
    T* dst = static_cast<T*>(a.out) + b * a.os.b + out_row * a.os.n + h * a.os.h + chunk_row_dim<D>(lane);
    simt::check_global(dst, 4 * sizeof(T));
    LED_UNROLL
    for (int e = 0; e < 4; ++e) dst[e] = simt::from_float<T>(attended ? acc[e] * inv : 0.0f);
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

inline int64_t global_fwd_chunk_keys(int64_t B, int64_t H, int64_t G, int64_t N) {
  return chunk_rows(B * H * ceil_div(G, kBlockM), N);
}

// Bytes of workspace attention_fwd needs (kernel B's partials), 0 when it needs none.
inline size_t fwd_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  if (kind != AttnKind::kGlobalRows || B * H * G == 0 || N == 0) return 0;
  const int64_t chunks = chunk_count(N, global_fwd_chunk_keys(B, H, G, N));
  if (chunks <= 1) return 0;
  return static_cast<size_t>(B * H * chunks * G * (D + 2)) * sizeof(float);
}

// The arguments of p's kernel; kernel B's split into key chunks, with its partials in `workspace`
// (fwd_workspace_bytes of them) when there are several.
inline FwdArgs fwd_args(const AttnFwdParams& p, float* workspace) {
  FwdArgs a;
  a.q = p.q, a.k = p.k, a.v = p.v, a.out = p.out, a.lse = p.lse;
  a.key_flags = p.key_flags, a.global_idx = p.global_idx;
  a.B = p.B, a.M = p.M, a.N = p.N, a.H = p.H, a.G = p.G, a.window = clamped_window(p.window, p.N);
  a.rows = RowMap{p.key_flags, p.global_idx, p.N, p.G, p.layer && p.kind == AttnKind::kGlobalRows};
  a.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  a.qs = p.q_strides, a.ks = p.k_strides, a.vs = p.v_strides, a.os = p.o_strides;
  a.chunk_keys = p.N, a.chunks = 1, a.part_o = nullptr, a.part_ml = nullptr;
  a.lean = lean_runs_enabled();
  if (p.kind == AttnKind::kGlobalRows) {
    a.chunk_keys = global_fwd_chunk_keys(p.B, p.H, p.G, p.N);
    a.chunks = chunk_count(p.N, a.chunk_keys);  // no keys: one pass writes the zero rows
    if (a.chunks > 1) {
      a.part_o = workspace;
      a.part_ml = workspace + p.B * p.H * a.chunks * p.G * p.D;
    }
  }
  return a;
}

// Merges kernel B's chunks, after they all ran (nothing when B was not split).
template <typename T, int D, typename Stream>
void launch_combine(const FwdArgs& a, Stream stream) {
  if (a.chunks <= 1) return;
  auto combine = combine_kernel<T, D>;
  const int64_t combine_blocks = ceil_div(a.B * a.H * a.G, kWarps);
  if (launchable(combine_blocks)) LED_LAUNCH(combine, combine_blocks, kThreads, 0, stream, a);
}

template <typename T, int D, int RB, typename Tile, typename Stream>
void launch_fwd(const AttnFwdParams& p, float* workspace, Stream stream) {
  const FwdArgs a = fwd_args(p, workspace);
  if (p.kind == AttnKind::kBanded) {
    constexpr size_t band_smem = PipedKeySmem<T, D, Tile>::bytes();
    const int64_t blocks = p.B * p.H * ceil_div(p.N, RB * kBlockM * Tile::kGroups);
    auto launch = [&](auto kernel) {  // (a template-id would split the macros' arguments)
      LED_SET_SMEM_LIMIT(kernel, band_smem);
      if (launchable(blocks)) LED_LAUNCH(kernel, blocks, kThreads * Tile::kGroups, band_smem, stream, a);
    };
    if constexpr (Tile::kGroups > 1) {
      launch(grouped_fwd_kernel<T, D, Tile>);
    } else {
      launch(banded_fwd_kernel<T, D, RB, Tile>);
    }
    return;
  }
  constexpr size_t smem = PipedKeySmem<T, D>::bytes();
  const int64_t blocks = p.B * p.H * ceil_div(p.G, kBlockM) * a.chunks;
  auto kernel = global_fwd_kernel<T, D>;
  LED_SET_SMEM_LIMIT(kernel, smem);
  if (launchable(blocks)) LED_LAUNCH(kernel, blocks, kThreads, smem, stream, a);
  launch_combine<T, D>(a, stream);
}

// Whether the layer's kernel B runs inside kernel A's launch where it can (layer_fwd_kernel): unless
// the environment variable LED_KERNELS_FUSED_FORWARD is 0 (as for the triton backend, so that one
// benchmark run can time both ways; the results are bitwise the same).
inline bool fused_forward_enabled() {
  const char* env = std::getenv("LED_KERNELS_FUSED_FORWARD");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  throw std::invalid_argument(std::string("LED_KERNELS_FUSED_FORWARD must be 0 or 1, got '") + env + "'");
}

// The layer (kernel A's rows `band`, then kernel B's `glob` over A's output) with A's main loop
// RB / Tile: one launch of both when B is split into key chunks (the combine then writes the global
// rows over A's; unsplit, B would write them itself while A's blocks may still write theirs), else
// the two launches in order.
template <typename T, int D, int RB, typename Tile, typename Stream>
void launch_layer_fwd(const AttnFwdParams& band, const AttnFwdParams& glob, float* workspace, Stream stream) {
  const FwdArgs a = fwd_args(band, nullptr), g = fwd_args(glob, workspace);
  if constexpr (layer_fusable<D, Tile>()) {
    if (glob.G > 0 && g.chunks > 1 && fused_forward_enabled()) {
      constexpr size_t smem = std::max(PipedKeySmem<T, D, Tile>::bytes(), PipedKeySmem<T, D>::bytes());
      const int64_t blocks = band.B * band.H * (ceil_div(band.N, RB * kBlockM) + ceil_div(glob.G, kBlockM) * g.chunks);
      auto kernel = layer_fwd_kernel<T, D, RB, Tile>;
      LED_SET_SMEM_LIMIT(kernel, smem);
      if (launchable(blocks)) LED_LAUNCH(kernel, blocks, kThreads, smem, stream, a, g);
      launch_combine<T, D>(g, stream);
      return;
    }
  }
  launch_fwd<T, D, RB, Tile>(band, nullptr, stream);
  launch_fwd<T, D, RB, Tile>(glob, workspace, stream);
}

// Calls launch(std::integral_constant<int, RB>{}, Tile{}) with the main loop `variant` names at head
// dim D (RB blocks of 16 rows per warp, K and V tiles staged as Tile).
template <int D, typename Launch>
void with_variant(FwdVariant variant, Launch launch) {
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  if (variant == FwdVariant::kRows16 || (D == 128 && variant == FwdVariant::kRows32)) {
    launch(One{}, PaddedTile<D>{});
    return;
  }
  if constexpr (D % 64 == 0) {
    if (variant == FwdVariant::kWgmma16 || (D == 128 && variant == FwdVariant::kWgmma)) {
      launch(One{}, SwizzledTile<D>{});
      return;
    }
    if (variant == FwdVariant::kWgmma16s) {
      launch(One{}, SharedQTile<D>{});
      return;
    }
    if (variant == FwdVariant::kWgmma2g) {
      launch(One{}, GroupedQTile<D>{});
      return;
    }
    if (variant == FwdVariant::kWgmma16o) {
      launch(One{}, OverlapQTile<D>{});
      return;
    }
    if constexpr (D == 64) {
      if (variant == FwdVariant::kWgmma) {
        launch(Two{}, SwizzledTile<D>{});
        return;
      }
    }
  }
  if constexpr (D < 128) launch(Two{}, PaddedTile<D>{});
}

// p's kernel, or with `glob` the layer: p kernel A's rows, glob kernel B's over A's output.
template <typename T, typename Stream>
void dispatch_fwd(const AttnFwdParams& p, const AttnFwdParams* glob, float* workspace, Stream stream) {
  const FwdVariant variant = fwd_variant();  // read (and a wrong value refused) at every head dim
  auto at_head_dim = [&](auto head_dim) {
    constexpr int D = decltype(head_dim)::value;
    with_variant<D>(variant, [&](auto rb, auto tile) {
      constexpr int RB = decltype(rb)::value;
      using Tile = decltype(tile);
      if (glob != nullptr) {
        launch_layer_fwd<T, D, RB, Tile>(p, *glob, workspace, stream);
      } else {
        launch_fwd<T, D, RB, Tile>(p, workspace, stream);
      }
    });
  };
  switch (p.D) {
    case 16: at_head_dim(std::integral_constant<int, 16>{}); break;
    case 32: at_head_dim(std::integral_constant<int, 32>{}); break;
    case 64: at_head_dim(std::integral_constant<int, 64>{}); break;
    default: at_head_dim(std::integral_constant<int, 128>{}); break;
  }
}

inline void check_fwd(const AttnFwdParams& p, size_t workspace_bytes, const char* who) {
  check_common(p.dtype, p.kind, p.B, p.M, p.N, p.H, p.D, p.G, p.window, p.global_idx, who);
  if (!rows_4byte_aligned(p.out, p.o_strides)) throw std::invalid_argument(std::string(who) + ": out rows must be 4-byte aligned");
  check_rows_aligned16(p.q, p.q_strides, who, "q");
  check_rows_aligned16(p.k, p.k_strides, who, "k");
  check_rows_aligned16(p.v, p.v_strides, who, "v");
  if (workspace_bytes < fwd_workspace_bytes(p.kind, p.B, p.H, p.G, p.N, p.D)) {
    throw std::invalid_argument(std::string(who) + ": workspace too small");
  }
}

template <typename Stream>
void attention_fwd(const AttnFwdParams& p, float* workspace, size_t workspace_bytes, Stream stream) {
  check_fwd(p, workspace_bytes, "attention_fwd_cuda");
  if (p.B * p.H * p.M == 0) return;
  if (p.dtype == DType::kFloat16) {
    dispatch_fwd<__half>(p, nullptr, workspace, stream);
  } else {
    dispatch_fwd<__nv_bfloat16>(p, nullptr, workspace, stream);
  }
}

// The layer mode's forward (cpu_attention.h): kernel A over `band`'s rows, then kernel B over
// `glob`'s slots, whose rows it writes into A's output (glob.out == band.out) at the global
// positions; in one launch where layer_fwd_kernel can run them (launch_layer_fwd). `workspace`:
// kernel B's (fwd_workspace_bytes(kGlobalRows, ...)).
template <typename Stream>
void attention_layer_fwd(const AttnFwdParams& band, const AttnFwdParams& glob, float* workspace,
                         size_t workspace_bytes, Stream stream) {
  const char* who = "attention_layer_fwd_cuda";
  if (band.kind != AttnKind::kBanded || glob.kind != AttnKind::kGlobalRows || !glob.layer) {
    throw std::invalid_argument(std::string(who) + ": needs kernel A's rows and kernel B's in the layer mode");
  }
  if (glob.out != band.out || glob.key_flags != band.key_flags || glob.global_idx != band.global_idx ||
      glob.dtype != band.dtype || glob.B != band.B || glob.N != band.N || glob.H != band.H || glob.D != band.D ||
      glob.G != band.G || glob.M != band.G || band.M != band.N) {
    throw std::invalid_argument(std::string(who) + ": kernel B's arguments must be the same layer's as kernel A's");
  }
  check_fwd(band, 0, who);
  check_fwd(glob, workspace_bytes, who);
  if (band.B * band.H * band.N == 0) return;
  if (band.dtype == DType::kFloat16) {
    dispatch_fwd<__half>(band, &glob, workspace, stream);
  } else {
    dispatch_fwd<__nv_bfloat16>(band, &glob, workspace, stream);
  }
}

}  // namespace cuda_attn
}  // namespace led_kernels
