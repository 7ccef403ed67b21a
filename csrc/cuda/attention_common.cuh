// Tiles, loads and conventions shared by the cuda backend's forward (attention_fwd.cuh) and
// backward (attention_bwd.cuh) kernels.
//
// A block is 4 warps. Tiles are 64 rows of D 16-bit elements staged in shared memory with rows
// padded by 8 elements, so that the 8 rows one ldmatrix phase reads start in 8 different 16-byte
// bank groups. Global rows are read as 16-byte chunks, so their starts must be 16-byte aligned (the
// usual case, also for views of a fused projection; the launchers refuse others, which the Python
// side copies first).
//
// Non-finite inputs. Tensor-core products cannot skip a zero factor, so 0 * NaN or 0 * inf in a
// contraction over rows would spread a non-finite row to every row of its tile. A row that is
// contracted over (V in P V, K in dS K, Q and dO in the backward's dS^T Q and P^T dO) is therefore
// zeroed in shared memory when it holds a non-finite value, and its `poison` (NaN, else 0) is
// added to the entries of exactly the rows (or keys) that attend it, which come out NaN as they
// should; every other entry is bitwise what it would be without the bad row. The pipelined walk
// (walk_tiles: the key tiles of the forward and dQ, the query tiles of dK/dV) does this only for rows
// that something in the block does not attend; a row that everything attends needs neither (its
// values reach exactly what attends it).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
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
constexpr int kSplitTargetBlocks = 256;  // split a long sweep until about this many blocks run
constexpr int kMinChunkTiles = 4;        // ... but never into chunks of fewer tiles

