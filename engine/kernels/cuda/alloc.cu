// The CUDA side of the memory seam (engine/kernels/decls.h "memory", reached through
// engine/device.h): device discovery, host<->device copies, fill, and the caching allocator.
// Blocks are rounded up to a size bucket and, when freed, go back to that bucket's free list instead of to cudaFree; a training step that allocates the same shapes
// every step therefore calls cudaMalloc only during its first step and never cudaFree.
// Its CPU twin is engine/kernels/cpu/alloc.cpp.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

constexpr size_t kMiB = size_t(1) << 20;

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / double(kMiB));
  return buf;
}

// Bucket sizes: multiples of 512 B below 1 MiB; above, 8 buckets per power of two (at most
// 12.5% rounding waste), so tensors of nearby sizes share cached blocks.
size_t bucket_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes < kMiB) return CEIL_DIV(bytes, size_t(512)) * 512;
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes));  // largest power of two <= bytes
  size_t step = p / 8;
  return CEIL_DIV(bytes, step) * step;
}

class CachingAllocator {
 public:
  // MEDSLIP_CUDA_NO_CACHE=1: exact-size cudaMalloc/cudaFree per tensor, so compute-sanitizer
  // sees every tensor's true bounds (tests/gpu_check.sh); slow, for checking only.
  CachingAllocator() : exact_(std::getenv("MEDSLIP_CUDA_NO_CACHE") && *std::getenv("MEDSLIP_CUDA_NO_CACHE") == '1') {}

  void* alloc(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t size = exact_ ? std::max<size_t>(bytes, 1) : bucket_size(bytes);
    void* p = nullptr;
    auto it = free_.find(size);
    ++allocations_;
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_ -= size;
      ++hits_;
    } else {
      cudaError_t e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {  // give the cached blocks back, then try once more
        (void)cudaGetLastError();
        release_cached_locked();
        e = cudaMalloc(&p, size);
      }
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        throw std::runtime_error("CUDA out of memory: cudaMalloc of " + mib(size) + " (" + std::to_string(bytes) +
                                 " bytes requested) failed with " + cudaGetErrorName(e) + "; medslip holds " +
                                 mib(in_use_) + " in tensors and " + mib(cached_) + " cached; the device has " +
                                 mib(free_b) + " free of " + mib(total_b) +
                                 ". Reduce batch_size or image_res in the config.");
      }
    }
    live_[p] = size;
    in_use_ += size;
    if (in_use_ > peak_) peak_ = in_use_;
    return p;
  }

  // Never throws (called from destructors); a pointer it does not know is reported once.
  void free(void* p) noexcept {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      if (!warned_) std::fprintf(stderr, "medslip: device_free of a pointer the CUDA allocator did not hand out\n");
      warned_ = true;
      return;
    }
    const size_t size = it->second;
    live_.erase(it);
    in_use_ -= size;
    if (exact_) {
      ++releases_;
      cudaFree(p);
      (void)cudaGetLastError();
      return;
    }
    cached_ += size;
    free_[size].push_back(p);
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    MemoryStats s;
    s.in_use = in_use_;
    s.cached = cached_;
    s.peak_in_use = peak_;
    s.allocations = allocations_;
    s.hits = hits_;
    s.releases = releases_;
    return s;
  }

 private:
  void release_cached_locked() {
    cudaDeviceSynchronize();  // a cached block may still be read by a queued kernel
    for (auto& [size, list] : free_)
      for (void* p : list) {
        cudaFree(p);
        ++releases_;
      }
    free_.clear();
    cached_ = 0;
    (void)cudaGetLastError();
  }

  const bool exact_;
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // bucket size -> free blocks
  std::unordered_map<void*, size_t> live_;               // handed-out block -> bucket size
  size_t in_use_ = 0, cached_ = 0, peak_ = 0;
  uint64_t allocations_ = 0, hits_ = 0, releases_ = 0;  // blocks handed out, from the cache, cudaFree'd
  bool warned_ = false;
};

// Never destroyed: tensors freed during static destruction still find it, and the driver
// reclaims the memory at exit.
CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator;
  return *a;
}

struct DeviceInfo {
  bool present = false;
  std::string reason, name;
};

const DeviceInfo& device_info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      d.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
      return d;
    }
    if (n == 0) {
      d.reason = "no CUDA device found";
      return d;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      d.reason = "cudaGetDeviceProperties failed";
      return d;
    }
    d.present = true;
    d.name = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
             std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
    return d;
  }();
  return info;
}

void require_device(const char* what) {
  const DeviceInfo& d = device_info();
  if (!d.present) throw std::runtime_error(std::string(what) + ": no usable CUDA device (" + d.reason + ")");
}

__global__ void fill_kernel(float* p, float v, int64_t n) { CUDA_FOR(i, n) p[i] = v; }

}  // namespace

bool present(std::string* about) {
  const DeviceInfo& d = device_info();
  if (about) *about = d.present ? d.name : "none (" + d.reason + ")";
  return d.present;
}

void* alloc(size_t bytes) {
  require_device("device_alloc");
  return allocator().alloc(bytes);
}

void release(void* p, size_t) { allocator().free(p); }

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const cudaMemcpyKind kind = dst_dev == Device::CPU   ? cudaMemcpyDeviceToHost
                              : src_dev == Device::CPU ? cudaMemcpyHostToDevice
                                                       : cudaMemcpyDeviceToDevice;
  // Synchronous on the default stream: a device->host copy waits for the kernels before it,
  // and a host->device copy has read the host buffer when it returns.
  cudaCheck(cudaMemcpy(dst, src, bytes, kind));
}

void fill(float* p, float v, int64_t n) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), kBlock>>>(p, v, n);
  cudaCheckLaunch();
}

MemoryStats memory_stats() { return allocator().stats(); }

}  // namespace ms::cuda
