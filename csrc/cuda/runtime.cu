// CUDA runtime queries for the Python side (has the extension a usable GPU?), and the device the
// extension's launches go to.
//
// The extension links the CUDA runtime statically, so importing it needs no libcudart.so and no
// driver; the queries are the first to touch the driver and must therefore never throw: on a
// machine without driver or device they report 0 devices and the reason.
#include <cuda_runtime.h>

#include <string>

#include "cuda_check.h"
#include "led_kernels/common.h"

namespace led_kernels {

int cuda_device_count_noexcept() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear it so a later kernel launch does not report it
    return 0;
  }
  return n;
}

std::string cuda_status_string() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  if (err != cudaSuccess) return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  return "no error";
}

int cuda_runtime_version() { return CUDART_VERSION; }

void cuda_set_device(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
  (void)cudaGetLastError();
  LED_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
}

int cuda_driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return v;
}

}  // namespace led_kernels