LED_HOST_DEVICE int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Where element (r, col) of a staged 64-row tile lies (an element offset; col a multiple of 8 for the
// 16-byte copies):
//   PaddedTile    rows of D + 8 elements, so that the 8 rows an ldmatrix phase reads start in 8
//                 different bank groups (the mma.sync kernels)
//   SwizzledTile  the operand layout of wgmma (sm_90a) with the 128-byte swizzle: blocks of 64
//                 columns one after the other, each kRows rows of 128 bytes whose 16-byte chunks
//                 are permuted by XOR with row % 8 (conflict-free without padding). The permutation
//                 is the hardware's on shared addresses, so these tiles start 1024-byte aligned.
//   SharedQTile   SwizzledTile for a kernel that also keeps its 64 query rows (and with
//                 kRowTiles = 2 their dO rows) in shared memory, in the same layout, for the whole
//                 block (kQShared: the forward's wgmma16s, dQ's wgmmas; their products read them
//                 through descriptors instead of holding fragments in registers)
//   GroupedQTile  SharedQTile for a block of kGroups warpgroups (the forward's wgmma2g), each with 64
//                 query rows of its own, staged as one 64-row tile per warpgroup (StackedTile)
//   OverlapQTile  SharedQTile for the forward's wgmma16o, whose lean tiles overlap the softmax of one
//                 tile with the product O += P V of the tile before (kOverlap), so that tile's V is
//                 still read after the next barrier: three stages of V tiles (kValueStages), two of K
//   WithStages    any of these with more stages of the walk's tiles (the backward's wgmma kernels at
//                 head dim 64, whose last product of a tile runs into the next visit)
// (kRows: a tile of query rows may have more than kBlockN. kGroups: warpgroups per block, which
// share the key tiles; the first one copies and checks them, see walk_tiles. kKeyStages,
// kValueStages: the K and V tiles of the key-tile pipeline, PipedKeySmem.)
template <int D, int kRows = kBlockN>
struct PaddedTile {
  static constexpr bool kSwizzled = false;
  static constexpr bool kQShared = false;
  static constexpr int kSharedRowTiles = 0;
  static constexpr int kGroups = 1;
  static constexpr int kKeyStages = 2;
  static constexpr int kValueStages = 2;
  static constexpr bool kOverlap = false;
  static constexpr size_t kAlign = 16;
  static constexpr size_t kBytes = static_cast<size_t>(kRows) * (D + 8) * 2;
  LED_HOST_DEVICE static int offset(int r, int col) { return r * (D + 8) + col; }
};

template <int D, int kRows = kBlockN>
struct SwizzledTile {
  static_assert(D % 64 == 0, "rows of whole 128-byte blocks");
  static constexpr bool kSwizzled = true;
  static constexpr bool kQShared = false;
  static constexpr int kSharedRowTiles = 0;
  static constexpr int kGroups = 1;
  static constexpr int kKeyStages = 2;
  static constexpr int kValueStages = 2;
  static constexpr bool kOverlap = false;
  static constexpr size_t kAlign = 1024;
  static constexpr size_t kBytes = static_cast<size_t>(kRows) * D * 2;
  LED_HOST_DEVICE static int offset(int r, int col) {
    return ((col / 64) * kRows + r) * 64 + ((((col % 64) / 8) ^ (r % 8)) * 8) + col % 8;
  }
  // wgmma descriptors (simt::smem_desc_128b) of the 16-element step `step` of a tile as a K-major
  // operand (its rows are the operand's rows or columns: the step starts 32 bytes further, or at the
  // next block of 64 columns), and as an MN-major B (its rows are B's rows: the step starts 16 rows
  // further; the blocks of 64 columns lie kRows rows apart).
  // (The step's descriptor is the tile's with its start advanced: one add per product instead of
  // the address arithmetic of a descriptor each.)
  template <typename T>
  LED_DEVICE static uint64_t k_major_desc(const T* tile, int step) {
    return simt::desc_advance(simt::smem_desc_128b(tile, 0, 8 * 128), offset(0, 16 * step) * sizeof(T));
  }
  template <typename T>
  LED_DEVICE static uint64_t mn_major_desc(const T* tile, int step) {
    return simt::desc_advance(simt::smem_desc_128b(tile, kRows * 128, 8 * 128), offset(16 * step, 0) * sizeof(T));
  }
};

template <int D, int kRowTiles = 1, int kRows = kBlockN>
struct SharedQTile : SwizzledTile<D, kRows> {
  static constexpr bool kQShared = true;
  static constexpr int kSharedRowTiles = kRowTiles;
};

template <int D, int kGroupCount = 2>
struct GroupedQTile : SwizzledTile<D> {
  static constexpr bool kQShared = true;
  static constexpr int kSharedRowTiles = kGroupCount;
  static constexpr int kGroups = kGroupCount;
};

template <int D>
struct OverlapQTile : SharedQTile<D> {
  static constexpr int kValueStages = 3;
  static constexpr bool kOverlap = true;
};

// Tile with kStages stages of the walk's tiles, for a walk whose visit leaves a product reading its
// tile running into the next visit (with wgmma, the dQ kernel's dQ += dS K over its key tiles and the
// dK/dV kernel's dK += dS^T Q over its query tiles: three stages, so that the copy of tile t + 2 goes
// to tile t - 1's stage, see walk_tiles).
template <typename Tile, int kStages>
struct WithStages : Tile {
  static constexpr int kKeyStages = kStages;
  static constexpr int kValueStages = kStages;
};

// kRows rows staged as consecutive 64-row tiles of layout Tile (a warpgroup's rows in a tile of their
// own, as its products read them).
template <typename Tile, int kRows>
struct StackedTile {
  static_assert(kRows % kBlockM == 0, "whole 64-row tiles");
  static constexpr size_t kBytes = (kRows / kBlockM) * Tile::kBytes;
  LED_HOST_DEVICE static int offset(int r, int col) {
    return (r / kBlockM) * static_cast<int>(Tile::kBytes / 2) + Tile::offset(r % kBlockM, col);
  }
};

// Refuses a wgmma variant (environment variable `variable` = `value`) where it cannot run.
inline void require_wgmma(const char* variable, const char* value) {
  if (!simt::wgmma_launchable()) {
    throw std::invalid_argument(std::string(variable) + "=" + value +
                                " needs an sm_90 GPU (H100, H200) and an extension built for sm_90a "
                                "(LED_KERNELS_CUDA_ARCHS containing 90a)");
  }
}

// A kernel's body: `block(Tile{})`, except in the code for architectures without wgmma when Tile is a
// wgmma layout (SwizzledTile, SharedQTile, GroupedQTile), where the kernel is a trap that is never
// launched (see simt::wgmma_launchable). (`block` takes the tile as an argument so that its call
// depends on it: then the discarded branch instantiates none of the block's code.)
template <typename Tile, typename Block>
LED_DEVICE void block_or_trap(Block block) {
  if constexpr (Tile::kSwizzled && !simt::kWgmmaCompiled) {
    simt::unreachable();
  } else {
    block(Tile{});
  }
}

// The start of a block's tiles in its dynamic shared memory, aligned as Tile needs (the allocations
// have Tile::kAlign - 16 bytes of room for it; the dynamic allocation itself is 16-byte aligned).
template <typename Tile>
LED_DEVICE unsigned char* align_tiles(unsigned char* smem) {
  return smem + ((Tile::kAlign - simt::smem_address(smem) % Tile::kAlign) % Tile::kAlign);
}

// The same layout for a tile of kRows rows.
template <typename Tile, int kRows>
struct WithRows;
template <int D, int R, int kRows>
struct WithRows<PaddedTile<D, R>, kRows> {
  using type = PaddedTile<D, kRows>;
};
template <int D, int R, int kRows>
struct WithRows<SwizzledTile<D, R>, kRows> {
  using type = SwizzledTile<D, kRows>;
};
template <int D, int kRowTiles, int R, int kRows>
struct WithRows<SharedQTile<D, kRowTiles, R>, kRows> {
  using type = SwizzledTile<D, kRows>;
};
template <int D, int kRows>
struct WithRows<OverlapQTile<D>, kRows> {
  using type = SwizzledTile<D, kRows>;
};
template <typename Tile, int kStages, int kRows>
struct WithRows<WithStages<Tile, kStages>, kRows> : WithRows<Tile, kRows> {};
template <int D, int kGroupCount, int kRows>
struct WithRows<GroupedQTile<D, kGroupCount>, kRows> {
  using type = StackedTile<SwizzledTile<D>, kRows>;
};

// Where the keys of a tile come from.
enum class KeySource : int {
  kBand = 0,         // positions j0 + r, local keys only (padding and global keys masked)
  kGlobalSlots = 1,  // positions global_idx[b, s0 + r], valid global keys only
  kNonPadded = 2,    // positions j0 + r, every key that is not padding (kernel B)
};

// Which staged tensor a key tile checks for non-finite rows (the one contracted over keys).
enum class Contracted : int { kNone = 0, kKey = 1, kValue = 2 };

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

// 8 consecutive elements (16 bytes) of one row.
struct Chunk8 {
  uint32_t w[4];
};

LED_DEVICE Chunk8 zero_chunk() { return Chunk8{{0, 0, 0, 0}}; }

// The attention kernels read only 16-byte aligned rows (their launchers refuse others, which the
// Python side copies first): one vector load, with no element-by-element fallback in the hot loops.
template <typename T>
LED_DEVICE Chunk8 load_chunk(const T* src) {
  simt::check_global(src, 16);
  const uint4 v = *reinterpret_cast<const uint4*>(src);
  return Chunk8{{v.x, v.y, v.z, v.w}};
}

// Any alignment (the delta kernel, which also serves the triton backend's tensors).
template <typename T>
LED_DEVICE Chunk8 load_chunk(const T* src, bool aligned) {
  if (aligned) return load_chunk(src);
  simt::check_global(src, 16);
  Chunk8 c;
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  LED_UNROLL
  for (int i = 0; i < 4; ++i) c.w[i] = static_cast<uint32_t>(s[2 * i]) | (static_cast<uint32_t>(s[2 * i + 1]) << 16);
  return c;
}

LED_DEVICE void store_chunk(void* smem_dst, const Chunk8& c) {
  uint4 v;
  v.x = c.w[0], v.y = c.w[1], v.z = c.w[2], v.w = c.w[3];
  simt::store_shared_16(smem_dst, v);
}

template <typename T>
LED_DEVICE bool chunk_nonfinite(const Chunk8& c) {
  bool bad = false;
  LED_UNROLL
  for (int i = 0; i < 4; ++i) {
    bad |= is_nonfinite_bits<T>(static_cast<uint16_t>(c.w[i] & 0xFFFFu));
    bad |= is_nonfinite_bits<T>(static_cast<uint16_t>(c.w[i] >> 16));
  }
  return bad;
}

// "Any lane of my row is non-finite": the D/8 lanes holding one row are consecutive lanes of a
// warp (D/8 divides 32, and every pass covers whole rows), so this is a butterfly among them.
template <int D>
LED_DEVICE bool row_any(bool mine) {
  float bad = mine ? 1.0f : 0.0f;
  for (int off = 1; off < D / 8; off <<= 1) bad = fmaxf(bad, simt::shfl_xor(bad, off));
  return bad != 0.0f;
}

// A (B, rows, H, D) tensor: base pointer, element strides, row count.
template <typename T>
struct Rows {
  const T* base;
  BNHStrides s;
  int64_t rows;

  LED_DEVICE const T* row(int64_t b, int64_t h, int64_t i) const { return base + b * s.b + i * s.n + h * s.h; }
};

// The rows of one (b, h) pair at one column: a copy loop's addresses, one multiply-add per row (the
// (b, h) offset is computed once).
template <typename T>
struct RowColumn {
  const T* at_row0;
  int64_t stride;

  LED_DEVICE RowColumn(const Rows<T>& rows, int64_t b, int64_t h, int col)
      : at_row0(rows.row(b, h, 0) + col), stride(rows.s.n) {}
  LED_DEVICE const T* row(int64_t i) const { return at_row0 + i * stride; }
};


// The position of key r of a tile, or -1 when no query row may attend it.
LED_DEVICE int32_t key_position(const int8_t* key_flags, const int32_t* global_idx, int64_t N, int64_t G,
                                KeySource src, int64_t b, int64_t base, int r) {
  const int8_t* flags = key_flags + b * N;
  if (src == KeySource::kGlobalSlots) {
    const int64_t s = base + r;
    if (s >= G) return -1;
    const int32_t j = global_idx[b * G + s];
    return (j >= 0 && j < N && flags[j] == 2) ? j : -1;
  }
  const int64_t j = base + r;
  if (j >= N) return -1;
  const int8_t f = flags[j];
  const bool ok = src == KeySource::kBand ? f == 0 : f != 1;
  return ok ? static_cast<int32_t>(j) : -1;
}

// Whether slot s of batch element b is a valid global row (cpu_attention.h).
LED_DEVICE bool slot_valid(const int8_t* key_flags, const int32_t* global_idx, int64_t N, int64_t G, int64_t b,
                           int64_t s) {
  const int32_t j = global_idx[b * G + s];
  return j >= 0 && j < N && key_flags[b * N + j] == 2;
}

// Where the query rows of a kernel are stored: row i of its (B, M, H, D) tensors, or, for kernel B
// in the layer mode (cpu_attention.h), row global_idx[b, i] of (B, N, H, D) tensors, and no row
// (-1) for an invalid slot.
struct RowMap {
  const int8_t* key_flags;
  const int32_t* global_idx;
  int64_t N, G;
  bool by_slot;

  LED_DEVICE int64_t operator()(int64_t b, int64_t i) const {
    if (!by_slot) return i;
    return slot_valid(key_flags, global_idx, N, G, b, i) ? global_idx[b * G + i] : -1;
  }
};

// Rows [row0, row0 + kRows) of `src` (through `map`) into a shared tile laid out as Layout (the
// padded one by default); rows at or past src.rows, or that have no storage, are 0.
// (kBlockThreads: the threads of the block, which all take part.)
template <typename T, int D, int kRows = kBlockM, typename Layout = PaddedTile<D, kRows>, int kBlockThreads = kThreads>
LED_DEVICE void load_row_tile(const Rows<T>& src, const RowMap& map, int64_t b, int64_t h, int64_t row0, T* tile) {
  constexpr int kChunks = D / 8;
  for (int c = simt::thread_index(); c < kRows * kChunks; c += kBlockThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    Chunk8 x = zero_chunk();
    const int64_t i = row0 + r < src.rows ? map(b, row0 + r) : -1;
    if (i >= 0) x = load_chunk(src.row(b, h, i) + col);
    store_chunk(tile + Layout::offset(r, col), x);
  }
}

// Everything that says where a tile's keys come from.
template <typename T>
struct KeySet {
  Rows<T> k, v;
  const int8_t* key_flags;
  const int32_t* global_idx;
  int64_t N, G;

  LED_DEVICE int32_t position(KeySource src, int64_t b, int64_t base, int r) const {
    return key_position(key_flags, global_idx, N, G, src, b, base, r);
  }
};

// ---------------------------------------------------------------------------------------------
// Tiles through a cp.async pipeline (walk_tiles): the key tiles of the forward kernels and dQ, the
// query tiles of the dK/dV kernel
// ---------------------------------------------------------------------------------------------
// Tile t is copied into stage t % 2 by cp.async while the block computes on tile t - 1: its loads'
// latency hides behind that math, and no registers hold the tile on its way (the forward's former
// register prefetch cost 2 D / 16 of them, and its loop without prefetch waited out every load).
// One barrier per tile. A tile's small per-row data (positions: its mask, and the rows a gathered
// tile copies; the dK/dV kernel's row statistics) is read by one thread per row a tile earlier
// still, into a ring of three rows.
//
// Rows that are masked are copied as they are where they exist (only rows past the end, or with no
// storage, are zero-filled) and masked by their position. Non-finite rows of the contracted tensors
// (see the top of this file) are zeroed only where it matters: a row of the tile that some row (or
// key) of the block does not attend, for instance a masked key or a key outside some row's window.
// A row that everything in the block attends spreads its non-finite values to exactly what attends
// it, through the tensor cores' own arithmetic. So a tile's check costs its own copies' bits, and the
// fix-up (zeroing, poison) runs only when a block's vote finds one.

// The passes in which the block's threads cover a tile of 64 rows, D / 8 16-byte chunks per row.
template <int D>
struct TilePasses {
  static constexpr int kChunks = D / 8;
  static constexpr int kPasses = kBlockN * kChunks / kThreads;
  static_assert(kBlockM == kBlockN, "key and query tiles share the pass layout");
  static_assert(kChunks <= 32 && (32 % kChunks) == 0, "a row's chunks must sit in one warp");
  static_assert((kBlockN * kChunks) % kThreads == 0 && kPasses <= 32, "whole passes only");
  static_assert(kThreads % kChunks == 0, "a thread's column is the same in every pass");

  LED_DEVICE static int row(int p) { return (simt::thread_index() + p * kThreads) / kChunks; }
  LED_DEVICE static int col(int p) { return ((simt::thread_index() + p * kThreads) % kChunks) * 8; }
};

// After cp_async_wait_all: bit p set when the chunk this thread copied in pass p into `tile` holds a
// non-finite value and its row needs the check (`needs_check(r)`, see above).
template <typename T, int D, typename Tile = PaddedTile<D>, typename NeedsCheck>
LED_DEVICE uint32_t own_nonfinite_chunks(const T* tile, NeedsCheck needs_check) {
  using P = TilePasses<D>;
  uint32_t bad = 0;
  LED_UNROLL
  for (int p = 0; p < P::kPasses; ++p) {
    const int r = P::row(p), col = P::col(p);
    if (!needs_check(r)) continue;
    const uint4 v = *reinterpret_cast<const uint4*>(tile + Tile::offset(r, col));  // one 16-byte read
    if (chunk_nonfinite<T>(Chunk8{{v.x, v.y, v.z, v.w}})) bad |= 1u << p;
  }
  return bad;
}

// The slow path of a tile whose vote found a non-finite chunk (block-uniform, every thread joins):
// the rows holding one (in any of the checked tiles: `bad` from own_nonfinite_chunks of each, or'ed)
// are zeroed in `tile` and `other` (when not null) and their poison set to NaN, the others' to 0.
template <typename T, int D, typename Tile = PaddedTile<D>>
LED_DEVICE void zero_nonfinite_rows(T* tile, T* other, float* poison, uint32_t bad) {
  using P = TilePasses<D>;
  LED_UNROLL
  for (int p = 0; p < P::kPasses; ++p) {
    const int r = P::row(p), col = P::col(p);
    const bool row_bad = row_any<D>(((bad >> p) & 1u) != 0u);
    if (row_bad) store_chunk(tile + Tile::offset(r, col), zero_chunk());
    if (row_bad && other != nullptr) store_chunk(other + Tile::offset(r, col), zero_chunk());
    if (col == 0) poison[r] = row_bad ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  }
}

// Before walk_tiles: the ring rows of the first two tiles (visible after a barrier that the caller
// places after it, which may also cover rows it stages elsewhere).
template <typename Stream>
LED_DEVICE void stream_first_tiles(const Stream& s) {
  for (int32_t t = 0; t < 2 && t < s.count(); ++t) s.keep_ahead(t, s.read_ahead(t));
}

// The pipelined walk over the tiles of a stream, after stream_first_tiles and a barrier. A stream
// (KeyTileStream below, QueryTileStream in attention_bwd.cuh) gives
//   kStages                             2, or 1 where two stages would not fit in shared memory
//                                       (then tile t + 1 is copied after tile t's math: no overlap),
//                                       or 3 where a visit still reads the tile before its own
//                                       (tile t + 1 goes to the stage of tile t - 2)
//   kAsyncProxyReads                    the tiles are read by wgmma (the async proxy): fence the
//                                       copies (and the fix-up's stores) before their barrier
//   count()                             its number of tiles
//   read_ahead(t) / keep_ahead(t, x)    this thread's share of tile t's ring row, read into
//                                       registers / kept in the ring (ring row t % 3)
//   issue(t, stage)                     starts copying tile t into `stage` (may read its ring row)
//   own_nonfinite(t, stage)             after the wait: own_nonfinite_chunks of the tensors that
//                                       are contracted over the tile's rows, or'ed
//   zero_nonfinite(stage, bad)          zero_nonfinite_rows of those tensors
//   lean(t)                             tile t is lean (see LeanRun): no check
//   needs_ring(t)                       tile t's ring row is read (false: skipped, a lean tile
//                                       whose visit reads no positions)
// Per tile: wait for its copies, check, barrier and vote, start copying the next tile, fix up a
// poisoned tile, `visit(t, stage, poisoned, lean)`, keep the ring row read two tiles ahead.
// With Stream::kGroups > 1 warpgroups per block, the first one copies, checks and fixes up the tiles
// (the helpers above cover a tile with 128 threads); the others only wait at the barriers.
template <typename Stream, typename Visit>
LED_DEVICE void walk_tiles(const Stream& s, Visit visit) {
  constexpr int kStages = Stream::kStages;
  static_assert(kStages >= 1 && kStages <= 3, "one to three stages");
  const bool copier = Stream::kGroups == 1 || simt::thread_index() < kThreads;
  const int32_t n = s.count();
  if (n > 0 && copier) s.issue(0, 0);
  for (int32_t t = 0; t < n; ++t) {
    const int stage = kStages == 2 ? t & 1 : kStages == 3 ? t % 3 : 0;
    const int next_stage = kStages == 3 ? (stage == 2 ? 0 : stage + 1) : stage ^ 1;
    const bool lean = s.lean(t);
    const bool keep_next = t + 2 < n && s.needs_ring(t + 2);
    typename Stream::Ahead ahead{};
    if (keep_next) ahead = s.read_ahead(t + 2);  // (its loads are in flight during this tile's math)
    simt::cp_async_wait_all();
    if (Stream::kAsyncProxyReads) simt::fence_proxy_async();  // (before the barrier that publishes it)
    const uint32_t bad = lean || !copier ? 0u : s.own_nonfinite(t, stage);
    // every warp is done with tile t - 1 (its stage is free for tile t + 1) and sees tile t
    const bool poisoned = simt::sync_block_or(bad != 0u) != 0;
    if (kStages >= 2 && t + 1 < n && copier) s.issue(t + 1, next_stage);
    if (poisoned) {
      if (copier) s.zero_nonfinite(stage, bad);
      if (Stream::kAsyncProxyReads) simt::fence_proxy_async();
      simt::sync_block();
    }
    visit(t, stage, poisoned, lean);
    // (tile t - 1's ring row: every warp is past its last use, the barrier above)
    if (keep_next) s.keep_ahead(t + 2, ahead);
    if (kStages == 1 && t + 1 < n) {
      simt::sync_block();  // every warp is done with the one stage
      if (copier) s.issue(t + 1, 0);
    }
  }
}

template <typename T, int D, typename Tile = PaddedTile<D>>
struct PipedKeySmem {
  unsigned char* base;
  int32_t* pos_ring;  // [3][kBlockN]: positions of tiles t % 3 (-1: masked)
  float* poison;      // [kBlockN]: the current tile's, valid when its vote found a non-finite row
  float* zeros;       // [kBlockN]: the poison of every other tile (read without a branch per entry)

  // (K and V of each stage, then Tile::kSharedRowTiles tiles of the block's query rows, and dO rows;
  // with more V stages than K stages (kSplit), the K tiles, then the V tiles: the walk's stage is the
  // V tile's, and tile t's K is in K tile t % 2, key_slot)
  static constexpr bool kSplit = Tile::kValueStages != Tile::kKeyStages;
  static_assert(!kSplit || Tile::kKeyStages == 2, "two K stages beside more V stages");
  static constexpr int kKeyTiles = Tile::kKeyStages + Tile::kValueStages;
  static constexpr int kTiles = kKeyTiles + Tile::kSharedRowTiles;

  static constexpr size_t bytes() {
    return kTiles * Tile::kBytes + 5 * kBlockN * sizeof(int32_t) + (Tile::kAlign - 16);
  }

  LED_DEVICE explicit PipedKeySmem(unsigned char* smem)
      : base(align_tiles<Tile>(smem)),
        pos_ring(reinterpret_cast<int32_t*>(base + kTiles * Tile::kBytes)),
        poison(reinterpret_cast<float*>(pos_ring + 3 * kBlockN)),
        zeros(poison + kBlockN) {}

  LED_DEVICE T* ks(int slot) const { return reinterpret_cast<T*>(base + (kSplit ? 1 : 2) * slot * Tile::kBytes); }
  LED_DEVICE T* vs(int stage) const {
    return reinterpret_cast<T*>(base + (kSplit ? Tile::kKeyStages + stage : 2 * stage + 1) * Tile::kBytes);
  }
  // The K tile of tile t, staged in `stage` of the walk.
  LED_DEVICE static int key_slot(int32_t t, int stage) { return kSplit ? t & 1 : stage; }
  LED_DEVICE int32_t* key_pos(int64_t t) const { return pos_ring + (t % 3) * kBlockN; }
  // stage 1's K and V tiles: where the query rows (and dO rows) wait before tile 1 is copied; with
  // Tile::kQShared tiles of their own, where they stay
  LED_DEVICE T* row_area() const {
    return Tile::kQShared ? reinterpret_cast<T*>(base + kKeyTiles * Tile::kBytes) : ks(1);
  }
};

// Key r of a tile for threads r < kBlockN (the thread that keeps that key's position), -1 for the others.
template <typename T>
LED_DEVICE int32_t thread_key_position(const KeySet<T>& keys, KeySource src, int64_t b, int64_t base) {
  const int r = simt::thread_index();
  return r < kBlockN ? keys.position(src, b, base, r) : -1;
}

// Starts copying rows [first, first + 64) of two tensors (K and V, or Q and dO), all of which exist,
// into two staged tiles: one pointer per tensor, stepped by a pass's rows, where a tile with rows to
// zero-fill or gather pays a 64-bit multiply-add and a select per row (a band's tiles but its last).
template <typename T, int D, typename Tile>
LED_DEVICE void issue_whole_tile(const RowColumn<T>& x, const RowColumn<T>& y, int64_t first, T* xs, T* ys) {
  using P = TilePasses<D>;
  constexpr int kPassRows = kThreads / P::kChunks;  // (P::row(p) = P::row(0) + p kPassRows)
  // both layouts repeat every 8 rows: row r + 8 m of a column lies offset(8 m, 0) past row r
  static_assert(kPassRows % 8 == 0, "a pass starts on a row that keeps the swizzle's phase");
  const int col = P::col(0), at = Tile::offset(P::row(0), col);
  const T* xp = x.row(first + P::row(0));
  const T* yp = y.row(first + P::row(0));
  const int64_t x_step = kPassRows * x.stride, y_step = kPassRows * y.stride;
  LED_UNROLL
  for (int p = 0; p < P::kPasses; ++p) {
    simt::cp_async_16(xs + at + Tile::offset(p * kPassRows, 0), xp, true);
    simt::cp_async_16(ys + at + Tile::offset(p * kPassRows, 0), yp, true);
    xp += x_step;
    yp += y_step;
  }
}

// Starts copying a key tile into (ks, vs): rows base + r of band and non-padded tiles (zeros past N),
// the valid slots' rows of a global-slot tile (zeros for the others), whose positions `key_pos` holds.
template <typename T, int D, typename Tile = PaddedTile<D>>
LED_DEVICE void issue_key_tile(const KeySet<T>& keys, KeySource src, int64_t b, int64_t h, int64_t base,
                               const int32_t* key_pos, T* ks, T* vs) {
  using P = TilePasses<D>;
  const int col = P::col(0);
  const RowColumn<T> k(keys.k, b, h, col), v(keys.v, b, h, col);
  const bool gathered = src == KeySource::kGlobalSlots;
  if (!gathered && base + kBlockN <= keys.N) {
    issue_whole_tile<T, D, Tile>(k, v, base, ks, vs);
    simt::cp_async_commit();
    return;
  }
  LED_UNROLL
  for (int p = 0; p < P::kPasses; ++p) {
    const int r = P::row(p);
    const int32_t j = gathered ? key_pos[r] : static_cast<int32_t>(base) + r;
    const bool fill = gathered ? j >= 0 : j < keys.N;
    const int32_t from = fill ? j : 0;  // (no bytes are read from a zero-filled row's address)
    simt::cp_async_16(ks + Tile::offset(r, col), k.row(from), fill);
    simt::cp_async_16(vs + Tile::offset(r, col), v.row(from), fill);
  }
  simt::cp_async_commit();
}

// Lean tiles: a run [lo, hi) of a walk's tiles in which every position (key, or query row for the
// dK/dV kernel) is attended by everything in the block: each lies in the window of each of the
// block's rows (or keys), and none is masked (padding, global, past the end). Such a tile is the
// interior of the band, as FlashAttention's unmasked tiles are of a causal walk: it needs no
// non-finite check (a bad row reaches exactly what attends it, which is everything here) and no
// mask, and a key tile no positions (walk_tiles neither reads nor keeps its ring row).
struct LeanRun {
  int32_t lo = 0, hi = 0;

  LED_DEVICE bool contains(int32_t t) const { return t >= lo && t < hi; }
};

LED_HOST_DEVICE int64_t floor_div(int64_t x, int64_t y) { return x >= 0 ? x / y : -((-x + y - 1) / y); }

// The blocks of a layer kernel (layer_fwd_kernel, layer_dq_kernel), which runs kernel A's blocks and
// kernel B's in one launch: per (batch, head) pair, A's `band_blocks`, then B's `global_blocks`. Block
// `bid` is kernel A's (`band`) or B's, with index `bid` among that kernel's own blocks.
struct LayerBlock {
  bool band;
  int64_t bid;
};

LED_HOST_DEVICE LayerBlock layer_block(int64_t bid, int64_t band_blocks, int64_t global_blocks) {
  const int64_t pair = bid / (band_blocks + global_blocks), r = bid % (band_blocks + global_blocks);
  return r < band_blocks ? LayerBlock{true, pair * band_blocks + r} : LayerBlock{false, pair * global_blocks + r - band_blocks};
}

// Whether the kernels use lean runs: unless the environment variable LED_KERNELS_CUDA_LEAN is 0 (so
// that one benchmark run can time the kernels with and without them; the results are bitwise the
// same, the checked walk taking the same mask-free path through those tiles).
inline bool lean_runs_enabled() {
  const char* env = std::getenv("LED_KERNELS_CUDA_LEAN");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  throw std::invalid_argument(std::string("LED_KERNELS_CUDA_LEAN must be 0 or 1, got '") + env + "'");
}

// The lean run of a band walk: the tiles of positions first + 64 t (t < tiles) that lie whole in
// [0, n) and in the window of each of [r0, r0 + rows) (see window_covers), if none of their positions
// is flagged (key_flags != 0: padding or global; one scan of the run's flags per block, so every
// thread of the block, kBlockThreads of them, calls this).
template <int kBlockThreads = kThreads>
LED_DEVICE LeanRun band_lean_run(const int8_t* key_flags, int64_t n, int64_t b, int64_t first, int32_t tiles,
                                 int64_t r0, int64_t rows, int64_t window) {
  LeanRun run;
  const int64_t min_start = r0 + rows - 1 - window;                                   // the first row's window
  const int64_t max_start = r0 + window - (kBlockN - 1) < n - kBlockN ? r0 + window - (kBlockN - 1) : n - kBlockN;
  const int64_t lo = min_start > first ? -floor_div(first - min_start, kBlockN) : 0;  // (ceil)
  const int64_t hi = max_start >= first ? floor_div(max_start - first, kBlockN) + 1 : 0;
  if (hi <= lo || lo >= tiles) return run;
  run.lo = static_cast<int32_t>(lo);
  run.hi = static_cast<int32_t>(hi < tiles ? hi : tiles);
  const int8_t* flags = key_flags + b * n;
  bool flagged = false;
  for (int64_t j = first + run.lo * int64_t{kBlockN} + simt::thread_index(); j < first + run.hi * int64_t{kBlockN};
       j += kBlockThreads) {
    flagged |= flags[j] != 0;
  }
  if (simt::sync_block_or(flagged) != 0) run.hi = run.lo;
  return run;
}

// The key tiles of one block: tile t < band_tiles is the band's tile at j_first + 64 t, the rest
// are the global-slot tiles (kernel A) or the chunk's tiles (kernel B, band_tiles = 0); `lean`: band
// tiles that need no positions, check or mask (see LeanRun; none unless the kernel sets them).
// (Positions and counts below 2^31: 32-bit, fewer registers across the main loop.)
struct TileList {
  KeySource src;
  int32_t band_tiles, j_first, extra_tiles, extra_first;
  KeySource extra_src;
  LeanRun lean;

  // Kernel A's rows [i0, i0 + rows): the band's key tiles (clipped to [0, N)), then the global slots'.
  LED_DEVICE static TileList band(int64_t i0, int64_t rows, int64_t N, int64_t window, int64_t G) {
    const int64_t last_row = (i0 + rows < N ? i0 + rows : N) - 1;
    const int64_t lo = window >= i0 ? 0 : i0 - window;
    const int64_t hi = window >= N - last_row ? N - 1 : last_row + window;
    TileList list;
    list.src = KeySource::kBand;
    list.j_first = static_cast<int32_t>((lo / kBlockN) * kBlockN);
    list.band_tiles = static_cast<int32_t>((hi - list.j_first) / kBlockN + 1);
    list.extra_src = KeySource::kGlobalSlots;
    list.extra_first = 0;
    list.extra_tiles = static_cast<int32_t>(ceil_div(G, kBlockN));
    return list;
  }

  // Kernel B's chunk of keys [k_begin, k_begin + chunk) (clipped to N): every non-padded key.
  LED_DEVICE static TileList chunk_keys(int64_t k_begin, int64_t chunk, int64_t N) {
    const int64_t k_end = k_begin + chunk < N ? k_begin + chunk : N;
    TileList list;
    list.src = list.extra_src = KeySource::kNonPadded;
    list.band_tiles = list.j_first = 0;
    list.extra_first = static_cast<int32_t>(k_begin);
    list.extra_tiles = static_cast<int32_t>(k_end > k_begin ? ceil_div(k_end - k_begin, kBlockN) : 0);
    return list;
  }

  LED_DEVICE int32_t count() const { return band_tiles + extra_tiles; }
  LED_DEVICE KeySource source(int32_t t) const { return t < band_tiles ? src : extra_src; }
  LED_DEVICE int32_t base(int32_t t) const {
    return t < band_tiles ? j_first + t * kBlockN : extra_first + (t - band_tiles) * kBlockN;
  }
};

// The key tiles of a TileList as a stream for walk_tiles: positions in the ring, K and V staged in
// PipedKeySmem, the contracted tensor (kCheck) checked on the keys `needs_check(key_pos, banded,
// j0, r)` names.
struct NoCheck {};

// (kLeanable: whether a tile may be lean; false compiles the walk without the test, where no kernel
// sets a run.)
template <typename T, int D, Contracted kCheck, typename NeedsCheck = NoCheck, typename Tile = PaddedTile<D>,
          bool kLeanable = true>
struct KeyTileStream {
  static constexpr int kStages = Tile::kValueStages;
  static constexpr int kGroups = Tile::kGroups;
  static constexpr bool kAsyncProxyReads = Tile::kSwizzled;
  using Ahead = int32_t;

  const KeySet<T>& keys;
  const TileList& tiles;
  int64_t b, h;
  const PipedKeySmem<T, D, Tile>& sm;
  NeedsCheck needs_check;

  LED_DEVICE int32_t count() const { return tiles.count(); }
  LED_DEVICE bool lean(int32_t t) const { return kLeanable && tiles.lean.contains(t); }
  LED_DEVICE bool needs_ring(int32_t t) const { return !lean(t); }
  LED_DEVICE bool banded(int32_t t) const { return tiles.source(t) == KeySource::kBand; }
  LED_DEVICE Ahead read_ahead(int32_t t) const { return thread_key_position(keys, tiles.source(t), b, tiles.base(t)); }
  LED_DEVICE void keep_ahead(int32_t t, Ahead pos) const {
    if (simt::thread_index() < kBlockN) sm.key_pos(t)[simt::thread_index()] = pos;
  }
  LED_DEVICE void issue(int32_t t, int stage) const {
    issue_key_tile<T, D, Tile>(keys, tiles.source(t), b, h, tiles.base(t), sm.key_pos(t),
                               sm.ks(sm.key_slot(t, stage)), sm.vs(stage));
  }
  LED_DEVICE T* checked(int stage) const {
    // (a K tile's slot is not its stage when V has more stages: only V is checked there)
    static_assert(!PipedKeySmem<T, D, Tile>::kSplit || kCheck != Contracted::kKey, "K checked in its stage");
    return kCheck == Contracted::kKey ? sm.ks(stage) : sm.vs(stage);
  }
  LED_DEVICE uint32_t own_nonfinite(int32_t t, int stage) const {
    static_assert(kCheck != Contracted::kNone, "a walk checks the tensor it contracts over keys");
    const int32_t* key_pos = sm.key_pos(t);
    const bool band = banded(t);
    const int32_t j0 = tiles.base(t);
    return own_nonfinite_chunks<T, D, Tile>(checked(stage), [&](int r) { return needs_check(key_pos, band, j0, r); });
  }
  LED_DEVICE void zero_nonfinite(int stage, uint32_t bad) const {
    zero_nonfinite_rows<T, D, Tile>(checked(stage), nullptr, sm.poison, bad);
  }
};

// Before walk_key_tiles: the positions of the first two tiles into the ring (see stream_first_tiles)
// and the row of zero poison.
template <typename T, int D, typename Tile = PaddedTile<D>>
LED_DEVICE void prepare_key_walk(const KeySet<T>& keys, const TileList& tiles, int64_t b,
                                 const PipedKeySmem<T, D, Tile>& sm) {
  stream_first_tiles(KeyTileStream<T, D, Contracted::kNone, NoCheck, Tile>{keys, tiles, b, 0, sm, NoCheck{}});
  if (simt::thread_index() < kBlockN) sm.zeros[simt::thread_index()] = 0.0f;
}

// The pipelined walk over the key tiles of `tiles`, after prepare_key_walk and a barrier:
// `visit(ks, vs, key_pos, poison, poisoned, banded, j0, lean)` per tile (poison: the tile's poison
// row, all zeros unless `poisoned`; key_pos: not kept for a lean tile, which reads neither). The
// caller's Q-side fragments must be in registers before the walk (stage 1 is overwritten from its
// first barrier on).
template <typename T, int D, Contracted kCheck, bool kLeanable = true, typename Tile, typename NeedsCheck,
          typename Visit>
LED_DEVICE void walk_key_tiles(const KeySet<T>& keys, const TileList& tiles, int64_t b, int64_t h,
                               const PipedKeySmem<T, D, Tile>& sm, NeedsCheck needs_check, Visit visit) {
  const KeyTileStream<T, D, kCheck, NeedsCheck, Tile, kLeanable> stream{keys, tiles, b, h, sm, needs_check};
  walk_tiles(stream, [&](int32_t t, int stage, bool poisoned, bool lean) {
    visit(static_cast<const T*>(sm.ks(sm.key_slot(t, stage))), static_cast<const T*>(sm.vs(stage)), sm.key_pos(t),
          static_cast<const float*>(poisoned ? sm.poison : sm.zeros), poisoned, stream.banded(t), tiles.base(t),
          lean);
  });
}

// The (b, h, slot) row of the kernels that give one warp to each row of a (B, H, G) set (the split
// sweeps' combine and reduce); false for the warps past the last row (whole warps: they may return).
struct SlotRow {
  int64_t b, h, s;
};

LED_DEVICE bool warp_slot_row(int64_t B, int64_t H, int64_t G, SlotRow& r) {
  const int64_t row = simt::block_index() * kWarps + simt::thread_index() / 32;
  if (row >= B * H * G) return false;
  r.s = row % G;
  r.h = (row / G) % H;
  r.b = row / (G * H);
  return true;
}

// The split sweeps' merge of one (b, h, slot) row: the sum over chunks c of weight(c) times the D
// floats at row(c) (fp32 partials), by one warp: D / 4 lanes over a row (4 dims each) and 32 / (D / 4)
// chunks per step, then summed across the warp by butterflies (the same fixed-order sums in every lane;
// lane L ends with dims 4 (L % (D / 4)) + [0, 4), see chunk_row_dim). No load waits for another: one
// lane per dim walking every chunk made chains of dependent L2 reads (the forward's combine took 11 us
// at G = 1 at the headline on an H100, benchmarks/results/h100-sxm-wgmma-session.log, and the
// backward's two reductions 21 us, against 3 and 10 us for triton's).
template <int D>
LED_DEVICE int chunk_row_dim(int lane) {
  return 4 * (lane % (D / 4));
}

template <int D, typename Row, typename Weight>
LED_DEVICE void sum_chunk_rows(float (&acc)[4], int64_t chunks, Row row, Weight weight, int lane) {
  constexpr int kRowLanes = D / 4;
  acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
  for (int64_t c = lane / kRowLanes; c < chunks; c += 32 / kRowLanes) {
    const float w = weight(c);
    const float* part = row(c) + chunk_row_dim<D>(lane);
    LED_UNROLL
    for (int e = 0; e < 4; ++e) acc[e] += part[e] * w;
  }
  LED_UNROLL
  for (int mask = kRowLanes; mask < 32; mask <<= 1) {
    LED_UNROLL
    for (int e = 0; e < 4; ++e) acc[e] += simt::shfl_xor(acc[e], mask);
  }
}

// The keys a narrow tile computes: one MMA column group of 16, enough for the global keys of a layer
// with up to 16 global tokens (a whole tile of 64 for one key would be 4x the work).
constexpr int kNarrowCols = 16;

// Which of a staged tile's 64 positions (keys or query rows; -1: masked) are attended, from two
// ballots (see simt::ballot_sync; lane L reads positions L and L + 32). Every warp reads all of them,
// so the answers are the same in the whole block: a block may skip the work on a tile without any
// attended position (all padding, or beyond a global slot list), which would add exact zeros, and
// compute only the first kNarrowCols of a tile that has none after them.
struct TileOccupancy {
  uint32_t low, high;  // bit L: position L, and L + 32, is attended

  LED_DEVICE bool any() const { return (low | high) != 0u; }
  LED_DEVICE bool past_narrow() const { return ((low >> kNarrowCols) | high) != 0u; }
  LED_DEVICE bool all() const { return (low & high) == 0xffffffffu; }
};

LED_DEVICE TileOccupancy tile_occupancy(const int32_t* pos, int lane) {
  static_assert(kBlockN == 64 && kBlockM == 64 && kNarrowCols < 32, "two positions per lane");
  return TileOccupancy{simt::ballot_sync(pos[lane] >= 0), simt::ballot_sync(pos[lane + 32] >= 0)};
}

// Whether any of the query rows [i0, i0 + count) of batch element b is neither padding nor (with
// `global_dead`) global: kernel A's rows that attend something. Every lane of the warp gets the
// answer; when every warp asks about the same rows it is block-uniform: a block of padding rows (the
// tail of a short sequence in a padded batch) skips its key tiles, a warp of them its math.
LED_DEVICE bool rows_have_live(const int8_t* key_flags, int64_t N, int64_t b, int64_t i0, int64_t count,
                               bool global_dead, int lane) {
  const int8_t* flags = key_flags + b * N;
  const int64_t end = i0 + count < N ? i0 + count : N;
  bool any = false;
  for (int64_t i = i0 + lane; i < end; i += 32) any |= flags[i] == 0 || (flags[i] == 2 && !global_dead);
  return simt::any_sync(any);
}

// The positions that a query row (or a key) at position `center` attends: [lo, hi], so that a masked
// entry costs two comparisons (keeps), with the bounds set once per row and tile. A query row attends
// key j (-1: a masked key) when j >= 0 and, if `banded`, |row - j| <= window; symmetrically a key
// attends the rows with those positions, none when the key itself is masked (center < 0). Positions
// (below N + 128 < 2^31) and the window (clamped to N by the launchers, see clamped_window) fit in
// int32; the bounds are clamped to [0, INT32_MAX] instead of overflowing.
struct AttendRange {
  int32_t lo, hi;

  LED_DEVICE bool keeps(int32_t position) const { return position >= lo && position <= hi; }
};

LED_DEVICE AttendRange attend_range(int64_t center, bool banded, int64_t window) {
  const int32_t c = static_cast<int32_t>(center), w = static_cast<int32_t>(window);
  if (c < 0) return AttendRange{0, -1};
  if (!banded) return AttendRange{0, INT32_MAX};
  return AttendRange{c > w ? c - w : 0, c > INT32_MAX - w ? INT32_MAX : c + w};
}

// Whether every row of [r0, r0 + rows) is within the window of every key of [j0, j0 + keys): such a
// block of scores needs no band mask. (32-bit, as attend_range: every term is below N + 128 < 2^31.)
LED_DEVICE bool window_covers(int64_t r0, int64_t rows, int64_t j0, int64_t keys, int64_t window) {
  const int32_t r = static_cast<int32_t>(r0), j = static_cast<int32_t>(j0), w = static_cast<int32_t>(window);
  return r + static_cast<int32_t>(rows) - 1 - j <= w && j + static_cast<int32_t>(keys) - 1 - r <= w;
}

// The window as the kernels see it: |row - key| < N always, so a window of N or more is N (which keeps
// it, and the positions, in int32).
inline int64_t clamped_window(int64_t window, int64_t N) { return window < N ? window : N; }

// A fragments (16 rows x D, one register quadruple per 16 dims) of rows [row0, row0 + 16) of a
// staged tile.
template <int D, typename Layout = PaddedTile<D>, typename T>
LED_DEVICE void load_a_fragments(uint32_t (&frag)[D / 16][4], const T* tile, int row0, int lane) {
  const int j = lane / 8, r = lane % 8;
  LED_UNROLL
  for (int kt = 0; kt < D / 16; ++kt) {
    simt::ldmatrix_x4(frag[kt], tile + Layout::offset(row0 + r + 8 * (j & 1), kt * 16 + 8 * (j >> 1)));
  }
}

// acc[rb][16 x C] += A[rb][16 x D] * tile[C x D]^T for RB blocks of 16 rows and the first C = kCols
// rows of a tile: the tile's rows are B's columns, so plain ldmatrix of the tile gives B fragments,
// each loaded once for all RB row blocks (more row blocks per warp: fewer shared-memory reads per
// MMA). kCols < 64: a tile whose later keys are all masked (kNarrowCols).
template <typename T, int D, int RB, int kCols = kBlockN>
LED_DEVICE void mma_a_tile_t(float (&acc)[RB][kCols / 8][4], const uint32_t (&a)[RB][D / 16][4], const T* tile,
                             int lane) {
  const int j = lane / 8, r = lane % 8;
  LED_UNROLL
  for (int kt = 0; kt < D / 16; ++kt) {
    LED_UNROLL
    for (int np = 0; np < kCols / 16; ++np) {
      uint32_t kb[4];
      simt::ldmatrix_x4(kb, tile + PaddedTile<D>::offset(np * 16 + r + 8 * (j >> 1), kt * 16 + 8 * (j & 1)));
      LED_UNROLL
      for (int rb = 0; rb < RB; ++rb) {
        simt::mma_16816<T>(acc[rb][2 * np], a[rb][kt], kb[0], kb[1]);
        simt::mma_16816<T>(acc[rb][2 * np + 1], a[rb][kt], kb[2], kb[3]);
      }
    }
  }
}

// Calls f(nt, e, col) for each entry a lane holds of a 16 x kCols accumulator (mma_a_tile_t's C
// layout): entry e of column group nt lies in row lane / 4 + 8 (e >> 1), column col below.
template <int kCols, typename F>
LED_DEVICE void for_each_entry(int lane, F f) {
  LED_UNROLL
  for (int nt = 0; nt < kCols / 8; ++nt) {
    LED_UNROLL
    for (int e = 0; e < 4; ++e) f(nt, e, nt * 8 + 2 * (lane % 4) + (e & 1));
  }
}

// Keys [16 kk, 16 kk + 16) of a 16-row block of P given as fp32 accumulators (the C layout of
// mma_a_tile_t), packed to 16 bits: exactly the A fragment of O += P V (mma.sync and wgmma alike).
template <typename T, int kCols>
LED_DEVICE void pack_p_fragment(uint32_t (&pa)[4], const float (&p)[kCols / 8][4], int kk) {
  pa[0] = simt::pack2<T>(p[2 * kk][0], p[2 * kk][1]);
  pa[1] = simt::pack2<T>(p[2 * kk][2], p[2 * kk][3]);
  pa[2] = simt::pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
  pa[3] = simt::pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
}

// acc[rb][16 x D] += P[rb][16 x C] * tile[C x D] (the first C = kCols rows of a tile), P given as
// fp32 accumulators (the C layout of mma_a_tile_t), which for keys [16kk, 16kk + 16) are exactly an
// A fragment once packed to 16 bits; the tile's rows are B's rows, so ldmatrix.trans gives B
// fragments (loaded once for all RB).
template <typename T, int D, int RB, int kCols = kBlockN>
LED_DEVICE void mma_p_tile(float (&acc)[RB][D / 8][4], const float (&p)[RB][kCols / 8][4], const T* tile,
                           int lane) {
  const int j = lane / 8, r = lane % 8;
  LED_UNROLL
  for (int kk = 0; kk < kCols / 16; ++kk) {
    uint32_t pa[RB][4];
    LED_UNROLL
    for (int rb = 0; rb < RB; ++rb) pack_p_fragment<T, kCols>(pa[rb], p[rb], kk);
    LED_UNROLL
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t vb[4];
      simt::ldmatrix_x4_trans(vb, tile + PaddedTile<D>::offset(kk * 16 + r + 8 * (j & 1), dp * 16 + 8 * (j >> 1)));
      LED_UNROLL
      for (int rb = 0; rb < RB; ++rb) {
        simt::mma_16816<T>(acc[rb][2 * dp], pa[rb], vb[0], vb[1]);
        simt::mma_16816<T>(acc[rb][2 * dp + 1], pa[rb], vb[2], vb[3]);
      }
    }
  }
}


