// defines: the device registry and memory seam. CPU builds carry no CUDA dependency:
// every function here that touches a GPU throws "built without CUDA" there.
// CUDA builds route allocations through a caching allocator (engine/kernels/cuda/alloc.cu)
// so the training step never calls cudaMalloc/cudaFree.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace ms {

bool cuda_built();        // compiled with CUDA=1
bool cuda_available();    // built with CUDA and a device is present
std::string cuda_device_name();

void* device_alloc(size_t bytes);            // CUDA, through the caching allocator
void device_free(void* p, size_t bytes);
// Copies bytes between any two devices.
void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void device_fill(float* p, float v, int64_t n);  // CUDA memory only

struct DeviceMemoryStats {
  size_t in_use = 0, cached = 0, peak = 0;
};
DeviceMemoryStats device_memory_stats();

// Throws unless the tensors all live on one device; returns it.
Device common_device(std::initializer_list<Tensor> ts, const char* op);

}  // namespace ms
