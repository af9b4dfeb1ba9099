// Losses: cross_entropy and bce_with_logits with a validity mask (the mean runs over the
// counted rows/elements only, and an empty selection gives 0 instead of NaN, spec B.6.5), and
// the segmentation fine-tune's dice_bce_loss composed from them.
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

static int64_t count(const std::vector<uint8_t>& v) {
  int64_t n = 0;
  for (auto x : v) n += x ? 1 : 0;
  return n;
}

Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& target, const std::vector<uint8_t>& valid) {
  if (logits.dim() != 2) throw std::invalid_argument("cross_entropy: logits must be [R,C], got " + shape_str(logits.shape()));
  const int64_t R = logits.size(0), C = logits.size(1);
  if (int64_t(target.size()) != R || int64_t(valid.size()) != R)
    throw std::invalid_argument("cross_entropy: " + std::to_string(target.size()) + " targets / " + std::to_string(valid.size()) + " masks for " + std::to_string(R) + " rows");
  for (int64_t r = 0; r < R; ++r)
    if (valid[size_t(r)] && (target[size_t(r)] < 0 || target[size_t(r)] >= C))
      throw std::out_of_range("cross_entropy: target " + std::to_string(target[size_t(r)]) + " of row " + std::to_string(r) + " outside [0, " + std::to_string(C) + ")");
  const Device dev = logits.device();
  const int64_t n = count(valid);
  Tensor row = Tensor::empty({R}, dev);  // per-row terms; summed on the host in row order
  {
    const DeviceArray<int64_t> dt(target, dev);
    const DeviceArray<uint8_t> dv(valid, dev);
    MS_DISPATCH(dev, cross_entropy_forward, logits.data(), dt.data(), dv.data(), row.data(), R, C);
  }
  double s = 0.0;
  for (float v : row.to_vector()) s += v;
  Tensor out = Tensor::full({}, n ? float(s / double(n)) : 0.f, logits.device());
  record(out, "cross_entropy", {logits}, [logits, target, valid, n, R, C](const Tensor& g) {
    const Device dev = logits.device();
    Tensor gl = Tensor::empty(logits.shape(), dev);
    float scale = n ? g.item() / float(n) : 0.f;  // d mean CE = (softmax - onehot) / n
    const DeviceArray<int64_t> dt(target, dev);
    const DeviceArray<uint8_t> dv(valid, dev);
    MS_DISPATCH(dev, cross_entropy_backward, logits.data(), dt.data(), dv.data(), scale, gl.data(), R, C);
    accumulate_grad(logits, gl);
  });
  return out;
}

Tensor bce_with_logits(const Tensor& x, const Tensor& target, const std::vector<uint8_t>& valid) {
  if (target.shape() != x.shape()) throw std::invalid_argument("bce_with_logits: target " + shape_str(target.shape()) + " for logits " + shape_str(x.shape()));
  if (int64_t(valid.size()) != x.numel()) throw std::invalid_argument("bce_with_logits: mask size does not match " + shape_str(x.shape()));
  const Device dev = x.device();
  const Tensor tc = target.to(dev);
  const int64_t n = count(valid), N = x.numel();
  Tensor el = Tensor::empty(x.shape(), dev);  // per-element terms; summed on the host in order
  {
    const DeviceArray<uint8_t> dv(valid, dev);
    MS_DISPATCH(dev, bce_with_logits_forward, x.data(), tc.data(), dv.data(), el.data(), N);
  }
  double s = 0.0;
  for (float v : el.to_vector()) s += v;
  Tensor out = Tensor::full({}, n ? float(s / double(n)) : 0.f, x.device());
  record(out, "bce_with_logits", {x}, [x, target, valid, n, N](const Tensor& g) {
    const Device dev = x.device();
    const Tensor tc = target.to(dev);
    Tensor gx = Tensor::empty(x.shape(), dev);
    float scale = n ? g.item() / float(n) : 0.f;  // d mean BCE = (sigmoid(x) - t) / n
    const DeviceArray<uint8_t> dv(valid, dev);
    MS_DISPATCH(dev, bce_with_logits_backward, x.data(), tc.data(), dv.data(), scale, gx.data(), N);
    accumulate_grad(x, gx);
  });
  return out;
}

// Composed from the ops above, so each term's backward is the one of its op: with n elements,
// d BCE/dx = (p - t) / n and d(1 - dice)/dp_i = -(2 t_i D - 2I - s) / D^2 (I = sum p t,
// D = sum p + sum t + s), chained through sigmoid. spec E.6 (utils.py DiceBCELoss).
Tensor dice_bce_loss(const Tensor& logits, const Tensor& target, float smooth) {
  if (!logits.defined() || !target.defined() || target.shape() != logits.shape())
    throw std::invalid_argument("dice_bce_loss: target " +
                                (target.defined() ? shape_str(target.shape()) : std::string("undefined")) +
                                " for logits " +
                                (logits.defined() ? shape_str(logits.shape()) : std::string("undefined")) +
                                " (expected the same shape)");
  const Tensor t = target.detach().to(logits.device());  // the mask is data: no gradient
  const Tensor bce = bce_with_logits(logits, t, std::vector<uint8_t>(size_t(logits.numel()), 1));  // []
  const Tensor p = sigmoid(logits);                                                                  // logits' shape
  const Tensor inter = sum(mul(p, t));                                                               // []
  const Tensor dice = div(add(mul(inter, 2.f), smooth), add(add(sum(p), sum(t)), smooth));          // []
  return add(bce, rsub(1.f, dice));
}

}  // namespace ms
