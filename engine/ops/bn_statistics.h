// defines: the argument checks (residual included) and statistics of a BatchNorm over [N, C, H, W], shared by
// batch_norm2d / batch_norm2d_act (batch_norm.cpp) and conv2d_bn_act (conv.cpp). Internal to
// engine/ops.
#pragma once
#include "engine/device.h"
#include "engine/tensor.h"

namespace ms {

// Checks the arguments and returns the statistics this call normalises with ([C] each:
// batch mean and 1/sqrt(var + eps) when training, updating the running buffers; else the
// running ones). x is only read when training (its shape and device always).
void bn_statistics(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                   Tensor& running_var, bool training, float momentum, float eps, Tensor& mean, Tensor& rstd,
                   Device& dev);

// A residual (may be undefined) must have x's shape and device; `op` names the caller.
void bn_check_residual(const char* op, const Tensor& residual, const Tensor& x);

}  // namespace ms
