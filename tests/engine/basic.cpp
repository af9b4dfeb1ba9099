// Core tensor and autograd behaviour: views, accumulation, graph release, NoGrad; the
// fine-tuning modules (ConvTranspose2d, Conv1d) against PyTorch's names, shapes and init.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/nn.h"
#include "engine/ops.h"

using namespace ms;

TEST_CASE("engine: reshape is a view and differentiable") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  Tensor v = a.reshape({3, 2});
  CHECK(v.data() == a.data());
  Tensor s = sum(mul(v, v));
  s.backward();
  auto g = a.grad().to_vector();
  for (int i = 0; i < 6; ++i) CHECK(g[size_t(i)] == doctest::Approx(2.0 * (i + 1)));
}

TEST_CASE("engine: a tensor used twice receives the sum of both gradients") {
  Tensor a = Tensor::from_vector({3}, {1}).requires_grad_();
  Tensor y = add(mul(a, a), mul(a, 2.f));  // y = a^2 + 2a, dy/da = 2a + 2 = 8
  sum(y).backward();
  CHECK(a.grad().item() == doctest::Approx(8.0));
}

TEST_CASE("engine: NoGradGuard records nothing") {
  Tensor a = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  NoGradGuard ng;
  Tensor y = mul(a, 3.f);
  CHECK_FALSE(y.requires_grad());
  CHECK(y.is_leaf());
}

TEST_CASE("engine: backward releases intermediates and grads accumulate across calls") {
  Tensor a = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor h = exp(a);
  Tensor y = sum(h);
  y.backward();
  CHECK(h.is_leaf());           // graph was freed
  CHECK_FALSE(h.grad().defined());  // intermediate grad released
  sum(exp(a)).backward();
  auto g = a.grad().to_vector();
  CHECK(g[0] == doctest::Approx(2 * std::exp(1.0)));
}

TEST_CASE("engine: broadcasting add/mul and their reductions in backward") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  Tensor b = Tensor::from_vector({10, 20, 30}, {3}).requires_grad_();
  Tensor y = mul(a, b);
  CHECK(y.shape() == Shape{2, 3});
  CHECK(y.to_vector()[4] == doctest::Approx(100));
  sum(y).backward();
  auto gb = b.grad().to_vector();
  CHECK(gb[0] == doctest::Approx(5));
  CHECK(gb[2] == doctest::Approx(9));
}

TEST_CASE("engine: matmul batched with shared right operand") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}).requires_grad_();
  Tensor b = Tensor::from_vector({1, 0, 0, 2}, {2, 2}).requires_grad_();
  Tensor c = matmul(a, b);
  auto v = c.to_vector();
  CHECK(v[0] == 1); CHECK(v[1] == 4); CHECK(v[7] == 16);
  sum(c).backward();
  auto gb = b.grad().to_vector();  // dB = sum_b A_b^T 1
  CHECK(gb[0] == doctest::Approx(1 + 3 + 5 + 7));
  CHECK(gb[3] == doctest::Approx(2 + 4 + 6 + 8));
}

TEST_CASE("engine: bad shapes give named errors") {
  Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(a.reshape({4, 2}), doctest::Contains("cannot view [2,3]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(add(a, Tensor::zeros({4})), doctest::Contains("do not broadcast"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(matmul(a, a), doctest::Contains("cannot multiply [2,3] by [2,3]"), std::invalid_argument);
}

TEST_CASE("engine: losses with no valid rows are zero, not NaN") {
  Tensor l = Tensor::from_vector({1, 2, 3, 4}, {2, 2}).requires_grad_();
  Tensor ce = cross_entropy(l, {0, 1}, {0, 0});
  CHECK(ce.item() == 0.f);
  ce.backward();
  for (float g : l.grad().to_vector()) CHECK(g == 0.f);
  Tensor x = Tensor::from_vector({1, -2}, {2});
  CHECK(bce_with_logits(x, Tensor::zeros({2}), {0, 0}).item() == 0.f);
}

TEST_CASE("engine: nn::ConvTranspose2d has PyTorch's names, shapes and default init bound") {
  // torch: kaiming_uniform(a=sqrt 5) with fan_in = weight.size(1) * k * k = out * k * k (here
  // 6 * 4 = 24, bound 0.204), not in * k * k (16, bound 0.25) as for Conv2d.
  Rng init(3, kStreamInit);
  nn::ConvTranspose2d up(4, 6, 2, 2, 0, true, init);
  const auto params = up.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].first == "weight");
  CHECK(params[0].second.shape() == Shape{4, 6, 2, 2});
  CHECK(params[1].first == "bias");
  CHECK(params[1].second.shape() == Shape{6});
  const float bound = 1.f / std::sqrt(24.f);
  float wmax = 0.f;
  for (float v : up.weight.to_vector()) wmax = std::max(wmax, std::fabs(v));
  for (float v : up.bias.to_vector()) CHECK(std::fabs(v) <= bound);
  MESSAGE("max |weight| " << wmax << " of bound " << bound << " (96 draws)");
  CHECK(wmax <= bound);
  CHECK(wmax > 0.9f * bound);
  Tensor y = up.forward(Tensor::ones({1, 4, 3, 5}));  // k2 s2 doubles H and W
  CHECK(y.shape() == Shape{1, 6, 6, 10});
  nn::ConvTranspose2d nob(4, 6, 3, 1, 1, false, init);
  CHECK(nob.named_parameters().size() == 1);
  CHECK(nob.forward(Tensor::ones({2, 4, 3, 5})).shape() == Shape{2, 6, 3, 5});
}

