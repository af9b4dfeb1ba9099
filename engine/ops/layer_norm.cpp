// layer_norm over the last dim (torch.nn.functional.layer_norm with one normalised dim).
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  const int64_t C = x.size(-1), R = x.numel() / C;
  if (w.defined() && w.shape() != Shape{C}) throw std::invalid_argument("layer_norm: weight " + shape_str(w.shape()) + " for input " + shape_str(x.shape()));
  if (b.defined() && b.shape() != Shape{C}) throw std::invalid_argument("layer_norm: bias " + shape_str(b.shape()) + " for input " + shape_str(x.shape()));
  Tensor y = Tensor::empty(x.shape(), x.device());
  Tensor mean = Tensor::empty({R}, x.device()), rstd = Tensor::empty({R}, x.device());
  MS_DISPATCH(x.device(), layer_norm_forward, x.data(), w.defined() ? w.data() : nullptr, b.defined() ? b.data() : nullptr,
              y.data(), mean.data(), rstd.data(), R, C, eps);
  record(y, "layer_norm", {x, w, b}, [x, w, b, mean, rstd, R, C](const Tensor& g) {
    Tensor gx = needs_grad(x) ? Tensor::empty(x.shape(), x.device()) : Tensor();
    Tensor gw = needs_grad(w) ? Tensor::empty(w.shape(), w.device()) : Tensor();
    Tensor gb = needs_grad(b) ? Tensor::empty(b.shape(), b.device()) : Tensor();
    MS_DISPATCH(x.device(), layer_norm_backward, x.data(), w.defined() ? w.data() : nullptr, mean.data(), rstd.data(),
                g.data(), gx.defined() ? gx.data() : nullptr, gw.defined() ? gw.data() : nullptr,
                gb.defined() ? gb.data() : nullptr, R, C);
    if (gx.defined()) accumulate_grad(x, gx);
    if (gw.defined()) accumulate_grad(w, gw);
    if (gb.defined()) accumulate_grad(b, gb);
  });
  return y;
}

}  // namespace ms
