#include "engine/device.h"

#include <cstring>
#include <stdexcept>

namespace ms {

Device common_device(std::initializer_list<Tensor> ts, const char* op) {
  bool first = true;
  Device d = Device::CPU;
  for (const auto& t : ts) {
    if (!t.defined()) continue;
    if (first) { d = t.device(); first = false; }
    else if (t.device() != d)
      throw std::invalid_argument(std::string(op) + ": tensors on different devices (" + device_name(d) + " and " +
                                  device_name(t.device()) + ")");
  }
  return d;
}

#ifndef MEDSLIP_CUDA
static void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) + ": this build has no CUDA support (rebuild with make CUDA=1)");
}
bool cuda_built() { return false; }
bool cuda_available() { return false; }
std::string cuda_device_name() { return "none"; }
void* device_alloc(size_t) { no_cuda("device_alloc"); return nullptr; }
void device_free(void*, size_t) {}
void device_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (dd == Device::CUDA || sd == Device::CUDA) no_cuda("device_copy");
  std::memcpy(dst, src, bytes);
}
void device_fill(float*, float, int64_t) { no_cuda("device_fill"); }
DeviceMemoryStats device_memory_stats() { return {}; }
#endif

}  // namespace ms
