// A CPU emulator of the few GPU primitives in csrc/cuda/simt.cuh, so that the CUDA attention
// kernels (the very same source) run on a machine without a GPU and are checked against the
// reference there.
//
// Model. A launch runs its blocks one after another. Each CUDA thread of a block is a fiber
// (ucontext) with its own stack; all fibers of a block share the block's dynamic shared memory.
// A fiber runs until it reaches a collective (__syncthreads, a shuffle, ldmatrix, mma), where it
// parks; the collective completes when every thread it involves has arrived (the whole block,
// or the 32 lanes of the warp). The scheduler picks warps at random (seeded per launch) and tends
// to keep running the one it picked, so warps drift apart between block barriers and a missing
// barrier between a shared-memory write and another warp's read shows up as a wrong result
// instead of passing by luck of a lockstep schedule. A collective that can
// never complete (a barrier inside divergent code) is reported as a deadlock.
//
// Exchanges. A collective's lanes post their operands in a per-warp mailbox, wait for each
// other, then every lane computes its own result from all the posted operands, following the
// PTX ISA's fragment layouts (see simt.cuh). Mailboxes alternate between two buffers by the
// collective's generation: a lane that runs ahead into the next collective writes the other
// buffer, while its peers may still be reading this one.
//
// Asynchronous copies (cp.async). Each copy reads its source when issued and lands in shared memory
// either at once or only at the issuing thread's next cp_async_wait_all, chosen at random: a read
// before the wait (or before the barrier after it, by another warp) sees the poisoned bytes, and a
// copy into a buffer that another warp still reads shows as a wrong result. A thread that ends with
// copies it never waited for fails the launch.
//
// Warpgroup MMA (wgmma, sm_90a). A collective of the block's 128-thread warpgroups: the threads post
// their A fragments and B's descriptor, and each computes its entries of D, reading B through the
// descriptor and the 128-byte swizzle, which the hardware applies to shared addresses (those of a
// launch start at a random multiple of 16, so unaligned tiles show). The results land at the
// wgmma_wait after their wgmma_commit. A read of 16 bytes that a cp.async or a plain 16-byte store
// (store_shared_16) wrote, while its thread has not yet made them visible to the async proxy
// (fence_proxy_async), fails; so does a copy or store that lands in 16 bytes some product reads
// before that product was waited for (the hardware may read its operands at any time until then), and
// a wait with products issued but not committed. (Stricter than the hardware, where one warp's wait
// ends the warpgroup's product: here each thread's own wait releases its reads, so such a store must
// follow a barrier after the waits, as the kernels' stores do.)
//
// Checks. Every shared-memory access made through the primitives is bounds-checked against the
// launch's dynamic allocation, and global accesses the kernels declare (simt::check_global)
// against the ranges the caller registered: an out-of-bounds access throws instead of reading
// a neighbour's memory.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#define LED_DEVICE inline
#define LED_HOST_DEVICE inline
#define LED_UNROLL
#define LED_KERNEL
#define __launch_bounds__(...)