// The same two products with wgmma (sm_90a) on SwizzledTile tiles, for a block of 4 warps (one
// warpgroup): the M = 64 rows of the product for block rb are the 4 warps' 16-row blocks rb (warp w
// gives rows 16w..16w+15 of A and gets the same rows of D), in the layouts of mma_a_tile_t and
// mma_p_tile, so the softmax between them is the same code. The products are waited for before
// returning (the tile's stage is rewritten after the next barrier).
//   acc[rb][16 x C] += A[rb][16 x D] * tile[C x D]^T: the tile is B K-major (its rows are B's
//   columns).
// The registers a product reads are pinned before its wgmma_fence (wgmma_pin): otherwise the
// compiler may sink their last writes (the accumulators' zeros or rescaling) below the fence, which
// ptxas then repairs with fences of its own or by serializing the products.
template <typename T, int D, int RB, int kCols = kBlockN>
LED_DEVICE void wgmma_a_tile_t(float (&acc)[RB][kCols / 8][4], const uint32_t (&a)[RB][D / 16][4], const T* tile) {
  using Tile = SwizzledTile<D>;
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) simt::wgmma_pin(acc[rb]);
  simt::wgmma_fence();
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    LED_UNROLL
    for (int kt = 0; kt < D / 16; ++kt) {
      simt::wgmma_rs<T, kCols, false>(acc[rb], a[rb][kt], Tile::k_major_desc(tile, kt));
    }
  }
  simt::wgmma_commit();
  simt::wgmma_wait();
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) simt::wgmma_pin(acc[rb]);
}

