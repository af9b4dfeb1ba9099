// Every differentiable op in engine/ops.h against central finite differences, plus
// forward checks of conv2d / pooling / batch_norm2d against direct loops.
//
// Method: for a fixed random R of the output's shape, L = sum(out * R). The analytic
// gradients come from L.backward(); the numeric ones from (L(x+h) - L(x-h)) / (2h) with
// the forward run in float32 and L summed in double (the outputs a perturbation does not
// touch are bitwise identical, so they cancel exactly). The step actually taken,
// float(x+h) - x, is used as the denominator. Pass criterion: rel-L2 of analytic vs
// numeric over the checked elements <= the per-case tolerance; the max |diff| is printed.
// Inputs are kept away from kinks (relu near 0, ties for max / max_pool).
#include <doctest/doctest.h>

#include <cstring>
#include <tuple>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"

using namespace ms;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Opts {
  double h = 1e-2;  // finite-difference step
  // rel-L2 bound per input. Measured worst case of the default group: 4e-5 (layer_norm,
  // cross_entropy), float32 rounding of L over h.
  double tol = 2e-4;
  int64_t max_elems = 300;  // elements checked per input (a fixed sample beyond that)
};
// Strongly curved functions (pow, rsqrt, log, 1/b): the O(h^2 f'''/f') truncation error of
// central differences dominates; measured up to 2.3e-4 at h = 1e-2.
const Opts kCurved{1e-2, 1e-3, 300};
// A loss over a whole batch (dice_bce_loss): one scalar near 1.7 whose gradient per element is
// ~1/n of it, so the float32 rounding of L over 2h dominates. Measured at h = 1e-2: 1.3e-4 and
// 1.6e-4 (too near 2e-4); at h = 3e-2: 5.4e-5 and 6.4e-5, truncation still negligible.
const Opts kWholeBatchLoss{3e-2, 2e-4, 300};

Tensor uniform(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(s);
  Rng r(seed, kStreamInit);
  r.fill_uniform(t.data(), t.numel(), lo, hi);
  return t;
}

// |x| in [lo, hi] with a random sign: away from the kink of relu at 0.
Tensor away_from_zero(const Shape& s, uint64_t seed, float lo = 0.2f, float hi = 1.f) {
  Tensor t = uniform(s, seed, lo, hi);
  Rng r(seed, kStreamData);
  for (int64_t i = 0; i < t.numel(); ++i)
    if (r.uniform() < 0.5f) t.data()[i] = -t.data()[i];
  return t;
}

// Distinct values spaced by `gap` in random order: no ties within 2h for max / max_pool.
Tensor distinct(const Shape& s, uint64_t seed, float gap = 0.05f) {
  const int64_t n = shape_numel(s);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = (float(i) - float(n) / 2.f) * gap;
  Rng r(seed, kStreamData);
  r.shuffle(v);
  return Tensor::from_vector(v, s);
}

double weighted_sum(const Tensor& out, const std::vector<float>& R) {
  double s = 0.0;
  const float* o = out.data();
  for (int64_t i = 0; i < out.numel(); ++i) s += double(o[i]) * double(R[size_t(i)]);
  return s;
}

struct GradError {
  double rel_l2 = 0, max_abs = 0;
  int64_t worst = -1, checked = 0;
};

// Analytic vs numeric d/d inputs of L = sum(f(inputs) * R), one GradError per input.
std::vector<GradError> grad_errors(std::vector<Tensor>& inputs, const Fn& f, const Opts& o) {
  for (auto& t : inputs) t.requires_grad_();
  Tensor out = f(inputs);
  REQUIRE_MESSAGE(out.requires_grad(), "output does not require grad");
  std::vector<float> R(static_cast<size_t>(out.numel()));
  Rng(1234, kStreamInit).fill_uniform(R.data(), out.numel(), -1.f, 1.f);
  sum(mul(out, Tensor::from_vector(R, out.shape()))).backward();

  NoGradGuard ng;
  std::vector<GradError> errs;
  for (Tensor& x : inputs) {
    const int64_t n = x.numel();
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = i;
    if (n > o.max_elems) {
      idx = Rng(99, kStreamData).sample(idx, o.max_elems);
      std::sort(idx.begin(), idx.end());
    }
    std::vector<float> ga = x.grad().defined() ? x.grad().to_vector() : std::vector<float>(size_t(n), 0.f);
    double num2 = 0, den2 = 0;
    GradError e;
    e.checked = int64_t(idx.size());
    float* p = x.data();
    for (int64_t i : idx) {
      const float v = p[i];
      p[i] = float(v + o.h);
      const double dp = double(p[i]) - v, lp = weighted_sum(f(inputs), R);
      p[i] = float(v - o.h);
      const double dm = v - double(p[i]), lm = weighted_sum(f(inputs), R);
      p[i] = v;
      const double numeric = (lp - lm) / (dp + dm), d = ga[size_t(i)] - numeric;
      num2 += d * d;
      den2 += numeric * numeric;
      if (std::fabs(d) > e.max_abs || std::isnan(d)) { e.max_abs = std::fabs(d); e.worst = i; }
    }
    e.rel_l2 = den2 > 0 ? std::sqrt(num2 / den2) : std::sqrt(num2);
    errs.push_back(e);
  }
  return errs;
}

// Prints one line per input and CHECKs rel-L2 <= o.tol.
void gradcheck(const std::string& name, std::vector<Tensor> inputs, const Fn& f, const Opts& o = {}) {
  const auto errs = grad_errors(inputs, f, o);
  for (size_t k = 0; k < errs.size(); ++k) {
    const GradError& e = errs[k];
    MESSAGE(name << " d/input" << k << " " << shape_str(inputs[k].shape()) << ": rel_l2 " << e.rel_l2 << " ("
                 << int(100.0 * e.rel_l2 / o.tol) << "% of " << o.tol << "), max|d| " << e.max_abs << " at " << e.worst
                 << ", " << e.checked << " elems, h " << o.h);
    CHECK_MESSAGE((e.rel_l2 <= o.tol && std::isfinite(e.rel_l2)),
                  name << " d/input" << k << " rel_l2 " << e.rel_l2 << " > " << o.tol);
  }
}