namespace led_kernels {
namespace simt_emu {

struct Dim {
  int64_t blocks;
  int threads;
};

enum class FiberState { kRunnable, kBlocked, kDone };

// A thread's wgmma products: their entries of D (address, value once waited for; a later entry for the
// same address supersedes an earlier one) and the 16-byte chunks of shared memory they read
// (Launch::smem_wgmma_readers).
struct WgmmaGroup {
  std::vector<std::pair<float*, float>> results;
  std::vector<size_t> chunks;
  bool empty() const { return results.empty(); }
};

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  int thread = 0;
  FiberState state = FiberState::kRunnable;
  const void* waiting_on = nullptr;  // the barrier a blocked fiber waits for
  std::vector<std::pair<unsigned char*, std::array<unsigned char, 16>>> pending;  // cp.async not yet landed
  // wgmma products not yet waited for: those committed (a wait lands them all), those issued since
  WgmmaGroup wgmma_committed;
  WgmmaGroup wgmma_open;
  uint64_t wgmma_groups = 0;  // groups this thread opened (a stamp for WgmmaGroup::chunks)
  std::vector<size_t> unfenced;  // 16-byte chunks of shared memory its landed cp.async wrote since its last fence_proxy_async
};

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

// Up to 12 32-bit words per lane and collective (an mma posts a[4], b[2], c[4]).
constexpr int kMailWords = 12;
struct Mailbox {
  uint32_t words[2][32][kMailWords];
  const unsigned char* address[2][32];
};

constexpr size_t kStackBytes = 256 * 1024;

// A warpgroup collective (wgmma): each of the 128 threads posts its A fragment and the descriptor.
struct GroupMailbox {
  uint32_t words[2][128][6];
};

struct Range {
  uintptr_t begin, end;
};

struct Launch {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int threads = 0;
  int64_t block = 0;
  std::vector<Barrier> warp_barriers;
  Barrier block_barrier;
  std::vector<uint8_t> block_votes;  // per block-barrier generation: sync_block_or's answer
  std::vector<Mailbox> mailboxes;
  std::vector<Barrier> group_barriers;  // per warpgroup (4 warps)
  std::vector<GroupMailbox> group_mailboxes;
  std::vector<unsigned char> smem;
  // The shared address of smem[0]: a random multiple of 16 below 1024 per launch, so that a kernel
  // that needs 1024-byte aligned tiles must align them itself (the hardware's swizzle works on
  // shared addresses).
  uint32_t smem_base = 0;
  // Per 16-byte chunk of smem: 1 + the thread whose cp.async landed there and has not been fenced to
  // the async proxy yet (fence_proxy_async), else 0; a wgmma read of such a chunk fails.
  std::vector<int> smem_unfenced;
  // Per 16-byte chunk of smem: how many (thread, commit group) pairs of wgmma products not yet waited
  // for read it (a copy or store landing there fails), and the stamp of the last group that counted
  // itself there (so that a group's many reads of one chunk count once, mostly).
  std::vector<int> smem_wgmma_readers;
  std::vector<uint64_t> smem_wgmma_stamp;
  std::function<void()> body;
  std::mt19937_64 rng;
  std::string error;
  Fiber* current = nullptr;
};

inline Launch*& current_launch() {
  static Launch* launch = nullptr;
  return launch;
}

inline std::vector<Range>& global_ranges() {
  static std::vector<Range> ranges;
  return ranges;
}

inline uint64_t& launch_seed() {
  static uint64_t seed = 0;
  return seed;
}

// Kernel launches run so far (the tests count a host function's launches).
inline uint64_t& launch_count() {
  static uint64_t count = 0;
  return count;
}

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("simt emulator: " + what); }

inline Launch& launch() { return *current_launch(); }
inline Fiber& fiber() { return *launch().current; }
inline int lane() { return fiber().thread & 31; }
inline int warp() { return fiber().thread >> 5; }

// Park the current fiber until `barrier` has seen `participants` arrivals; returns the
// generation this arrival belonged to (its mailbox parity).
inline uint64_t arrive(Barrier& barrier, int participants, int first_thread) {
  Launch& l = launch();
  Fiber& f = fiber();
  const uint64_t generation = barrier.generation;
  if (++barrier.arrived == participants) {
    barrier.arrived = 0;
    ++barrier.generation;
    for (int t = first_thread; t < first_thread + participants; ++t) {
      Fiber& other = l.fibers[t];
      if (other.state == FiberState::kBlocked && other.waiting_on == &barrier) {
        other.state = FiberState::kRunnable;
        other.waiting_on = nullptr;
      }
    }
  } else {
    f.state = FiberState::kBlocked;
    f.waiting_on = &barrier;
  }
  // Yield even when this arrival released the others, so that their order is shuffled too.
  swapcontext(&f.context, &l.scheduler);
  if (barrier.generation == generation) fail("a fiber resumed before its collective completed");
  return generation;
}

