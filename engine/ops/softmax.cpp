// softmax and log_softmax over one dim.
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

static Tensor softmax_impl(const Tensor& a, int64_t dim, bool log) {
  int64_t d = dim < 0 ? dim + a.dim() : dim;
  if (d < 0 || d >= a.dim()) throw std::out_of_range("softmax: dim out of range for " + shape_str(a.shape()));
  int64_t outer = 1, inner = 1, n = a.size(d);
  for (int64_t i = 0; i < d; ++i) outer *= a.size(i);
  for (int64_t i = d + 1; i < a.dim(); ++i) inner *= a.size(i);
  Tensor y = Tensor::empty(a.shape(), a.device());
  MS_DISPATCH(a.device(), softmax_forward, a.data(), y.data(), outer, n, inner, log);
  if (any_requires_grad({a})) {
    Tensor yd = y.detach();
    record(y, log ? "log_softmax" : "softmax", {a}, [a, yd, outer, n, inner, log](const Tensor& g) {
      Tensor gx = Tensor::empty(a.shape(), a.device());
      MS_DISPATCH(a.device(), softmax_backward, yd.data(), g.data(), gx.data(), outer, n, inner, log);
      accumulate_grad(a, gx);
    });
  }
  return y;
}

Tensor softmax(const Tensor& a, int64_t dim) { return softmax_impl(a, dim, false); }
Tensor log_softmax(const Tensor& a, int64_t dim) { return softmax_impl(a, dim, true); }

}  // namespace ms