TEST_CASE("engine: nn::Conv1d has PyTorch's names and shapes and computes a 1-D convolution") {
  Rng init(5, kStreamInit);
  nn::Conv1d head(4, 3, 3, 2, true, init);  // in 4, out 3, kernel 3, stride 2
  const auto params = head.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].first == "weight");
  CHECK(params[0].second.shape() == Shape{3, 4, 3});
  CHECK(params[1].first == "bias");
  const float bound = 1.f / std::sqrt(12.f);  // fan_in = in * k
  for (float v : head.weight.to_vector()) CHECK(std::fabs(v) <= bound);
  Tensor x = Tensor::empty({2, 4, 9});
  Rng(6, kStreamData).fill_uniform(x.data(), x.numel(), -1.f, 1.f);
  Tensor y = head.forward(x);
  REQUIRE(y.shape() == Shape{2, 3, 4});  // (9 - 3) / 2 + 1
  // y[n,o,l] = b[o] + sum_{c,j} w[o,c,j] x[n,c,2l+j]
  const float *xd = x.data(), *wd = head.weight.data(), *bd = head.bias.data();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t o = 0; o < 3; ++o)
      for (int64_t l = 0; l < 4; ++l) {
        double ref = bd[o];
        for (int64_t c = 0; c < 4; ++c)
          for (int64_t j = 0; j < 3; ++j) ref += double(wd[(o * 4 + c) * 3 + j]) * xd[(n * 4 + c) * 9 + 2 * l + j];
        CHECK(y.data()[(n * 3 + o) * 4 + l] == doctest::Approx(ref).epsilon(1e-5));
      }
  CHECK_THROWS_WITH_AS(head.forward(Tensor::zeros({4, 9})),
                       doctest::Contains("Conv1d: input must be 3-D [N,C,L], got [4,9]"), std::invalid_argument);
}

TEST_CASE("engine: relu and its gradient on signed zeros, infinities and NaN") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from_vector({-1.f, -0.f, 0.f, 1e-40f, 2.f, inf, -inf, nan}, {8}).requires_grad_();
  Tensor y = relu(x);
  auto yv = y.to_vector();
  const std::vector<float> expect = {0.f, 0.f, 0.f, 1e-40f, 2.f, inf, 0.f, 0.f};
  for (size_t i = 0; i < expect.size(); ++i) CHECK(yv[i] == expect[i]);
  y.backward(Tensor::from_vector({1, 1, 1, 1, 1, 1, 1, 1}, {8}));
  const std::vector<float> gexp = {0, 0, 0, 1, 1, 1, 0, 0};  // torch: grad where x > 0, else 0
  auto g = x.grad().to_vector();
  for (size_t i = 0; i < gexp.size(); ++i) CHECK(g[i] == gexp[i]);
}

// The CPU's row softmax (attention: the last dim) takes exp 8 at a time through its own
// polynomial (engine/kernels/cpu/softmax.cpp, within 2 ulp of expf): against a double-precision reference on row
// lengths around the vector width, large and tiny logits, -inf (masked) entries, a fully
// masked row (NaN, as exp(-inf - -inf)) and an underflowing one.
TEST_CASE("engine: row softmax matches double precision, masks and tails included") {
  Rng r(17, kStreamInit);
  for (int64_t n : {1, 3, 7, 8, 9, 15, 16, 17, 75, 196}) {
    const int64_t rows = 5;
    Tensor x = Tensor::empty({rows, n});
    r.fill_normal(x.data(), x.numel(), 0.f, 6.f);
    float* xd = x.data();
    xd[0] = -INFINITY;                                 // a masked key in row 0 (or the whole row if n == 1)
    for (int64_t j = 0; j < n; ++j) xd[n + j] = -INFINITY;  // row 1: all masked
    if (n > 1) xd[2 * n + 1] = xd[2 * n] - 200.f;      // row 2: one term underflows to 0
    for (int64_t j = 0; j < n; ++j) xd[3 * n + j] *= 20.f;  // row 3: large logits
    Tensor y = softmax(x, -1);
    const float* yd = y.data();
    for (int64_t i = 0; i < rows; ++i) {
      CAPTURE(n);
      CAPTURE(i);
      const float* xr = xd + i * n;
      const float* yr = yd + i * n;
      double m = -INFINITY, s = 0.0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, double(xr[j]));
      if (std::isinf(m)) {  // every key masked
        for (int64_t j = 0; j < n; ++j) CHECK(std::isnan(yr[j]));
        continue;
      }
      for (int64_t j = 0; j < n; ++j) s += std::exp(double(xr[j]) - m);
      double total = 0.0, worst = 0.0;
      int64_t bad = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double want = std::exp(double(xr[j]) - m) / s;
        total += yr[j];
        if (want < 1e-30) bad += yr[j] != 0.f && std::fabs(yr[j] - want) > 1e-38;
        else worst = std::max(worst, std::fabs(yr[j] - want) / want);
      }
      // worst 1.11e-6 here (libm's expf before: 1.02e-6), set by rounding x - max in float on
      // row 3's logits of ~100 (ulp 8e-6), not by exp
      CHECK(worst < 1.5e-6);
      CHECK(bad == 0);
      CHECK(total == doctest::Approx(1.0).epsilon(1e-6));
    }
  }
}