struct GradCase {
  std::string op;       // the name declared in engine/ops.h (or a Tensor method)
  std::string variant;  // what this entry exercises
  std::function<void(const std::string& name)> run;
};

// Shorthand: a case over inputs made by `make` with function f.
GradCase gc(const std::string& op, const std::string& variant, std::function<std::vector<Tensor>()> make, Fn f,
            Opts o = {}) {
  return {op, variant, [make, f, o](const std::string& name) { gradcheck(name, make(), f, o); }};
}

Tensor undef() { return Tensor(); }

std::vector<GradCase> grad_cases() {
  using V = std::vector<Tensor>;
  std::vector<GradCase> t;
  // ---- elementwise, broadcasting ----
  t.push_back(gc("add", "same shape", [] { return V{uniform({2, 3}, 1), uniform({2, 3}, 2)}; },
                 [](const V& v) { return add(v[0], v[1]); }));
  t.push_back(gc("add", "broadcast [2,3,4]+[3,1]", [] { return V{uniform({2, 3, 4}, 1), uniform({3, 1}, 2)}; },
                 [](const V& v) { return add(v[0], v[1]); }));
  t.push_back(gc("add", "scalar", [] { return V{uniform({2, 3}, 3)}; }, [](const V& v) { return add(v[0], 0.7f); }));
  t.push_back(gc("sub", "broadcast [2,1,4]-[3,4]", [] { return V{uniform({2, 1, 4}, 4), uniform({3, 4}, 5)}; },
                 [](const V& v) { return sub(v[0], v[1]); }));
  t.push_back(gc("mul", "broadcast [2,3,4]*[4]", [] { return V{uniform({2, 3, 4}, 6), uniform({4}, 7)}; },
                 [](const V& v) { return mul(v[0], v[1]); }));
  t.push_back(gc("mul", "scalar", [] { return V{uniform({2, 3}, 8)}; }, [](const V& v) { return mul(v[0], -1.3f); }));
  t.push_back(gc("div", "broadcast [2,3]/[2,1]", [] { return V{uniform({2, 3}, 9), uniform({2, 1}, 10, 0.5f, 1.5f)}; },
                 [](const V& v) { return div(v[0], v[1]); }, kCurved));
  t.push_back(gc("rsub", "scalar - a", [] { return V{uniform({2, 3}, 11)}; },
                 [](const V& v) { return rsub(2.f, v[0]); }));
  t.push_back(gc("neg", "", [] { return V{uniform({2, 3}, 12)}; }, [](const V& v) { return neg(v[0]); }));
  t.push_back(gc("exp", "", [] { return V{uniform({2, 3}, 13)}; }, [](const V& v) { return exp(v[0]); }));
  t.push_back(gc("log", "x in [0.5,2]", [] { return V{uniform({2, 3}, 14, 0.5f, 2.f)}; },
                 [](const V& v) { return log(v[0]); }, kCurved));
  t.push_back(gc("sqrt", "x in [0.5,2]", [] { return V{uniform({2, 3}, 15, 0.5f, 2.f)}; },
                 [](const V& v) { return sqrt(v[0]); }, kCurved));
  t.push_back(gc("rsqrt", "x in [0.5,2]", [] { return V{uniform({2, 3}, 16, 0.5f, 2.f)}; },
                 [](const V& v) { return rsqrt(v[0]); }, kCurved));
  t.push_back(gc("relu", "|x| >= 0.2", [] { return V{away_from_zero({3, 4}, 17)}; },
                 [](const V& v) { return relu(v[0]); }));
  t.push_back(gc("gelu", "", [] { return V{uniform({3, 4}, 18, -3.f, 3.f)}; }, [](const V& v) { return gelu(v[0]); }));
  t.push_back(gc("tanh", "", [] { return V{uniform({3, 4}, 19, -2.f, 2.f)}; }, [](const V& v) { return tanh(v[0]); }));
  t.push_back(gc("sigmoid", "", [] { return V{uniform({3, 4}, 20, -3.f, 3.f)}; },
                 [](const V& v) { return sigmoid(v[0]); }));
  t.push_back(gc("pow", "p=3 signed", [] { return V{uniform({2, 3}, 21)}; },
                 [](const V& v) { return pow(v[0], 3.f); }, kCurved));
  t.push_back(gc("pow", "p=-1.5 x in [0.5,2]", [] { return V{uniform({2, 3}, 22, 0.5f, 2.f)}; },
                 [](const V& v) { return pow(v[0], -1.5f); }, kCurved));
  t.push_back(gc("sum_to", "[2,3,4] -> [3,1]", [] { return V{uniform({2, 3, 4}, 23)}; },
                 [](const V& v) { return sum_to(v[0], {3, 1}); }));
  // ---- reductions ----
  t.push_back(gc("sum", "all elements", [] { return V{uniform({2, 3, 4}, 24)}; },
                 [](const V& v) { return sum(v[0]); }));
  t.push_back(gc("mean", "all elements", [] { return V{uniform({2, 3, 4}, 25)}; },
                 [](const V& v) { return mean(v[0]); }));
  for (int64_t d : {0, 1, -1})
    for (bool keep : {false, true}) {
      std::string var = "dim " + std::to_string(d) + (keep ? " keepdim" : "");
      t.push_back(gc("sum", var, [] { return V{uniform({2, 3, 4}, 26)}; },
                     [d, keep](const V& v) { return sum(v[0], d, keep); }));
      t.push_back(gc("mean", var, [] { return V{uniform({2, 3, 4}, 27)}; },
                     [d, keep](const V& v) { return mean(v[0], d, keep); }));
      t.push_back(gc("max", var + " distinct values", [] { return V{distinct({2, 3, 4}, 28)}; },
                     [d, keep](const V& v) { return max(v[0], d, keep); }));
    }
  // ---- matrix products ----
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      std::string var = std::string("2-D ") + (ta ? "A^T" : "A") + (tb ? " B^T" : " B");
      Shape sa = ta ? Shape{4, 3} : Shape{3, 4}, sb = tb ? Shape{5, 4} : Shape{4, 5};
      t.push_back(gc("matmul", var, [sa, sb] { return V{uniform(sa, 30), uniform(sb, 31)}; },
                     [ta, tb](const V& v) { return matmul(v[0], v[1], ta, tb); }));
      Shape ba = ta ? Shape{2, 4, 3} : Shape{2, 3, 4}, bb = tb ? Shape{2, 5, 4} : Shape{2, 4, 5};
      t.push_back(gc("matmul", "batched " + var.substr(4), [ba, bb] { return V{uniform(ba, 32), uniform(bb, 33)}; },
                     [ta, tb](const V& v) { return matmul(v[0], v[1], ta, tb); }));
      t.push_back(gc("matmul", "batched, shared " + var.substr(4),
                     [ba, sb] { return V{uniform(ba, 34), uniform(sb, 35)}; },
                     [ta, tb](const V& v) { return matmul(v[0], v[1], ta, tb); }));
    }
  t.push_back(gc("linear", "3-D input with bias",
                 [] { return V{uniform({2, 3, 4}, 36), uniform({5, 4}, 37), uniform({5}, 38)}; },
                 [](const V& v) { return linear(v[0], v[1], v[2]); }));
  t.push_back(gc("linear", "no bias", [] { return V{uniform({3, 4}, 39), uniform({2, 4}, 40)}; },
                 [](const V& v) { return linear(v[0], v[1]); }));
  // |x w^T| <= 0.36 and |b| in [1, 2]: outputs of either sign, none near relu's kink
  t.push_back(gc("linear_relu", "3-D input with bias (relu after)",
                 [] {
                   return V{uniform({2, 3, 4}, 901, -0.3f, 0.3f), uniform({5, 4}, 902, -0.3f, 0.3f),
                            away_from_zero({5}, 903, 1.f, 2.f)};
                 },
                 [](const V& v) { return linear_relu(v[0], v[1], v[2]); }));
  // ---- shape ops ----
  t.push_back(gc("reshape", "Tensor::reshape view", [] { return V{uniform({2, 3, 4}, 41)}; },
                 [](const V& v) { return mul(v[0].reshape({4, -1}), 1.5f); }));
  t.push_back(gc("flatten", "Tensor::flatten(1)", [] { return V{uniform({2, 3, 4}, 42)}; },
                 [](const V& v) { return v[0].flatten(1); }));
  t.push_back(gc("unsqueeze", "Tensor::unsqueeze/squeeze", [] { return V{uniform({2, 3}, 43)}; },
                 [](const V& v) { return mul(v[0].unsqueeze(1), 2.f).squeeze(1); }));
  t.push_back(gc("clone", "Tensor::clone", [] { return V{uniform({2, 3}, 44)}; },
                 [](const V& v) { return v[0].clone(); }));
  t.push_back(gc("permute", "{2,0,1}", [] { return V{uniform({2, 3, 4}, 45)}; },
                 [](const V& v) { return permute(v[0], {2, 0, 1}); }));
  t.push_back(gc("transpose", "(0,2)", [] { return V{uniform({2, 3, 4}, 46)}; },
                 [](const V& v) { return transpose(v[0], 0, 2); }));
  t.push_back(gc("concat", "3 tensors on dim 1",
                 [] { return V{uniform({2, 1, 3}, 47), uniform({2, 2, 3}, 48), uniform({2, 3, 3}, 49)}; },
                 [](const V& v) { return concat(v, 1); }));
  t.push_back(gc("narrow", "dim 1 [1,3)", [] { return V{uniform({2, 4, 3}, 50)}; },
                 [](const V& v) { return narrow(v[0], 1, 1, 2); }));
  t.push_back(gc("index_select", "dim 1, repeated indices", [] { return V{uniform({2, 4, 3}, 51)}; },
                 [](const V& v) { return index_select(v[0], 1, {3, 0, 3, 1, 3}); }));
  t.push_back(gc("embedding", "ids [2,3] with repeats", [] { return V{uniform({6, 3}, 52)}; },
                 [](const V& v) { return embedding(v[0], {1, 4, 1, 0, 5, 1}, {2, 3}); }));
  t.push_back(gc("masked_select", "", [] { return V{uniform({2, 3}, 53)}; },
                 [](const V& v) { return masked_select(v[0], {1, 0, 1, 1, 0, 1}); }));
  t.push_back(gc("where", "broadcast a [2,3], b [3]", [] { return V{uniform({2, 3}, 54), uniform({3}, 55)}; },
                 [](const V& v) { return where({1, 0, 0, 1, 1, 0}, v[0], v[1]); }));
  t.push_back(gc("masked_fill", "", [] { return V{uniform({2, 3}, 56)}; },
                 [](const V& v) { return masked_fill(v[0], {0, 1, 0, 0, 1, 1}, -5.f); }));
  t.push_back(gc("expand", "[3,1] -> [2,3,4]", [] { return V{uniform({3, 1}, 57)}; },
                 [](const V& v) { return expand(v[0], {2, 3, 4}); }));
  // ---- softmax family and norms ----
  for (int64_t d : {1, -1}) {
    std::string var = "dim " + std::to_string(d) + " of [2,3,4]";
    t.push_back(gc("softmax", var, [] { return V{uniform({2, 3, 4}, 58, -2.f, 2.f)}; },
                   [d](const V& v) { return softmax(v[0], d); }));
    t.push_back(gc("log_softmax", var, [] { return V{uniform({2, 3, 4}, 59, -2.f, 2.f)}; },
                   [d](const V& v) { return log_softmax(v[0], d); }));
  }
  t.push_back(gc("layer_norm", "weight and bias",
                 [] { return V{uniform({3, 5}, 60), uniform({5}, 61), uniform({5}, 62)}; },
                 [](const V& v) { return layer_norm(v[0], v[1], v[2], 1e-5f); }));
  t.push_back(gc("layer_norm", "no affine, 3-D", [] { return V{uniform({2, 2, 6}, 63)}; },
                 [](const V& v) { return layer_norm(v[0], undef(), undef(), 1e-5f); }));
  t.push_back(gc("batch_norm2d", "train, affine",
                 [] { return V{uniform({3, 2, 3, 2}, 64), uniform({2}, 65, 0.5f, 1.5f), uniform({2}, 66)}; },
                 [](const V& v) {
                   Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});  // fresh buffers per evaluation
                   return batch_norm2d(v[0], v[1], v[2], rm, rv, true);
                 }));
  t.push_back(gc("batch_norm2d", "train, no affine, no running stats", [] { return V{uniform({2, 3, 2, 2}, 67)}; },
                 [](const V& v) {
                   Tensor rm, rv;
                   return batch_norm2d(v[0], undef(), undef(), rm, rv, true);
                 }));
  t.push_back(gc("batch_norm2d", "eval, affine",
                 [] { return V{uniform({2, 3, 2, 2}, 68), uniform({3}, 69, 0.5f, 1.5f), uniform({3}, 70)}; },
                 [](const V& v) {
                   Tensor rm = Tensor::from_vector({0.1f, -0.2f, 0.3f}, {3});
                   Tensor rv = Tensor::from_vector({0.5f, 1.5f, 2.f}, {3});
                   return batch_norm2d(v[0], v[1], v[2], rm, rv, false);
                 }));
  // Fused relu(batch_norm2d(x) + residual): kept away from relu's kink. With a residual, |res| in
  // [3, 4] outweighs the normalised value (|w x_hat| <= 0.8 sqrt(M - 1) = 2.65 for M = 12);
  // without one, image 1 is the negation of image 0, so the batch mean is 0 and x_hat = x rstd
  // with |x| >= 0.2.
  t.push_back(gc("batch_norm2d_act", "train, residual, relu",
                 [] {
                   return V{uniform({2, 2, 2, 3}, 240), uniform({2}, 241, 0.5f, 0.8f), uniform({2}, 242, -0.1f, 0.1f),
                            away_from_zero({2, 2, 2, 3}, 243, 3.f, 4.f)};
                 },
                 [](const V& v) {
                   Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
                   return batch_norm2d_act(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, v[3], true);
                 }));
  t.push_back(gc("batch_norm2d_act", "train, no residual, relu",
                 [] {
                   Tensor x = away_from_zero({2, 2, 2, 3}, 244);
                   for (int64_t i = 0; i < 12; ++i) x.data()[12 + i] = -x.data()[i];
                   return V{x, uniform({2}, 245, 0.5f, 1.5f)};
                 },
                 [](const V& v) {
                   Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
                   return batch_norm2d_act(v[0], v[1], undef(), rm, rv, true, 0.1f, 1e-5f, undef(), true);
                 }));
  t.push_back(gc("batch_norm2d_act", "train, residual, no relu",
                 [] { return V{uniform({2, 3, 2, 2}, 246), uniform({3}, 247, 0.5f, 1.5f), uniform({3}, 248),
                               uniform({2, 3, 2, 2}, 249)}; },
                 [](const V& v) {
                   Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
                   return batch_norm2d_act(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, v[3], false);
                 }));
  t.push_back(gc("batch_norm2d_act", "eval, residual, relu",
                 [] { return V{away_from_zero({2, 3, 2, 2}, 250), uniform({3}, 251, 0.5f, 1.5f),
                               away_from_zero({2, 3, 2, 2}, 252, 3.f, 4.f)}; },
                 [](const V& v) {
                   Tensor rm = Tensor::from_vector({0.1f, -0.2f, 0.3f}, {3});
                   Tensor rv = Tensor::from_vector({0.5f, 1.5f, 2.f}, {3});
                   return batch_norm2d_act(v[0], v[1], undef(), rm, rv, false, 0.1f, 1e-5f, v[2], true);
                 }));
  // ---- convolution and pooling ----
  struct ConvCfg { int64_t C, O, H, W, kh, kw, stride, pad; bool bias; };
  for (ConvCfg c : {ConvCfg{2, 3, 5, 5, 3, 3, 1, 0, true}, ConvCfg{2, 3, 5, 6, 3, 3, 1, 1, false},
                    ConvCfg{2, 2, 6, 5, 3, 3, 2, 1, true}, ConvCfg{2, 2, 7, 7, 7, 7, 2, 3, false},
                    ConvCfg{3, 4, 4, 4, 1, 1, 1, 0, true}, ConvCfg{3, 2, 5, 5, 1, 1, 2, 0, false},
                    ConvCfg{2, 2, 4, 5, 1, 3, 1, 1, true}}) {
    std::string var = std::to_string(c.kh) + "x" + std::to_string(c.kw) + " stride " + std::to_string(c.stride) +
                      " pad " + std::to_string(c.pad) + (c.bias ? " bias" : " no bias");
    t.push_back(gc("conv2d", var,
                   [c] {
                     V v{uniform({2, c.C, c.H, c.W}, 71), uniform({c.O, c.C, c.kh, c.kw}, 72, -0.5f, 0.5f)};
                     if (c.bias) v.push_back(uniform({c.O}, 73));
                     return v;
                   },
                   [c](const V& v) { return conv2d(v[0], v[1], c.bias ? v[2] : undef(), c.stride, c.pad); }));
  }
  // With a gradient wanted conv2d_bn_act is conv2d then batch_norm2d_act (evaluation): x, the
  // weight, the BatchNorm's affine parameters and the residual all get theirs.
  t.push_back(gc("conv2d_bn_act", "3x3 pad 1, residual, relu",
                 [] {
                   // the residual keeps the sum away from ReLU's kink (as the eval case above)
                   return V{uniform({2, 3, 5, 4}, 130), uniform({4, 3, 3, 3}, 131, -0.5f, 0.5f),
                            uniform({4}, 132, 0.5f, 1.5f), uniform({4}, 133), uniform({2, 4, 5, 4}, 134, 6.f, 7.f)};
                 },
                 [](const V& v) {
                   Tensor rm = uniform({4}, 135, -0.2f, 0.2f), rv = uniform({4}, 136, 0.5f, 1.5f);
                   return conv2d_bn_act(v[0], v[1], undef(), 1, 1, v[2], v[3], rm, rv, 1e-5f, v[4], true);
                 }));
  struct DeconvCfg { int64_t C, O, H, W, kh, kw, stride, pad; bool bias; };
  // k2 s2 is the U-Net's up-sampling (spec E.6); the others overlap (k > stride), leave gaps
  // (k < stride), crop (pad > 0) or are 1x1.
  for (DeconvCfg c : {DeconvCfg{3, 2, 3, 4, 2, 2, 2, 0, true}, DeconvCfg{2, 3, 4, 3, 3, 3, 1, 1, false},
                      DeconvCfg{2, 2, 3, 3, 3, 3, 2, 1, true}, DeconvCfg{2, 3, 3, 2, 3, 2, 2, 0, false},
                      DeconvCfg{2, 2, 3, 3, 2, 1, 3, 0, true}, DeconvCfg{3, 2, 3, 3, 1, 1, 1, 0, false}}) {
    std::string var = std::to_string(c.kh) + "x" + std::to_string(c.kw) + " stride " + std::to_string(c.stride) +
                      " pad " + std::to_string(c.pad) + (c.bias ? " bias" : " no bias");
    t.push_back(gc("conv_transpose2d", var,
                   [c] {
                     V v{uniform({2, c.C, c.H, c.W}, 90), uniform({c.C, c.O, c.kh, c.kw}, 91, -0.5f, 0.5f)};
                     if (c.bias) v.push_back(uniform({c.O}, 92));
                     return v;
                   },
                   [c](const V& v) { return conv_transpose2d(v[0], v[1], c.bias ? v[2] : undef(), c.stride, c.pad); }));
  }
  t.push_back(gc("max_pool2d", "k3 s2 p1, distinct values", [] { return V{distinct({2, 2, 7, 6}, 74, 0.03f)}; },
                 [](const V& v) { return max_pool2d(v[0], 3, 2, 1); }));
  t.push_back(gc("max_pool2d", "k2 s2 p0", [] { return V{distinct({1, 2, 4, 5}, 75, 0.03f)}; },
                 [](const V& v) { return max_pool2d(v[0], 2, 2, 0); }));
  t.push_back(gc("adaptive_avg_pool2d", "5x7 -> 3x2 (non-divisible)", [] { return V{uniform({2, 2, 5, 7}, 76)}; },
                 [](const V& v) { return adaptive_avg_pool2d(v[0], 3, 2); }));
  t.push_back(gc("adaptive_avg_pool2d", "4x6 -> 1x1 (global)", [] { return V{uniform({2, 3, 4, 6}, 77)}; },
                 [](const V& v) { return adaptive_avg_pool2d(v[0], 1, 1); }));
  t.push_back(gc("adaptive_avg_pool2d", "3x3 -> 5x4 (upsampling bins)", [] { return V{uniform({1, 2, 3, 3}, 78)}; },
                 [](const V& v) { return adaptive_avg_pool2d(v[0], 5, 4); }));
  // ---- dropout and losses ----
  t.push_back(gc("dropout", "p=0.3, re-seeded per evaluation", [] { return V{uniform({4, 5}, 79)}; },
                 [](const V& v) {
                   Rng rng(7, kStreamDropout);  // the same mask for every evaluation
                   return dropout(v[0], 0.3f, true, rng);
                 }));
  t.push_back(gc("cross_entropy", "row 2 masked out", [] { return V{uniform({4, 5}, 80, -2.f, 2.f)}; },
                 [](const V& v) { return cross_entropy(v[0], {1, 4, 0, 2}, {1, 1, 0, 1}); }));
  t.push_back(gc("bce_with_logits", "masked elements", [] { return V{uniform({3, 4}, 81, -3.f, 3.f)}; },
                 [](const V& v) {
                   Tensor tgt = uniform({3, 4}, 82, 0.f, 1.f);
                   return bce_with_logits(v[0], tgt, {1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1});
                 }));
  // Binary mask (the fine-tune's case) and a soft target with another smooth; logits span
  // both signs so the BCE and dice terms both matter.
  t.push_back(gc(
      "dice_bce_loss", "binary mask [2,1,3,4], smooth 1", [] { return V{uniform({2, 1, 3, 4}, 83, -3.f, 3.f)}; },
      [](const V& v) {
        Tensor tgt = uniform({2, 1, 3, 4}, 84, 0.f, 1.f);
        for (int64_t i = 0; i < tgt.numel(); ++i) tgt.data()[i] = tgt.data()[i] < 0.4f ? 1.f : 0.f;
        return dice_bce_loss(v[0], tgt);
      },
      kWholeBatchLoss));
  t.push_back(gc(
      "dice_bce_loss", "soft target [3,5], smooth 0.5", [] { return V{uniform({3, 5}, 85, -2.f, 2.f)}; },
      [](const V& v) { return dice_bce_loss(v[0], uniform({3, 5}, 86, 0.f, 1.f), 0.5f); }, kWholeBatchLoss));
  return t;
}

