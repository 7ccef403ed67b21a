// Shared declarations of the led_kernels compiled extension (module led_kernels._C).
//
// The extension links no libtorch (DESIGN section 5): Python owns every tensor and hands the
// kernels raw pointers, sizes and element strides. These small PODs are the whole contract
// between the bindings (csrc/bindings.cpp), the CPU kernels (csrc/cpu/) and the CUDA kernels
// (csrc/cuda/), so that a layout or dtype convention is written down in exactly one place.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace led_kernels {

// Element dtype of the tensors a kernel reads. The numeric values are part of the Python
// contract: led_kernels/_extension.py reads them back through _C.dtype_codes(), so renumbering
// here cannot silently desynchronize the two sides.
enum class DType : int {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
};

inline const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

// Validates a code coming from Python. Throws std::invalid_argument (-> ValueError in Python)
// rather than trusting the caller, because a wrong code would reinterpret memory silently.
inline DType dtype_from_code(int code) {
  switch (code) {
    case static_cast<int>(DType::kFloat32): return DType::kFloat32;
    case static_cast<int>(DType::kFloat16): return DType::kFloat16;
    case static_cast<int>(DType::kBFloat16): return DType::kBFloat16;
    default:
      throw std::invalid_argument("led_kernels: unknown dtype code " + std::to_string(code) +
                                  " (expected 0=float32, 1=float16, 2=bfloat16)");
  }
}

// Element strides (not bytes) of a (B, N, H, D) "bnhd" tensor whose last dimension is
// contiguous (stride 1, so it is not stored). Any other strides are allowed: q/k/v are usually
// views sliced out of a fused (B, N, 3, H, D) projection and must be read in place.
struct BNHStrides {
  int64_t b;
  int64_t n;
  int64_t h;
};

// Arguments of the attention-backward preprocessing  delta = rowsum(dO * O).
//   out, grad_out : (B, N, H, D), same dtype, strides given by o_strides / do_strides
//   delta         : (B, H, N) float32, contiguous (written, never read)
//   delta[b, h, i] = sum_d float(grad_out[b, i, h, d]) * float(out[b, i, h, d])
// The output is (B, H, N) rather than (B, N, H) because the backward kernels that consume it
// walk one (batch, head) at a time along the sequence, so this layout makes their loads contiguous.
struct DeltaParams {
  const void* out;
  const void* grad_out;
  float* delta;
  int64_t B, N, H, D;
  BNHStrides o_strides;
  BNHStrides do_strides;
  DType dtype;
};

// Shared argument checks (sizes non-negative, non-null pointers when there is work).
inline void check_delta_params(const DeltaParams& p, const char* who) {
  if (p.B < 0 || p.N < 0 || p.H < 0 || p.D < 0) {
    throw std::invalid_argument(std::string(who) + ": sizes must be non-negative");
  }
  const bool any_rows = p.B > 0 && p.N > 0 && p.H > 0;
  if (any_rows && p.delta == nullptr) {
    throw std::invalid_argument(std::string(who) + ": delta pointer is null");
  }
  if (any_rows && p.D > 0 && (p.out == nullptr || p.grad_out == nullptr)) {
    throw std::invalid_argument(std::string(who) + ": out/grad_out pointer is null");
  }
}

// CPU kernel (csrc/cpu/delta.cpp). num_threads <= 0 means the OpenMP default; Python passes
// torch.get_num_threads() so torch.set_num_threads() is honoured by our own OpenMP runtime too.
void delta_cpu(const DeltaParams& p, int num_threads);

// Whether this build has OpenMP (otherwise the CPU kernels run single-threaded).
bool cpu_has_openmp();

#ifdef LED_KERNELS_WITH_CUDA
// CUDA kernel (csrc/cuda/delta.cu). `stream` is a cudaStream_t passed as an opaque pointer so
// that this header, included by plain C++ translation units, needs no CUDA headers.
void delta_cuda(const DeltaParams& p, void* stream);

// csrc/cuda/runtime.cu: queries that must never throw on a machine without driver or device.
int cuda_device_count_noexcept();
std::string cuda_status_string();  // "no error" or the cudaGetDeviceCount error string
int cuda_runtime_version();        // CUDART_VERSION the extension was built against
int cuda_driver_version();         // cudaDriverGetVersion, 0 when no driver
// Makes `device` current for this thread in the extension's own (static) CUDA runtime, which then
// launches there whatever context another runtime (torch's) has made current; std::runtime_error
// with CUDA's message if it cannot.
void cuda_set_device(int device);
#endif

}  // namespace led_kernels