inline uint64_t warp_arrive() {
  Launch& l = launch();
  const int w = warp();
  const int first = w * 32;
  const int lanes = std::min(32, l.threads - first);
  if (lanes != 32) fail("warp collectives need full warps (blockDim a multiple of 32)");
  return arrive(l.warp_barriers[w], 32, first);
}

inline Mailbox& mailbox() { return launch().mailboxes[warp()]; }

// 16 bytes that a cp.async (or a plain 16-byte store) wrote land in shared memory, not yet visible
// to the async proxy.
inline void land_copy(unsigned char* dst, const unsigned char* data) {
  Launch& l = launch();
  const size_t chunk = static_cast<size_t>(dst - l.smem.data()) / 16;
  if (l.smem_wgmma_readers[chunk] != 0) {
    fail("a copy or store landed in shared memory that a wgmma not yet waited for reads");
  }
  std::memcpy(dst, data, 16);
  l.smem_unfenced[chunk] = fiber().thread + 1;
  fiber().unfenced.push_back(chunk);
}

// A wgmma product of this thread's open group reads 16-byte chunk `chunk` of shared memory.
inline void note_wgmma_read(size_t chunk) {
  Launch& l = launch();
  Fiber& f = fiber();
  const uint64_t stamp = (static_cast<uint64_t>(f.thread) << 40 | f.wgmma_groups) + 1;
  if (l.smem_wgmma_stamp[chunk] == stamp) return;
  l.smem_wgmma_stamp[chunk] = stamp;
  ++l.smem_wgmma_readers[chunk];
  f.wgmma_open.chunks.push_back(chunk);
}

inline void check_shared(const void* p, size_t bytes, const char* who) {
  const Launch& l = launch();
  const auto* c = static_cast<const unsigned char*>(p);
  if (l.smem.empty() || c < l.smem.data() || c + bytes > l.smem.data() + l.smem.size()) {
    fail(std::string(who) + ": shared-memory access outside the block's " + std::to_string(l.smem.size()) +
         " bytes");
  }
}

// ---------------------------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------------------------

inline void fiber_entry() {
  Launch& l = launch();
  try {
    l.body();
    if (!l.current->pending.empty()) fail("a thread ended with cp.async copies it never waited for");
    if (!l.current->wgmma_committed.empty() || !l.current->wgmma_open.empty()) {
      fail("a thread ended with wgmma products it never waited for");
    }
  } catch (const std::exception& e) {
    if (l.error.empty()) l.error = e.what();
  }
  l.current->state = FiberState::kDone;
  swapcontext(&l.current->context, &l.scheduler);
}

inline void run_block(Launch& l) {
  for (int t = 0; t < l.threads; ++t) {
    Fiber& f = l.fibers[t];
    f.thread = t;
    f.state = FiberState::kRunnable;
    f.waiting_on = nullptr;
    f.pending.clear();
    f.wgmma_committed = WgmmaGroup{};
    f.wgmma_open = WgmmaGroup{};
    f.unfenced.clear();
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_entry, 0);
  }
  for (auto& b : l.warp_barriers) b = Barrier{};
  for (auto& b : l.group_barriers) b = Barrier{};
  l.block_barrier = Barrier{};
  l.block_votes.clear();
  // Scheduling is per warp: a step runs every runnable lane of one warp up to its next
  // collective. The same warp keeps running with probability 3/4, so warps drift many
  // collectives apart between block barriers, as they may on the GPU.
  const int warps = l.threads / 32;
  std::vector<int> ready, lanes;
  int current = 0;
  for (;;) {
    ready.clear();
    bool all_done = true;
    for (int w = 0; w < warps; ++w) {
      bool runnable = false;
      for (int t = 32 * w; t < 32 * w + 32; ++t) {
        runnable |= l.fibers[t].state == FiberState::kRunnable;
        all_done &= l.fibers[t].state == FiberState::kDone;
      }
      if (runnable) ready.push_back(w);
    }
    if (all_done) break;
    if (ready.empty()) fail("deadlock in block " + std::to_string(l.block) + ": a collective can never complete "
                            "(a barrier or warp collective inside divergent code)");
    const bool stay = std::find(ready.begin(), ready.end(), current) != ready.end() && l.rng() % 4 != 0;
    if (!stay) current = ready[l.rng() % ready.size()];
    lanes.clear();
    for (int t = 32 * current; t < 32 * current + 32; ++t) {
      if (l.fibers[t].state == FiberState::kRunnable) lanes.push_back(t);
    }
    std::shuffle(lanes.begin(), lanes.end(), l.rng);
    for (int t : lanes) {
      if (l.fibers[t].state != FiberState::kRunnable) continue;
      l.current = &l.fibers[t];
      swapcontext(&l.scheduler, &l.current->context);
      if (!l.error.empty()) fail(l.error + " (block " + std::to_string(l.block) + ", thread " +
                                 std::to_string(t) + ")");
    }
  }
}

