// Entry points of the CPU attention kernels: argument checks and the choice of instruction set.
//
// The kernels are compiled three times (attention_isa_*.cpp, each with its own target flags) so
// that the module stays portable (no -march=native) and still uses the widest SIMD the machine
// has: AVX-512F, else AVX2 + FMA, else 16-byte vectors. The CPU is queried at run time with
// __builtin_cpu_supports (which also checks that the OS saves the wide registers).
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "led_kernels/cpu_attention.h"

namespace led_kernels {

namespace isa_generic {
void attention_fwd(const AttnFwdParams& p, int num_threads);
void attention_bwd(const AttnBwdParams& p, int num_threads);
}  // namespace isa_generic
namespace isa_avx2 {
void attention_fwd(const AttnFwdParams& p, int num_threads);
void attention_bwd(const AttnBwdParams& p, int num_threads);
}  // namespace isa_avx2
namespace isa_avx512 {
void attention_fwd(const AttnFwdParams& p, int num_threads);
void attention_bwd(const AttnBwdParams& p, int num_threads);
}  // namespace isa_avx512
bool isa_avx2_compiled();
bool isa_avx512_compiled();

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: return "generic";
  }
  return "generic";
}

bool isa_runs_here(Isa isa) {
  switch (isa) {
    case Isa::kGeneric: return true;
    case Isa::kAvx2:
#if defined(__x86_64__) || defined(__i386__)
      return isa_avx2_compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return false;
#endif
    case Isa::kAvx512:
#if defined(__x86_64__) || defined(__i386__)
      return isa_avx512_compiled() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma");
#else
      return false;
#endif
  }
  return false;
}

// The best ISA, or the one LED_KERNELS_CPU_ISA names (read on every call, so tests can switch).
Isa choose_isa() {
  const char* env = std::getenv("LED_KERNELS_CPU_ISA");
  if (env != nullptr && *env != '\0' && std::string(env) != "auto") {
    const std::string want(env);
    for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
      if (want == isa_name(isa)) {
        if (!isa_runs_here(isa)) {
          throw std::invalid_argument("LED_KERNELS_CPU_ISA=" + want +
                                      ": this build or CPU cannot run it (see led_kernels._C.cpu_attention_isas())");
        }
        return isa;
      }
    }
    throw std::invalid_argument("LED_KERNELS_CPU_ISA=" + want + ": expected auto, avx512, avx2 or generic");
  }
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (isa_runs_here(isa)) return isa;
  }
  return Isa::kGeneric;
}

template <typename P>
void check_common(const P& p, const char* who) {
  const std::string w(who);
  if (p.kind != AttnKind::kBanded && p.kind != AttnKind::kGlobalRows) {
    throw std::invalid_argument(w + ": unknown attention kind");
  }
  if (p.B < 0 || p.M < 0 || p.N < 0 || p.H < 0 || p.D < 0 || p.G < 0) {
    throw std::invalid_argument(w + ": sizes must be non-negative");
  }
  if (p.window < 0) throw std::invalid_argument(w + ": window must be >= 0");
  if (p.layer) throw std::invalid_argument(w + ": the layer mode is implemented by the cuda kernels only");
  if (p.kind == AttnKind::kBanded && p.M != p.N) {
    throw std::invalid_argument(w + ": banded attention has as many rows as keys (M == N)");
  }
  // tile indices and gathered positions are int32 inside the kernels
  if (p.N >= (int64_t{1} << 31) || p.M >= (int64_t{1} << 31) || p.G >= (int64_t{1} << 31) ||
      p.D > (int64_t{1} << 16)) {
    throw std::invalid_argument(w + ": sizes too large (N, G < 2^31, D <= 65536)");
  }
  if (p.G > 0 && p.global_idx == nullptr && p.kind == AttnKind::kGlobalRows) {
    throw std::invalid_argument(w + ": global_idx is required for the global rows");
  }
}

bool has_work(int64_t B, int64_t M, int64_t H, int64_t D) { return B > 0 && M > 0 && H > 0 && D > 0; }

}  // namespace

void attention_fwd_cpu(const AttnFwdParams& p, int num_threads) {
  check_common(p, "attention_fwd_cpu");
  if (!has_work(p.B, p.M, p.H, p.D)) return;
  if (p.q == nullptr || p.out == nullptr || p.lse == nullptr || (p.N > 0 && (p.k == nullptr || p.v == nullptr)) ||
      (p.N > 0 && p.key_flags == nullptr)) {
    throw std::invalid_argument("attention_fwd_cpu: null pointer");
  }
  switch (choose_isa()) {
    case Isa::kAvx512: isa_avx512::attention_fwd(p, num_threads); break;
    case Isa::kAvx2: isa_avx2::attention_fwd(p, num_threads); break;
    case Isa::kGeneric: isa_generic::attention_fwd(p, num_threads); break;
  }
}

void attention_bwd_cpu(const AttnBwdParams& p, int num_threads) {
  check_common(p, "attention_bwd_cpu");
  if (p.B <= 0 || p.H <= 0 || p.D <= 0 || (p.M <= 0 && p.N <= 0)) return;
  if ((p.M > 0 && (p.q == nullptr || p.dout == nullptr || p.lse == nullptr || p.dq == nullptr)) ||
      (p.N > 0 && (p.k == nullptr || p.v == nullptr || p.dk == nullptr || p.dv == nullptr ||
                   p.key_flags == nullptr))) {
    throw std::invalid_argument("attention_bwd_cpu: null pointer");
  }
  switch (choose_isa()) {
    case Isa::kAvx512: isa_avx512::attention_bwd(p, num_threads); break;
    case Isa::kAvx2: isa_avx2::attention_bwd(p, num_threads); break;
    case Isa::kGeneric: isa_generic::attention_bwd(p, num_threads); break;
  }
}

const char* cpu_attention_isa() { return isa_name(choose_isa()); }

void* cpu_workspace_alloc(size_t bytes) { return ::operator new(bytes, std::align_val_t{64}); }

void cpu_workspace_free(void* p) noexcept {
  if (p != nullptr) ::operator delete(p, std::align_val_t{64});
}

std::vector<std::string> cpu_attention_isas() {
  std::vector<std::string> out;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    if (isa_runs_here(isa)) out.emplace_back(isa_name(isa));
  }
  return out;
}

}  // namespace led_kernels
