// engine/device.h in both builds: each function picks a device and calls that device's memory
// kernel through MS_DISPATCH (engine/kernels/cpu/alloc.cpp, engine/kernels/cuda/alloc.cu).
#include "engine/device.h"
#include "engine/kernels/cpu/winograd.h"
#include "engine/kernels/cpu/gemm.h"

#include <stdexcept>

#include "engine/kernels/kernels.h"

namespace ms {

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw std::invalid_argument("unknown device '" + s + "' (expected cpu or cuda)");
}

bool cuda_built() {
#ifdef MEDSLIP_CUDA
  return true;
#else
  return false;
#endif
}

// Throws, naming `what`, in a build without CUDA.
static void require_cuda_build(const char* what) {
  if (!cuda_built())
    throw std::runtime_error(std::string(what) + ": this build has no CUDA support (rebuild with make CUDA=1)");
}

bool cuda_available() { return cuda_built() && MS_DISPATCH(Device::CUDA, present, nullptr); }

const char* cpu_conv_algo() { return cpu::conv_algo_name(cpu::conv_algo()); }
const char* cpu_gemm() { return cpu::gemm_backend_name(cpu::gemm_backend()); }
const char* cpu_precision() { return cpu::precision_name(cpu::gemm_precision()); }
void set_cpu_precision(const std::string& precision) { cpu::set_gemm_precision(cpu::parse_precision(precision)); }
bool cpu_bf16_supported() { return cpu::bf16_supported(); }

std::string cuda_device_name() {
  if (!cuda_built()) return "none";
  std::string about;
  MS_DISPATCH(Device::CUDA, present, &about);
  return about;
}

void* device_alloc(size_t bytes) {
  require_cuda_build("device_alloc");
  return MS_DISPATCH(Device::CUDA, alloc, bytes);
}

void device_free(void* p, size_t bytes) {
  if (cuda_built()) MS_DISPATCH(Device::CUDA, release, p, bytes);
}

void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  const Device dev = dst_dev == Device::CUDA || src_dev == Device::CUDA ? Device::CUDA : Device::CPU;
  if (dev == Device::CUDA) require_cuda_build("device_copy");
  MS_DISPATCH(dev, copy, dst, dst_dev, src, src_dev, bytes);
}

void device_fill(float* p, float v, int64_t n) {
  require_cuda_build("device_fill");
  MS_DISPATCH(Device::CUDA, fill, p, v, n);
}

HostMemoryStats host_memory_stats() { return MS_DISPATCH(Device::CPU, memory_stats); }
DeviceMemoryStats device_memory_stats() {
  return cuda_built() ? MS_DISPATCH(Device::CUDA, memory_stats) : DeviceMemoryStats{};
}

void set_tf32(bool on) {
  if (cuda_built()) MS_DISPATCH(Device::CUDA, set_tf32, on);
}
bool tf32_enabled() { return cuda_built() && MS_DISPATCH(Device::CUDA, tf32_enabled); }

}  // namespace ms