// acc[16 x C] += A[16 x D] * tile[C x D]^T with A the rows 16w..16w+15 of a_tile (warp w; the
// warpgroup's 64 rows are a_tile's): both K-major, both read through descriptors.
// (issue_smem_a_tile_t: the products alone, without fence, commit or wait.)
template <typename T, int D, int kCols = kBlockN>
LED_DEVICE void issue_smem_a_tile_t(float (&acc)[kCols / 8][4], const T* a_tile, const T* tile) {
  using Tile = SwizzledTile<D>;
  LED_UNROLL
  for (int kt = 0; kt < D / 16; ++kt) {
    simt::wgmma_ss<T, kCols>(acc, Tile::k_major_desc(a_tile, kt), Tile::k_major_desc(tile, kt));
  }
}

template <typename T, int D, int kCols = kBlockN>
LED_DEVICE void wgmma_smem_a_tile_t(float (&acc)[kCols / 8][4], const T* a_tile, const T* tile) {
  simt::wgmma_pin(acc);
  simt::wgmma_fence();
  issue_smem_a_tile_t<T, D, kCols>(acc, a_tile, tile);
  simt::wgmma_commit();
  simt::wgmma_wait();
  simt::wgmma_pin(acc);
}

//   acc[rb][16 x D] += P[rb][16 x C] * tile[C x D]: the tile is B MN-major (its rows are B's rows).
// (issue_p_tile: one block's products from P's packed fragments, without fence, commit or wait.)
template <typename T, int D, int kCols = kBlockN>
LED_DEVICE void issue_p_tile(float (&acc)[D / 8][4], const uint32_t (&pa)[kCols / 16][4], const T* tile) {
  using Tile = SwizzledTile<D>;
  LED_UNROLL
  for (int kk = 0; kk < kCols / 16; ++kk) simt::wgmma_rs<T, D, true>(acc, pa[kk], Tile::mn_major_desc(tile, kk));
}

