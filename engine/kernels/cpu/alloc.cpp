// The CPU side of the memory seam (engine/kernels/decls.h "memory"): the caching allocator
// behind every CPU tensor, copies and fills. Its CUDA twin is engine/kernels/cuda/alloc.cu.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

// ---- CPU caching allocator ------------------------------------------------------------------
// A training step allocates the same sizes in the same order every step; returning them to
// the OS (big blocks are mmap'ed by malloc) and faulting fresh zeroed pages back in cost ~10 %
// of a CPU step. Freed blocks therefore wait in size-class free lists and are handed out
// again. Size classes: 64 bytes up to 4 KiB, then 1/8 of the power of two (<= 12.5 % slack).
// A miss that would take the footprint (in use + cached) above its high-water mark first
// releases cached blocks, so the footprint stays at the peak of live memory. Blocks hold no
// data from their last use that anyone can read: Tensor::empty promises nothing.
namespace {

size_t size_class(size_t bytes) {
  if (bytes <= 4096) return (bytes + 63) / 64 * 64;
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes));  // highest power of two <= bytes
  const size_t step = std::max<size_t>(p / 8, 4096);
  return (bytes + step - 1) / step * step;
}

class HostCache {
 public:
  void* allocate(size_t bytes) {
    const size_t cls = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.allocations;
      // Best fit among idle blocks of up to twice the size: layers of different shapes
      // then share blocks instead of each size class holding its own.
      for (auto it = free_.lower_bound(cls); it != free_.end() && it->first <= 2 * cls; ++it) {
        if (it->second.empty()) continue;
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached -= it->first;
        stats_.in_use += it->first;
        stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
        ++stats_.hits;
        return p;
      }
      if (stats_.cached > 0 && stats_.in_use + stats_.cached + cls > limit()) release_locked(cls);
      stats_.in_use += cls;  // counted before the system call so that the footprint stays exact
      stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
      high_water_ = std::max(high_water_, stats_.in_use + stats_.cached);
    }
    void* p = std::aligned_alloc(64, cls);
    std::lock_guard<std::mutex> lock(mu_);
    if (!p) {
      release_locked(SIZE_MAX);
      p = std::aligned_alloc(64, cls);
      if (!p) {
        stats_.in_use -= cls;
        throw std::runtime_error("out of host memory allocating " + std::to_string(cls) + " bytes (" +
                                 std::to_string(stats_.in_use >> 20) + " MiB in use)");
      }
    }
    block_class_[p] = cls;
    return p;
  }

  void deallocate(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto b = block_class_.find(p);
    const size_t cls = b->second;
    stats_.in_use -= cls;
    if (!enabled_) {
      block_class_.erase(b);
      std::free(p);
      return;
    }
    free_[cls].push_back(p);
    stats_.cached += cls;
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  // Frees cached blocks, largest classes first, until `need` more bytes fit under the
  // high-water mark (or everything cached is gone).
  void release_locked(size_t need) {
    for (auto it = free_.rbegin(); it != free_.rend() && stats_.cached > 0; ++it) {
      auto& list = it->second;
      while (!list.empty()) {
        if (need != SIZE_MAX && stats_.in_use + stats_.cached + need <= limit()) return;
        block_class_.erase(list.back());
        std::free(list.back());
        list.pop_back();
        stats_.cached -= it->first;
        ++stats_.releases;
      }
    }
  }

  // The footprint allowed before idle blocks are given back: the high-water mark plus 1/8,
  // so that a step whose sizes come in a different order still finds its blocks.
  size_t limit() const { return high_water_ + high_water_ / 8; }

  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;    // size class -> idle blocks
  std::unordered_map<void*, size_t> block_class_;  // every block we hold -> its size class
  MemoryStats stats_;
  size_t high_water_ = 0;  // largest footprint (in use + cached) so far
  bool enabled_ = std::getenv("MEDSLIP_NO_HOST_CACHE") == nullptr;
};

HostCache& host_cache() {
  static HostCache* cache = new HostCache;  // never destroyed: Storage may die during static teardown
  return *cache;
}

}  // namespace

bool present(std::string* about) {
  if (about) *about = "cpu";
  return true;
}

void* alloc(size_t bytes) { return host_cache().allocate(bytes); }

void release(void* p, size_t) {
  if (p) host_cache().deallocate(p);
}

MemoryStats memory_stats() { return host_cache().stats(); }

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (dst_dev != Device::CPU || src_dev != Device::CPU)
    throw std::logic_error("cpu::copy: both sides must be on the CPU");
  if (bytes) std::memcpy(dst, src, bytes);
}

void fill(float* p, float v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

}  // namespace ms::cpu
