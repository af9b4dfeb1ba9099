// Elementwise ops with NumPy broadcasting; forward and backward side by side.
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

static Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) +
                                  " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor r = g;
  const int64_t lead = r.dim() - int64_t(shape.size());
  for (int64_t i = 0; i < lead; ++i) r = sum(r, 0, false);
  for (int64_t d = 0; d < int64_t(shape.size()); ++d)
    if (shape[size_t(d)] == 1 && r.size(d) != 1) r = sum(r, d, true);
  return r.reshape(shape);
}

// ---- unary ----------------------------------------------------------------------------

// True when `a` (a temporary handed over as an rvalue) may take the op's result in place:
// sole_owner (engine/tensor.h), the one rule for in-place reuse. Any saved copy for a backward,
// view or other handle counts as a reference, so values someone still reads are never
// overwritten. The kernels allow out == x: each output element reads only its own input.
static bool reusable(const Tensor& a) { return sole_owner(a); }

// A new tensor (own autograd state) on a's data.
static Tensor alias_of(const Tensor& a) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = a.impl()->storage;
  impl->shape = a.shape();
  return Tensor(impl);
}

static Tensor unary(UnaryOp op, const char* name, const Tensor& a, float s, bool save_x, bool save_y,
                    bool in_place = false) {
  Tensor y = in_place ? alias_of(a) : Tensor::empty(a.shape(), a.device());
  MS_DISPATCH(a.device(), unary_forward, op, a.data(), y.data(), a.numel(), s);
  if (any_requires_grad({a})) {
    Tensor yd = save_y ? y.detach() : Tensor();
    // The input's values are kept only when the derivative needs them (save_x).
    record(y, name, {a}, [op, s, a = save_x ? a : grad_handle(a), yd, save_x](const Tensor& g) {
      Tensor gx = Tensor::empty(a.shape(), a.device());
      MS_DISPATCH(a.device(), unary_backward, op, save_x ? a.data() : nullptr, yd.defined() ? yd.data() : nullptr,
                  g.data(), gx.data(), a.numel(), s);
      accumulate_grad(a, gx);
    });
  }
  return y;
}

Tensor neg(const Tensor& a) { return unary(UnaryOp::Neg, "neg", a, 0.f, false, false); }
Tensor exp(const Tensor& a) { return unary(UnaryOp::Exp, "exp", a, 0.f, false, true); }
Tensor log(const Tensor& a) { return unary(UnaryOp::Log, "log", a, 0.f, true, false); }
Tensor sqrt(const Tensor& a) { return unary(UnaryOp::Sqrt, "sqrt", a, 0.f, false, true); }
Tensor rsqrt(const Tensor& a) { return unary(UnaryOp::Rsqrt, "rsqrt", a, 0.f, false, true); }
// relu's backward reads its output (y > 0 exactly where x > 0) on every device, so the input,
// typically a batch-norm output, is freed during the forward pass or overwritten by y.
Tensor relu(const Tensor& a) { return unary(UnaryOp::Relu, "relu", a, 0.f, false, true); }
Tensor relu(Tensor&& a) {  // over a temporary's own data when nothing else refers to it
  return unary(UnaryOp::Relu, "relu", a, 0.f, false, true, reusable(a));
}
Tensor gelu(const Tensor& a) { return unary(UnaryOp::Gelu, "gelu", a, 0.f, true, false); }
Tensor tanh(const Tensor& a) { return unary(UnaryOp::Tanh, "tanh", a, 0.f, false, true); }
Tensor sigmoid(const Tensor& a) { return unary(UnaryOp::Sigmoid, "sigmoid", a, 0.f, false, true); }
Tensor pow(const Tensor& a, float p) { return unary(UnaryOp::Pow, "pow", a, p, true, false); }
Tensor add(const Tensor& a, float s) { return unary(UnaryOp::AddScalar, "add_scalar", a, s, false, false); }
Tensor mul(const Tensor& a, float s) { return unary(UnaryOp::MulScalar, "mul_scalar", a, s, false, false); }
Tensor rsub(float s, const Tensor& a) { return unary(UnaryOp::RSubScalar, "rsub_scalar", a, s, false, false); }

// ---- binary ---------------------------------------------------------------------------

// t's share of g: g itself where the shapes agree (accumulate_grad may then adopt the buffer
// when the backward loop's handle is its only other holder, instead of copying it), else g
// summed over t's broadcast dimensions.
static void accumulate_summed(const Tensor& t, const Tensor& g) {
  if (g.shape() == t.shape()) accumulate_grad(t, g);
  else accumulate_grad(t, sum_to(g, t.shape()));
}

