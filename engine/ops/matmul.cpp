// Matrix products: matmul (2-D, batched, batched x shared) and linear.
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

namespace {
struct MatDims {
  int64_t batch, M, K, N;
  int64_t sa, sb;  // batch strides (0 = shared operand)
};
}  // namespace

static MatDims mat_dims(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  auto bad = [&]() {
    return std::invalid_argument("matmul: cannot multiply " + shape_str(a.shape()) + (ta ? "^T" : "") + " by " +
                                 shape_str(b.shape()) + (tb ? "^T" : ""));
  };
  if (a.dim() < 2 || a.dim() > 3 || b.dim() < 2 || b.dim() > 3 || (a.dim() == 2 && b.dim() == 3)) throw bad();
  MatDims d;
  int64_t ar = a.size(-2), ac = a.size(-1), br = b.size(-2), bc = b.size(-1);
  d.M = ta ? ac : ar;
  d.K = ta ? ar : ac;
  int64_t kb = tb ? bc : br;
  d.N = tb ? br : bc;
  if (d.K != kb) throw bad();
  d.batch = a.dim() == 3 ? a.size(0) : 1;
  if (b.dim() == 3 && b.size(0) != d.batch) throw bad();
  d.sa = ar * ac;
  d.sb = b.dim() == 3 ? br * bc : 0;
  return d;
}

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  Device dev = common_device({a, b}, "matmul");
  MatDims d = mat_dims(a, b, ta, tb);
  Shape out_shape = a.dim() == 3 ? Shape{d.batch, d.M, d.N} : Shape{d.M, d.N};
  Tensor c = Tensor::empty(out_shape, dev);
  MS_DISPATCH(dev, gemm_batched, ta, tb, d.batch, d.M, d.N, d.K, 1.f, a.data(), d.sa, b.data(), d.sb, 0.f, c.data(),
              d.M * d.N);
  // dA reads B and dB reads A: an operand's values are kept only if the other needs a gradient.
  record(c, "matmul", {a, b}, [a = needs_grad(b) ? a : grad_handle(a), b = needs_grad(a) ? b : grad_handle(b), ta, tb,
                               d, dev](const Tensor& g) {
    // C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo the op.
    if (needs_grad(a)) {
      Tensor ga = Tensor::empty(a.shape(), dev);
      if (!ta)  // dA[M,K] = G[M,N] op(B)^T
        MS_DISPATCH(dev, gemm_batched, false, !tb, d.batch, d.M, d.K, d.N, 1.f, g.data(), d.M * d.N, b.data(), d.sb,
                    0.f, ga.data(), d.sa);
      else  // dA[K,M] = op(B) G^T
        MS_DISPATCH(dev, gemm_batched, tb, true, d.batch, d.K, d.M, d.N, 1.f, b.data(), d.sb, g.data(), d.M * d.N,
                    0.f, ga.data(), d.sa);
      accumulate_grad(a, ga);
    }
    if (needs_grad(b)) {
      // Shared B (sb == 0): accumulate all batches into one buffer, beta = 1 after the first
      // (beta = 0 writes what beta = 1 over zeros would, without the zero fill).
      Tensor gb = Tensor::empty(b.shape(), dev);
      const int64_t nb = d.sb ? d.batch : 1;
      for (int64_t i = 0; i < (d.sb ? 1 : d.batch); ++i) {
        const float* ai = a.data() + i * d.sa;
        const float* gi = g.data() + i * d.M * d.N;
        const float beta = i ? 1.f : 0.f;
        if (!tb)  // dB[K,N] = op(A)^T G
          MS_DISPATCH(dev, gemm_batched, !ta, false, nb, d.K, d.N, d.M, 1.f, ai, d.sa, gi, d.M * d.N, beta, gb.data(),
                      d.sb);
        else  // dB[N,K] = G^T op(A)
          MS_DISPATCH(dev, gemm_batched, true, ta, nb, d.N, d.K, d.M, 1.f, gi, d.M * d.N, ai, d.sa, beta, gb.data(),
                      d.sb);
      }
      accumulate_grad(b, gb);
    }
  });
  return c;
}

namespace {
// linear and linear_relu: checks, then without gradients one kernel (bias and relu in the
// product's epilogue, the same bits), else the ops in turn.
Tensor linear_impl(const Tensor& x, const Tensor& w, const Tensor& b, bool relu_after) {
  const char* name = relu_after ? "linear_relu" : "linear";
  if (w.dim() != 2) throw std::invalid_argument(std::string(name) + ": weight must be 2-D [out,in], got " + shape_str(w.shape()));
  const int64_t in = w.size(1), out = w.size(0);
  if (x.dim() < 1 || x.size(-1) != in)
    throw std::invalid_argument(std::string(name) + ": input " + shape_str(x.shape()) + " does not end in " +
                                std::to_string(in) + " (weight " + shape_str(w.shape()) + ")");
  if (b.defined() && b.shape() != Shape{out})
    throw std::invalid_argument(std::string(name) + ": bias " + shape_str(b.shape()) + " for weight " +
                                shape_str(w.shape()));
  Shape out_shape = x.shape();
  out_shape.back() = out;
  if (b.defined() && !any_requires_grad({x, w, b})) {
    const Device dev = common_device({x, w, b}, name);
    const int64_t R = x.numel() / in;
    Tensor xc = x.reshape({R, in});
    Tensor y = Tensor::empty({R, out}, dev);
    MS_DISPATCH(dev, linear_forward, xc.data(), w.data(), b.data(), y.data(), R, in, out, relu_after);
    return y.reshape(out_shape);
  }
  Tensor y = matmul(x.reshape({x.numel() / in, in}), w, false, true);  // [R,in] x [out,in]^T
  if (b.defined()) y = add(std::move(y), b);  // the bias added over the product itself
  if (relu_after) y = relu(std::move(y));
  return y.reshape(out_shape);
}
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) { return linear_impl(x, w, b, false); }
Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& b) { return linear_impl(x, w, b, true); }

}  // namespace ms
