// Transposed convolution on [N, C, H, W] (torch.nn.functional.conv_transpose2d with
// output_padding 0, groups 1, dilation 1): the up-sampling of the fine-tuning U-Net
// (spec E.6, ConvTranspose2d k2 s2). It is the adjoint of conv2d: conv_transpose2d(x, w)
// equals the input gradient of conv2d(·, w) seeded with x, so its backward is a conv2d.
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

// The bias-free part y = conv_transpose(x, W) runs in the kernel; the bias is a broadcasting
// add on top, so its gradient (the sum of g over N, OH, OW) comes from add's backward.
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding) {
  const auto shape_of = [](const Tensor& t) { return t.defined() ? shape_str(t.shape()) : std::string("undefined"); };
  if (!x.defined() || x.dim() != 4)
    throw std::invalid_argument("conv_transpose2d: input must be 4-D [N,C,H,W], got " + shape_of(x));
  if (!w.defined() || w.dim() != 4)
    throw std::invalid_argument("conv_transpose2d: weight must be 4-D [C_in,C_out,kh,kw], got " + shape_of(w));
  const Device dev = common_device({x, w, b}, "conv_transpose2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(1), kh = w.size(2), kw = w.size(3);
  if (w.size(0) != C)
    throw std::invalid_argument("conv_transpose2d: weight " + shape_str(w.shape()) + " expects " +
                                std::to_string(w.size(0)) + " input channels (dim 0), input " +
                                shape_str(x.shape()) + " has " + std::to_string(C));
  if (kh < 1 || kw < 1)
    throw std::invalid_argument("conv_transpose2d: weight " + shape_str(w.shape()) + " has an empty kernel");
  if (b.defined() && b.shape() != Shape{O})
    throw std::invalid_argument("conv_transpose2d: bias " + shape_str(b.shape()) + " for weight " +
                                shape_str(w.shape()) + ", expected [" + std::to_string(O) + "]");
  if (stride < 1 || padding < 0)
    throw std::invalid_argument("conv_transpose2d: stride must be >= 1 and padding >= 0, got stride " +
                                std::to_string(stride) + ", padding " + std::to_string(padding));
  const int64_t OH = (H - 1) * stride - 2 * padding + kh, OW = (W - 1) * stride - 2 * padding + kw;
  if (H < 1 || W < 1 || OH < 1 || OW < 1)
    throw std::invalid_argument("conv_transpose2d: input " + shape_str(x.shape()) + " with kernel " +
                                std::to_string(kh) + "x" + std::to_string(kw) + ", stride " + std::to_string(stride) +
                                ", padding " + std::to_string(padding) + " gives an empty output " +
                                std::to_string(OH) + "x" + std::to_string(OW));

  const ConvTranspose2dShape shape{N, C, H, W, O, kh, kw, stride, padding, OH, OW};

  Tensor y = Tensor::empty({N, O, OH, OW}, dev);  // (N, O, OH, OW)
  MS_DISPATCH(dev, conv_transpose2d_forward, x.data(), w.data(), y.data(), shape);

  // dx = conv2d(g, W) and dW = sum_n x[n] im2col(g[n])^T; dW reads x and dx reads W, so each
  // is kept only if the other needs a gradient.
  auto backward = [x = needs_grad(w) ? x : grad_handle(x), w = needs_grad(x) ? w : grad_handle(w), shape,
                   dev](const Tensor& g) {
    const bool gx_on = needs_grad(x), gw_on = needs_grad(w);
    Tensor gx = gx_on ? Tensor::empty(x.shape(), dev) : Tensor();  // both written by the kernel
    Tensor gw = gw_on ? Tensor::empty(w.shape(), dev) : Tensor();
    MS_DISPATCH(dev, conv_transpose2d_backward, gw_on ? x.data() : nullptr, gx_on ? w.data() : nullptr, g.data(),
                gx_on ? gx.data() : nullptr, gw_on ? gw.data() : nullptr, shape);
    if (gx_on) accumulate_grad(x, gx);
    if (gw_on) accumulate_grad(w, gw);
  };
  record(y, "conv_transpose2d", {x, w}, backward);
  if (b.defined()) y = add(y, b.reshape({1, O, 1, 1}));
  return y;
}

}  // namespace ms