// `Tensor NAME(` declarations in engine/ops.h, read at test time.
std::set<std::string> declared_ops() {
  std::ifstream f("engine/ops.h");
  REQUIRE_MESSAGE(f.good(), "cannot open engine/ops.h (run the tests from the repository root)");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  std::set<std::string> names;
  std::regex decl(R"(\bTensor\s+([A-Za-z_][A-Za-z0-9_]*)\s*\()");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), decl); it != std::sregex_iterator(); ++it)
    names.insert((*it)[1].str());
  return names;
}

}  // namespace

TEST_CASE("engine: gradcheck every op against central differences") {
  for (const auto& c : grad_cases()) {
    const std::string name = c.op + (c.variant.empty() ? "" : " (" + c.variant + ")");
    INFO("case: " << name);
    c.run(name);
  }
}

TEST_CASE("engine: every Tensor op declared in engine/ops.h has a gradcheck") {
  // Tensor-returning declarations that are not differentiable ops, with the reason.
  const std::map<std::string, std::string> exempt = {};
  std::set<std::string> covered;
  for (const auto& c : grad_cases()) covered.insert(c.op);
  const auto declared = declared_ops();
  CHECK(declared.size() >= 40);  // guards the parser itself
  for (const auto& op : declared) {
    if (exempt.count(op)) continue;
    CHECK_MESSAGE(covered.count(op), "engine/ops.h declares `Tensor " << op << "(` but engine_gradcheck has no case");
  }
  std::string extra;
  for (const auto& op : covered)
    if (!declared.count(op)) extra += " " + op;
  MESSAGE(declared.size() << " ops declared, " << covered.size() << " covered; also checked (Tensor methods):"
                          << extra);
}

