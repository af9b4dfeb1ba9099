// defines: the small host-side API that C++ code outside the .cu files uses with the CUDA
// backend — DeviceArray (a host index/mask vector staged on a tensor's device, or a device
// buffer of int64/uint8 that ops keep for backward) and set_tf32. Plain C++ on top of
// engine/device.h: it compiles in CPU builds too, where DeviceArray is a host array and
// set_tf32 does nothing, so ops use one code path for both devices.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/device.h"

namespace ms {

// n elements of T on `dev`. On the CPU a view of a host vector costs no copy; on CUDA the
// elements are copied to a block from the caching allocator (freed back to its cache).
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  // Uninitialised storage for n elements (owned, on either device).
  DeviceArray(int64_t n, Device dev) : n_(n), dev_(dev) {
    if (dev == Device::CUDA) {
      data_ = static_cast<T*>(device_alloc(bytes()));
    } else {
      host_.resize(size_t(n > 0 ? n : 1));
      data_ = host_.data();
    }
  }
  // v's elements on dev: a view of v on the CPU (v must outlive this), a device copy on CUDA.
  DeviceArray(const std::vector<T>& v, Device dev) : n_(int64_t(v.size())), dev_(dev) {
    if (dev == Device::CUDA) {
      data_ = static_cast<T*>(device_alloc(bytes()));
      device_copy(data_, Device::CUDA, v.data(), Device::CPU, v.size() * sizeof(T));
    } else {
      data_ = const_cast<T*>(v.data());
    }
  }
  ~DeviceArray() { release(); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;  // shared through std::shared_ptr

  T* data() const { return data_; }
  int64_t size() const { return n_; }
  Device device() const { return dev_; }
  std::vector<T> to_host() const {
    std::vector<T> h(static_cast<size_t>(n_));
    if (n_ > 0) device_copy(h.data(), Device::CPU, data_, dev_, h.size() * sizeof(T));
    return h;
  }

 private:
  size_t bytes() const { return size_t(n_ > 0 ? n_ : 1) * sizeof(T); }
  void release() {
    if (dev_ == Device::CUDA && data_) device_free(data_, bytes());
    data_ = nullptr;
  }
  T* data_ = nullptr;
  int64_t n_ = 0;
  Device dev_ = Device::CPU;
  std::vector<T> host_;  // owned CPU storage (empty for a view)
};

// TF32 tensor cores for cuBLAS matrix products (--tf32). Off by default: float32 products
// are what the parity tolerances assume (ARCHITECTURE "Tests": TF32 off).
#ifdef MEDSLIP_CUDA
void set_tf32(bool on);
bool tf32_enabled();
#else
inline void set_tf32(bool) {}
inline bool tf32_enabled() { return false; }
#endif

}  // namespace ms