// Runs kernel(args...) over `blocks` blocks of `threads` threads with `smem_bytes` of dynamic
// shared memory, poisoned with NaN-like bytes (0xFF) before every block so that a read of an
// unwritten element shows.
template <typename Kernel, typename... Args>
void run(Kernel kernel, int64_t blocks, int threads, size_t smem_bytes, Args... args) {
  if (current_launch() != nullptr) fail("nested launch");
  if (threads <= 0 || threads % 32 != 0 || threads > 1024) fail("bad block size " + std::to_string(threads));
  auto owned = std::make_unique<Launch>();
  Launch& l = *owned;
  l.threads = threads;
  l.fibers.resize(threads);
  for (auto& f : l.fibers) f.stack.reset(new char[kStackBytes]);
  l.warp_barriers.resize(threads / 32);
  l.mailboxes.resize(threads / 32);
  l.group_barriers.resize(threads / 128);
  l.group_mailboxes.resize(threads / 128);
  l.rng.seed(launch_seed()++);
  ++launch_count();
  l.body = [&]() { kernel(args...); };
  current_launch() = &l;
  try {
    for (int64_t b = 0; b < blocks; ++b) {
      l.block = b;
      l.smem.assign(smem_bytes, 0xFF);
      l.smem_unfenced.assign((smem_bytes + 15) / 16, 0);
      l.smem_wgmma_readers.assign((smem_bytes + 15) / 16, 0);
      l.smem_wgmma_stamp.assign((smem_bytes + 15) / 16, 0);
      l.smem_base = 16 * static_cast<uint32_t>(l.rng() % 64);
      run_block(l);
    }
  } catch (...) {
    current_launch() = nullptr;
    throw;
  }
  current_launch() = nullptr;
}

}  // namespace simt_emu

