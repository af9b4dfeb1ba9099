// Reductions along one dim (or all): sum, mean, max.
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

static int64_t norm_dim(int64_t d, int64_t n, const char* op) {
  if (d < 0) d += n;
  if (d < 0 || d >= n) throw std::out_of_range(std::string(op) + ": dim out of range");
  return d;
}

// [outer, n, inner] view of a around dim d.
static void split(const Shape& s, int64_t d, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1; inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[size_t(i)];
  n = s[size_t(d)];
  for (size_t i = size_t(d) + 1; i < s.size(); ++i) inner *= s[i];
}

static Shape reduced_shape(const Shape& s, int64_t d, bool keepdim) {
  Shape r = s;
  if (keepdim) r[size_t(d)] = 1;
  else r.erase(r.begin() + d);
  return r;
}

Tensor sum(const Tensor& a, int64_t dim, bool keepdim) {
  int64_t d = norm_dim(dim, a.dim(), "sum");
  int64_t outer, n, inner;
  split(a.shape(), d, outer, n, inner);
  Tensor y = Tensor::empty(reduced_shape(a.shape(), d, keepdim), a.device());
  MS_DISPATCH(a.device(), sum_dim, a.data(), y.data(), outer, n, inner);
  record(y, "sum_dim", {a}, [a, outer, n, inner](const Tensor& g) {
    // d sum = g broadcast along the reduced dim
    Tensor gx = Tensor::empty(a.shape(), a.device());
    MS_DISPATCH(a.device(), repeat_dim, g.data(), gx.data(), outer, n, inner);
    accumulate_grad(a, gx);
  });
  return y;
}

Tensor mean(const Tensor& a, int64_t dim, bool keepdim) {
  int64_t d = norm_dim(dim, a.dim(), "mean");
  return mul(sum(a, d, keepdim), 1.0f / float(a.size(d)));
}

Tensor sum(const Tensor& a) { return sum(a.reshape({a.numel()}), 0, false); }
Tensor mean(const Tensor& a) { return mul(sum(a), 1.0f / float(a.numel())); }

Tensor max(const Tensor& a, int64_t dim, bool keepdim) {
  int64_t d = norm_dim(dim, a.dim(), "max");
  int64_t outer, n, inner;
  split(a.shape(), d, outer, n, inner);
  if (n == 0) throw std::invalid_argument("max: reducing an empty dim");
  Tensor y = Tensor::empty(reduced_shape(a.shape(), d, keepdim), a.device());
  auto arg = std::make_shared<DeviceArray<int64_t>>(outer * inner, a.device());  // argmax, on a's device
  MS_DISPATCH(a.device(), max_dim, a.data(), y.data(), arg->data(), outer, n, inner);
  record(y, "max_dim", {a}, [a, arg, outer, n, inner](const Tensor& g) {
    // d max = g at the (first) argmax, 0 elsewhere
    Tensor gx = Tensor::zeros(a.shape(), a.device());
    MS_DISPATCH(a.device(), max_dim_backward, g.data(), arg->data(), gx.data(), outer, n, inner);
    accumulate_grad(a, gx);
  });
  return y;
}

std::vector<int64_t> argmax(const Tensor& a, int64_t dim) {
  Tensor h = a.to(Device::CPU);
  int64_t d = norm_dim(dim, h.dim(), "argmax");
  int64_t outer, n, inner;
  split(h.shape(), d, outer, n, inner);
  std::vector<float> y(size_t(outer * inner));
  std::vector<int64_t> arg(size_t(outer * inner));
  MS_DISPATCH(h.device(), max_dim, h.data(), y.data(), arg.data(), outer, n, inner);  // on the host copy
  return arg;
}

}  // namespace ms
