// Backward kernels of the cuda backend, FlashAttention-2 style with tensor-core MMA, deterministic
// (no atomics: every gradient element is written by one block, partial sums are reduced in a fixed
// order).
//
// With P the forward's probabilities (recomputed from the saved per-row statistics m and log2 l as
// P = 2^(t - lse), t = scale * log2(e) * q.k, lse = m + log2 l: one FFMA and one exponential per
// score, as FlashAttention-2's backward) and delta_i = dO_i . O_i:
//   dV_j = sum_i P_ij dO_i      dS_ij = P_ij (dO_i . V_j - delta_i)
//   dQ_i = scale sum_j dS_ij K_j      dK_j = scale sum_i dS_ij Q_i
//
// Kernels:
//   delta_kernel       delta = rowsum(dO * O), D / 8 lanes per row (16-byte chunks, shuffles).
//   dq_kernel          one block per 64 query rows (as the forward, with its cp.async key walk,
//                      walk_key_tiles): S = Q K^T and dP = dO V^T from registers, dQ += dS K.
//                      Kernel A: the band's key tiles, then the global keys; kernel B: one chunk
//                      of keys, written as an fp32 partial. On sm_90 its three products may run
//                      as wgmma (LED_KERNELS_CUDA_DQ=wgmma, see BwdVariant); there the exponents of
//                      P run while dP is on the tensor cores (start_* / finish_products).
//   dkdv_kernel        one block per 64 keys, each warp owning 16 of them: S^T = K Q^T and
//                      dP^T = V dO^T, dV += P^T dO and dK += dS^T Q over the query tiles that can
//                      attend those keys, which arrive through the same cp.async pipeline
//                      (walk_tiles with QueryTileStream, their statistics in its ring). Three
//                      uses: kernel A's band keys (query rows within the window), kernel A's
//                      global keys (every query row, split into chunks, fp32 partials), kernel B's
//                      keys (every global slot). On sm_90 its four products may run as wgmma
//                      (LED_KERNELS_CUDA_DKDV=wgmma); there, up to head dim 64, P^T's exponents
//                      and dV's product run while dP^T is on the tensor cores.
//   reduce_kernel      sums the chunks of a partial in chunk order and writes the rows.
// A key that is global gets no band gradient (its band entries are masked) and its whole gradient
// from the global-key pass, which runs after the band pass and overwrites its row. Tiles (and warps)
// where nothing is attended skip their math, which would add exact zeros.
//
// The layer mode (cpu_attention.h): kernel A's global rows are dead like padding rows; kernel B reads
// q, out and dout and writes dq at the slots' positions of kernel A's tensors (RowMap), after A, and
// with accumulate_kv adds its dK / dV to A's (read, add in fp32, round once: one writer per element).
//
// Non-finite values (attention_common.cuh): the dq kernel contracts over keys with dS K, so K rows
// are checked (a non-finite V only reaches dP's column, which masking selects away); the dkdv kernel
// contracts over query rows, so Q and dO rows are checked. Both check only where it matters (see
// walk_tiles). Masked entries are selected to exactly 0, never computed as 0 * x.
#pragma once

#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "attention_common.cuh"

namespace led_kernels {
namespace cuda_attn {

// Where a dkdv block takes its keys and which query rows it sweeps.
enum class DkdvMode : int {
  kBandKeys = 0,    // kernel A: local keys of a tile, query rows within the window
  kGlobalKeys = 1,  // kernel A: the global keys, one chunk of query rows (fp32 partials)
  kAllKeys = 2,     // kernel B: non-padded keys of a tile, every global slot
};

struct BwdArgs {
  const void* q;     // (B, M, H, D)
  const void* k;     // (B, N, H, D)
  const void* v;     // (B, N, H, D)
  const void* out;   // (B, M, H, D) the forward's output
  const void* dout;  // (B, M, H, D)
  const float* lse;  // (B, H, 2, M) the forward's statistics
  float* delta;      // (B, H, M) workspace
  void* dq;          // (B, M, H, D)
  void* dk;          // (B, N, H, D)
  void* dv;
  const int8_t* key_flags;
  const int32_t* global_idx;
  int64_t B, M, N, H, G;
  int64_t window;
  float scale_log2, scale;
  BNHStrides qs, ks, vs, os, dos, dqs, dks, dvs;
  bool o_aligned;   // out and dout rows start 16-byte aligned (delta_kernel)
  bool global_rows;  // kernel B (rows are global slots)
  bool layer;        // the layer mode (cpu_attention.h)
  bool accumulate_kv;  // kernel B in the layer mode: dk, dv added to kernel A's
  bool lean;           // kernel A walks its lean runs (lean_runs_enabled)
  RowMap rows;       // where the rows of q, out, dout and dq are stored
  // split sweeps: kernel A's global keys over query rows, kernel B's dq over keys
  int64_t chunk, chunks;
  float* part_dk;  // (B, H, chunks, G, D), kernel A
  float* part_dv;  // (B, H, chunks, G, D), kernel A
  float* part_dq;  // (B, H, chunks, G, D), kernel B
};

// Whether query row i has a gradient to give (kernel A: not padding, and in the layer mode not
// global either, its output being kernel B's; kernel B: a valid slot).
LED_DEVICE bool row_live(const BwdArgs& a, int64_t b, int64_t i) {
  if (i >= a.M) return false;
  if (a.global_rows) return slot_valid(a.key_flags, a.global_idx, a.N, a.G, b, i);
  const int8_t flag = a.key_flags[b * a.N + i];
  return a.layer ? flag == 0 : flag != 1;
}

// delta[b, h, i] = sum_d dO[b, i, h, d] * O[b, i, h, d] in fp32. A row is read by D / 8 neighbouring
// lanes, one 16-byte chunk each, then summed by butterfly shuffles: rows are numbered h fastest, which
// is memory order for (B, N, H, D) tensors, so a warp's loads cover whole contiguous rows (one thread
// per row made each load instruction touch 32 lines and lean on L1 for the rest of the row).
template <int D>
constexpr int delta_lanes_per_row() {
  return D / 8;
}

template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) delta_kernel(BwdArgs a) {
  constexpr int kLanes = delta_lanes_per_row<D>();
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "lanes per row: a power of two");
  const int64_t row = (simt::block_index() * kThreads + simt::thread_index()) / kLanes;
  const int chunk = simt::thread_index() % kLanes;
  const bool in_range = row < a.B * a.M * a.H;
  float acc = 0.0f;
  int64_t h = 0, i = 0, b = 0;
  if (in_range) {
    h = row % a.H;
    i = (row / a.H) % a.M;
    b = row / (a.H * a.M);
    const int64_t stored = a.rows(b, i);
    if (stored >= 0) {  // a slot with no row: never live, delta unused
      const int d = chunk * 8;
      const T* o = static_cast<const T*>(a.out) + b * a.os.b + stored * a.os.n + h * a.os.h + d;
      const T* g = static_cast<const T*>(a.dout) + b * a.dos.b + stored * a.dos.n + h * a.dos.h + d;
      const Chunk8 oc = load_chunk(o, a.o_aligned), gc = load_chunk(g, a.o_aligned);
      LED_UNROLL
      for (int e = 0; e < 8; ++e) {
        const uint32_t ow = oc.w[e / 2], gw = gc.w[e / 2];
        const float of = simt::bits_to_float<T>(static_cast<uint16_t>(e % 2 ? ow >> 16 : ow & 0xFFFFu));
        const float gf = simt::bits_to_float<T>(static_cast<uint16_t>(e % 2 ? gw >> 16 : gw & 0xFFFFu));
        acc = fmaf(of, gf, acc);
      }
    }
  }
  // (every lane takes part: a row's lanes are neighbours, so the groups never mix)
  LED_UNROLL
  for (int off = kLanes / 2; off > 0; off /= 2) acc += simt::shfl_xor(acc, off);
  if (in_range && chunk == 0) {
    float* dst = a.delta + (b * a.H + h) * a.M + i;
    simt::check_global(dst, 4);
    *dst = acc;
  }
}

// Kernel A: blocks (query tile, head, batch), dQ written. Kernel B: blocks (key chunk, slot tile,
// head, batch), dQ partials written.
// Whether the backward kernels compile a mask-free variant of their score loop (for whole tiles that
// the window covers): not at D = 128, nor at D = 16 (whose dK/dV kernels run on fewer registers),
// where the second variant of the loop would spill.
template <int D>
constexpr bool has_mask_free_loop() {
  return D == 32 || D == 64;
}

