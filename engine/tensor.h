// defines: Tensor (float32, contiguous, row-major) with shared Storage, device tag and
// the autograd hooks (AutogradMeta: requires_grad, grad, grad_fn). Views (reshape) share storage;
// transposes, permutes and slices are ops that copy (engine/ops.h).
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"

namespace ms {

using Shape = std::vector<int64_t>;

// A flat block of floats on one device, from that device's caching allocator (engine/device.h).
// CPU memory is 64-byte aligned.
struct Storage {
  float* data = nullptr;
  int64_t numel = 0;
  Device device = Device::CPU;
  static std::shared_ptr<Storage> allocate(int64_t numel, Device device);
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

struct Node;
struct TensorImpl;

// The autograd side of a tensor. Shared between a tensor and its grad handles (see
// grad_handle in engine/autograd.h), which let the tape point at a tensor without
// keeping its data alive.
struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient, same shape
  std::shared_ptr<Node> grad_fn;     // set on op outputs that require grad
  bool retain_grad = false;          // keep .grad on a non-leaf after backward
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements, for views into a larger storage
  Shape shape;
  std::shared_ptr<AutogradMeta> autograd = std::make_shared<AutogradMeta>();
};

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- creation -------------------------------------------------------------------
  static Tensor empty(const Shape& shape, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, Device device = Device::CPU);
  static Tensor ones(const Shape& shape, Device device = Device::CPU);
  static Tensor full(const Shape& shape, float value, Device device = Device::CPU);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor scalar(float v) { return from_vector({v}, {}); }

  // --- inspection -----------------------------------------------------------------
  bool defined() const { return bool(impl_); }
  const Shape& shape() const { return impl_->shape; }
  int64_t dim() const { return int64_t(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl_->shape); }
  Device device() const { return impl_->storage->device; }
  bool is_cuda() const { return device() == Device::CUDA; }
  float* data() const { return impl_->storage->data + impl_->offset; }
  float item() const;                      // one-element tensor -> float (any device)
  std::vector<float> to_vector() const;    // copies to host
  std::string str(int max_elems = 8) const;  // "Tensor[2,3] cpu {..}"

  // --- views and copies -----------------------------------------------------------
  Tensor reshape(const Shape& shape) const;  // view; one -1 allowed; differentiable
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor unsqueeze(int64_t d) const;
  Tensor squeeze(int64_t d) const;
  Tensor detach() const;                    // shares storage, no grad history
  Tensor clone() const;                     // deep copy, differentiable
  Tensor to(Device device) const;           // copy across devices (differentiable)
  void copy_(const Tensor& src);            // in place, same shape, no grad tracking
  void fill_(float v);

  // --- autograd -------------------------------------------------------------------
  bool requires_grad() const { return impl_->autograd->requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const { return impl_->autograd->grad ? Tensor(impl_->autograd->grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl_->autograd->grad = g.impl_; }
  void zero_grad() { impl_->autograd->grad.reset(); }
  void retain_grad() { impl_->autograd->retain_grad = true; }
  bool is_leaf() const { return !impl_->autograd->grad_fn; }
  // Reverse-mode sweep from this tensor. With no argument it must hold one element
  // and is seeded with 1. Frees the graph's intermediate state as it goes.
  void backward(const Tensor& grad_output = Tensor()) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// The one rule for in-place reuse: true when `p` is the only handle on its TensorImpl, that
// TensorImpl the only one on its storage, and the storage exactly its data. Then nothing else
// can read or write those floats (a value saved for a backward, a view or another handle all
// count as references), so an op may write its result over them or hand the buffer on. Used
// by the elementwise ops' rvalue overloads (engine/ops/elementwise.cpp), accumulate_grad
// (engine/autograd.cpp) and Tensor::reshape's backward.
bool sole_owner(const std::shared_ptr<TensorImpl>& p);
inline bool sole_owner(const Tensor& t) { return sole_owner(t.impl_ptr()); }

// Throws unless the (defined) tensors all live on one device; returns it (CPU if none is defined).
Device common_device(std::initializer_list<Tensor> ts, const char* op);

// Throws std::invalid_argument with "<what>: expected shape [..], got [..]".
void check_shape(const Tensor& t, const Shape& expected, const std::string& what);

}  // namespace ms
