// defines: devices and their memory, below Tensor. Device (cpu | cuda); the CUDA runtime
// queries; device_alloc/free/copy/fill for raw blocks (CUDA kernels' scratch, index arrays);
// the memory statistics of each device's caching allocator; DeviceArray, a typed block on
// either device; and the TF32 switch. engine/device.cpp implements all of it, in both builds,
// through the memory kernels of each device (engine/kernels/decls.h "memory":
// engine/kernels/cpu/alloc.cpp, engine/kernels/cuda/alloc.cu). A CPU build carries no CUDA
// dependency: everything here that needs a GPU throws "this build has no CUDA support" there.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

enum class Device : uint8_t { CPU = 0, CUDA = 1 };
const char* device_name(Device d);
Device parse_device(const std::string& s);  // "cpu" | "cuda"; throws otherwise

bool cuda_built();        // compiled with CUDA=1
bool cuda_available();    // built with CUDA and a device is present
std::string cuda_device_name();
// The CPU convolution algorithm in force (auto | im2col | winograd2 | winograd4, from
// MEDSLIP_CONV_ALGO): it changes results in the last bits, so run records note it.
const char* cpu_conv_algo();
// The CPU matrix-product library in force (dnnl | openblas, from MEDSLIP_CPU_GEMM) and input
// precision (fp32 | bf16): both change results in the last bits (bf16: in the third digit), so
// run records note them. set_cpu_precision("bf16") throws where the CPU has no AVX512-BF16.
const char* cpu_gemm();
const char* cpu_precision();
void set_cpu_precision(const std::string& precision);  // "fp32" | "bf16"; throws otherwise
bool cpu_bf16_supported();

void* device_alloc(size_t bytes);  // CUDA, through the caching allocator
void device_free(void* p, size_t bytes);
// Copies bytes between any two devices.
void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void device_fill(float* p, float v, int64_t n);  // CUDA memory only

// A caching allocator's bytes handed out and not yet freed, bytes kept for reuse, the largest
// in_use so far, and counters (blocks handed out, of those served from the cache, blocks given
// back to the system). MEDSLIP_NO_HOST_CACHE=1 / MEDSLIP_CUDA_NO_CACHE=1 turn the caches off.
struct MemoryStats {
  size_t in_use = 0, cached = 0, peak_in_use = 0;
  uint64_t allocations = 0, hits = 0, releases = 0;
};
using HostMemoryStats = MemoryStats;
using DeviceMemoryStats = MemoryStats;
HostMemoryStats host_memory_stats();      // the CPU allocator behind every CPU tensor
DeviceMemoryStats device_memory_stats();  // the CUDA allocator (zeros in a CPU build)

// TF32 tensor cores for cuBLAS matrix products (--tf32). Off by default: float32 products
// are what the parity tolerances assume (ARCHITECTURE "Tests": TF32 off). No-op on the CPU.
void set_tf32(bool on);
bool tf32_enabled();

// n elements of T on `dev`: a host index/mask vector staged on a tensor's device, or a
// buffer of int64/uint8 that an op keeps for backward. On the CPU a view of a host vector
// costs no copy; on CUDA the elements are copied to a block from the caching allocator.
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

}  // namespace ms
