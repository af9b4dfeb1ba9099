// Inverted dropout with the shared Philox keep rule, so CPU and CUDA drop the same
// elements for the same (seed, stream, counter).
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

Tensor dropout(const Tensor& x, float p, bool training, Rng& rng) {
  if (p < 0.f || p >= 1.f) {
    if (p == 1.f && training) return mul(x, 0.f);
    if (p < 0.f || p > 1.f) throw std::invalid_argument("dropout: p must be in [0,1], got " + std::to_string(p));
  }
  if (!training || p == 0.f) return x;
  const int64_t n = x.numel();
  const uint64_t key = rng.key(), c0 = rng.offset();
  rng.set_offset(c0 + uint64_t((n + 3) / 4));  // the counter range this call consumes
  Tensor y = Tensor::empty(x.shape(), x.device());
  auto keep = std::make_shared<DeviceArray<uint8_t>>(n, x.device());  // the mask, on x's device
  MS_DISPATCH(x.device(), dropout_forward, x.data(), y.data(), keep->data(), n, p, key, c0);
  record(y, "dropout", {x}, [x, keep, n, p](const Tensor& g) {
    Tensor gx = Tensor::empty(x.shape(), x.device());  // d dropout = keep / (1-p)
    MS_DISPATCH(x.device(), dropout_backward, g.data(), keep->data(), gx.data(), n, p);
    accumulate_grad(x, gx);
  });
  return y;
}

}  // namespace ms
