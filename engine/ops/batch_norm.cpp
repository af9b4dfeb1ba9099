// batch_norm2d (torch.nn.functional.batch_norm on [N, C, H, W]). Training normalises with
// the batch mean and biased variance and moves the running statistics towards the batch
// mean and unbiased variance; evaluation uses the running statistics as constants.
// num_batches_tracked belongs to the nn module, not to this op.
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"
#include "engine/ops/bn_statistics.h"

namespace ms {

static void check_channel_vector(const Tensor& t, int64_t C, const char* what, const Shape& xs) {
  if (t.defined() && t.shape() != Shape{C})
    throw std::invalid_argument(std::string("batch_norm2d: ") + what + " " + shape_str(t.shape()) + " for input " +
                                shape_str(xs) + ", expected [" + std::to_string(C) + "]");
}

// bn_statistics.h
void bn_statistics(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                          Tensor& running_mean, Tensor& running_var, bool training, float momentum, float eps,
                          Tensor& mean, Tensor& rstd, Device& dev) {
  if (!x.defined() || x.dim() != 4)
    throw std::invalid_argument(std::string(op) + ": input must be 4-D [N,C,H,W], got " +
                                (x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor")));
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), M = N * HW;
  check_channel_vector(weight, C, "weight", x.shape());
  check_channel_vector(bias, C, "bias", x.shape());
  check_channel_vector(running_mean, C, "running_mean", x.shape());
  check_channel_vector(running_var, C, "running_var", x.shape());
  dev = common_device({x, weight, bias, running_mean, running_var}, op);
  if (running_mean.defined() != running_var.defined())
    throw std::invalid_argument(std::string(op) + ": running_mean and running_var must both be given or both be undefined");
  {
    NoGradGuard ng;
    if (training) {
      if (M <= 1)
        throw std::invalid_argument(std::string(op) + ": expected more than 1 value per channel when training, got input " +
                                    shape_str(x.shape()));
      mean = Tensor::empty({C}, dev);
      Tensor var = Tensor::empty({C}, dev);  // biased: / (N*H*W)
      MS_DISPATCH(dev, batch_norm_stats, x.data(), mean.data(), var.data(), N, C, HW);
      rstd = rsqrt(add(var, eps));
      if (running_mean.defined()) {  // r <- (1 - momentum) r + momentum stat, var unbiased (n / (n-1))
        running_mean.copy_(add(mul(running_mean, 1.f - momentum), mul(mean, momentum)));
        running_var.copy_(add(mul(running_var, 1.f - momentum), mul(var, momentum * float(M) / float(M - 1))));
      }
    } else {
      if (!running_mean.defined())
        throw std::invalid_argument(std::string(op) + ": evaluation mode needs running_mean and running_var");
      mean = running_mean.clone();  // a snapshot: a later training call updates the buffer in place
      rstd = rsqrt(add(running_var, eps));
    }
  }
}

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps) {
  Tensor mean, rstd;  // [C] each: the statistics this call normalises with
  Device dev = Device::CPU;
  bn_statistics("batch_norm2d", x, weight, bias, running_mean, running_var, training, momentum, eps, mean, rstd, dev);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);

  Tensor y = Tensor::empty(x.shape(), dev);  // (N, C, H, W)
  MS_DISPATCH(dev, batch_norm_apply, x.data(), mean.data(), rstd.data(), weight.defined() ? weight.data() : nullptr,
              bias.defined() ? bias.data() : nullptr, y.data(), N, C, HW);
  record(y, "batch_norm2d", {x, weight, bias}, [x, weight, bias = grad_handle(bias), mean, rstd, N, C, HW, training,
                                                 dev](const Tensor& g) {
    // train: gx = w rstd (g - mean(g) - xh mean(g xh)); eval: gx = w rstd g; gw = sum g xh, gb = sum g
    Tensor gx = needs_grad(x) ? Tensor::empty(x.shape(), dev) : Tensor();
    Tensor gw = needs_grad(weight) ? Tensor::empty({C}, dev) : Tensor();
    Tensor gb = needs_grad(bias) ? Tensor::empty({C}, dev) : Tensor();
    MS_DISPATCH(dev, batch_norm_backward, x.data(), mean.data(), rstd.data(),
                weight.defined() ? weight.data() : nullptr, g.data(), gx.defined() ? gx.data() : nullptr,
                gw.defined() ? gw.data() : nullptr, gb.defined() ? gb.data() : nullptr, N, C, HW, training);
    if (gx.defined()) accumulate_grad(x, gx);
    if (gw.defined()) accumulate_grad(weight, gw);
    if (gb.defined()) accumulate_grad(bias, gb);
  });
  return y;
}