template <typename T, int D, int RB, int kCols = kBlockN>
LED_DEVICE void wgmma_p_tile(float (&acc)[RB][D / 8][4], const float (&p)[RB][kCols / 8][4], const T* tile) {
  uint32_t pa[RB][kCols / 16][4];
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    LED_UNROLL
    for (int kk = 0; kk < kCols / 16; ++kk) pack_p_fragment<T, kCols>(pa[rb][kk], p[rb], kk);
    simt::wgmma_pin(acc[rb]);
    simt::wgmma_pin(pa[rb]);
  }
  simt::wgmma_fence();
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) issue_p_tile<T, D, kCols>(acc[rb], pa[rb], tile);
  simt::wgmma_commit();
  simt::wgmma_wait();
  LED_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    simt::wgmma_pin(acc[rb]);
    simt::wgmma_pin(pa[rb]);  // (read by the products until the wait)
  }
}

// The products of a kernel whose tiles are staged as Tile: mma.sync (PaddedTile) or wgmma
// (SwizzledTile), the same layouts of accumulators and A fragments either way.
template <typename Tile, typename T, int D, int RB, int kCols>
LED_DEVICE void product_a_tile_t(float (&acc)[RB][kCols / 8][4], const uint32_t (&a)[RB][D / 16][4], const T* tile,
                                 int lane) {
  if constexpr (Tile::kSwizzled) {
    wgmma_a_tile_t<T, D, RB, kCols>(acc, a, tile);
  } else {
    mma_a_tile_t<T, D, RB, kCols>(acc, a, tile, lane);
  }
}