// Tile: how K and V are staged (SwizzledTile: the three products per tile as wgmma, sm_90a; see
// BwdVariant).
template <typename T, int D, typename Tile>
LED_DEVICE void dq_block(const BwdArgs& a, int64_t bid) {
  const PipedKeySmem<T, D, Tile> sm(simt::shared_memory());  // Q and dO wait in stage 1 (sm.row_area())
  const Rows<T> q{static_cast<const T*>(a.q), a.qs, a.M};
  const Rows<T> dout{static_cast<const T*>(a.dout), a.dos, a.M};
  const KeySet<T> keys{Rows<T>{static_cast<const T*>(a.k), a.ks, a.N}, Rows<T>{static_cast<const T*>(a.v), a.vs, a.N},
                       a.key_flags, a.global_idx, a.N, a.G};

  int64_t i0, h, b, chunk = 0;
  if (a.global_rows) {
    const int64_t slot_tiles = ceil_div(a.G, kBlockM);
    chunk = bid % a.chunks;
    i0 = ((bid / a.chunks) % slot_tiles) * kBlockM;
    h = (bid / (a.chunks * slot_tiles)) % a.H;
    b = bid / (a.chunks * slot_tiles * a.H);
  } else {
    const int64_t tiles = ceil_div(a.N, kBlockM);
    i0 = (bid % tiles) * kBlockM;
    h = (bid / tiles) % a.H;
    b = bid / (tiles * a.H);
  }
  const int warp = simt::thread_index() / 32, lane = simt::thread_index() % 32, t = lane % 4;

  // Kernel B: one chunk of keys. Kernel A: the band's key tiles, then the global keys; none without a
  // live row (padding; in the layer mode also global), whose dQ rows are exact zeros.
  TileList list;
  if (a.global_rows) {
    list = TileList::chunk_keys(chunk * a.chunk, a.chunk, a.N);
  } else {
    list = TileList::band(i0, kBlockM, a.N, a.window, a.G);
    if (!rows_have_live(a.key_flags, a.N, b, i0, kBlockM, a.layer, lane)) list.band_tiles = list.extra_tiles = 0;
  }

  prepare_key_walk<T, D, Tile>(keys, list, b, sm);
  using RowTile = typename WithRows<Tile, kBlockM>::type;  // (Q and dO staged as the key tiles are)
  static_assert(2 * RowTile::kBytes <= 2 * Tile::kBytes, "Q and dO are staged in stage 1's K and V tiles");
  static_assert(!Tile::kQShared || Tile::kSharedRowTiles == 2, "Q and dO stay in tiles of their own");
  T* q_tile = sm.row_area();
  T* do_tile = q_tile + RowTile::kBytes / sizeof(T);
  load_row_tile<T, D, kBlockM, RowTile>(q, a.rows, b, h, i0, q_tile);
  load_row_tile<T, D, kBlockM, RowTile>(dout, a.rows, b, h, i0, do_tile);
  // (stored by this proxy, read by the products' async proxy with Tile::kQShared)
  if constexpr (Tile::kQShared) simt::fence_proxy_async();

  int64_t row[2];
  bool live[2];
  float lse[2], delta[2];  // lse = m + log2 l
  LED_UNROLL
  for (int x = 0; x < 2; ++x) {
    row[x] = i0 + warp * 16 + lane / 4 + 8 * x;
    live[x] = row_live(a, b, row[x]);
    const float* stats = a.lse + (b * a.H + h) * 2 * a.M;
    lse[x] = live[x] ? stats[row[x]] + stats[a.M + row[x]] : 0.0f;
    delta[x] = live[x] ? a.delta[(b * a.H + h) * a.M + row[x]] : 0.0f;
  }
  // A warp without a live row skips the math (its dQ rows are exact zeros); not at D = 128, whose
  // registers are full (the predicate alone makes ptxas spill). From ballots: see simt::ballot_sync.
  bool warp_live = true, warp_all_live = false;
  if constexpr (D <= 64) {
    const uint32_t lanes0 = simt::ballot_sync(live[0]), lanes1 = simt::ballot_sync(live[1]);
    warp_live = (lanes0 | lanes1) != 0u;
    warp_all_live = (lanes0 & lanes1) == 0xffffffffu;
  }
  // A dead row's dS is selected to 0, and 0 times a non-finite key would reach its dQ row: with one in
  // the block every key is checked (see needs_check below; always at D = 128, which has no ballots).
  const bool block_has_dead = simt::sync_block_or(!warp_all_live) != 0 || D > 64;
  // Q's and dO's A fragments (with Tile::kQShared the products read the staged rows instead: 44
  // registers fewer at head dim 64, three blocks per SM instead of two)
  uint32_t qf[D / 16][4], df[D / 16][4];
  if constexpr (!Tile::kQShared) {
    load_a_fragments<D, RowTile>(qf, q_tile, warp * 16, lane);
    load_a_fragments<D, RowTile>(df, do_tile, warp * 16, lane);
  }

  float acc[D / 8][4];
  LED_UNROLL
  for (int dn = 0; dn < D / 8; ++dn) acc[dn][0] = acc[dn][1] = acc[dn][2] = acc[dn][3] = 0.0f;
  // With three stages of key tiles (DqTile, wgmma at head dim 64), dQ += dS K of a whole tile is left
  // running on the tensor cores, and waited for with the next tile's S product (the copy of tile t + 2
  // goes to tile t - 1's stage), or before a tile with nothing attended, or after the walk. It reads dS
  // from ds_frags until then. (finish_dq waits whether or not a product runs: a wait on a flag made
  // ptxas serialise every wgmma of the kernel, C7518.)
  constexpr bool kDqInFlight = Tile::kSwizzled && Tile::kKeyStages == 3;
  uint32_t ds_frags[kBlockN / 16][4] = {};  // (zeros: pinned at the first S wait, before any product)
  auto finish_dq = [&] {
    if constexpr (kDqInFlight) finish_products<Tile>(acc, ds_frags);
  };

  // The first kCols keys of one staged key tile (the others masked): dQ += dS K. `full`: every entry
  // of the warp's 16 x kCols scores is attended (no mask, no poison: the same values without them).
  auto attend_cols = [&](const T* ks, const T* vs, const int32_t* key_pos, const float* poison, bool banded,
                         bool full, auto cols) {
    constexpr int kCols = decltype(cols)::value;
    float s[kCols / 8][4], dp[kCols / 8][4];
    LED_UNROLL
    for (int nt = 0; nt < kCols / 8; ++nt) {
      LED_UNROLL
      for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.0f;
    }
    // S, then dP while P = 2^(t - lse) is computed from S (with wgmma the exponents run while the
    // tensor cores compute dP), then dS = P (dP - delta); the branch is per tile, not per entry
    // out += rows tile^T, the block's rows read where they are staged (Tile::kQShared) or from frags
    auto start_rows_product = [&](float (&out)[kCols / 8][4], const uint32_t (&frags)[D / 16][4], const T* rows,
                                  const T* tile) {
      if constexpr (Tile::kQShared) {
        start_smem_a_tile_t<Tile, T, D, kCols>(out, rows, warp * 16, tile, lane);
      } else {
        start_a_tile_t<Tile, T, D, kCols>(out, frags, tile, lane);
      }
    };
    start_rows_product(s, qf, q_tile, ks);
    if constexpr (kDqInFlight) {  // (S's wait is also the pending dQ product's)
      finish_products<Tile>(s, acc, ds_frags);
    } else {
      finish_products<Tile>(s);
    }
    start_rows_product(dp, df, do_tile, vs);
    for_each_entry<kCols>(lane, [&](int nt, int e, int) {
      s[nt][e] = simt::fast_exp2(s[nt][e] * a.scale_log2 - lse[e >> 1]);
    });
    pin_products<Tile>(s);
    finish_products<Tile>(dp);
    if (has_mask_free_loop<D>() && full) {
      for_each_entry<kCols>(lane, [&](int nt, int e, int) { s[nt][e] *= dp[nt][e] - delta[e >> 1]; });
    } else {
      // (a dead row attends nothing)
      const AttendRange range[2] = {attend_range(live[0] ? row[0] : -1, banded, a.window),
                                    attend_range(live[1] ? row[1] : -1, banded, a.window)};
      for_each_entry<kCols>(lane, [&](int nt, int e, int col) {
        const bool keep = range[e >> 1].keeps(key_pos[col]);
        // (computed, then selected: no branch per entry)
        const float value = s[nt][e] * (dp[nt][e] - delta[e >> 1]) + poison[col];
        s[nt][e] = keep ? value : 0.0f;
      });
    }
    if constexpr (kDqInFlight && kCols == kBlockN) {
      start_p_tile<Tile, T, D, kCols>(acc, s, ds_frags, ks, lane);
    } else {
      product_p_tile<Tile, T, D, kCols>(acc, s, ks, lane);
    }
  };
  // K is contracted over keys (dS K): its non-finite rows are zeroed where some live row of the block
  // does not attend the key, and every key is checked when the block has a dead row.
  auto needs_check = [&](const int32_t* key_pos, bool banded, int32_t j0, int r) {
    return block_has_dead || key_pos[r] < 0 ||
           (banded && !window_covers(i0, kBlockM, j0 + r, 1, a.window));
  };
  // A whole tile: nothing when no key is attended (exact zeros), its first kNarrowCols keys when no
  // later one is (block-uniform, see TileOccupancy); not at D = 128 either (the second variant of the
  // loop would spill). A clean tile that the window covers needs no mask.
  auto visit = [&](const T* ks, const T* vs, const int32_t* key_pos, const float* poison, bool poisoned, bool banded,
                   int32_t j0, bool lean) {
    if (lean) {  // every live row attends every key (the block has no dead row): no positions or mask
      if (!Tile::kSwizzled && !warp_live) return;
      attend_cols(ks, vs, key_pos, poison, banded, has_mask_free_loop<D>(), std::integral_constant<int, kBlockN>{});
      return;
    }
    const TileOccupancy keys_in = tile_occupancy(key_pos, lane);
    // (wgmma is the whole warpgroup's: there a warp without a live row computes too, its dS all 0)
    if ((!Tile::kSwizzled && !warp_live) || !keys_in.any()) {
      finish_dq();  // (the next copy may go to the stage its K tile is in)
      return;
    }
    if (D > 64 || keys_in.past_narrow()) {
      const bool full = has_mask_free_loop<D>() && warp_all_live && !poisoned && keys_in.all() &&
                        (!banded || window_covers(i0 + warp * 16, 16, j0, kBlockN, a.window));
      attend_cols(ks, vs, key_pos, poison, banded, full, std::integral_constant<int, kBlockN>{});
    } else {  // (never clean: keys past the first 16 are masked)
      attend_cols(ks, vs, key_pos, poison, banded, false, std::integral_constant<int, kNarrowCols>{});
    }
  };
  // (a dead row's dS must be masked, and every key checked: see needs_check; a lean tile takes the
  // mask-free loop, so not where there is none)
  if (has_mask_free_loop<D>() && a.lean && !a.global_rows && !block_has_dead) {
    list.lean = band_lean_run(a.key_flags, a.N, b, list.j_first, list.band_tiles, i0, kBlockM, a.window);
  }
  walk_key_tiles<T, D, Contracted::kKey, has_mask_free_loop<D>()>(keys, list, b, h, sm, needs_check, visit);
  finish_dq();

  if (a.global_rows) {
    const int64_t part = (b * a.H + h) * a.chunks + chunk;
    LED_UNROLL
    for (int x = 0; x < 2; ++x) {
      if (row[x] < a.G) store_acc_row_f32<D>(a.part_dq + (part * a.G + row[x]) * D, acc, x, a.scale, t);
    }
    return;
  }
  T* dq = static_cast<T*>(a.dq);
  LED_UNROLL
  for (int x = 0; x < 2; ++x) {
    if (row[x] < a.N) store_acc_row<T, D>(dq + b * a.dqs.b + row[x] * a.dqs.n + h * a.dqs.h, acc, x, a.scale, t);
  }
}