TEST_CASE("engine: gradcheck harness flags a wrong backward") {
  // y = 2x whose recorded backward claims 3g: the check must see a 50% error.
  Fn wrong = [](const std::vector<Tensor>& v) {
    Tensor y = mul(v[0].detach(), 2.f);
    Tensor x = v[0];
    record(y, "wrong", {x}, [x](const Tensor& g) { accumulate_grad(x, mul(g, 3.f)); });
    return y;
  };
  std::vector<Tensor> in{uniform({3, 4}, 5)};
  auto errs = grad_errors(in, wrong, Opts{});
  REQUIRE(errs.size() == 1);
  MESSAGE("deliberately wrong backward: rel_l2 " << errs[0].rel_l2);
  CHECK(errs[0].rel_l2 == doctest::Approx(0.5).epsilon(1e-3));
}

// ---- forward semantics against direct loops (PyTorch definitions) ----------------------

namespace {

// y[n,o,oh,ow] = b[o] + sum_{c,i,j} w[o,c,i,j] x[n,c,oh*s-p+i,ow*s-p+j] (zero outside), in double.
std::vector<float> conv_direct(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  const int64_t OH = (H + 2 * p - kh) / s + 1, OW = (W + 2 * p - kw) / s + 1;
  std::vector<float> y;
  const float *xd = x.data(), *wd = w.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b.defined() ? b.data()[o] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh * s - p + i, iw = ow * s - p + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += double(wd[((o * C + c) * kh + i) * kw + j]) * xd[((n * C + c) * H + ih) * W + iw];
              }
          y.push_back(float(acc));
        }
  return y;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