// ---------------------------------------------------------------------------------------------
// The primitives of simt.cuh
// ---------------------------------------------------------------------------------------------
namespace simt {

inline int thread_index() { return simt_emu::fiber().thread; }
inline int64_t block_index() { return simt_emu::launch().block; }

inline void sync_block() {
  simt_emu::Launch& l = simt_emu::launch();
  simt_emu::arrive(l.block_barrier, l.threads, 0);
}

inline float shfl_xor(float v, int lane_mask) {
  simt_emu::Mailbox& box = simt_emu::mailbox();
  const int me = simt_emu::lane();
  const uint64_t gen = simt_emu::launch().warp_barriers[simt_emu::warp()].generation;
  std::memcpy(&box.words[gen & 1][me][0], &v, 4);
  simt_emu::warp_arrive();
  float out;
  std::memcpy(&out, &box.words[gen & 1][me ^ (lane_mask & 31)][0], 4);
  return out;
}

inline int sync_block_or(int pred) {
  simt_emu::Launch& l = simt_emu::launch();
  const uint64_t gen = l.block_barrier.generation;
  if (l.block_votes.size() <= gen) l.block_votes.resize(gen + 1, 0);
  if (pred) l.block_votes[gen] = 1;
  simt_emu::arrive(l.block_barrier, l.threads, 0);
  return l.block_votes[gen];
}

inline int any_sync(int pred) {
  simt_emu::Mailbox& box = simt_emu::mailbox();
  const int me = simt_emu::lane();
  const uint64_t gen = simt_emu::launch().warp_barriers[simt_emu::warp()].generation;
  box.words[gen & 1][me][0] = pred != 0;
  simt_emu::warp_arrive();
  for (int l = 0; l < 32; ++l) {
    if (box.words[gen & 1][l][0]) return 1;
  }
  return 0;
}

inline uint32_t ballot_sync(bool pred) {
  simt_emu::Mailbox& box = simt_emu::mailbox();
  const int me = simt_emu::lane();
  const uint64_t gen = simt_emu::launch().warp_barriers[simt_emu::warp()].generation;
  box.words[gen & 1][me][0] = pred ? 1 : 0;
  simt_emu::warp_arrive();
  uint32_t lanes = 0;
  for (int l = 0; l < 32; ++l) lanes |= (box.words[gen & 1][l][0] != 0 ? 1u : 0u) << l;
  return lanes;
}

inline unsigned char* shared_memory() { return simt_emu::launch().smem.data(); }

inline void check_global(const void* p, int bytes) {
  const auto& ranges = simt_emu::global_ranges();
  if (ranges.empty()) return;
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (const auto& r : ranges) {
    if (a >= r.begin && a + static_cast<uintptr_t>(bytes) <= r.end) return;
  }
  simt_emu::fail("global-memory access of " + std::to_string(bytes) + " bytes outside every registered tensor");
}

inline void cp_async_16(void* smem_dst, const void* src, bool fill) {
  auto* dst = static_cast<unsigned char*>(smem_dst);
  simt_emu::check_shared(dst, 16, "cp.async");
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0) simt_emu::fail("cp.async: shared address not 16-byte aligned");
  std::array<unsigned char, 16> data{};
  if (fill) {
    if (reinterpret_cast<uintptr_t>(src) % 16 != 0) simt_emu::fail("cp.async: global address not 16-byte aligned");
    check_global(src, 16);
    std::memcpy(data.data(), src, 16);
  }
  if (simt_emu::launch().rng() % 2 == 0) {
    simt_emu::land_copy(dst, data.data());
  } else {
    simt_emu::fiber().pending.emplace_back(dst, data);
  }
}

inline void cp_async_commit() {}

inline void cp_async_wait_all() {
  auto& pending = simt_emu::fiber().pending;
  for (const auto& copy : pending) simt_emu::land_copy(copy.first, copy.second.data());
  pending.clear();
}

namespace detail {

// Lanes post a row address; register j of lane L is built from the rows of matrix j.
inline void ldmatrix(uint32_t (&r)[4], const void* row, bool trans) {
  simt_emu::Mailbox& box = simt_emu::mailbox();
  const int me = simt_emu::lane();
  const uint64_t gen = simt_emu::launch().warp_barriers[simt_emu::warp()].generation;
  const auto* p = static_cast<const unsigned char*>(row);
  simt_emu::check_shared(p, 16, "ldmatrix");
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) simt_emu::fail("ldmatrix: row address not 16-byte aligned");
  box.address[gen & 1][me] = p;
  simt_emu::warp_arrive();
  for (int j = 0; j < 4; ++j) {
    uint16_t e[2];
    for (int x = 0; x < 2; ++x) {
      if (!trans) {  // row me/4, elements 2(me%4) + x
        std::memcpy(&e[x], box.address[gen & 1][8 * j + me / 4] + 2 * (2 * (me % 4) + x), 2);
      } else {  // row 2(me%4) + x, element me/4
        std::memcpy(&e[x], box.address[gen & 1][8 * j + 2 * (me % 4) + x] + 2 * (me / 4), 2);
      }
    }
    r[j] = static_cast<uint32_t>(e[0]) | (static_cast<uint32_t>(e[1]) << 16);
  }
}