template <typename T, int D, typename Tile>
LED_KERNEL void __launch_bounds__(kThreads) dq_kernel(BwdArgs a) {
  block_or_trap<Tile>([&](auto tile) { dq_block<T, D, decltype(tile)>(a, simt::block_index()); });
}

// The layer's dQ in one launch (LED_KERNELS_FUSED_BACKWARD, on by default; when kernel B's dQ is split
// into key chunks): kernel A's query tiles of each (batch, head), then kernel B's chunk blocks of the
// same pair, as layer_fwd_kernel does in the forward. B's blocks, one warp of four live at a few global
// tokens and bound by memory latency, run beside A's instead of in a launch of their own after them,
// and read the pair's keys while A's blocks have them in L2. They write only their partials (B's
// reduce_kernel writes the global rows' dQ afterwards, where A's are 0). One dq_block serves both, so
// the kernel keeps dq_kernel's registers.
template <typename T, int D, typename Tile>
LED_KERNEL void __launch_bounds__(kThreads) layer_dq_kernel(BwdArgs a, BwdArgs g) {
  // (per (batch, head): A's query tiles, B's chunks)
  const LayerBlock block = layer_block(simt::block_index(), ceil_div(a.N, kBlockM), ceil_div(g.G, kBlockM) * g.chunks);
  block_or_trap<Tile>([&](auto tile) { dq_block<T, D, decltype(tile)>(block.band ? a : g, block.bid); });
}

// Shared memory of the dkdv kernel: its 64 keys (K, V, their positions), then its query tiles (Q and
// dO) through walk_tiles, with a ring of their per-row data. Two stages up to D = 64; at D = 128 one
// (six tiles of 17 KB would not fit the 99 KB a block may have on sm_86 / sm_89).
// (SwizzledTile: the wgmma variant, which runs only on sm_90 and its 227 KB, Tile::kValueStages stages:
// two at D = 128 too, three with WithStages at D = 64; the tiles start 1024-byte aligned.)
template <typename T, int D, typename Tile = PaddedTile<D>>
struct DkdvSmem {
  static constexpr int kStages = Tile::kSwizzled ? Tile::kValueStages : D <= 64 ? 2 : 1;
  static constexpr int kTiles = 2 + 2 * kStages;
  static constexpr int kRing = 3 * kBlockM;  // ring rows of tiles t % 3

  // (only the base is kept: the kernel's registers are scarce, the offsets are constants)
  unsigned char* base;

  static constexpr size_t bytes() {
    return kTiles * Tile::kBytes + (kBlockN + 3 * kRing + 2 * kBlockM) * sizeof(float) + (Tile::kAlign - 16);
  }

  LED_DEVICE explicit DkdvSmem(unsigned char* smem) : base(align_tiles<Tile>(smem)) {}

  LED_DEVICE T* tile(int i) const { return reinterpret_cast<T*>(base + i * Tile::kBytes); }
  LED_DEVICE T* ks() const { return tile(0); }
  LED_DEVICE T* vs() const { return tile(1); }
  LED_DEVICE T* qs(int stage) const { return tile(2 + 2 * stage); }
  LED_DEVICE T* dos(int stage) const { return tile(3 + 2 * stage); }
  LED_DEVICE float* words() const { return reinterpret_cast<float*>(base + kTiles * Tile::kBytes); }
  LED_DEVICE int32_t* key_pos() const { return reinterpret_cast<int32_t*>(words()); }  // [kBlockN]
  LED_DEVICE static int ring(int32_t t) { return (t % 3) * kBlockM; }
  // tile t's query positions (-1: attends nothing here), the forward's m + log2 l (the row's
  // log-sum-exp, log2 domain), and rowsum(dO * O)
  LED_DEVICE int32_t* pos(int32_t t) const { return reinterpret_cast<int32_t*>(words() + kBlockN) + ring(t); }
  LED_DEVICE float* lse(int32_t t) const { return words() + kBlockN + kRing + ring(t); }
  LED_DEVICE float* delta(int32_t t) const { return words() + kBlockN + 2 * kRing + ring(t); }
  // [kBlockM]: the current tile's, valid when its vote found a non-finite row
  LED_DEVICE float* poison() const { return words() + kBlockN + 3 * kRing; }
  // [kBlockM]: the poison of every other tile (read without a branch per entry)
  LED_DEVICE float* zeros() const { return words() + kBlockN + 3 * kRing + kBlockM; }
};

