#include "engine/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

std::shared_ptr<Storage> Storage::allocate(int64_t numel, Device device) {
  auto s = std::make_shared<Storage>();
  s->numel = numel;
  s->device = device;
  const size_t bytes = size_t(std::max<int64_t>(numel, 1)) * sizeof(float);
  s->data = static_cast<float*>(MS_DISPATCH(device, alloc, bytes));  // the device's caching allocator
  return s;
}

// A block back to its device's cache (release never throws; a CPU build holds no CUDA block).
static void release_block(Device device, float* data, size_t bytes) { MS_DISPATCH(device, release, data, bytes); }

Storage::~Storage() {
  if (data) release_block(device, data, size_t(std::max<int64_t>(numel, 1)) * sizeof(float));
}

bool sole_owner(const std::shared_ptr<TensorImpl>& p) {
  return p && p.use_count() == 1 && p->storage.use_count() == 1 && p->offset == 0 &&
         p->storage->numel == shape_numel(p->shape);
}

Device common_device(std::initializer_list<Tensor> ts, const char* op) {
  bool first = true;
  Device d = Device::CPU;
  for (const auto& t : ts) {
    if (!t.defined()) continue;
    if (first) {
      d = t.device();
      first = false;
    } else if (t.device() != d) {
      throw std::invalid_argument(std::string(op) + ": tensors on different devices (" + device_name(d) + " and " +
                                  device_name(t.device()) + ")");
    }
  }
  return d;
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
    if (sole_owner(g) && !gi->autograd->grad_fn && !gi->autograd->grad) {
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

void Tensor::fill_(float v) { MS_DISPATCH(device(), fill, data(), v, numel()); }

Tensor& Tensor::requires_grad_(bool on) {
  if (on && !is_leaf()) throw std::logic_error("requires_grad_ on a non-leaf tensor");
  impl_->autograd->requires_grad = on;
  return *this;
}

}  // namespace ms
