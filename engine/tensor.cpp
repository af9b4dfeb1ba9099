#include "engine/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <sstream>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/ops.h"

namespace ms {

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw std::invalid_argument("unknown device '" + s + "' (expected cpu or cuda)");
}

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

  HostMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked(SIZE_MAX);
    high_water_ = stats_.in_use;
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
  HostMemoryStats stats_;
  size_t high_water_ = 0;  // largest footprint (in use + cached) so far
  bool enabled_ = std::getenv("MEDSLIP_NO_HOST_CACHE") == nullptr;
};

HostCache& host_cache() {
  static HostCache* cache = new HostCache;  // never destroyed: Storage may die during static teardown
  return *cache;
}

}  // namespace

HostMemoryStats host_memory_stats() { return host_cache().stats(); }
void host_memory_release() { host_cache().release(); }

std::shared_ptr<Storage> Storage::allocate(int64_t numel, Device device) {
  auto s = std::make_shared<Storage>();
  s->numel = numel;
  s->device = device;
  size_t bytes = size_t(std::max<int64_t>(numel, 1)) * sizeof(float);
  if (device == Device::CUDA) s->data = static_cast<float*>(device_alloc(bytes));
  else s->data = static_cast<float*>(host_cache().allocate(bytes));
  return s;
}

Storage::~Storage() {
  if (!data) return;
  const size_t bytes = size_t(std::max<int64_t>(numel, 1)) * sizeof(float);
  if (device == Device::CUDA) device_free(data, bytes);
  else host_cache().deallocate(data);
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

void check_shape(const Tensor& t, const Shape& expected, const std::string& what) {
  if (!t.defined()) throw std::invalid_argument(what + ": expected shape " + shape_str(expected) + ", got an undefined tensor");
  if (t.shape() != expected)
    throw std::invalid_argument(what + ": expected shape " + shape_str(expected) + ", got " + shape_str(t.shape()));
}

static Tensor make(const Shape& shape, Device device) {
  for (auto d : shape)
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::allocate(shape_numel(shape), device);
  impl->shape = shape;
  return Tensor(impl);
}

Tensor Tensor::empty(const Shape& shape, Device device) { return make(shape, device); }
Tensor Tensor::zeros(const Shape& shape, Device device) { return full(shape, 0.f, device); }
Tensor Tensor::ones(const Shape& shape, Device device) { return full(shape, 1.f, device); }
Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = make(shape, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  if (int64_t(values.size()) != shape_numel(shape))
    throw std::invalid_argument("from_vector: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  Tensor t = make(shape, Device::CPU);
  std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  if (d < 0 || d >= n) throw std::out_of_range("size(): dim out of range for shape " + shape_str(shape()));
  return impl_->shape[size_t(d)];
}

float Tensor::item() const {
  if (numel() != 1) throw std::invalid_argument("item(): tensor of shape " + shape_str(shape()) + " is not one element");
  if (is_cuda()) return to(Device::CPU).item();
  return data()[0];
}

std::vector<float> Tensor::to_vector() const {
  if (is_cuda()) return to(Device::CPU).to_vector();
  return std::vector<float>(data(), data() + numel());
}

std::string Tensor::str(int max_elems) const {
  std::ostringstream os;
  os << "Tensor" << shape_str(shape()) << " " << device_name(device()) << " {";
  auto v = to_vector();
  for (int64_t i = 0; i < std::min<int64_t>(max_elems, int64_t(v.size())); ++i) os << (i ? ", " : "") << v[size_t(i)];
  if (int64_t(v.size()) > max_elems) os << ", ...";
  os << "}";
  return os.str();
}

Tensor Tensor::reshape(const Shape& shape_in) const {
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw std::invalid_argument("reshape: only one -1 allowed in " + shape_str(shape_in));
      infer = int64_t(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel() % known != 0)
      throw std::invalid_argument("reshape: cannot view " + shape_str(this->shape()) + " as " + shape_str(shape_in));
    shape[size_t(infer)] = numel() / known;
  }
  if (shape_numel(shape) != numel())
    throw std::invalid_argument("reshape: cannot view " + shape_str(this->shape()) + " (" + std::to_string(numel()) +
                                " elements) as " + shape_str(shape_in));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = shape;
  Tensor out(impl);
  Shape orig = this->shape();
  record(out, "reshape", {*this}, [self = grad_handle(*this), orig](const Tensor& g) {
    // d(view)/dx = identity on the flat data. A gradient nobody else holds (autograd moves
    // it out for this call) is relabelled in place and handed on, not copied.
    TensorImpl* gi = g.impl();
    if (g.impl_ptr().use_count() == 1 && gi->storage.use_count() == 1 && !gi->autograd->grad_fn &&
        !gi->autograd->grad) {
      gi->shape = orig;
      accumulate_grad(self, g);
    } else {
      accumulate_grad(self, g.detach().reshape(orig));
    }
  });
  return out;
}

Tensor Tensor::flatten(int64_t s, int64_t e) const {
  int64_t n = dim();
  if (n == 0) return reshape({1});
  if (s < 0) s += n;
  if (e < 0) e += n;
  Shape out;
  for (int64_t i = 0; i < s; ++i) out.push_back(shape()[size_t(i)]);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= shape()[size_t(i)];
  out.push_back(m);
  for (int64_t i = e + 1; i < n; ++i) out.push_back(shape()[size_t(i)]);
  return reshape(out);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  Shape s = shape();
  if (d < 0) d += dim() + 1;
  s.insert(s.begin() + d, 1);
  return reshape(s);
}

Tensor Tensor::squeeze(int64_t d) const {
  Shape s = shape();
  if (d < 0) d += dim();
  if (s[size_t(d)] != 1) throw std::invalid_argument("squeeze: dim " + std::to_string(d) + " of " + shape_str(s) + " is not 1");
  s.erase(s.begin() + d);
  return reshape(s);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  return Tensor(impl);
}

Tensor Tensor::clone() const {
  Tensor out = make(shape(), device());
  device_copy(out.data(), device(), data(), device(), size_t(numel()) * sizeof(float));
  record(out, "clone", {*this}, [self = grad_handle(*this)](const Tensor& g) { accumulate_grad(self, g); });
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor out = make(shape(), dev);
  device_copy(out.data(), dev, data(), device(), size_t(numel()) * sizeof(float));
  record(out, "to", {*this},
         [self = grad_handle(*this)](const Tensor& g) { accumulate_grad(self, g.to(self.device())); });
  return out;
}

void Tensor::copy_(const Tensor& src) {
  if (src.numel() != numel())
    throw std::invalid_argument("copy_: source " + shape_str(src.shape()) + " does not match " + shape_str(shape()));
  device_copy(data(), device(), src.data(), src.device(), size_t(numel()) * sizeof(float));
}

void Tensor::fill_(float v) {
  if (is_cuda()) { device_fill(data(), v, numel()); return; }
  float* p = data();
  for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = v;
}

Tensor& Tensor::requires_grad_(bool on) {
  if (on && !is_leaf()) throw std::logic_error("requires_grad_ on a non-leaf tensor");
  impl_->autograd->requires_grad = on;
  return *this;
}

}  // namespace ms