static Tensor binary(BinaryOp op, const char* name, const Tensor& a, const Tensor& b, bool in_place = false) {
  Device dev = common_device({a, b}, name);
  Shape out_shape = broadcast_shape(a.shape(), b.shape(), name);
  Tensor out = in_place && out_shape == a.shape() ? alias_of(a) : Tensor::empty(out_shape, dev);
  Broadcast bc = make_broadcast(out_shape, a.shape(), b.shape());
  MS_DISPATCH(dev, binary_forward, op, a.data(), b.data(), out.data(), bc);
  if (any_requires_grad({a, b})) {
    // Values are kept only where a derivative reads them: a for d(ab)/db and d(a/b)/db,
    // b for d(ab)/da and both quotient derivatives. Add and sub keep none.
    const bool mul_div = op == BinaryOp::Mul || op == BinaryOp::Div;
    const bool keep_a = mul_div && needs_grad(b), keep_b = mul_div && (needs_grad(a) || op == BinaryOp::Div);
    record(out, name, {a, b}, [op, a = grad_handle(a), b = grad_handle(b), ad = keep_a ? a.detach() : Tensor(),
                               bd = keep_b ? b.detach() : Tensor()](const Tensor& g) {
      switch (op) {
        case BinaryOp::Add:  // d(a+b) = (g, g)
          accumulate_summed(a, g);
          accumulate_summed(b, g);
          break;
        case BinaryOp::Sub:  // d(a-b) = (g, -g)
          accumulate_summed(a, g);
          if (needs_grad(b)) accumulate_grad(b, sum_to(neg(g), b.shape()));
          break;
        case BinaryOp::Mul:  // d(ab) = (g b, g a)
          if (needs_grad(a)) accumulate_grad(a, sum_to(mul(g, bd), a.shape()));
          if (needs_grad(b)) accumulate_grad(b, sum_to(mul(g, ad), b.shape()));
          break;
        case BinaryOp::Div:  // d(a/b) = (g / b, -g a / b^2)
          if (needs_grad(a)) accumulate_grad(a, sum_to(div(g, bd), a.shape()));
          if (needs_grad(b)) accumulate_grad(b, sum_to(neg(div(mul(g, ad), mul(bd, bd))), b.shape()));
          break;
      }
    });
  }
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, "add", a, b); }
Tensor add(Tensor&& a, const Tensor& b) { return binary(BinaryOp::Add, "add", a, b, reusable(a)); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, "div", a, b); }

std::pair<Tensor, Tensor> mask_split(const Tensor& m, const Tensor& x) {
  if (m.shape() != x.shape() || any_requires_grad({m, x}))  // the ops (broadcasting, gradients)
    return {mul(m, x), mul(rsub(1.f, m), x)};
  const Device dev = common_device({m, x}, "mask_split");
  Tensor pa = Tensor::empty(x.shape(), dev), pb = Tensor::empty(x.shape(), dev);
  MS_DISPATCH(dev, mask_split_forward, m.data(), x.data(), pa.data(), pb.data(), x.numel());
  return {pa, pb};
}

// ---- where / masked_fill ----------------------------------------------------------------

Tensor where(const std::vector<uint8_t>& mask, const Tensor& a, const Tensor& b) {
  Device dev = common_device({a, b}, "where");
  Shape out_shape = broadcast_shape(a.shape(), b.shape(), "where");
  if (int64_t(mask.size()) != shape_numel(out_shape))
    throw std::invalid_argument("where: mask has " + std::to_string(mask.size()) + " elements, output " +
                                shape_str(out_shape) + " needs " + std::to_string(shape_numel(out_shape)));
  Tensor out = Tensor::empty(out_shape, dev);
  Broadcast bc = make_broadcast(out_shape, a.shape(), b.shape());
  const DeviceArray<uint8_t> m(mask, dev);  // the host mask on the tensors' device
  MS_DISPATCH(dev, where_forward, m.data(), a.data(), b.data(), out.data(), bc);
  if (any_requires_grad({a, b})) {
    record(out, "where", {a, b}, [mask, a, b, out_shape](const Tensor& g) {
      // d where = (g on mask, g off mask), each summed back to its operand's shape
      std::vector<uint8_t> inv(mask.size());
      for (size_t i = 0; i < mask.size(); ++i) inv[i] = !mask[i];
      Tensor zero = Tensor::zeros({}, g.device());
      if (needs_grad(a)) accumulate_grad(a, sum_to(where(mask, g, zero), a.shape()));
      if (needs_grad(b)) accumulate_grad(b, sum_to(where(inv, g, zero), b.shape()));
    });
  }
  return out;
}

Tensor masked_fill(const Tensor& a, const std::vector<uint8_t>& mask, float value) {
  std::vector<uint8_t> inv(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) inv[i] = !mask[i];
  return where(inv, a, Tensor::full({}, value, a.device()));
}

}  // namespace ms