template <typename T>
float element(uint32_t reg, int which);  // defined after simt.cuh's bits_to_float (below)

}  // namespace detail

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { detail::ldmatrix(r, row, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { detail::ldmatrix(r, row, true); }

// D = A B + D for one m16n8k16 tile: every lane rebuilds A (16 x 16) and B (16 x 8) from the
// posted fragments and computes its own four elements of D in fp32.
template <typename T>
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  simt_emu::Mailbox& box = simt_emu::mailbox();
  const int me = simt_emu::lane();
  const uint64_t gen = simt_emu::launch().warp_barriers[simt_emu::warp()].generation;
  uint32_t* mine = box.words[gen & 1][me];
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  mine[4] = b0;
  mine[5] = b1;
  simt_emu::warp_arrive();
  const auto& w = box.words[gen & 1];
  auto A = [&](int row, int k) {  // owner lane (row % 8) * 4 + (k % 8) / 2, register row/8 + 2 (k/8)
    const int owner = (row % 8) * 4 + (k % 8) / 2;
    return detail::element<T>(w[owner][row / 8 + 2 * (k / 8)], k % 2);
  };
  auto B = [&](int k, int col) {  // owner lane col * 4 + (k % 8) / 2, register 4 + k/8
    const int owner = col * 4 + (k % 8) / 2;
    return detail::element<T>(w[owner][4 + k / 8], k % 2);
  };
  const int g = me / 4, t = me % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2);
    const int col = 2 * t + (i % 2);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    d[i] = acc;
  }
}

// Shared addresses start at the launch's smem_base (see Launch).
inline uint32_t smem_address(const void* p) {
  simt_emu::check_shared(p, 1, "smem_address");
  const simt_emu::Launch& l = simt_emu::launch();
  return l.smem_base + static_cast<uint32_t>(static_cast<const unsigned char*>(p) - l.smem.data());
}

// The emulator runs every kernel (no architecture to match).
inline bool wgmma_launchable() { return true; }

constexpr bool kWgmmaCompiled = true;
inline void unreachable() { simt_emu::fail("unreachable code reached"); }
// This thread's landed copies become visible to wgmma (after a barrier, to the other threads' too).
inline void fence_proxy_async() {
  simt_emu::Launch& l = simt_emu::launch();
  simt_emu::Fiber& f = simt_emu::fiber();
  for (size_t chunk : f.unfenced) {
    if (l.smem_unfenced[chunk] == f.thread + 1) l.smem_unfenced[chunk] = 0;
  }
  f.unfenced.clear();
}
inline void wgmma_fence() {}

// Closes this thread's open group of products (an empty one too, as the hardware does).
inline void wgmma_commit() {
  simt_emu::Fiber& f = simt_emu::fiber();
  auto& done = f.wgmma_committed;
  done.results.insert(done.results.end(), f.wgmma_open.results.begin(), f.wgmma_open.results.end());
  done.chunks.insert(done.chunks.end(), f.wgmma_open.chunks.begin(), f.wgmma_open.chunks.end());
  f.wgmma_open = simt_emu::WgmmaGroup{};
  ++f.wgmma_groups;
}

// The committed products land in the accumulators only here (in issue order): a read of D before the
// wait sees its old value.
inline void wgmma_wait() {
  simt_emu::Launch& l = simt_emu::launch();
  simt_emu::Fiber& f = simt_emu::fiber();
  if (!f.wgmma_open.empty()) simt_emu::fail("wgmma_wait with products issued after the last wgmma_commit");
  for (const auto& r : f.wgmma_committed.results) *r.first = r.second;
  for (size_t chunk : f.wgmma_committed.chunks) --l.smem_wgmma_readers[chunk];
  f.wgmma_committed = simt_emu::WgmmaGroup{};
}

template <typename R, int kRows>
inline void wgmma_pin(R (&)[kRows][4]) {}