TEST_CASE("engine: conv2d forward matches a direct loop") {
  struct Cfg { int64_t N, C, O, H, W, kh, kw, s, p; bool bias; };
  // The last two are big enough to run im2col and the GEMM on several threads.
  for (Cfg c : {Cfg{2, 3, 4, 7, 6, 3, 3, 1, 1, true}, Cfg{3, 2, 5, 9, 9, 7, 7, 2, 3, false},
                Cfg{2, 4, 3, 5, 5, 1, 1, 1, 0, true}, Cfg{2, 4, 3, 6, 5, 1, 1, 2, 0, false},
                Cfg{1, 2, 2, 4, 6, 2, 3, 2, 1, true}, Cfg{2, 16, 8, 24, 24, 3, 3, 1, 1, true},
                Cfg{2, 32, 16, 20, 20, 1, 1, 1, 0, false}}) {
    Tensor x = uniform({c.N, c.C, c.H, c.W}, 200), w = uniform({c.O, c.C, c.kh, c.kw}, 201);
    Tensor b = c.bias ? uniform({c.O}, 202) : Tensor();
    Tensor y = conv2d(x, w, b, c.s, c.p);
    const int64_t OH = (c.H + 2 * c.p - c.kh) / c.s + 1, OW = (c.W + 2 * c.p - c.kw) / c.s + 1;
    CHECK(y.shape() == Shape{c.N, c.O, OH, OW});
    double e = rel_l2(y.to_vector(), conv_direct(x, w, b, c.s, c.p));
    MESSAGE("conv2d " << shape_str(x.shape()) << " * " << shape_str(w.shape()) << " s" << c.s << " p" << c.p
                      << ": rel_l2 vs direct loop " << e);
    CHECK(e < 1e-6);
  }
}