// One query row's ring entry, read two tiles ahead by the thread that keeps it.
struct QueryRowAhead {
  bool live;
  float m, log2l, delta;  // (m + log2 l is taken when kept: the sum would wait for both loads)
};

// The dkdv kernel's query tiles as a stream for walk_tiles: tile t holds rows first + 64 t + r below
// `end`; Q and dO are copied in place (rows at or past `end` zero-filled; kernel B in the layer mode
// gathers its valid slots' rows through global_idx). Both are contracted over rows (dS^T Q, P^T dO),
// so both are checked on the rows `needs_check(pos, i0, r)` names, and a row bad in either is zeroed
// in both.
template <typename T, int D, typename NeedsCheck, typename Tile, bool kLeanable>
struct QueryTileStream {
  static constexpr int kStages = DkdvSmem<T, D, Tile>::kStages;
  static constexpr int kGroups = 1;
  static constexpr bool kAsyncProxyReads = Tile::kSwizzled;
  using Ahead = QueryRowAhead;

  const BwdArgs& a;
  int64_t b, h, first, end;
  int32_t tiles;
  const DkdvSmem<T, D, Tile>& sm;
  NeedsCheck needs_check;
  LeanRun lean_run;

  LED_DEVICE int32_t count() const { return tiles; }
  // (a lean tile's rows still need their statistics from the ring)
  LED_DEVICE bool lean(int32_t t) const { return kLeanable && lean_run.contains(t); }
  LED_DEVICE bool needs_ring(int32_t) const { return true; }
  LED_DEVICE int64_t row0(int32_t t) const { return first + static_cast<int64_t>(t) * kBlockM; }
  // (the statistics are read whether or not the row is live, so that no load waits for another)
  LED_DEVICE Ahead read_ahead(int32_t t) const {
    const int64_t i = row0(t) + simt::thread_index();
    Ahead x{false, 0.0f, 0.0f, 0.0f};
    if (simt::thread_index() >= kBlockM || i >= a.M) return x;
    const float* stats = a.lse + (b * a.H + h) * 2 * a.M;
    const float* row_delta = a.delta + (b * a.H + h) * a.M;
    simt::check_global(stats + i, 4);
    simt::check_global(stats + a.M + i, 4);
    simt::check_global(row_delta + i, 4);
    x.m = stats[i];
    x.log2l = stats[a.M + i];
    x.delta = row_delta[i];
    x.live = i < end && row_live(a, b, i);
    return x;
  }
  LED_DEVICE void keep_ahead(int32_t t, const Ahead& x) const {
    const int r = simt::thread_index();
    if (r >= kBlockM) return;
    sm.pos(t)[r] = x.live ? static_cast<int32_t>(row0(t) + r) : -1;
    sm.lse(t)[r] = x.live ? x.m + x.log2l : 0.0f;
    sm.delta(t)[r] = x.live ? x.delta : 0.0f;
  }
  LED_DEVICE void issue(int32_t t, int stage) const {
    using P = TilePasses<D>;
    const int col = P::col(0);
    const RowColumn<T> q(Rows<T>{static_cast<const T*>(a.q), a.qs, a.M}, b, h, col);
    const RowColumn<T> dout(Rows<T>{static_cast<const T*>(a.dout), a.dos, a.M}, b, h, col);
    const int32_t* pos = sm.pos(t);
    T* qs = sm.qs(stage);
    T* dos = sm.dos(stage);
    if (!a.rows.by_slot && row0(t) + kBlockM <= end) {
      issue_whole_tile<T, D, Tile>(q, dout, row0(t), qs, dos);
      simt::cp_async_commit();
      return;
    }
    LED_UNROLL
    for (int p = 0; p < P::kPasses; ++p) {
      const int r = P::row(p);
      const int64_t i = row0(t) + r;
      bool fill;
      int64_t from;
      if (a.rows.by_slot) {  // a live slot is a valid one: its row is global_idx's
        fill = pos[r] >= 0;
        from = fill ? a.global_idx[b * a.G + pos[r]] : 0;
      } else {
        fill = i < end;
        from = fill ? i : 0;  // (no bytes are read from a zero-filled row's address)
      }
      simt::cp_async_16(qs + Tile::offset(r, col), q.row(from), fill);
      simt::cp_async_16(dos + Tile::offset(r, col), dout.row(from), fill);
    }
    simt::cp_async_commit();
  }
  LED_DEVICE uint32_t own_nonfinite(int32_t t, int stage) const {
    const int32_t* pos = sm.pos(t);
    const int64_t i0 = row0(t);
    auto check = [&](int r) { return needs_check(pos, i0, r); };
    return own_nonfinite_chunks<T, D, Tile>(sm.qs(stage), check) |
           own_nonfinite_chunks<T, D, Tile>(sm.dos(stage), check);
  }
  LED_DEVICE void zero_nonfinite(int stage, uint32_t bad) const {
    zero_nonfinite_rows<T, D, Tile>(sm.qs(stage), sm.dos(stage), sm.poison(), bad);
  }
};