namespace detail {

// The 16-bit element at shared byte `linear` of a 128-byte-swizzled operand: the hardware XORs bits
// [4, 7) of the address (the 16-byte chunk within a 128-byte row) with bits [7, 10) (the row within
// a group of 8 rows).
inline uint16_t swizzled128_element(uint32_t linear) {
  const simt_emu::Launch& l = simt_emu::launch();
  const uint32_t at = linear ^ (((linear >> 7) & 7u) << 4);
  if (at < l.smem_base) simt_emu::fail("wgmma: shared-memory access outside the block's allocation");
  const unsigned char* p = l.smem.data() + (at - l.smem_base);
  simt_emu::check_shared(p, 2, "wgmma");
  const size_t chunk = (at - l.smem_base) / 16;
  if (l.smem_unfenced[chunk] != 0) {
    simt_emu::fail("wgmma reads shared memory that a cp.async wrote without fence_proxy_async since");
  }
  simt_emu::note_wgmma_read(chunk);
  uint16_t e;
  std::memcpy(&e, p, 2);
  return e;
}

}  // namespace detail

namespace detail {

// One warpgroup product (wgmma_rs, wgmma_ss): the threads post their A fragments (when A is in
// registers) and the descriptors, then each computes its own entries of D from A and from B read
// through B's descriptor, and keeps them pending until wgmma_wait.
struct Operand {
  uint32_t start, lbo, sbo;
};

inline Operand decode_desc(uint64_t desc) {
  if ((desc >> 62) != 1u || ((desc >> 49) & 7u) != 0u) {
    simt_emu::fail("emulated wgmma: only 128-byte swizzled operands with base offset 0");
  }
  return Operand{static_cast<uint32_t>(desc & 0x3FFFu) << 4, static_cast<uint32_t>((desc >> 16) & 0x3FFFu) << 4,
                 static_cast<uint32_t>((desc >> 32) & 0x3FFFu) << 4};
}

// K-major: element k of row (or column) n at start + (n / 8) SBO + (n % 8) 128 + 2 k.
inline uint32_t k_major(const Operand& o, int n, int k) { return o.start + (n / 8) * o.sbo + (n % 8) * 128 + k * 2; }
// MN-major: element n of row k at start + (n / 64) LBO + (k / 8) SBO + (k % 8) 128 + 2 (n % 64).
inline uint32_t mn_major(const Operand& o, int k, int n) {
  return o.start + (n / 64) * o.lbo + (k / 8) * o.sbo + (k % 8) * 128 + (n % 64) * 2;
}

template <typename T, int N, bool kTransB, bool kRegsA>
inline void wgmma(float (&d)[N / 8][4], const uint32_t* a, uint64_t desc_a, uint64_t desc_b) {
  simt_emu::Launch& l = simt_emu::launch();
  if (l.threads % 128 != 0) simt_emu::fail("wgmma needs whole warpgroups of 128 threads");
  const int thread = simt_emu::fiber().thread;
  const int group = thread / 128, me = thread % 128;
  simt_emu::Barrier& barrier = l.group_barriers[group];
  const uint64_t gen = barrier.generation;
  uint32_t* mine = l.group_mailboxes[group].words[gen & 1][me];
  for (int i = 0; i < 4; ++i) mine[i] = kRegsA ? a[i] : 0u;
  if (!kRegsA) {  // (A's descriptor in place of its fragment)
    mine[0] = static_cast<uint32_t>(desc_a);
    mine[1] = static_cast<uint32_t>(desc_a >> 32);
  }
  mine[4] = static_cast<uint32_t>(desc_b);
  mine[5] = static_cast<uint32_t>(desc_b >> 32);
  simt_emu::arrive(barrier, 128, group * 128);
  const auto& w = l.group_mailboxes[group].words[gen & 1];
  for (int t = 0; t < 128; ++t) {
    const bool same_a = kRegsA || (w[t][0] == mine[0] && w[t][1] == mine[1]);
    if (!same_a || w[t][4] != mine[4] || w[t][5] != mine[5]) {
      simt_emu::fail("wgmma: the warpgroup's threads gave different descriptors");
    }
  }
  const Operand ob = decode_desc(desc_b);
  const Operand oa = kRegsA ? Operand{0, 0, 0} : decode_desc(desc_a);
  auto A = [&](int row, int k) {
    if (!kRegsA) return element<T>(swizzled128_element(k_major(oa, row, k)), 0);
    // warp row / 16 holds rows 16 (row / 16) + [0, 16) as an mma A fragment
    const int owner = 32 * (row / 16) + (row % 8) * 4 + (k % 8) / 2;
    return element<T>(w[owner][(row % 16) / 8 + 2 * (k / 8)], k % 2);
  };
  auto B = [&](int k, int n) {
    return element<T>(swizzled128_element(kTransB ? mn_major(ob, k, n) : k_major(ob, n, k)), 0);
  };
  simt_emu::Fiber& f = simt_emu::fiber();
  auto& open = f.wgmma_open.results;
  const int warp = me / 32, g = (me % 32) / 4, t = me % 4;
  for (int j = 0; j < N / 8; ++j) {
    for (int e = 0; e < 4; ++e) {
      const int row = 16 * warp + g + 8 * (e >> 1), col = 8 * j + 2 * t + (e & 1);
      float* dst = &d[j][e];
      auto same = [&](const auto& r) { return r.first == dst; };
      // (a product chained on an accumulator that a committed product still writes adds to it)
      float acc = *dst;
      auto it = std::find_if(open.begin(), open.end(), same);
      const auto& done = f.wgmma_committed.results;
      if (it != open.end()) {
        acc = it->second;
      } else if (auto older = std::find_if(done.rbegin(), done.rend(), same); older != done.rend()) {
        acc = older->second;
      }
      for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
      if (it != open.end()) {
        it->second = acc;
      } else {
        open.emplace_back(dst, acc);
      }
    }
  }
}

}  // namespace detail

