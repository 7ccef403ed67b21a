// pybind11 bindings of led_kernels._C.
//
// The module links no libtorch (DESIGN section 5): every kernel takes raw device/host pointers
// (Python ints from tensor.data_ptr()), sizes, element strides, a dtype code and, for CUDA, the
// stream handle (torch.cuda.current_stream(device).cuda_stream). Python (led_kernels/ops/...)
// owns allocation, argument checks and stream/device selection; this file only unpacks
// arguments, re-checks what would otherwise corrupt memory, and releases the GIL around kernels.
//
// Errors: std::invalid_argument -> ValueError, std::runtime_error (CUDA errors) -> RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "led_kernels/build_info.h"
#include "led_kernels/common.h"
#include "led_kernels/cpu_attention.h"
#include "led_kernels/cuda_attention.h"

namespace py = pybind11;
using led_kernels::BNHStrides;
using led_kernels::DeltaParams;

namespace {

using Strides3 = std::array<int64_t, 3>;

BNHStrides to_strides(const Strides3& s) { return BNHStrides{s[0], s[1], s[2]}; }

[[noreturn]] void no_cuda() {
  throw std::runtime_error(
      "led_kernels._C was built without CUDA (nvcc not found at build time, or "
      "LED_KERNELS_BUILD_CUDA=OFF); reinstall from the source tree with nvcc on PATH "
      "(LED_KERNELS_BUILD_CUDA=ON pip install .) to get the CUDA kernels");
}

DeltaParams make_delta_params(std::uintptr_t o_ptr, std::uintptr_t do_ptr, std::uintptr_t delta_ptr, int64_t B,
                              int64_t N, int64_t H, int64_t D, const Strides3& o_strides,
                              const Strides3& do_strides, int dtype_code) {
  DeltaParams p;
  p.out = reinterpret_cast<const void*>(o_ptr);
  p.grad_out = reinterpret_cast<const void*>(do_ptr);
  p.delta = reinterpret_cast<float*>(delta_ptr);
  p.B = B;
  p.N = N;
  p.H = H;
  p.D = D;
  p.o_strides = to_strides(o_strides);
  p.do_strides = to_strides(do_strides);
  p.dtype = led_kernels::dtype_from_code(dtype_code);
  return p;
}

void delta_cpu_binding(std::uintptr_t o_ptr, std::uintptr_t do_ptr, std::uintptr_t delta_ptr, int64_t B, int64_t N,
                       int64_t H, int64_t D, const Strides3& o_strides, const Strides3& do_strides,
                       int dtype_code, int num_threads) {
  const DeltaParams p = make_delta_params(o_ptr, do_ptr, delta_ptr, B, N, H, D, o_strides, do_strides, dtype_code);
  py::gil_scoped_release no_gil;  // the kernel touches no Python object
  led_kernels::delta_cpu(p, num_threads);
}

void delta_cuda_binding(std::uintptr_t o_ptr, std::uintptr_t do_ptr, std::uintptr_t delta_ptr, int64_t B, int64_t N,
                        int64_t H, int64_t D, const Strides3& o_strides, const Strides3& do_strides,
                        int dtype_code, std::uintptr_t stream) {
#ifdef LED_KERNELS_WITH_CUDA
  const DeltaParams p = make_delta_params(o_ptr, do_ptr, delta_ptr, B, N, H, D, o_strides, do_strides, dtype_code);
  py::gil_scoped_release no_gil;
  led_kernels::delta_cuda(p, reinterpret_cast<void*>(stream));
#else
  (void)o_ptr, (void)do_ptr, (void)delta_ptr, (void)B, (void)N, (void)H, (void)D, (void)o_strides,
      (void)do_strides, (void)dtype_code, (void)stream;
  no_cuda();
#endif
}

// The kernels' argument structs from the bindings' Python ints (pointers) and stride triples; shared
// by the CPU and CUDA bindings (led_kernels/cpu_attention.h builds them).
led_kernels::AttnFwdParams make_fwd_params(int kind, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                                           std::uintptr_t out_ptr, std::uintptr_t lse_ptr, std::uintptr_t flags_ptr,
                                           std::uintptr_t gidx_ptr, int64_t B, int64_t M, int64_t N, int64_t H,
                                           int64_t D, int64_t G, int64_t window, double scale,
                                           const Strides3& q_strides, const Strides3& k_strides,
                                           const Strides3& v_strides, const Strides3& o_strides, int dtype_code) {
  return led_kernels::attn_fwd_params(kind, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, flags_ptr, gidx_ptr, B, M, N, H, D,
                                      G, window, scale,
                                      {to_strides(q_strides), to_strides(k_strides), to_strides(v_strides),
                                       to_strides(o_strides)},
                                      dtype_code);
}

led_kernels::AttnBwdParams make_bwd_params(int kind, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                                           std::uintptr_t do_ptr, std::uintptr_t lse_ptr, std::uintptr_t dq_ptr,
                                           std::uintptr_t dk_ptr, std::uintptr_t dv_ptr, std::uintptr_t flags_ptr,
                                           std::uintptr_t gidx_ptr, int64_t B, int64_t M, int64_t N, int64_t H,
                                           int64_t D, int64_t G, int64_t window, double scale,
                                           const Strides3& q_strides, const Strides3& k_strides,
                                           const Strides3& v_strides, const Strides3& do_strides,
                                           const Strides3& dq_strides, const Strides3& dk_strides,
                                           const Strides3& dv_strides, int dtype_code) {
  return led_kernels::attn_bwd_params(kind, q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr, flags_ptr,
                                      gidx_ptr, B, M, N, H, D, G, window, scale,
                                      {to_strides(q_strides), to_strides(k_strides), to_strides(v_strides),
                                       to_strides(do_strides), to_strides(dq_strides), to_strides(dk_strides),
                                       to_strides(dv_strides)},
                                      dtype_code);
}

void attention_fwd_cpu_binding(int kind, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                               std::uintptr_t out_ptr, std::uintptr_t lse_ptr, std::uintptr_t flags_ptr,
                               std::uintptr_t gidx_ptr, int64_t B, int64_t M, int64_t N, int64_t H, int64_t D,
                               int64_t G, int64_t window, double scale, const Strides3& q_strides,
                               const Strides3& k_strides, const Strides3& v_strides, const Strides3& o_strides,
                               int dtype_code, int num_threads) {
  const led_kernels::AttnFwdParams p =
      make_fwd_params(kind, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, flags_ptr, gidx_ptr, B, M, N, H, D, G, window,
                      scale, q_strides, k_strides, v_strides, o_strides, dtype_code);
  py::gil_scoped_release no_gil;
  led_kernels::attention_fwd_cpu(p, num_threads);
}

void attention_bwd_cpu_binding(int kind, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                               std::uintptr_t do_ptr, std::uintptr_t lse_ptr, std::uintptr_t dq_ptr, std::uintptr_t dk_ptr, std::uintptr_t dv_ptr,
                               std::uintptr_t flags_ptr, std::uintptr_t gidx_ptr, int64_t B, int64_t M, int64_t N,
                               int64_t H, int64_t D, int64_t G, int64_t window, double scale,
                               const Strides3& q_strides, const Strides3& k_strides, const Strides3& v_strides,
                               const Strides3& do_strides, const Strides3& dq_strides, const Strides3& dk_strides,
                               const Strides3& dv_strides, int dtype_code, int num_threads) {
  const led_kernels::AttnBwdParams p = make_bwd_params(
      kind, q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr, flags_ptr, gidx_ptr, B, M, N, H, D, G, window,
      scale, q_strides, k_strides, v_strides, do_strides, dq_strides, dk_strides, dv_strides, dtype_code);
  py::gil_scoped_release no_gil;
  led_kernels::attention_bwd_cpu(p, num_threads);
}


led_kernels::AttnKind attn_kind(int kind) {
  if (kind != 0 && kind != 1) throw std::invalid_argument("led_kernels: attention kind must be 0 (banded) or 1 (global rows)");
  return static_cast<led_kernels::AttnKind>(kind);
}

uint64_t attention_cuda_workspace_bytes_binding(bool backward, int kind, int64_t B, int64_t H, int64_t G, int64_t N,
                                                int64_t D) {
#ifdef LED_KERNELS_WITH_CUDA
  const auto k = attn_kind(kind);
  return backward ? led_kernels::attention_bwd_cuda_workspace_bytes(k, B, H, G, N, D)
                  : led_kernels::attention_fwd_cuda_workspace_bytes(k, B, H, G, N, D);
#else
  (void)backward, (void)kind, (void)B, (void)H, (void)G, (void)N, (void)D;
  no_cuda();
#endif
}

void attention_fwd_cuda_binding(int kind, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                                std::uintptr_t out_ptr, std::uintptr_t lse_ptr, std::uintptr_t flags_ptr,
                                std::uintptr_t gidx_ptr, int64_t B, int64_t M, int64_t N, int64_t H, int64_t D,
                                int64_t G, int64_t window, double scale, const Strides3& q_strides,
                                const Strides3& k_strides, const Strides3& v_strides, const Strides3& o_strides,
                                int dtype_code, std::uintptr_t workspace_ptr, uint64_t workspace_bytes,
                                std::uintptr_t stream, bool layer) {
#ifdef LED_KERNELS_WITH_CUDA
  led_kernels::AttnFwdParams p =
      make_fwd_params(kind, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, flags_ptr, gidx_ptr, B, M, N, H, D, G, window,
                      scale, q_strides, k_strides, v_strides, o_strides, dtype_code);
  p.layer = layer;
  py::gil_scoped_release no_gil;
  led_kernels::attention_fwd_cuda(p, reinterpret_cast<float*>(workspace_ptr), workspace_bytes,
                                  reinterpret_cast<void*>(stream));
#else
  (void)kind, (void)q_ptr, (void)k_ptr, (void)v_ptr, (void)out_ptr, (void)lse_ptr, (void)flags_ptr, (void)gidx_ptr,
      (void)B, (void)M, (void)N, (void)H, (void)D, (void)G, (void)window, (void)scale, (void)q_strides,
      (void)k_strides, (void)v_strides, (void)o_strides, (void)dtype_code, (void)workspace_ptr,
      (void)workspace_bytes, (void)stream, (void)layer;
  no_cuda();
#endif
}

void attention_layer_fwd_cuda_binding(std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                                      std::uintptr_t qg_ptr, std::uintptr_t kg_ptr, std::uintptr_t vg_ptr,
                                      std::uintptr_t out_ptr, std::uintptr_t lse_ptr, std::uintptr_t glse_ptr,
                                      std::uintptr_t flags_ptr, std::uintptr_t gidx_ptr, int64_t B, int64_t N, int64_t H,
                                      int64_t D, int64_t G, int64_t window, double scale, const Strides3& q_strides,
                                      const Strides3& k_strides, const Strides3& v_strides, const Strides3& qg_strides,
                                      const Strides3& kg_strides, const Strides3& vg_strides, const Strides3& o_strides,
                                      int dtype_code, std::uintptr_t workspace_ptr, uint64_t workspace_bytes,
                                      std::uintptr_t stream) {
#ifdef LED_KERNELS_WITH_CUDA
  const led_kernels::AttnFwdParams band =
      make_fwd_params(0, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, flags_ptr, gidx_ptr, B, N, N, H, D, G, window, scale,
                      q_strides, k_strides, v_strides, o_strides, dtype_code);
  led_kernels::AttnFwdParams glob =
      make_fwd_params(1, qg_ptr, kg_ptr, vg_ptr, out_ptr, glse_ptr, flags_ptr, gidx_ptr, B, G, N, H, D, G, 0, scale,
                      qg_strides, kg_strides, vg_strides, o_strides, dtype_code);
  glob.layer = true;
  py::gil_scoped_release no_gil;
  led_kernels::attention_layer_fwd_cuda(band, glob, reinterpret_cast<float*>(workspace_ptr), workspace_bytes,
                                        reinterpret_cast<void*>(stream));
#else
  (void)q_ptr, (void)k_ptr, (void)v_ptr, (void)qg_ptr, (void)kg_ptr, (void)vg_ptr, (void)out_ptr, (void)lse_ptr,
      (void)glse_ptr, (void)flags_ptr, (void)gidx_ptr, (void)B, (void)N, (void)H, (void)D, (void)G, (void)window,
      (void)scale, (void)q_strides, (void)k_strides, (void)v_strides, (void)qg_strides, (void)kg_strides,
      (void)vg_strides, (void)o_strides, (void)dtype_code, (void)workspace_ptr, (void)workspace_bytes, (void)stream;
  no_cuda();
#endif
}

void attention_bwd_cuda_binding(int kind, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
                                std::uintptr_t out_ptr, std::uintptr_t do_ptr, std::uintptr_t lse_ptr,
                                std::uintptr_t dq_ptr, std::uintptr_t dk_ptr, std::uintptr_t dv_ptr,
                                std::uintptr_t flags_ptr, std::uintptr_t gidx_ptr, int64_t B, int64_t M, int64_t N,
                                int64_t H, int64_t D, int64_t G, int64_t window, double scale,
                                const Strides3& q_strides, const Strides3& k_strides, const Strides3& v_strides,
                                const Strides3& o_strides, const Strides3& do_strides, const Strides3& dq_strides,
                                const Strides3& dk_strides, const Strides3& dv_strides, int dtype_code,
                                std::uintptr_t workspace_ptr, uint64_t workspace_bytes, std::uintptr_t stream,
                                bool layer, bool accumulate_kv) {
#ifdef LED_KERNELS_WITH_CUDA
  led_kernels::AttnBwdParams p = make_bwd_params(
      kind, q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr, flags_ptr, gidx_ptr, B, M, N, H, D, G, window,
      scale, q_strides, k_strides, v_strides, do_strides, dq_strides, dk_strides, dv_strides, dtype_code);
  p.layer = layer;
  p.accumulate_kv = accumulate_kv;
  py::gil_scoped_release no_gil;
  led_kernels::attention_bwd_cuda(p, reinterpret_cast<const void*>(out_ptr), to_strides(o_strides),
                                  reinterpret_cast<float*>(workspace_ptr), workspace_bytes,
                                  reinterpret_cast<void*>(stream));
#else
  (void)kind, (void)q_ptr, (void)k_ptr, (void)v_ptr, (void)out_ptr, (void)do_ptr, (void)lse_ptr, (void)dq_ptr,
      (void)dk_ptr, (void)dv_ptr, (void)flags_ptr, (void)gidx_ptr, (void)B, (void)M, (void)N, (void)H, (void)D,
      (void)G, (void)window, (void)scale, (void)q_strides, (void)k_strides, (void)v_strides, (void)o_strides,
      (void)do_strides, (void)dq_strides, (void)dk_strides, (void)dv_strides, (void)dtype_code,
      (void)workspace_ptr, (void)workspace_bytes, (void)stream, (void)layer, (void)accumulate_kv;
  no_cuda();
#endif
}

void attention_layer_bwd_cuda_binding(
    std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr, std::uintptr_t qg_ptr, std::uintptr_t kg_ptr,
    std::uintptr_t vg_ptr, std::uintptr_t out_ptr, std::uintptr_t do_ptr, std::uintptr_t lse_ptr, std::uintptr_t glse_ptr,
    std::uintptr_t dq_ptr, std::uintptr_t dk_ptr, std::uintptr_t dv_ptr, std::uintptr_t dqg_ptr, std::uintptr_t dkg_ptr,
    std::uintptr_t dvg_ptr, std::uintptr_t flags_ptr, std::uintptr_t gidx_ptr, int64_t B, int64_t N, int64_t H,
    int64_t D, int64_t G, int64_t window, double scale, const Strides3& q_strides, const Strides3& k_strides,
    const Strides3& v_strides, const Strides3& qg_strides, const Strides3& kg_strides, const Strides3& vg_strides,
    const Strides3& o_strides, const Strides3& do_strides, const Strides3& dq_strides, const Strides3& dk_strides,
    const Strides3& dv_strides, const Strides3& dqg_strides, const Strides3& dkg_strides,
    const Strides3& dvg_strides, int dtype_code, std::uintptr_t workspace_ptr, uint64_t workspace_bytes,
    std::uintptr_t glob_workspace_ptr, uint64_t glob_workspace_bytes, std::uintptr_t stream, bool accumulate_kv) {
#ifdef LED_KERNELS_WITH_CUDA
  led_kernels::AttnBwdParams band = make_bwd_params(
      0, q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr, flags_ptr, gidx_ptr, B, N, N, H, D, G, window,
      scale, q_strides, k_strides, v_strides, do_strides, dq_strides, dk_strides, dv_strides, dtype_code);
  band.layer = true;
  led_kernels::AttnBwdParams glob = make_bwd_params(
      1, qg_ptr, kg_ptr, vg_ptr, do_ptr, glse_ptr, dqg_ptr, dkg_ptr, dvg_ptr, flags_ptr, gidx_ptr, B, G, N, H, D, G, 0,
      scale, qg_strides, kg_strides, vg_strides, do_strides, dqg_strides, dkg_strides, dvg_strides, dtype_code);
  glob.layer = true;
  glob.accumulate_kv = accumulate_kv;
  py::gil_scoped_release no_gil;
  led_kernels::attention_layer_bwd_cuda(band, glob, reinterpret_cast<const void*>(out_ptr), to_strides(o_strides),
                                        reinterpret_cast<float*>(workspace_ptr), workspace_bytes,
                                        reinterpret_cast<float*>(glob_workspace_ptr), glob_workspace_bytes,
                                        reinterpret_cast<void*>(stream));
#else
  (void)q_ptr, (void)k_ptr, (void)v_ptr, (void)qg_ptr, (void)kg_ptr, (void)vg_ptr, (void)out_ptr, (void)do_ptr,
      (void)lse_ptr, (void)glse_ptr, (void)dq_ptr, (void)dk_ptr, (void)dv_ptr, (void)dqg_ptr, (void)dkg_ptr,
      (void)dvg_ptr, (void)flags_ptr, (void)gidx_ptr, (void)B, (void)N, (void)H, (void)D, (void)G, (void)window,
      (void)scale, (void)q_strides, (void)k_strides, (void)v_strides, (void)qg_strides, (void)kg_strides,
      (void)vg_strides, (void)o_strides, (void)do_strides, (void)dq_strides, (void)dk_strides, (void)dv_strides,
      (void)dqg_strides, (void)dkg_strides, (void)dvg_strides, (void)dtype_code, (void)workspace_ptr,
      (void)workspace_bytes, (void)glob_workspace_ptr, (void)glob_workspace_bytes, (void)stream,
      (void)accumulate_kv;
  no_cuda();
#endif
}

void key_flags_cuda_binding(std::uintptr_t pad_ptr, int64_t pad_sb, int64_t pad_sn, std::uintptr_t gidx_ptr,
                            std::uintptr_t flags_ptr, int64_t B, int64_t N, int64_t G, std::uintptr_t stream) {
#ifdef LED_KERNELS_WITH_CUDA
  py::gil_scoped_release no_gil;
  led_kernels::key_flags_cuda(reinterpret_cast<const uint8_t*>(pad_ptr), pad_sb, pad_sn,
                              reinterpret_cast<const int32_t*>(gidx_ptr), reinterpret_cast<int8_t*>(flags_ptr), B,
                              N, G, reinterpret_cast<void*>(stream));
#else
  (void)pad_ptr, (void)pad_sb, (void)pad_sn, (void)gidx_ptr, (void)flags_ptr, (void)B, (void)N, (void)G,
      (void)stream;
  no_cuda();
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "led_kernels compiled kernels (CPU, and CUDA when built with nvcc). Links no libtorch: "
      "functions take raw pointers, sizes, element strides, dtype codes and CUDA stream handles. "
      "Use the wrappers in led_kernels.ops rather than calling these directly.";

  m.def(
      "has_cuda",
      []() {
#ifdef LED_KERNELS_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "Whether this build contains the CUDA kernels.");
  m.def(
      "cuda_archs", []() { return std::string(LED_KERNELS_BUILD_CUDA_ARCHS); },
      "CMAKE_CUDA_ARCHITECTURES of this build (e.g. '80;90'), '' without CUDA.");
  m.def(
      "cuda_device_count",
      []() {
#ifdef LED_KERNELS_WITH_CUDA
        return led_kernels::cuda_device_count_noexcept();
#else
        return 0;
#endif
      },
      "cudaGetDeviceCount as seen by the extension's (static) CUDA runtime; 0 when there is no "
      "CUDA build, driver or device. Never raises.");
  m.def(
      "cuda_set_device",
      [](int device) {
#ifdef LED_KERNELS_WITH_CUDA
        led_kernels::cuda_set_device(device);
#else
        (void)device;
        no_cuda();
#endif
      },
      py::arg("device"),
      "Makes `device` current in the extension's own CUDA runtime (a no-op when it already is); raises "
      "RuntimeError with CUDA's message if it cannot.");
  m.def(
      "cuda_status",
      []() -> std::string {
#ifdef LED_KERNELS_WITH_CUDA
        return led_kernels::cuda_status_string();
#else
        return "built without CUDA";
#endif
      },
      "'no error', or why cudaGetDeviceCount failed (e.g. driver too old for the built runtime).");
  m.def(
      "build_info",
      []() {
        py::dict d;
        d["cuda"] = py::bool_(
#ifdef LED_KERNELS_WITH_CUDA
            true
#else
            false
#endif
        );
        d["cuda_mode"] = std::string(LED_KERNELS_BUILD_CUDA_MODE);  // LED_KERNELS_BUILD_CUDA at build time
        d["cuda_archs"] = std::string(LED_KERNELS_BUILD_CUDA_ARCHS);
        d["cuda_compiler_version"] = std::string(LED_KERNELS_BUILD_CUDA_COMPILER_VERSION);
#ifdef LED_KERNELS_WITH_CUDA
        d["cuda_runtime_version"] = led_kernels::cuda_runtime_version();
        d["cuda_driver_version"] = led_kernels::cuda_driver_version();
#else
        d["cuda_runtime_version"] = 0;
        d["cuda_driver_version"] = 0;
#endif
        d["cxx_compiler"] = std::string(LED_KERNELS_BUILD_CXX_COMPILER);
        d["openmp"] = led_kernels::cpu_has_openmp();
        return d;
      },
      "How this extension was built (CUDA archs and versions, compiler, OpenMP).");
  m.def(
      "dtype_codes",
      []() {
        py::dict d;
        for (auto dt : {led_kernels::DType::kFloat32, led_kernels::DType::kFloat16, led_kernels::DType::kBFloat16}) {
          d[led_kernels::dtype_name(dt)] = static_cast<int>(dt);
        }
        return d;
      },
      "Mapping dtype name ('float32', 'float16', 'bfloat16') -> the dtype_code the kernels take.");

  m.def("delta_cpu", &delta_cpu_binding, py::arg("o_ptr"), py::arg("do_ptr"), py::arg("delta_ptr"), py::arg("B"),
        py::arg("N"), py::arg("H"), py::arg("D"), py::arg("o_strides"), py::arg("do_strides"), py::arg("dtype_code"),
        py::arg("num_threads") = 0,
        "delta[b,h,i] = sum_d float(dO[b,i,h,d]) * float(O[b,i,h,d]) on host memory.\n"
        "O, dO: (B,N,H,D) with element strides (b,n,h) and stride(D)=1; delta: (B,H,N) float32 "
        "contiguous. num_threads <= 0: OpenMP default.");
  m.def("delta_cuda", &delta_cuda_binding, py::arg("o_ptr"), py::arg("do_ptr"), py::arg("delta_ptr"), py::arg("B"),
        py::arg("N"), py::arg("H"), py::arg("D"), py::arg("o_strides"), py::arg("do_strides"), py::arg("dtype_code"),
        py::arg("stream"),
        "As delta_cpu on device memory, enqueued on `stream` (a cudaStream_t as int; 0 = legacy "
        "default stream). The caller makes the tensors' device current.");

  m.def("attention_fwd_cpu", &attention_fwd_cpu_binding, py::arg("kind"), py::arg("q_ptr"), py::arg("k_ptr"),
        py::arg("v_ptr"), py::arg("out_ptr"), py::arg("lse_ptr"), py::arg("flags_ptr"), py::arg("gidx_ptr"),
        py::arg("B"), py::arg("M"), py::arg("N"), py::arg("H"), py::arg("D"), py::arg("G"), py::arg("window"),
        py::arg("scale"), py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("o_strides"),
        py::arg("dtype_code"), py::arg("num_threads") = 0,
        "Forward of the CPU attention kernels on host memory (csrc/include/led_kernels/cpu_attention.h).\n"
        "kind 0: banded rows (kernel A, M == N), 1: global rows (kernel B, M == G). q/out: (B,M,H,D), "
        "k/v: (B,N,H,D), element strides (b,n,h), stride(D)=1; lse: (B,H,M) float32 contiguous; "
        "flags: int8 (B,N); gidx: int32 (B,G) or 0. num_threads <= 0: OpenMP default.");
  m.def("attention_bwd_cpu", &attention_bwd_cpu_binding, py::arg("kind"), py::arg("q_ptr"), py::arg("k_ptr"),
        py::arg("v_ptr"), py::arg("do_ptr"), py::arg("lse_ptr"), py::arg("dq_ptr"),
        py::arg("dk_ptr"), py::arg("dv_ptr"), py::arg("flags_ptr"), py::arg("gidx_ptr"), py::arg("B"),
        py::arg("M"), py::arg("N"), py::arg("H"), py::arg("D"), py::arg("G"), py::arg("window"), py::arg("scale"),
        py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("do_strides"),
        py::arg("dq_strides"), py::arg("dk_strides"), py::arg("dv_strides"), py::arg("dtype_code"),
        py::arg("num_threads") = 0,
        "Backward of attention_fwd_cpu: writes dq (B,M,H,D), dk and dv (B,N,H,D) completely; lse from the "
        "forward. Deterministic (bitwise, for any thread count).");
  m.def("attention_cuda_workspace_bytes", &attention_cuda_workspace_bytes_binding, py::arg("backward"),
        py::arg("kind"), py::arg("B"), py::arg("H"), py::arg("G"), py::arg("N"), py::arg("D"),
        "Bytes of device workspace attention_fwd_cuda (backward=False) or attention_bwd_cuda needs.");
  m.def("attention_fwd_cuda", &attention_fwd_cuda_binding, py::arg("kind"), py::arg("q_ptr"), py::arg("k_ptr"),
        py::arg("v_ptr"), py::arg("out_ptr"), py::arg("lse_ptr"), py::arg("flags_ptr"), py::arg("gidx_ptr"),
        py::arg("B"), py::arg("M"), py::arg("N"), py::arg("H"), py::arg("D"), py::arg("G"), py::arg("window"),
        py::arg("scale"), py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("o_strides"),
        py::arg("dtype_code"), py::arg("workspace_ptr"), py::arg("workspace_bytes"), py::arg("stream"),
        py::arg("layer") = false,
        "As attention_fwd_cpu on device memory (float16/bfloat16, head dims 16/32/64/128), enqueued on "
        "`stream` (a cudaStream_t as int), with `workspace_bytes` (attention_cuda_workspace_bytes) of "
        "float32 device workspace. The caller makes the tensors' device current. layer: the layer mode "
        "of cpu_attention.h (kind 1: q and out are (B,N,H,D), slot s at row gidx[b,s]).");
  m.def("attention_layer_fwd_cuda", &attention_layer_fwd_cuda_binding, py::arg("q_ptr"), py::arg("k_ptr"),
        py::arg("v_ptr"), py::arg("qg_ptr"), py::arg("kg_ptr"), py::arg("vg_ptr"), py::arg("out_ptr"),
        py::arg("lse_ptr"), py::arg("glse_ptr"), py::arg("flags_ptr"), py::arg("gidx_ptr"), py::arg("B"), py::arg("N"),
        py::arg("H"), py::arg("D"), py::arg("G"), py::arg("window"), py::arg("scale"), py::arg("q_strides"),
        py::arg("k_strides"), py::arg("v_strides"), py::arg("qg_strides"), py::arg("kg_strides"),
        py::arg("vg_strides"), py::arg("o_strides"), py::arg("dtype_code"), py::arg("workspace_ptr"),
        py::arg("workspace_bytes"), py::arg("stream"),
        "The layer's forward: attention_fwd_cuda of kernel A (q, k, v -> out (B,N,H,D), lse (B,H,2,N)), then "
        "of kernel B in the layer mode (q_global, k_global, v_global -> out's global rows, glse (B,H,2,G)), "
        "in one launch where the kernels can share it (LED_KERNELS_FUSED_FORWARD=0: two); the same bits "
        "either way. workspace: kernel B's (attention_cuda_workspace_bytes(False, 1, ...)).");
  m.def("attention_bwd_cuda", &attention_bwd_cuda_binding, py::arg("kind"), py::arg("q_ptr"), py::arg("k_ptr"),
        py::arg("v_ptr"), py::arg("out_ptr"), py::arg("do_ptr"), py::arg("lse_ptr"), py::arg("dq_ptr"),
        py::arg("dk_ptr"), py::arg("dv_ptr"), py::arg("flags_ptr"), py::arg("gidx_ptr"), py::arg("B"), py::arg("M"),
        py::arg("N"), py::arg("H"), py::arg("D"), py::arg("G"), py::arg("window"), py::arg("scale"),
        py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("o_strides"),
        py::arg("do_strides"), py::arg("dq_strides"), py::arg("dk_strides"), py::arg("dv_strides"),
        py::arg("dtype_code"), py::arg("workspace_ptr"), py::arg("workspace_bytes"), py::arg("stream"),
        py::arg("layer") = false, py::arg("accumulate_kv") = false,
        "Backward of attention_fwd_cuda: writes dq (B,M,H,D), dk and dv (B,N,H,D) completely; out and lse "
        "from the forward. Deterministic. layer: the layer mode of cpu_attention.h (kind 0: global rows "
        "dead; kind 1: q, out, dout, dq (B,N,H,D), only the valid slots' dq rows written, dk and dv added "
        "to with accumulate_kv).");
  m.def("attention_layer_bwd_cuda", &attention_layer_bwd_cuda_binding, py::arg("q_ptr"), py::arg("k_ptr"),
        py::arg("v_ptr"), py::arg("qg_ptr"), py::arg("kg_ptr"), py::arg("vg_ptr"), py::arg("out_ptr"),
        py::arg("do_ptr"), py::arg("lse_ptr"), py::arg("glse_ptr"), py::arg("dq_ptr"), py::arg("dk_ptr"),
        py::arg("dv_ptr"), py::arg("dqg_ptr"), py::arg("dkg_ptr"), py::arg("dvg_ptr"), py::arg("flags_ptr"),
        py::arg("gidx_ptr"), py::arg("B"), py::arg("N"), py::arg("H"), py::arg("D"), py::arg("G"), py::arg("window"),
        py::arg("scale"), py::arg("q_strides"), py::arg("k_strides"), py::arg("v_strides"), py::arg("qg_strides"),
        py::arg("kg_strides"), py::arg("vg_strides"), py::arg("o_strides"), py::arg("do_strides"),
        py::arg("dq_strides"), py::arg("dk_strides"), py::arg("dv_strides"), py::arg("dqg_strides"),
        py::arg("dkg_strides"), py::arg("dvg_strides"), py::arg("dtype_code"), py::arg("workspace_ptr"),
        py::arg("workspace_bytes"), py::arg("glob_workspace_ptr"), py::arg("glob_workspace_bytes"),
        py::arg("stream"), py::arg("accumulate_kv"),
        "The layer's backward: attention_bwd_cuda of kernel A in the layer mode (dq, dk, dv), then of kernel B "
        "(dq_global's global rows, dk_global, dv_global; with accumulate_kv those are dq, dk, dv and B's dk / dv "
        "are added to A's), with B's dQ chunks inside A's dQ launch where they can be "
        "(LED_KERNELS_FUSED_BACKWARD=0: two launches); the same bits either way. Each kernel has its "
        "workspace (attention_cuda_workspace_bytes(True, kind, ...)).");
  m.def("key_flags_cuda", &key_flags_cuda_binding, py::arg("pad_ptr"), py::arg("pad_sb"), py::arg("pad_sn"),
        py::arg("gidx_ptr"), py::arg("flags_ptr"), py::arg("B"), py::arg("N"), py::arg("G"), py::arg("stream"),
        "int8 (B, N) key flags on device memory, as led_kernels.masks.key_flags: 1 where the (B, N) bool "
        "padding mask (0 = none) is set, else 2 at the global_idx (B, G) int32 positions, else 0.");
  m.def(
      "cpu_attention_isa", []() { return std::string(led_kernels::cpu_attention_isa()); },
      "The instruction set the CPU attention kernels use here ('avx512', 'avx2' or 'generic'); the "
      "environment variable LED_KERNELS_CPU_ISA selects another one this machine can run.");
  m.def("cpu_attention_isas", &led_kernels::cpu_attention_isas,
        "Every instruction set of the CPU attention kernels this build can run on this machine, best first.");
}