template <typename Tile, typename T, int D, int kCols>
LED_DEVICE void product_a_tile_t(float (&acc)[kCols / 8][4], const uint32_t (&a)[D / 16][4], const T* tile, int lane) {
  using Acc = float[1][kCols / 8][4];
  using Frag = uint32_t[1][D / 16][4];
  product_a_tile_t<Tile, T, D, 1, kCols>(reinterpret_cast<Acc&>(acc), reinterpret_cast<const Frag&>(a), tile, lane);
}

template <typename Tile, typename T, int D, int RB, int kCols>
LED_DEVICE void product_p_tile(float (&acc)[RB][D / 8][4], const float (&p)[RB][kCols / 8][4], const T* tile,
                               int lane) {
  if constexpr (Tile::kSwizzled) {
    wgmma_p_tile<T, D, RB, kCols>(acc, p, tile);
  } else {
    mma_p_tile<T, D, RB, kCols>(acc, p, tile, lane);
  }
}

template <typename Tile, typename T, int D, int kCols>
LED_DEVICE void product_p_tile(float (&acc)[D / 8][4], const float (&p)[kCols / 8][4], const T* tile, int lane) {
  using Acc = float[1][D / 8][4];
  using P = float[1][kCols / 8][4];
  product_p_tile<Tile, T, D, 1, kCols>(reinterpret_cast<Acc&>(acc), reinterpret_cast<const P&>(p), tile, lane);
}

