// Turning CUDA errors into C++ exceptions (pybind11 translates std::runtime_error into Python's
// RuntimeError), so a failed launch surfaces as an error with CUDA's own message instead of a
// crash or a silently unwritten output.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace led_kernels {

inline void throw_cuda_error(cudaError_t err, const char* what) {
  throw std::runtime_error(std::string("led_kernels: ") + what + ": " + cudaGetErrorName(err) + ": " +
                           cudaGetErrorString(err));
}

// Call after every kernel launch. cudaGetLastError also clears a non-sticky error, so the next
// op does not inherit it.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, what);
}

#define LED_CUDA_CHECK(expr, what)                          \
  do {                                                      \
    const cudaError_t led_err_ = (expr);                    \
    if (led_err_ != cudaSuccess) {                          \
      (void)cudaGetLastError();                             \
      ::led_kernels::throw_cuda_error(led_err_, (what));    \
    }                                                       \
  } while (0)

}  // namespace led_kernels