// Blocks: (key tile fastest, then head, batch), or for kernel A's global keys (query-row chunk
// fastest, then slot tile, head, batch). The block's keys stay in shared memory; its query tiles
// stream through (QueryTileStream).
// Tile: how K, V, Q and dO are staged (SwizzledTile: the four products per tile as wgmma, sm_90a; see
// BwdVariant).
template <typename T, int D, DkdvMode kMode, typename Tile>
LED_DEVICE void dkdv_block(const BwdArgs& a) {
  const DkdvSmem<T, D, Tile> sm(simt::shared_memory());
  const KeySet<T> keys{Rows<T>{static_cast<const T*>(a.k), a.ks, a.N}, Rows<T>{static_cast<const T*>(a.v), a.vs, a.N},
                       a.key_flags, a.global_idx, a.N, a.G};

  const int64_t bid = simt::block_index();
  int64_t base, h, b, chunk = 0, begin, end;
  KeySource src;
  if (kMode == DkdvMode::kGlobalKeys) {
    const int64_t slot_tiles = ceil_div(a.G, kBlockN);
    chunk = bid % a.chunks;
    base = ((bid / a.chunks) % slot_tiles) * kBlockN;
    h = (bid / (a.chunks * slot_tiles)) % a.H;
    b = bid / (a.chunks * slot_tiles * a.H);
    src = KeySource::kGlobalSlots;
    begin = chunk * a.chunk;
    end = begin + a.chunk < a.M ? begin + a.chunk : a.M;
  } else {
    const int64_t tiles = ceil_div(a.N, kBlockN);
    base = (bid % tiles) * kBlockN;
    h = (bid / tiles) % a.H;
    b = bid / (tiles * a.H);
    if (kMode == DkdvMode::kBandKeys) {
      src = KeySource::kBand;
      const int64_t last_key = (base + kBlockN < a.N ? base + kBlockN : a.N) - 1;
      begin = a.window >= base ? 0 : base - a.window;
      end = a.window >= a.N - last_key ? a.N : last_key + a.window + 1;
    } else {
      src = KeySource::kNonPadded;
      begin = 0;
      end = a.M;
    }
  }
  const int warp = simt::thread_index() / 32, lane = simt::thread_index() % 32, t = lane % 4;
  const bool banded = kMode == DkdvMode::kBandKeys;

  // Q and dO are contracted over rows: a non-finite row is zeroed where some key of the block does
  // not attend it (a dead row, a row outside some key's window), and every row is checked when the
  // block has a key that nothing attends, whose dK / dV rows must stay 0 (not for kernel A's global
  // keys: such a key is a slot past G or an invalid one, whose partial rows are never reduced).
  bool check_every_row = true;
  auto needs_check = [&](const int32_t* pos, int64_t i0, int r) {
    return check_every_row || pos[r] < 0 || (banded && !window_covers(i0 + r, 1, base, kBlockN, a.window));
  };
  const int64_t first = (begin / kBlockM) * kBlockM;
  // (kernel A's band keys: see the lean run below)
  constexpr bool kLeanable = kMode == DkdvMode::kBandKeys && (D <= 64 || Tile::kSwizzled);
  QueryTileStream<T, D, decltype(needs_check), Tile, kLeanable> rows{
      a, b, h, first, end, static_cast<int32_t>(end > first ? ceil_div(end - first, kBlockM) : 0), sm, needs_check,
      LeanRun{}};
  {
    const int32_t pos = thread_key_position(keys, src, b, base);
    if (simt::thread_index() < kBlockN) sm.key_pos()[simt::thread_index()] = pos;
    if (simt::thread_index() < kBlockM) sm.zeros()[simt::thread_index()] = 0.0f;
  }
  stream_first_tiles(rows);
  simt::sync_block();
  int32_t kpos[2];
  LED_UNROLL
  for (int x = 0; x < 2; ++x) kpos[x] = sm.key_pos()[warp * 16 + lane / 4 + 8 * x];
  // Keys that no row attends get exact zeros: a tile without any skips the sweep, a warp without any
  // (one global key: three warps of four) its math. (from ballots: see simt::ballot_sync)
  const TileOccupancy block_keys = tile_occupancy(sm.key_pos(), lane);
  const uint32_t key_lanes0 = simt::ballot_sync(kpos[0] >= 0), key_lanes1 = simt::ballot_sync(kpos[1] >= 0);
  const bool warp_has_keys = (key_lanes0 | key_lanes1) != 0u;
  const bool warp_all_keys = (key_lanes0 & key_lanes1) == 0xffffffffu;
  check_every_row = kMode != DkdvMode::kGlobalKeys && !block_keys.all();
  // (with every key live: the query tiles whose rows are all live and in every key's window; rows of
  // global tokens count as dead here, as they are in the layer mode. Not for the mma.sync kernel at
  // D = 128, whose registers are full: the run's bounds made it spill.)
  if (kLeanable && a.lean && !check_every_row && rows.count() > 0) {
    rows.lean_run = band_lean_run(a.key_flags, a.N, b, first, rows.count(), base, kBlockN, a.window);
  }

  float dk[D / 8][4], dv[D / 8][4];
  LED_UNROLL
  for (int dn = 0; dn < D / 8; ++dn) {
    LED_UNROLL
    for (int e = 0; e < 4; ++e) dk[dn][e] = dv[dn][e] = 0.0f;
  }
  // (head dim 128: dV's product beside dP^T's made the kernels spill, offline sm_90a)
  constexpr bool kOverlap = Tile::kSwizzled && D <= 64;
  // With three stages of query tiles (DkdvTile, wgmma at head dim 64), dK += dS^T Q of a whole tile is
  // left running, as dQ's dS K is in dq_block: waited for with the next tile's S^T product (the copy of
  // tile t + 2 goes to tile t - 1's stage), before a tile with nothing attended, and after the walk.
  constexpr bool kDkInFlight = kOverlap && DkdvSmem<T, D, Tile>::kStages == 3;
  uint32_t dk_frags[kBlockM / 16][4] = {};  // (dS^T, read by the running dK product until its wait)
  auto finish_dk = [&] {
    if constexpr (kDkInFlight) finish_products<Tile>(dk, dk_frags);
  };
  // One staged query tile, its first kCols rows (the others dead): dV += P^T dO, dK += dS^T Q. `full`:
  // every entry of the warp's 16 x kCols scores is attended (no mask, no poison: the same values).
  auto sweep_rows = [&](const T* qs, const T* dos, const int32_t* row_pos, const float* row_lse,
                        const float* row_delta, const float* poison, bool full, auto cols) {
    constexpr int kCols = decltype(cols)::value;
    float st[kCols / 8][4], dpt[kCols / 8][4];  // [query groups][keys g, g+8 x 2 queries]
    LED_UNROLL
    for (int nt = 0; nt < kCols / 8; ++nt) {
      LED_UNROLL
      for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.0f;
    }
    // S^T, dP^T, then P^T = 2^(t - lse) and dS^T = P^T (dP^T - delta), then dV += P^T dO and dK += dS^T
    // Q. With kOverlap, P^T is computed from S^T while dP^T lands and dV's product is started beside
    // it. A masked entry is selected to 0 (the branches are per tile, not per entry).
    start_smem_a_tile_t<Tile, T, D, kCols>(st, sm.ks(), warp * 16, qs, lane);
    if constexpr (kDkInFlight) {  // (S^T's wait is also the running dK product's)
      finish_products<Tile>(st, dk, dk_frags);
    } else {
      finish_products<Tile>(st);
    }
    start_smem_a_tile_t<Tile, T, D, kCols>(dpt, sm.vs(), warp * 16, dos, lane);
    const bool masked = !(has_mask_free_loop<D>() && full);
    // f(nt, e, col, keep, kMasked) for each entry, kMasked a compile-time constant: one loop per kind of
    // tile; keep: whether the entry is attended (the query rows that this lane's keys attend; a masked
    // row position, -1, is never kept)
    auto each_entry = [&](auto f) {
      if (masked) {
        const AttendRange range[2] = {attend_range(kpos[0], banded, a.window), attend_range(kpos[1], banded, a.window)};
        for_each_entry<kCols>(lane, [&](int nt, int e, int col) {
          f(nt, e, col, range[e >> 1].keeps(row_pos[col]), std::true_type{});
        });
      } else {
        for_each_entry<kCols>(lane, [&](int nt, int e, int col) { f(nt, e, col, true, std::false_type{}); });
      }
    };
    auto prob = [&](int nt, int e, int col, auto is_masked) {
      const float p = simt::fast_exp2(st[nt][e] * a.scale_log2 - row_lse[col]);
      return decltype(is_masked)::value ? p + poison[col] : p;
    };
    uint32_t p_frags[kCols / 16][4];  // (P^T packed for dV's product, read until it is waited for)
    if constexpr (kOverlap) {
      each_entry([&](int nt, int e, int col, bool keep, auto m) { st[nt][e] = keep ? prob(nt, e, col, m) : 0.0f; });
      start_p_tile<Tile, T, D, kCols>(dv, st, p_frags, dos, lane);
      finish_products<Tile>(dpt, dv, p_frags);
      each_entry([&](int nt, int e, int col, bool keep, auto) {  // (a kept entry's P^T is st's)
        dpt[nt][e] = keep ? st[nt][e] * (dpt[nt][e] - row_delta[col]) : 0.0f;
      });
    } else {
      finish_products<Tile>(dpt);
      each_entry([&](int nt, int e, int col, bool keep, auto m) {
        const float p = prob(nt, e, col, m);
        st[nt][e] = keep ? p : 0.0f;
        dpt[nt][e] = keep ? p * (dpt[nt][e] - row_delta[col]) : 0.0f;
      });
      start_p_tile<Tile, T, D, kCols>(dv, st, p_frags, dos, lane);
      finish_products<Tile>(dv, p_frags);
    }
    if constexpr (kDkInFlight && kCols == kBlockM) {
      start_p_tile<Tile, T, D, kCols>(dk, dpt, dk_frags, qs, lane);
    } else {
      uint32_t ds_frags[kCols / 16][4];
      start_p_tile<Tile, T, D, kCols>(dk, dpt, ds_frags, qs, lane);
      finish_products<Tile>(dk, ds_frags);
    }
  };
  auto visit = [&](int32_t tile, int stage, bool poisoned, bool lean) {
    const int32_t* row_pos = sm.pos(tile);
    if (lean) {  // every key attends every row: no occupancy, mask or poison
      if (!Tile::kSwizzled && !warp_has_keys) return;
      sweep_rows(sm.qs(stage), sm.dos(stage), row_pos, sm.lse(tile), sm.delta(tile), sm.zeros(), has_mask_free_loop<D>(),
                 std::integral_constant<int, kBlockM>{});
      return;
    }
    const TileOccupancy rows_in = tile_occupancy(row_pos, lane);
    // nothing attended: exact zeros (wgmma is the whole warpgroup's: there a warp without keys
    // computes too, its P^T and dS^T all 0; see check_every_row)
    if ((!Tile::kSwizzled && !warp_has_keys) || !rows_in.any()) {
      finish_dk();  // (the next copy may go to the stage its Q tile is in)
      return;
    }
    const float* poison = poisoned ? sm.poison() : sm.zeros();
    if (D > 64 || rows_in.past_narrow()) {
      // a clean tile of live rows that the window covers (from the warp's keys) needs no mask
      const bool full = has_mask_free_loop<D>() && warp_all_keys && !poisoned && rows_in.all() &&
                        (!banded || window_covers(rows.row0(tile), kBlockM, base + warp * 16, 16, a.window));
      sweep_rows(sm.qs(stage), sm.dos(stage), row_pos, sm.lse(tile), sm.delta(tile), poison, full,
                 std::integral_constant<int, kBlockM>{});
    } else {  // e.g. kernel B's slots with up to 16 global tokens (not at D = 128: registers); never clean
      sweep_rows(sm.qs(stage), sm.dos(stage), row_pos, sm.lse(tile), sm.delta(tile), poison, false,
                 std::integral_constant<int, kNarrowCols>{});
    }
  };
  if (block_keys.any() && rows.count() > 0) {
    // the block's keys, copied in place (a masked key's entries are selected to 0, and K and V are not
    // contracted over keys here); waited for with the first query tile
    issue_key_tile<T, D, Tile>(keys, src, b, h, base, sm.key_pos(), sm.ks(), sm.vs());
    walk_tiles(rows, visit);
    finish_dk();
  }

  LED_UNROLL
  for (int x = 0; x < 2; ++x) {
    const int64_t r = base + warp * 16 + lane / 4 + 8 * x;
    if (kMode == DkdvMode::kGlobalKeys) {
      if (r >= a.G) continue;
      const int64_t part = ((b * a.H + h) * a.chunks + chunk) * a.G + r;
      store_acc_row_f32<D>(a.part_dk + part * D, dk, x, a.scale, t);
      store_acc_row_f32<D>(a.part_dv + part * D, dv, x, 1.0f, t);
    } else {
      if (r >= a.N) continue;
      const bool add = kMode == DkdvMode::kAllKeys && a.accumulate_kv;
      store_acc_row<T, D>(static_cast<T*>(a.dk) + b * a.dks.b + r * a.dks.n + h * a.dks.h, dk, x, a.scale, t, false,
                          add);
      store_acc_row<T, D>(static_cast<T*>(a.dv) + b * a.dvs.b + r * a.dvs.n + h * a.dvs.h, dv, x, 1.0f, t, false,
                          add);
    }
  }
}