// wgmma.mma_async m64nNk16 (simt.cuh), A from registers: B read through its descriptor as the PTX
// ISA's canonical 128-byte-swizzled layouts (detail::k_major, detail::mn_major). Chained products on
// the same accumulator before a wait add up, as on the GPU.
template <typename T, int N, bool kTransB>
inline void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b) {
  detail::wgmma<T, N, kTransB, true>(d, a, 0, desc_b);
}

// A in shared memory too (K-major): row m of A is the warpgroup's row m.
template <typename T, int N>
inline void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b) {
  detail::wgmma<T, N, false, false>(d, nullptr, desc_a, desc_b);
}

inline float fast_exp2(float x) { return std::exp2(x); }

// A plain store: like a landed cp.async, not visible to wgmma before the storing thread's
// fence_proxy_async.
inline void store_shared_16(void* dst, uint4 v) {
  simt_emu::check_shared(dst, 16, "st.shared");
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0) simt_emu::fail("st.shared.v4: address not 16-byte aligned");
  unsigned char data[16];
  std::memcpy(data, &v, 16);
  simt_emu::land_copy(static_cast<unsigned char*>(dst), data);
}

inline void store_u32(void* dst, uint32_t v) {
  if (reinterpret_cast<uintptr_t>(dst) % 4 != 0) simt_emu::fail("store_u32: address not 4-byte aligned");
  std::memcpy(dst, &v, 4);
}

inline uint32_t load_u32(const void* src) {
  if (reinterpret_cast<uintptr_t>(src) % 4 != 0) simt_emu::fail("load_u32: address not 4-byte aligned");
  uint32_t v;
  std::memcpy(&v, src, 4);
  return v;
}

}  // namespace simt
}  // namespace led_kernels

// The kernel's shared memory must fit the largest GPU's (227 KiB on sm_90).
#define LED_SET_SMEM_LIMIT(kernel, smem_bytes)                                                          \
  do {                                                                                                 \
    (void)(kernel);                                                                                    \
    if ((smem_bytes) > 227 * 1024) ::led_kernels::simt_emu::fail("more shared memory than any GPU has"); \
  } while (0)

// kernel<<<blocks, threads, smem, stream>>>(args...) of the CUDA build; grid is 1-D here.
#define LED_LAUNCH(kernel, grid, threads, smem_bytes, stream, ...) \
  ((void)(stream), ::led_kernels::simt_emu::run(kernel, static_cast<int64_t>(grid), (threads), (smem_bytes), __VA_ARGS__))