void bn_check_residual(const char* op, const Tensor& residual, const Tensor& x) {
  if (!residual.defined()) return;
  if (residual.shape() != x.shape())
    throw std::invalid_argument(std::string(op) + ": residual " + shape_str(residual.shape()) + " for input " +
                                shape_str(x.shape()) + ", expected the same shape");
  common_device({x, residual}, op);
}

Tensor batch_norm2d_act(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                        Tensor& running_var, bool training, float momentum, float eps, const Tensor& residual,
                        bool relu) {
  Tensor mean, rstd;
  Device dev = Device::CPU;
  bn_statistics("batch_norm2d_act", x, weight, bias, running_mean, running_var, training, momentum, eps, mean, rstd,
                dev);
  bn_check_residual("batch_norm2d_act", residual, x);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  Tensor y = Tensor::empty(x.shape(), dev);
  MS_DISPATCH(dev, batch_norm_act_apply, x.data(), mean.data(), rstd.data(), weight.defined() ? weight.data() : nullptr,
              bias.defined() ? bias.data() : nullptr, residual.defined() ? residual.data() : nullptr, y.data(), N, C,
              HW, relu);
  if (!any_requires_grad({x, weight, bias, residual})) return y;
  // Kept: x (the statistics' input) and, with relu, the output (its mask: y > 0 exactly where
  // the pre-activation is > 0); the residual only as a grad handle.
  Tensor yd = relu ? y.detach() : Tensor();
  record(y, "batch_norm2d_act", {x, weight, bias, residual},
         [x, weight, bias = grad_handle(bias), res = grad_handle(residual), yd, mean, rstd, N, C, HW, training, relu,
          dev](const Tensor& g) {
           // The incoming gradient's buffer, when nobody else holds it (sole_owner), takes the
           // residual's gradient or else x's: the kernel reads each element of g before it writes
           // that element, and accumulate_grad then adopts the buffer (one allocation fewer).
           const bool own_g = sole_owner(g) && g.shape() == x.shape();
           const bool gr_in_g = own_g && needs_grad(res), gx_in_g = own_g && !gr_in_g && needs_grad(x);
           Tensor gx = needs_grad(x) && !gx_in_g ? Tensor::empty(x.shape(), dev) : Tensor();
           Tensor gw = needs_grad(weight) ? Tensor::empty({C}, dev) : Tensor();
           Tensor gb = needs_grad(bias) ? Tensor::empty({C}, dev) : Tensor();
           Tensor gr = needs_grad(res) && !gr_in_g ? Tensor::empty(x.shape(), dev) : Tensor();
           float* gx_p = gx_in_g ? g.data() : gx.defined() ? gx.data() : nullptr;
           float* gr_p = gr_in_g ? g.data() : gr.defined() ? gr.data() : nullptr;
           MS_DISPATCH(dev, batch_norm_act_backward, x.data(), yd.defined() ? yd.data() : nullptr, mean.data(),
                       rstd.data(), weight.defined() ? weight.data() : nullptr, g.data(), gx_p,
                       gw.defined() ? gw.data() : nullptr, gb.defined() ? gb.data() : nullptr, gr_p, N, C, HW,
                       training, relu);
           if (gw.defined()) accumulate_grad(weight, gw);
           if (gb.defined()) accumulate_grad(bias, gb);
           if (gx.defined()) accumulate_grad(x, gx);
           if (gr.defined()) accumulate_grad(res, gr);
           if (gx_in_g) accumulate_grad(x, g);  // last: g's buffer is handed on
           if (gr_in_g) accumulate_grad(res, g);
         });
  return y;
}

}  // namespace ms