template <typename T, int D, DkdvMode kMode, typename Tile>
LED_KERNEL void __launch_bounds__(kThreads) dkdv_kernel(BwdArgs a) {
  block_or_trap<Tile>([&](auto tile) { dkdv_block<T, D, kMode, decltype(tile)>(a); });
}

// Sums the chunks of fp32 partials (B, H, chunks, G, D) in a fixed order (sum_chunk_rows): one warp
// per (b, h, slot). kernel A (global keys): dK and dV rows at the slot's position, valid slots only;
// kernel B: the dQ row of every slot (in the layer mode, of every valid slot, at its position).
template <typename T, int D>
LED_KERNEL void __launch_bounds__(kThreads) reduce_kernel(BwdArgs a) {
  SlotRow r;
  if (!warp_slot_row(a.B, a.H, a.G, r)) return;  // no collective below
  const int lane = simt::thread_index() % 32;
  const int64_t b = r.b, h = r.h, s = r.s;
  const int64_t part0 = (b * a.H + h) * a.chunks;
  const int count = a.global_rows ? 1 : 2;
  for (int which = 0; which < count; ++which) {
    T* dst;
    const float* part;
    if (a.global_rows) {
      const int64_t stored = a.rows(b, s);
      if (stored < 0) return;
      dst = static_cast<T*>(a.dq) + b * a.dqs.b + stored * a.dqs.n + h * a.dqs.h;
      part = a.part_dq;
    } else {
      if (!slot_valid(a.key_flags, a.global_idx, a.N, a.G, b, s)) return;
      const int64_t j = a.global_idx[b * a.G + s];
      dst = which == 0 ? static_cast<T*>(a.dk) + b * a.dks.b + j * a.dks.n + h * a.dks.h
                       : static_cast<T*>(a.dv) + b * a.dvs.b + j * a.dvs.n + h * a.dvs.h;
      part = which == 0 ? a.part_dk : a.part_dv;
    }
    float acc[4];
    sum_chunk_rows<D>(
        acc, a.chunks, [&](int64_t c) { return part + ((part0 + c) * a.G + s) * D; }, [](int64_t) { return 1.0f; },
        lane);
    if (lane < D / 4) {
      T* row = dst + chunk_row_dim<D>(lane);
      simt::check_global(row, 4 * sizeof(T));
      LED_UNROLL
      for (int e = 0; e < 4; ++e) row[e] = simt::from_float<T>(acc[e]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

// Rows per chunk of the split sweep: kernel A's global keys over the N query rows, kernel B's dQ
// over the N keys.
inline int64_t bwd_chunk(int64_t B, int64_t H, int64_t G, int64_t N) {
  return chunk_rows(B * H * ceil_div(G, kBlockN), N);
}

struct BwdWorkspace {
  size_t delta, parts;  // floats
};

inline BwdWorkspace bwd_workspace_floats(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  const int64_t M = kind == AttnKind::kBanded ? N : G;
  BwdWorkspace w{static_cast<size_t>(B * H * M), 0};
  if (B * H * G > 0) {  // (N = 0 still has one chunk: kernel B's dQ rows are written as zeros)
    const int64_t chunks = chunk_count(N, bwd_chunk(B, H, G, N));
    w.parts = static_cast<size_t>((kind == AttnKind::kBanded ? 2 : 1) * B * H * chunks * G * D);
  }
  return w;
}

// Bytes of workspace attention_bwd needs: delta, and the partials of the split sweeps.
inline size_t bwd_workspace_bytes(AttnKind kind, int64_t B, int64_t H, int64_t G, int64_t N, int64_t D) {
  const BwdWorkspace w = bwd_workspace_floats(kind, B, H, G, N, D);
  return (w.delta + w.parts) * sizeof(float);
}

// The dQ kernel's products, chosen by the environment variable LED_KERNELS_CUDA_DQ: `mma` (mma.sync)
// or `wgmma` (head dims 64 and 128 on sm_90 with sm_90a code, as the forward's wgmma variants: Q,
// dO, K and V staged in SwizzledTile layout, S = Q K^T, dP = dO V^T and dQ += dS K as warpgroup
// MMAs; other head dims run mma). Refused where it cannot run. Unset or empty: wgmma where the wgmma
// kernels run (fewer registers: 208 against 231 at head dim 64), mma elsewhere.
// Likewise LED_KERNELS_CUDA_DKDV for the three dK/dV kernels: `mma` or `wgmma` (S^T = K Q^T and
// dP^T = V dO^T with both operands from shared memory, dV += P^T dO and dK += dS^T Q with P^T and
// dS^T from registers, all as warpgroup MMAs; head dims 64 and 128). On an H100 at N = 16384,
// w = 512 the wgmma backward took 5-6% off the forward + backward in one run
// (benchmarks/results/h100-sxm-wgmma-session.log, call 1).
// LED_KERNELS_CUDA_DQ=wgmmas: wgmma with Q and dO kept in shared memory (SharedQTile), read by the
// S and dP products through descriptors: 165 registers instead of 208 at head dim 64 offline for
// sm_90a, three blocks per SM instead of two (219 instead of 255 at 128), for 16 KiB more shared
// memory per block.
enum class BwdVariant : int { kMma = 0, kWgmma = 1, kWgmmaShared = 2 };

inline BwdVariant bwd_variant(const char* name, bool shared_allowed) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return simt::wgmma_launchable() ? BwdVariant::kWgmma : BwdVariant::kMma;
  if (std::strcmp(env, "mma") == 0) return BwdVariant::kMma;
  const bool wgmma = std::strcmp(env, "wgmma") == 0, shared = shared_allowed && std::strcmp(env, "wgmmas") == 0;
  if (wgmma || shared) {
    require_wgmma(name, env);
    return wgmma ? BwdVariant::kWgmma : BwdVariant::kWgmmaShared;
  }
  throw std::invalid_argument(std::string(name) + (shared_allowed ? " must be mma, wgmma or wgmmas, got '"
                                                                  : " must be mma or wgmma, got '") +
                              env + "'");
}

// The arguments of p's kernels, their workspace (delta, then the split sweeps' partials) in `workspace`.
inline BwdArgs bwd_args(const AttnBwdParams& p, const void* out, BNHStrides o_strides, float* workspace) {
  BwdArgs a;
  a.q = p.q, a.k = p.k, a.v = p.v, a.out = out, a.dout = p.dout, a.lse = p.lse;
  a.dq = p.dq, a.dk = p.dk, a.dv = p.dv;
  a.key_flags = p.key_flags, a.global_idx = p.global_idx;
  a.B = p.B, a.M = p.M, a.N = p.N, a.H = p.H, a.G = p.G, a.window = clamped_window(p.window, p.N);
  a.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  a.scale = static_cast<float>(p.scale);
  a.qs = p.q_strides, a.ks = p.k_strides, a.vs = p.v_strides, a.os = o_strides, a.dos = p.do_strides;
  a.dqs = p.dq_strides, a.dks = p.dk_strides, a.dvs = p.dv_strides;
  a.o_aligned = row_starts_aligned(out, o_strides, 2) && row_starts_aligned(p.dout, p.do_strides, 2);
  a.global_rows = p.kind == AttnKind::kGlobalRows;
  a.layer = p.layer;
  a.accumulate_kv = p.layer && p.accumulate_kv && a.global_rows;
  a.lean = lean_runs_enabled();
  a.rows = RowMap{p.key_flags, p.global_idx, p.N, p.G, p.layer && a.global_rows};
  const BwdWorkspace w = bwd_workspace_floats(p.kind, p.B, p.H, p.G, p.N, p.D);
  a.delta = workspace;
  a.chunk = bwd_chunk(p.B, p.H, p.G, p.N);
  a.chunks = chunk_count(p.N, a.chunk);
  float* parts = workspace + w.delta;
  const size_t part = static_cast<size_t>(p.B * p.H * a.chunks * p.G * p.D);
  a.part_dk = a.global_rows ? nullptr : parts;
  a.part_dv = a.global_rows ? nullptr : parts + part;
  a.part_dq = a.global_rows ? parts : nullptr;
  return a;
}

// The launches of one backward, in order: delta, then dQ (kernel A: its rows; kernel B: its chunks'
// partials, then their reduction into the rows), then dK / dV (kernel A: the band's keys, then the
// global keys' partials and their reduction; kernel B: every key). `delta_done` / `dq_done`: those
// launches already ran (the layer's, launch_layer_bwd).
// The shared-memory opt-ins of a backward's kernels, all made before its first launch: a refusal
// leaves nothing half-written.
template <typename T, int D, typename DqTile, typename DkdvTile>
void opt_in_bwd_smem() {
  constexpr size_t dq_smem = PipedKeySmem<T, D, DqTile>::bytes();
  constexpr size_t dkdv_smem = DkdvSmem<T, D, DkdvTile>::bytes();
  LED_SET_SMEM_LIMIT((dq_kernel<T, D, DqTile>), dq_smem);
  LED_SET_SMEM_LIMIT((dkdv_kernel<T, D, DkdvMode::kBandKeys, DkdvTile>), dkdv_smem);
  LED_SET_SMEM_LIMIT((dkdv_kernel<T, D, DkdvMode::kGlobalKeys, DkdvTile>), dkdv_smem);
  LED_SET_SMEM_LIMIT((dkdv_kernel<T, D, DkdvMode::kAllKeys, DkdvTile>), dkdv_smem);
}

template <typename T, int D, typename Stream>
void launch_delta(const BwdArgs& a, Stream stream) {
  auto delta = delta_kernel<T, D>;
  const int64_t delta_blocks = ceil_div(a.B * a.M * a.H * delta_lanes_per_row<D>(), kThreads);
  if (launchable(delta_blocks)) LED_LAUNCH(delta, delta_blocks, kThreads, 0, stream, a);
}

template <typename T, int D, typename DqTile, typename DkdvTile, typename Stream>
void launch_bwd_args(const BwdArgs& a, Stream stream, bool delta_done = false, bool dq_done = false) {
  constexpr size_t dq_smem = PipedKeySmem<T, D, DqTile>::bytes();
  constexpr size_t dkdv_smem = DkdvSmem<T, D, DkdvTile>::bytes();
  auto dq = dq_kernel<T, D, DqTile>;
  auto band = dkdv_kernel<T, D, DkdvMode::kBandKeys, DkdvTile>;
  auto global = dkdv_kernel<T, D, DkdvMode::kGlobalKeys, DkdvTile>;
  auto keys = dkdv_kernel<T, D, DkdvMode::kAllKeys, DkdvTile>;
  auto reduce = reduce_kernel<T, D>;
  opt_in_bwd_smem<T, D, DqTile, DkdvTile>();
  const int64_t reduce_blocks = ceil_div(a.B * a.H * a.G, kWarps);

  if (!delta_done) launch_delta<T, D>(a, stream);
  if (!a.global_rows) {
    const int64_t q_blocks = a.B * a.H * ceil_div(a.N, kBlockM);
    if (!dq_done && launchable(q_blocks)) LED_LAUNCH(dq, q_blocks, kThreads, dq_smem, stream, a);
    const int64_t key_blocks = a.B * a.H * ceil_div(a.N, kBlockN);
    if (launchable(key_blocks)) LED_LAUNCH(band, key_blocks, kThreads, dkdv_smem, stream, a);
    const int64_t global_blocks = a.B * a.H * ceil_div(a.G, kBlockN) * a.chunks;
    if (a.N > 0 && launchable(global_blocks)) {
      LED_LAUNCH(global, global_blocks, kThreads, dkdv_smem, stream, a);
      if (launchable(reduce_blocks)) LED_LAUNCH(reduce, reduce_blocks, kThreads, 0, stream, a);
    }
    return;
  }
  const int64_t q_blocks = a.B * a.H * ceil_div(a.G, kBlockM) * a.chunks;
  if (launchable(q_blocks)) {
    if (!dq_done) LED_LAUNCH(dq, q_blocks, kThreads, dq_smem, stream, a);
    if (launchable(reduce_blocks)) LED_LAUNCH(reduce, reduce_blocks, kThreads, 0, stream, a);
  }
  const int64_t key_blocks = a.B * a.H * ceil_div(a.N, kBlockN);
  if (launchable(key_blocks)) LED_LAUNCH(keys, key_blocks, kThreads, dkdv_smem, stream, a);
}

template <typename T, int D, typename DqTile, typename DkdvTile, typename Stream>
void launch_bwd(const AttnBwdParams& p, const void* out, BNHStrides o_strides, float* workspace, Stream stream) {
  launch_bwd_args<T, D, DqTile, DkdvTile>(bwd_args(p, out, o_strides, workspace), stream);
}

// Whether the layer's backward runs kernel B's dQ chunks inside kernel A's dQ launch where it can
// (layer_dq_kernel): unless the environment variable LED_KERNELS_FUSED_BACKWARD is 0 (so that one
// benchmark run can time both ways; the results are bitwise the same).
inline bool fused_backward_enabled() {
  const char* env = std::getenv("LED_KERNELS_FUSED_BACKWARD");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  throw std::invalid_argument(std::string("LED_KERNELS_FUSED_BACKWARD must be 0 or 1, got '") + env + "'");
}

// Where layer_dq_kernel runs (offline registers): everywhere but head dim 128 with mma.sync, where
// the shared kernel spills more than dq_kernel does on sm_90a (40 bytes against 24). Elsewhere it
// keeps dq_kernel's blocks per SM (sm_90a, head dim 64: wgmma 226 registers against 208, two blocks
// either way; wgmmas 157 against 165).
template <int D, typename Tile>
constexpr bool layer_dq_fusable() {
  return D < 128 || Tile::kSwizzled;
}

// The layer's backward: kernel A's (`band`, its global rows dead) then kernel B's (`glob`, in the
// layer mode), as two launch_bwd, except that both deltas run first and, when B's dQ is split into
// key chunks, B's chunk blocks run inside A's dQ launch (layer_dq_kernel).
template <typename T, int D, typename DqTile, typename DkdvTile, typename Stream>
void launch_layer_bwd(const AttnBwdParams& band, const AttnBwdParams& glob, const void* out, BNHStrides o_strides,
                      float* band_workspace, float* glob_workspace, Stream stream) {
  const BwdArgs a = bwd_args(band, out, o_strides, band_workspace);
  const BwdArgs g = bwd_args(glob, out, o_strides, glob_workspace);
  if constexpr (layer_dq_fusable<D, DqTile>()) {
    if (g.G > 0 && g.chunks > 1 && a.N > 0 && fused_backward_enabled()) {
      constexpr size_t dq_smem = PipedKeySmem<T, D, DqTile>::bytes();
      auto dq = layer_dq_kernel<T, D, DqTile>;
      LED_SET_SMEM_LIMIT(dq, dq_smem);
      opt_in_bwd_smem<T, D, DqTile, DkdvTile>();  // (before the first launch, as launch_bwd_args)
      launch_delta<T, D>(a, stream);
      launch_delta<T, D>(g, stream);
      const int64_t blocks = a.B * a.H * (ceil_div(a.N, kBlockM) + ceil_div(g.G, kBlockM) * g.chunks);
      if (launchable(blocks)) LED_LAUNCH(dq, blocks, kThreads, dq_smem, stream, a, g);
      launch_bwd_args<T, D, DqTile, DkdvTile>(a, stream, true, true);
      launch_bwd_args<T, D, DqTile, DkdvTile>(g, stream, true, true);
      return;
    }
  }
  launch_bwd_args<T, D, DqTile, DkdvTile>(a, stream);
  launch_bwd_args<T, D, DqTile, DkdvTile>(g, stream);
}

// Calls launch(DqTile{}, DkdvTile{}) with the tiles of the variants dq and dkdv at head dim D.
template <int D, typename Launch>
void with_bwd_variant(BwdVariant dq, BwdVariant dkdv, Launch launch) {
  using Padded = PaddedTile<D>;
  if constexpr (D % 64 == 0) {
    using Swizzled = SwizzledTile<D>;
    using Shared = SharedQTile<D, 2>;
    const bool wq = dq == BwdVariant::kWgmma, wkv = dkdv == BwdVariant::kWgmma;
    // (wgmma at head dim 64: three stages of tiles, dQ's dS K and dK/dV's dS^T Q running into the next
    // tile; at 128 the registers of their dS fragments would not fit)
    using Staged = std::conditional_t<D == 64, WithStages<Swizzled, 3>, Swizzled>;
    if (dq == BwdVariant::kWgmmaShared) {
      if (wkv) return launch(Shared{}, Staged{});
      return launch(Shared{}, Padded{});
    }
    if (wq && wkv) return launch(Staged{}, Staged{});
    if (wq) return launch(Staged{}, Padded{});
    if (wkv) return launch(Padded{}, Staged{});
  }
  launch(Padded{}, Padded{});
}

// p's backward, or with `glob` the layer's (launch_layer_bwd: p kernel A's, glob kernel B's, whose
// workspace is glob_workspace).
template <typename Stream>
void dispatch_bwd(const AttnBwdParams& p, const AttnBwdParams* glob, const void* out, BNHStrides o_strides,
                  float* workspace, float* glob_workspace, Stream stream) {
  // (read, and a wrong value refused, at every head dim)
  const BwdVariant dq = bwd_variant("LED_KERNELS_CUDA_DQ", true), dkdv = bwd_variant("LED_KERNELS_CUDA_DKDV", false);
  auto at = [&](auto dtype, auto head_dim) {
    using T = decltype(dtype);
    constexpr int D = decltype(head_dim)::value;
    with_bwd_variant<D>(dq, dkdv, [&](auto dq_tile, auto dkdv_tile) {
      using DqTile = decltype(dq_tile);
      using DkdvTile = decltype(dkdv_tile);
      if (glob != nullptr) {
        launch_layer_bwd<T, D, DqTile, DkdvTile>(p, *glob, out, o_strides, workspace, glob_workspace, stream);
      } else {
        launch_bwd<T, D, DqTile, DkdvTile>(p, out, o_strides, workspace, stream);
      }
    });
  };
  auto at_dtype = [&](auto dtype) {
    switch (p.D) {
      case 16: at(dtype, std::integral_constant<int, 16>{}); break;
      case 32: at(dtype, std::integral_constant<int, 32>{}); break;
      case 64: at(dtype, std::integral_constant<int, 64>{}); break;
      default: at(dtype, std::integral_constant<int, 128>{}); break;
    }
  };
  if (p.dtype == DType::kFloat16) {
    at_dtype(__half{});
  } else {
    at_dtype(__nv_bfloat16{});
  }
}

inline void check_bwd(const AttnBwdParams& p, size_t workspace_bytes, const char* who) {
  check_common(p.dtype, p.kind, p.B, p.M, p.N, p.H, p.D, p.G, p.window, p.global_idx, who);
  for (const auto& [ptr, s, name] : {std::make_tuple(static_cast<const void*>(p.dq), p.dq_strides, "dq"),
                                     std::make_tuple(static_cast<const void*>(p.dk), p.dk_strides, "dk"),
                                     std::make_tuple(static_cast<const void*>(p.dv), p.dv_strides, "dv")}) {
    if (!rows_4byte_aligned(ptr, s)) throw std::invalid_argument(std::string(who) + ": " + name + " rows must be 4-byte aligned");
  }
  check_rows_aligned16(p.q, p.q_strides, who, "q");
  check_rows_aligned16(p.k, p.k_strides, who, "k");
  check_rows_aligned16(p.v, p.v_strides, who, "v");
  check_rows_aligned16(p.dout, p.do_strides, who, "dout");
  if (workspace_bytes < bwd_workspace_bytes(p.kind, p.B, p.H, p.G, p.N, p.D)) {
    throw std::invalid_argument(std::string(who) + ": workspace too small");
  }
}

// Backward of attention_fwd. `out` / `o_strides`: the forward's output (for delta). Writes dq, dk
// and dv completely.
template <typename Stream>
void attention_bwd(const AttnBwdParams& p, const void* out, BNHStrides o_strides, float* workspace,
                   size_t workspace_bytes, Stream stream) {
  check_bwd(p, workspace_bytes, "attention_bwd_cuda");
  if (p.B * p.H == 0 || (p.N == 0 && p.M == 0)) {
    (void)bwd_variant("LED_KERNELS_CUDA_DQ", true), (void)bwd_variant("LED_KERNELS_CUDA_DKDV", false);
    return;
  }
  dispatch_bwd(p, nullptr, out, o_strides, workspace, nullptr, stream);
}

// The layer mode's backward (cpu_attention.h): kernel A's over `band` (its global rows dead), then
// kernel B's over `glob` (glob.layer; its dq rows written at the global positions, its dk / dv added to
// A's with glob.accumulate_kv), with B's dQ chunks inside A's dQ launch where they can be
// (launch_layer_bwd). Each kernel has its workspace (bwd_workspace_bytes of its kind).
template <typename Stream>
void attention_layer_bwd(const AttnBwdParams& band, const AttnBwdParams& glob, const void* out, BNHStrides o_strides,
                         float* band_workspace, size_t band_workspace_bytes, float* glob_workspace,
                         size_t glob_workspace_bytes, Stream stream) {
  const char* who = "attention_layer_bwd_cuda";
  if (band.kind != AttnKind::kBanded || !band.layer || glob.kind != AttnKind::kGlobalRows || !glob.layer) {
    throw std::invalid_argument(std::string(who) + ": needs kernel A's rows and kernel B's in the layer mode");
  }
  if (glob.dout != band.dout || glob.key_flags != band.key_flags || glob.global_idx != band.global_idx ||
      glob.dtype != band.dtype || glob.B != band.B || glob.N != band.N || glob.H != band.H || glob.D != band.D ||
      glob.G != band.G || glob.M != band.G || band.M != band.N) {
    throw std::invalid_argument(std::string(who) + ": kernel B's arguments must be the same layer's as kernel A's");
  }
  check_bwd(band, band_workspace_bytes, who);
  check_bwd(glob, glob_workspace_bytes, who);
  if (band.B * band.H == 0 || band.N == 0) {
    (void)bwd_variant("LED_KERNELS_CUDA_DQ", true), (void)bwd_variant("LED_KERNELS_CUDA_DKDV", false);
    return;
  }
  dispatch_bwd(band, &glob, out, o_strides, band_workspace, glob_workspace, stream);
}

}  // namespace cuda_attn
}  // namespace led_kernels