TEST_CASE("engine: conv_transpose2d forward matches a direct scatter loop") {
  // y[n,o,ih*s-p+i, iw*s-p+j] += x[n,c,ih,iw] w[c,o,i,j] (+ b[o]), cropped to the output, in double.
  struct Cfg { int64_t N, C, O, H, W, kh, kw, s, p; bool bias; };
  // The last is the U-Net's first up-block at 1/16 of its channels (k2 s2, 14 -> 28).
  for (Cfg c : {Cfg{2, 3, 4, 5, 4, 3, 3, 2, 1, true}, Cfg{1, 2, 3, 3, 3, 4, 2, 3, 1, false},
                Cfg{2, 4, 2, 4, 5, 1, 1, 1, 0, true}, Cfg{2, 64, 32, 14, 14, 2, 2, 2, 0, true}}) {
    Tensor x = uniform({c.N, c.C, c.H, c.W}, 240), w = uniform({c.C, c.O, c.kh, c.kw}, 241);
    Tensor b = c.bias ? uniform({c.O}, 242) : Tensor();
    Tensor y = conv_transpose2d(x, w, b, c.s, c.p);
    const int64_t OH = (c.H - 1) * c.s - 2 * c.p + c.kh, OW = (c.W - 1) * c.s - 2 * c.p + c.kw;
    REQUIRE(y.shape() == Shape{c.N, c.O, OH, OW});
    std::vector<double> ref(size_t(c.N * c.O * OH * OW), 0.0);
    const float *xd = x.data(), *wd = w.data();
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t o = 0; o < c.O; ++o) {
        for (int64_t k = 0; k < OH * OW; ++k) ref[size_t((n * c.O + o) * OH * OW + k)] = c.bias ? b.data()[o] : 0.0;
        for (int64_t ch = 0; ch < c.C; ++ch)
          for (int64_t ih = 0; ih < c.H; ++ih)
            for (int64_t iw = 0; iw < c.W; ++iw)
              for (int64_t i = 0; i < c.kh; ++i)
                for (int64_t j = 0; j < c.kw; ++j) {
                  const int64_t oh = ih * c.s - c.p + i, ow = iw * c.s - c.p + j;
                  if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                  ref[size_t(((n * c.O + o) * OH + oh) * OW + ow)] +=
                      double(xd[((n * c.C + ch) * c.H + ih) * c.W + iw]) * wd[((ch * c.O + o) * c.kh + i) * c.kw + j];
                }
      }
    const double e = rel_l2(y.to_vector(), std::vector<float>(ref.begin(), ref.end()));
    MESSAGE("conv_transpose2d " << shape_str(x.shape()) << " * " << shape_str(w.shape()) << " s" << c.s << " p" << c.p
                                << ": rel_l2 vs direct loop " << e);
    CHECK(e < 1e-6);
  }
}

