// Convolution and pooling on [N, C, H, W]: conv2d (im2col + GEMM per image, in the kernels),
// max_pool2d, adaptive_avg_pool2d. Semantics as torch.nn.functional (no dilation/groups).
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"
#include "engine/ops/bn_statistics.h"

namespace ms {

static void check_4d(const Tensor& x, const char* op, const char* what) {
  if (!x.defined() || x.dim() != 4)
    throw std::invalid_argument(std::string(op) + ": " + what + " must be 4-D [N,C,H,W], got " +
                                (x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor")));
}

// floor((in + 2 pad - k) / stride) + 1, or a named error when the window does not fit.
static int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, const char* op, const Shape& xs) {
  if (in + 2 * pad < k)
    throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(k) + " larger than padded input " +
                                std::to_string(in + 2 * pad) + " (input " + shape_str(xs) + ")");
  return (in + 2 * pad - k) / stride + 1;
}

// ---- conv2d ------------------------------------------------------------------------------

// The bias-free product y[n] = W[O, C*kh*kw] col(x[n])[C*kh*kw, OH*OW] (conv2d_forward in
// engine/kernels/*/conv.*); the bias is a broadcasting add on top, so its gradient comes from
// add's backward (sum over N, H, W).

// The checks of conv2d's arguments (the device too) and its geometry.
static Conv2dShape conv2d_shape(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding) {
  check_4d(x, "conv2d", "input");
  check_4d(w, "conv2d", "weight");
  common_device({x, w, b}, "conv2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  if (w.size(1) != C)
    throw std::invalid_argument("conv2d: weight " + shape_str(w.shape()) + " expects " + std::to_string(w.size(1)) +
                                " input channels, input " + shape_str(x.shape()) + " has " + std::to_string(C));
  if (kh < 1 || kw < 1) throw std::invalid_argument("conv2d: weight " + shape_str(w.shape()) + " has an empty kernel");
  if (b.defined() && b.shape() != Shape{O})
    throw std::invalid_argument("conv2d: bias " + shape_str(b.shape()) + " for weight " + shape_str(w.shape()) +
                                ", expected [" + std::to_string(O) + "]");
  if (stride < 1 || padding < 0)
    throw std::invalid_argument("conv2d: stride must be >= 1 and padding >= 0, got stride " + std::to_string(stride) +
                                ", padding " + std::to_string(padding));
  const int64_t OH = out_size(H, kh, stride, padding, "conv2d", x.shape());
  const int64_t OW = out_size(W, kw, stride, padding, "conv2d", x.shape());
  return Conv2dShape{N, C, H, W, O, kh, kw, stride, padding, OH, OW};
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding) {
  const Conv2dShape s = conv2d_shape(x, w, b, stride, padding);
  const Device dev = common_device({x, w, b}, "conv2d");
  const int64_t N = s.N, O = s.O, OH = s.OH, OW = s.OW;

  Tensor y = Tensor::empty({N, O, OH, OW}, dev);  // (N, O, OH, OW)
  MS_DISPATCH(dev, conv2d_forward, x.data(), w.data(), y.data(), s);

  // dW reads x and dx reads W: each is kept only if the other needs a gradient.
  auto backward = [x = needs_grad(w) ? x : grad_handle(x), w = needs_grad(x) ? w : grad_handle(w), s](const Tensor& g) {
    // dx[n] = col2im(W^T g[n]); dW = sum_n g[n] col(x[n])^T
    Tensor gx = needs_grad(x) ? Tensor::empty(x.shape(), x.device()) : Tensor();
    Tensor gw = needs_grad(w) ? Tensor::empty(w.shape(), w.device()) : Tensor();
    MS_DISPATCH(x.device(), conv2d_backward, x.data(), w.data(), g.data(), gx.defined() ? gx.data() : nullptr,
                gw.defined() ? gw.data() : nullptr, s);
    if (gx.defined()) accumulate_grad(x, gx);
    if (gw.defined()) accumulate_grad(w, gw);
  };
  record(y, "conv2d", {x, w}, backward);
  if (b.defined()) y = add(y, b.reshape({1, O, 1, 1}));
  return y;
}

// Evaluation: batch_norm2d_act(conv2d(x, w), ...) with the BatchNorm applied by the convolution
// to its output while in cache (conv2d_bn_act_forward), the same bits. Where a gradient is
// wanted, or the convolution has a bias, the two ops one after the other.
Tensor conv2d_bn_act(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding,
                     const Tensor& bn_weight, const Tensor& bn_bias, Tensor& running_mean, Tensor& running_var,
                     float eps, const Tensor& residual, bool relu) {
  if (any_requires_grad({x, w, b, bn_weight, bn_bias, residual}) || b.defined())
    return batch_norm2d_act(conv2d(x, w, b, stride, padding), bn_weight, bn_bias, running_mean, running_var, false,
                            0.1f, eps, residual, relu);
  const Conv2dShape s = conv2d_shape(x, w, b, stride, padding);
  Tensor y = Tensor::empty({s.N, s.O, s.OH, s.OW}, common_device({x, w}, "conv2d"));
  Tensor mean, rstd;
  Device dev = y.device();
  bn_statistics("batch_norm2d_act", y, bn_weight, bn_bias, running_mean, running_var, false, 0.1f, eps, mean, rstd,
                dev);
  bn_check_residual("batch_norm2d_act", residual, y);
  MS_DISPATCH(dev, conv2d_bn_act_forward, x.data(), w.data(), y.data(), s, mean.data(), rstd.data(),
              bn_weight.defined() ? bn_weight.data() : nullptr, bn_bias.defined() ? bn_bias.data() : nullptr,
              residual.defined() ? residual.data() : nullptr, relu);
  return y;
}

// ---- max_pool2d --------------------------------------------------------------------------

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_4d(x, "max_pool2d", "input");
  if (kernel < 1 || stride < 1 || padding < 0)
    throw std::invalid_argument("max_pool2d: need kernel >= 1, stride >= 1, padding >= 0, got " +
                                std::to_string(kernel) + ", " + std::to_string(stride) + ", " +
                                std::to_string(padding));
  if (2 * padding > kernel)  // as PyTorch: a window must always hold a real cell
    throw std::invalid_argument("max_pool2d: padding " + std::to_string(padding) +
                                " should be at most half of kernel " + std::to_string(kernel));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = out_size(H, kernel, stride, padding, "max_pool2d", x.shape());
  const int64_t OW = out_size(W, kernel, stride, padding, "max_pool2d", x.shape());
  const Device dev = x.device();
  Tensor y = Tensor::empty({N, C, OH, OW}, dev);  // (N, C, OH, OW)
  if (!any_requires_grad({x})) {  // no backward: the values alone (no argmax)
    MS_DISPATCH(dev, max_pool2d_forward, x.data(), y.data(), nullptr, N * C, H, W, kernel, stride, padding, OH, OW);
    return y;
  }
  auto arg = std::make_shared<DeviceArray<int64_t>>(N * C * OH * OW, dev);  // argmax, on x's device
  MS_DISPATCH(dev, max_pool2d_forward, x.data(), y.data(), arg->data(), N * C, H, W, kernel, stride, padding, OH, OW);
  record(y, "max_pool2d", {x}, [x = grad_handle(x), arg, N, C, H, W, OH, OW](const Tensor& g) {
    Tensor gx = Tensor::empty(x.shape(), x.device());  // d max = g routed to the (first) argmax of each window
    MS_DISPATCH(x.device(), max_pool2d_backward, g.data(), arg->data(), gx.data(), N * C, H, W, OH, OW);
    accumulate_grad(x, gx);
  });
  return y;
}

// ---- adaptive_avg_pool2d -----------------------------------------------------------------

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_4d(x, "adaptive_avg_pool2d", "input");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (out_h < 1 || out_w < 1 || H < 1 || W < 1)
    throw std::invalid_argument("adaptive_avg_pool2d: output " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                                " for input " + shape_str(x.shape()) + " (both need positive sizes)");
  Tensor y = Tensor::empty({N, C, out_h, out_w}, x.device());  // (N, C, OH, OW)
  MS_DISPATCH(x.device(), adaptive_avg_pool2d_forward, x.data(), y.data(), N * C, H, W, out_h, out_w);
  record(y, "adaptive_avg_pool2d", {x}, [x = grad_handle(x), N, C, H, W, out_h, out_w](const Tensor& g) {
    Tensor gx = Tensor::empty(x.shape(), x.device());  // d avg = g / bin area, spread over each bin
    MS_DISPATCH(x.device(), adaptive_avg_pool2d_backward, g.data(), gx.data(), N * C, H, W, out_h, out_w);
    accumulate_grad(x, gx);
  });
  return y;
}

}  // namespace ms