// acc[16 x C] += A[16 x D] * tile[C x D]^T with A read from rows [a_row0, a_row0 + 16) of a staged
// tile (fragments loaded per 16 dims, so they need no registers across the loop) and the first
// C = kCols rows of `tile`.
template <typename T, int D, int kCols = kBlockN>
LED_DEVICE void mma_smem_a_tile_t(float (&acc)[kCols / 8][4], const T* a_tile, int a_row0, const T* tile,
                                  int lane) {
  const int j = lane / 8, r = lane % 8;
  LED_UNROLL
  for (int kt = 0; kt < D / 16; ++kt) {
    uint32_t af[4];
    simt::ldmatrix_x4(af, a_tile + PaddedTile<D>::offset(a_row0 + r + 8 * (j & 1), kt * 16 + 8 * (j >> 1)));
    LED_UNROLL
    for (int np = 0; np < kCols / 16; ++np) {
      uint32_t kb[4];
      simt::ldmatrix_x4(kb, tile + PaddedTile<D>::offset(np * 16 + r + 8 * (j >> 1), kt * 16 + 8 * (j & 1)));
      simt::mma_16816<T>(acc[2 * np], af, kb[0], kb[1]);
      simt::mma_16816<T>(acc[2 * np + 1], af, kb[2], kb[3]);
    }
  }
}