TEST_CASE("engine: dice_bce_loss is the reference's BCE + 1 - dice") {
  // Direct double-precision evaluation of utils.py DiceBCELoss on a small batch.
  Tensor x = uniform({2, 1, 4, 4}, 250, -4.f, 4.f), t = uniform({2, 1, 4, 4}, 251, 0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = t.data()[i] < 0.3f ? 1.f : 0.f;
  for (float smooth : {1.f, 0.25f}) {
    double bce = 0, inter = 0, sp = 0, st = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double p = 1.0 / (1.0 + std::exp(-double(x.data()[i]))), y = t.data()[i];
      bce -= y * std::log(p) + (1 - y) * std::log(1 - p);
      inter += p * y;
      sp += p;
      st += y;
    }
    const double ref = bce / double(x.numel()) + 1.0 - (2 * inter + smooth) / (sp + st + smooth);
    const float got = dice_bce_loss(x, t, smooth).item();
    MESSAGE("dice_bce_loss smooth " << smooth << ": " << got << " vs direct " << ref);
    CHECK(got == doctest::Approx(ref).epsilon(1e-6));
  }
  // Perfect prediction: BCE -> 0 and dice -> 1, so the loss -> 0.
  Tensor sure = mul(rsub(0.5f, t), -40.f);  // +20 where t = 1, -20 where t = 0
  CHECK(dice_bce_loss(sure, t).item() < 1e-6f);
  CHECK_THROWS_WITH_AS(dice_bce_loss(x, Tensor::zeros({2, 16})), doctest::Contains("target [2,16] for logits [2,1,4,4]"),
                       std::invalid_argument);
}

TEST_CASE("engine: max_pool2d pads with -inf, sends ties to the first max, propagates NaN") {
  // All -1: a zero-padded pool would return 0 at the borders.
  Tensor x = Tensor::full({1, 1, 3, 3}, -1.f).requires_grad_();
  Tensor y = max_pool2d(x, 3, 2, 1);
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  for (float v : y.to_vector()) CHECK(v == -1.f);
  sum(y).backward();
  // Window starts (0,0), (0,1), (1,0), (1,1): the first cell in scan order of each.
  CHECK(x.grad().to_vector() == std::vector<float>{1, 1, 0, 1, 1, 0, 0, 0, 0});

  Tensor r = distinct({2, 3, 7, 8}, 210);
  auto yr = max_pool2d(r, 3, 2, 1).to_vector();
  const float* rd = r.data();
  std::vector<float> ref;
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t oh = 0; oh < 4; ++oh)
      for (int64_t ow = 0; ow < 4; ++ow) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t h = oh * 2 - 1; h < oh * 2 + 2; ++h)
          for (int64_t w = ow * 2 - 1; w < ow * 2 + 2; ++w)
            if (h >= 0 && h < 7 && w >= 0 && w < 8) m = std::max(m, rd[(p * 7 + h) * 8 + w]);
        ref.push_back(m);
      }
  CHECK(yr == ref);

  Tensor n = Tensor::zeros({1, 1, 2, 2});
  n.data()[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(max_pool2d(n, 2, 2, 0).item()));
}

TEST_CASE("engine: adaptive_avg_pool2d uses PyTorch's floor/ceil bins") {
  // H = 5 -> 3 bins: [0,2), [1,4), [3,5); W = 1 -> 1 bin.
  Tensor x = Tensor::from_vector({0, 1, 2, 3, 4}, {1, 1, 5, 1});
  CHECK(adaptive_avg_pool2d(x, 3, 1).to_vector() == std::vector<float>{0.5f, 2.f, 3.5f});
  // Output larger than input: H = 2 -> 3 bins [0,1), [0,2), [1,2).
  Tensor z = Tensor::from_vector({2, 6}, {1, 1, 2, 1});
  CHECK(adaptive_avg_pool2d(z, 3, 1).to_vector() == std::vector<float>{2.f, 4.f, 6.f});
  Tensor g = uniform({2, 3, 4, 6}, 220);
  auto y = adaptive_avg_pool2d(g, 1, 1).to_vector();
  for (int64_t p = 0; p < 6; ++p) {
    double s = 0;
    for (int64_t i = 0; i < 24; ++i) s += g.data()[p * 24 + i];
    CHECK(y[size_t(p)] == doctest::Approx(s / 24).epsilon(1e-6));
  }
}

TEST_CASE("engine: batch_norm2d train and eval statistics as PyTorch") {
  const int64_t N = 3, C = 2, H = 2, W = 3, M = N * H * W;
  Tensor x = uniform({N, C, H, W}, 230, -2.f, 3.f);
  Tensor w = Tensor::from_vector({1.5f, -0.5f}, {C}), b = Tensor::from_vector({0.1f, 0.2f}, {C});
  Tensor rm = Tensor::from_vector({0.3f, -0.1f}, {C}), rv = Tensor::from_vector({2.f, 0.5f}, {C});
  Tensor y = batch_norm2d(x, w, b, rm, rv, true, 0.1f, 1e-5f);
  auto xv = x.to_vector(), yv = y.to_vector();
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < H * W; ++i) m += xv[size_t((n * C + c) * H * W + i)];
    m /= M;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < H * W; ++i) v += std::pow(xv[size_t((n * C + c) * H * W + i)] - m, 2);
    const double var_b = v / M, var_u = v / (M - 1);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < H * W; ++i) {
        const size_t k = size_t((n * C + c) * H * W + i);
        const double ref = (xv[k] - m) / std::sqrt(var_b + 1e-5) * w.data()[c] + b.data()[c];
        CHECK(yv[k] == doctest::Approx(ref).epsilon(1e-5));
      }
    const double rm0 = c == 0 ? 0.3 : -0.1, rv0 = c == 0 ? 2.0 : 0.5;
    CHECK(rm.data()[c] == doctest::Approx(0.9 * rm0 + 0.1 * m).epsilon(1e-6));
    CHECK(rv.data()[c] == doctest::Approx(0.9 * rv0 + 0.1 * var_u).epsilon(1e-6));  // unbiased
  }
  // Eval: running statistics, buffers untouched.
  const auto rm1 = rm.to_vector(), rv1 = rv.to_vector();
  auto ye = batch_norm2d(x, w, b, rm, rv, false).to_vector();
  CHECK(rm.to_vector() == rm1);
  CHECK(rv.to_vector() == rv1);
  for (int64_t k = 0; k < x.numel(); ++k) {
    const int64_t c = (k / (H * W)) % C;
    const double ref = (xv[size_t(k)] - rm1[size_t(c)]) / std::sqrt(rv1[size_t(c)] + 1e-5) * w.data()[c] + b.data()[c];
    CHECK(ye[size_t(k)] == doctest::Approx(ref).epsilon(1e-5));
  }
}

TEST_CASE("engine: conv, pooling and batch_norm2d reject bad shapes with named errors") {
  Tensor x = Tensor::zeros({2, 3, 5, 5}), rm = Tensor::zeros({3}), rv = Tensor::ones({3}), none;
  CHECK_THROWS_WITH_AS(conv2d(Tensor::zeros({3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), none, 1, 0),
                       doctest::Contains("input must be 4-D [N,C,H,W], got [3,5,5]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 2, 3, 3}), none, 1, 0), doctest::Contains("input channels"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({3}), 1, 0),
                       doctest::Contains("bias [3]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 3, 7, 7}), none, 1, 0), doctest::Contains("kernel 7 larger"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 3, 3, 3}), none, 0, 0), doctest::Contains("stride"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose2d(x, Tensor::zeros({2, 4, 2, 2}), none, 2, 0),
                       doctest::Contains("expects 2 input channels (dim 0), input [2,3,5,5] has 3"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose2d(x, Tensor::zeros({3, 4, 2, 2}), Tensor::zeros({3}), 2, 0),
                       doctest::Contains("bias [3]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose2d(x, Tensor::zeros({3, 4, 2, 2}), none, 0, 0), doctest::Contains("stride"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose2d(Tensor::zeros({1, 3, 1, 1}), Tensor::zeros({3, 4, 2, 2}), none, 1, 1),
                       doctest::Contains("empty output 0x0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(max_pool2d(x, 3, 2, 2), doctest::Contains("at most half"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(x, 0, 2), doctest::Contains("output 0x2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, Tensor::ones({2}), none, rm, rv, true), doctest::Contains("weight [2]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(Tensor::zeros({1, 3, 1, 1}), none, none, rm, rv, true),
                       doctest::Contains("more than 1 value per channel"), std::invalid_argument);
  Tensor undef_rm, undef_rv;
  CHECK_THROWS_WITH_AS(batch_norm2d(x, none, none, undef_rm, undef_rv, false), doctest::Contains("running_mean"),
                       std::invalid_argument);
}

// max_pool2d with a backward finds each window's argmax by searching for the maximum the
// vectorised value pass found (engine/kernels/cpu/conv.cpp); against the plain scan
// "v > best or v is NaN" on values full of ties, signed zeros and NaNs: the same output bits
// and the same gradient routing.
TEST_CASE("engine: max_pool2d's argmax equals the first-maximum scan on ties, signed zeros and NaN") {
  const int64_t N = 2, C = 3, H = 9, W = 11;
  const float pool[] = {-0.f, 0.f, 1.f, -1.f, 2.f, NAN, 1.f, -0.f};
  Tensor x = Tensor::empty({N, C, H, W});
  Rng r(41, kStreamInit);
  std::vector<float> u(size_t(x.numel()));
  r.fill_uniform(u.data(), x.numel());
  float* xd = x.data();
  for (int64_t i = 0; i < x.numel(); ++i) xd[i] = pool[int(u[size_t(i)] * 7.999f)];
  for (int64_t i = 0; i < 40; ++i) xd[i] = 0.f * (i % 2 ? 1.f : -1.f);  // a run of signed zeros only
  for (auto [k, s, pad] : {std::tuple<int64_t, int64_t, int64_t>{3, 2, 1}, {2, 2, 0}, {3, 1, 1}}) {
    Tensor xi = x.detach().requires_grad_();
    Tensor y = max_pool2d(xi, k, s, pad);
    const int64_t OH = y.size(2), OW = y.size(3);
    Tensor g = Tensor::empty(y.shape());
    for (int64_t i = 0; i < g.numel(); ++i) g.data()[i] = float(i + 1);  // distinct: routing shows
    sum(mul(y, g)).backward();
    std::vector<float> want_y(size_t(y.numel())), want_gx(size_t(x.numel()), 0.f);
    for (int64_t p = 0; p < N * C; ++p)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t bi = -1;
          for (int64_t h = oh * s - pad; h < oh * s - pad + k; ++h)
            for (int64_t w = ow * s - pad; w < ow * s - pad + k; ++w) {
              if (h < 0 || h >= H || w < 0 || w >= W) continue;
              const float v = xd[(p * H + h) * W + w];
              if (bi < 0 || v > best || std::isnan(v)) {  // bi < 0: the kernel starts at the first cell
                best = v;
                bi = h * W + w;
              }
            }
          const int64_t o = (p * OH + oh) * OW + ow;
          want_y[size_t(o)] = best;
          want_gx[size_t(p * H * W + bi)] += g.data()[o];
        }
    CAPTURE(k);
    CAPTURE(s);
    CHECK(std::memcmp(y.data(), want_y.data(), want_y.size() * sizeof(float)) == 0);
    CHECK(xi.grad().to_vector() == want_gx);
  }
}