// The backward's products in two halves, so that work that does not need a product runs while the
// tensor cores compute it (the exponents of P while dP lands, dV += P^T dO beside dP^T): start_* issues
// and commits one product (wgmma), finish_products waits for every product started and pins the
// registers they write or read (accumulators; P's packed fragments, read until the wait), and
// pin_products, before that wait, keeps the work meant to overlap above it (the compiler may move
// arithmetic across the wait). With mma.sync (PaddedTile) start_* computes the product and the other
// two do nothing.
//   start_a_tile_t:      acc[16 x C] += A[16 x D] tile[C x D]^T, A's fragments in registers
//   start_smem_a_tile_t: the same with A rows [a_row0, a_row0 + 16) of a staged tile (with wgmma
//                        the warpgroup's 64 rows of it: a_row0 is 16 times the warp)
//   start_p_tile:        acc[16 x D] += P[16 x C] tile[C x D], P packed into `pa`
template <typename Tile, typename T, int D, int kCols>
LED_DEVICE void start_a_tile_t(float (&acc)[kCols / 8][4], const uint32_t (&a)[D / 16][4], const T* tile, int lane) {
  if constexpr (Tile::kSwizzled) {
    simt::wgmma_pin(acc);
    simt::wgmma_fence();
    LED_UNROLL
    for (int kt = 0; kt < D / 16; ++kt) simt::wgmma_rs<T, kCols, false>(acc, a[kt], SwizzledTile<D>::k_major_desc(tile, kt));
    simt::wgmma_commit();
  } else {
    product_a_tile_t<Tile, T, D, kCols>(acc, a, tile, lane);
  }
}

template <typename Tile, typename T, int D, int kCols>
LED_DEVICE void start_smem_a_tile_t(float (&acc)[kCols / 8][4], const T* a_tile, int a_row0, const T* tile, int lane) {
  if constexpr (Tile::kSwizzled) {
    simt::wgmma_pin(acc);
    simt::wgmma_fence();
    issue_smem_a_tile_t<T, D, kCols>(acc, a_tile, tile);
    simt::wgmma_commit();
  } else {
    mma_smem_a_tile_t<T, D, kCols>(acc, a_tile, a_row0, tile, lane);
  }
}

template <typename Tile, typename T, int D, int kCols>
LED_DEVICE void start_p_tile(float (&acc)[D / 8][4], const float (&p)[kCols / 8][4], uint32_t (&pa)[kCols / 16][4],
                             const T* tile, int lane) {
  if constexpr (Tile::kSwizzled) {
    LED_UNROLL
    for (int kk = 0; kk < kCols / 16; ++kk) pack_p_fragment<T, kCols>(pa[kk], p, kk);
    simt::wgmma_pin(acc);
    simt::wgmma_pin(pa);
    simt::wgmma_fence();
    issue_p_tile<T, D, kCols>(acc, pa, tile);
    simt::wgmma_commit();
  } else {
    product_p_tile<Tile, T, D, kCols>(acc, p, tile, lane);
  }
}

template <typename Tile, typename... Regs>
LED_DEVICE void pin_products(Regs&... regs) {
  if constexpr (Tile::kSwizzled) (simt::wgmma_pin(regs), ...);
}

template <typename Tile, typename... Regs>
LED_DEVICE void finish_products(Regs&... regs) {
  if constexpr (Tile::kSwizzled) {
    simt::wgmma_wait();
    (simt::wgmma_pin(regs), ...);
  }
}

// Writes row g or g + 8 (x = 0, 1) of a 16 x D accumulator times `mul`, as the 16-bit type, into
// row `dst` of a (.., D) tensor; zeros when `zero` (selected: a NaN accumulator still gives 0). With
// `accumulate`, adds it (in fp32, rounded once) to what the row holds.
template <typename T, int D>
LED_DEVICE void store_acc_row(T* dst, const float (&acc)[D / 8][4], int x, float mul, int t, bool zero = false,
                              bool accumulate = false) {
  LED_UNROLL
  for (int dn = 0; dn < D / 8; ++dn) {
    float lo = zero ? 0.0f : acc[dn][2 * x] * mul, hi = zero ? 0.0f : acc[dn][2 * x + 1] * mul;
    simt::check_global(dst + dn * 8 + 2 * t, 4);
    if (accumulate) {
      const uint32_t old = simt::load_u32(dst + dn * 8 + 2 * t);
      lo += simt::bits_to_float<T>(static_cast<uint16_t>(old & 0xFFFFu));
      hi += simt::bits_to_float<T>(static_cast<uint16_t>(old >> 16));
    }
    simt::store_u32(dst + dn * 8 + 2 * t, simt::pack2<T>(lo, hi));
  }
}

// The same row in fp32 (partials of a split sweep).
template <int D>
LED_DEVICE void store_acc_row_f32(float* dst, const float (&acc)[D / 8][4], int x, float mul, int t) {
  LED_UNROLL
  for (int dn = 0; dn < D / 8; ++dn) {
    simt::check_global(dst + dn * 8 + 2 * t, 8);
    dst[dn * 8 + 2 * t] = acc[dn][2 * x] * mul;
    dst[dn * 8 + 2 * t + 1] = acc[dn][2 * x + 1] * mul;
  }
}

// Chunks of a long sweep (kernel B's keys, the global keys' rows in the backward): split until
// about kSplitTargetBlocks blocks run, with at least kMinChunkTiles tiles per chunk. Depends on
// the sizes only (not on the GPU), so results are the same on every device.
inline int64_t chunk_rows(int64_t blocks_without_split, int64_t length) {
  const int64_t tiles = ceil_div(length, kBlockN);
  int64_t chunks = blocks_without_split >= kSplitTargetBlocks
                       ? 1
                       : ceil_div(kSplitTargetBlocks, blocks_without_split > 0 ? blocks_without_split : 1);
  const int64_t max_chunks = tiles / kMinChunkTiles > 1 ? tiles / kMinChunkTiles : 1;
  if (chunks > max_chunks) chunks = max_chunks;
  const int64_t tiles_per_chunk = ceil_div(tiles, chunks);
  return (tiles_per_chunk > 0 ? tiles_per_chunk : 1) * kBlockN;
}

inline int64_t chunk_count(int64_t length, int64_t chunk) { return length > 0 ? ceil_div(length, chunk) : 1; }

// Whether a grid of `blocks` blocks is launched: not when empty (a zero-block launch is a CUDA
// error); blocks beyond gridDim.x's 2^31 - 1 are refused rather than wrapped.
inline bool launchable(int64_t blocks) {
  if (blocks >= (int64_t{1} << 31)) {
    throw std::invalid_argument("led_kernels: " + std::to_string(blocks) + " blocks exceed a CUDA grid's 2^31 - 1");
  }
  return blocks > 0;
}

inline bool row_starts_aligned(const void* p, const BNHStrides& s, int elem_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (s.b * elem_bytes) % 16 == 0 &&
         (s.n * elem_bytes) % 16 == 0 && (s.h * elem_bytes) % 16 == 0;
}

inline bool rows_4byte_aligned(const void* p, const BNHStrides& s) {
  return reinterpret_cast<uintptr_t>(p) % 4 == 0 && s.b % 2 == 0 && s.n % 2 == 0 && s.h % 2 == 0;
}

// The attention kernels' 16-byte row reads (load_chunk); throws std::invalid_argument naming `name`.
inline void check_rows_aligned16(const void* p, const BNHStrides& s, const char* who, const char* name) {
  if (!row_starts_aligned(p, s, 2)) {
    throw std::invalid_argument(std::string(who) + ": " + name +
                                " rows must start 16-byte aligned (copy the tensor first)");
  }
}

// Common argument checks; throws std::invalid_argument naming the problem.
inline void check_common(DType dtype, AttnKind kind, int64_t B, int64_t M, int64_t N, int64_t H, int64_t D,
                         int64_t G, int64_t window, const int32_t* global_idx, const char* who) {
  auto bad = [&](const std::string& what) { throw std::invalid_argument(std::string(who) + ": " + what); };
  if (kind != AttnKind::kBanded && kind != AttnKind::kGlobalRows) bad("unknown attention kind");
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16) bad("float16 or bfloat16 inputs only");
  if (D != 16 && D != 32 && D != 64 && D != 128) bad("head dim must be 16, 32, 64 or 128");
  if (B < 0 || M < 0 || N < 0 || H < 0 || G < 0 || window < 0) bad("negative size or window");
  // (query positions of a last tile, up to N + 127, stay below 2^31: see attends)
  if (N >= (int64_t{1} << 31) - 256 || M >= (int64_t{1} << 31) - 256) bad("sequence length must be below 2^31 - 256");
  if (kind == AttnKind::kBanded && M != N) bad("banded rows must equal N");
  if (kind == AttnKind::kGlobalRows && M != G) bad("global rows must equal G");
  if (G > 0 && global_idx == nullptr) bad("global_idx is null with G > 0");
}

}  // namespace cuda_attn
}  // namespace led_kernels
