// Fused ops against the unfused ops they replace: batch_norm2d_act(x, ..., residual, relu) must
// give relu(batch_norm2d(x, ...) + residual) bit for bit, forward and every gradient (x, weight,
// bias, residual) and the running statistics, in training and evaluation mode, on sizes above
// the kernels' OpenMP threshold (so 2 threads split the work) and on small ones. Bitwise because
// the fused kernels round each step as the unfused ones do (engine/kernels/cpu/batch_norm.cpp);
// this is what keeps `medslip verify` and the parity tests unchanged with the fused ResNet.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <tuple>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/threads.h"

using namespace ms;

namespace {

Tensor normal(const Shape& s, uint64_t seed, float scale = 1.f, float shift = 0.f) {
  Tensor t = Tensor::empty(s);
  Rng r(seed, kStreamInit);
  r.fill_normal(t.data(), t.numel(), shift, scale);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

struct Out {
  Tensor y, gx, gw, gb, gr, rm, rv;
};

// retain: y keeps its gradient (y.retain_grad()), so the op's incoming gradient is shared and
// the fused backward writes fresh buffers instead of reusing it.
Out run(bool fused, const Shape& s, bool training, bool residual, bool relu, uint64_t seed, bool retain = false) {
  const int64_t C = s[1];
  Tensor x = normal(s, seed, 1.5f, 0.3f).requires_grad_();
  Tensor w = normal({C}, seed + 1, 0.3f, 1.f).requires_grad_();
  Tensor b = normal({C}, seed + 2, 0.5f).requires_grad_();
  Tensor r = residual ? normal(s, seed + 3).requires_grad_() : Tensor();
  Tensor rm = normal({C}, seed + 4, 0.1f), rv = add(mul(normal({C}, seed + 5), normal({C}, seed + 5)), 0.5f);
  Tensor R = normal(s, seed + 6);  // L = sum(y * R)
  Tensor y;
  if (fused) {
    y = batch_norm2d_act(x, w, b, rm, rv, training, 0.1f, 1e-5f, r, relu);
  } else {
    y = batch_norm2d(x, w, b, rm, rv, training, 0.1f, 1e-5f);
    if (residual) y = add(y, r);
    if (relu) y = ms::relu(y);
  }
  if (retain) y.retain_grad();
  sum(mul(y, R)).backward();
  return {y.detach(), x.grad(), w.grad(), b.grad(), residual ? r.grad() : Tensor(), rm, rv};
}

}  // namespace

TEST_CASE("engine: batch_norm2d_act equals batch_norm2d + add + relu bit for bit") {
  const Shape shapes[] = {{2, 3, 4, 5}, {4, 16, 24, 24}};  // the second above the OpenMP threshold
  uint64_t seed = 300;
  for (const Shape& s : shapes)
    for (bool training : {true, false})
      for (bool residual : {true, false})
        for (bool relu : {true, false}) {
          const std::string what = shape_str(s) + (training ? " train" : " eval") +
                                   (residual ? " +residual" : "") + (relu ? " relu" : "");
          CAPTURE(what);
          const Out a = run(false, s, training, residual, relu, seed), b = run(true, s, training, residual, relu, seed);
          seed += 10;
          CHECK(same_bits(a.y, b.y));
          CHECK(same_bits(a.gx, b.gx));
          CHECK(same_bits(a.gw, b.gw));
          CHECK(same_bits(a.gb, b.gb));
          if (residual) CHECK(same_bits(a.gr, b.gr));
          CHECK(same_bits(a.rm, b.rm));
          CHECK(same_bits(a.rv, b.rv));
          const Out c = run(true, s, training, residual, relu, seed - 10, true);  // incoming gradient shared
          CHECK(same_bits(a.y, c.y));
          CHECK(same_bits(a.gx, c.gx));
          if (residual) CHECK(same_bits(a.gr, c.gr));
          if (relu) {  // the data really exercise the mask: some outputs are 0, some are not
            int64_t zeros = 0;
            for (int64_t i = 0; i < b.y.numel(); ++i) zeros += b.y.data()[i] == 0.f;
            CHECK(zeros > 0);
            CHECK(zeros < b.y.numel());
          }
        }
}

TEST_CASE("engine: batch_norm2d_act rejects a residual of another shape") {
  Tensor x = Tensor::zeros({2, 3, 4, 4}), rm = Tensor::zeros({3}), rv = Tensor::ones({3}), none;
  CHECK_THROWS_WITH_AS(batch_norm2d_act(x, none, none, rm, rv, true, 0.1f, 1e-5f, Tensor::zeros({2, 3, 4, 5}), true),
                       doctest::Contains("residual [2,3,4,5] for input [2,3,4,4]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d_act(Tensor::zeros({3, 4, 4}), none, none, rm, rv, true, 0.1f, 1e-5f, none, true),
                       doctest::Contains("batch_norm2d_act: input must be 4-D"), std::invalid_argument);
}

// conv2d_bn_act (evaluation: the BatchNorm applied by the convolution to its output in cache)
// against conv2d then batch_norm2d_act, bit for bit, on every path the CPU convolution takes:
// Winograd (3x3 stride 1), pointwise (one image's product at a time instead of one batched
// call), im2col (strided 3x3, the 7x7 stem, strided 1x1), with and without residual / ReLU /
// affine parameters, on 1 and 2 threads.
TEST_CASE("engine: conv2d_bn_act equals conv2d + batch_norm2d_act bit for bit in evaluation") {
  struct Case {
    const char* name;
    int64_t N, C, H, O, k, stride, pad;
  };
  const Case cases[] = {{"winograd 3x3", 3, 32, 14, 40, 3, 1, 1},  {"winograd 3x3 odd plane", 2, 33, 11, 32, 3, 1, 1},
                        {"pointwise 1x1", 3, 24, 9, 40, 1, 1, 0},   {"strided 3x3 (im2col)", 2, 16, 13, 24, 3, 2, 1},
                        {"stem 7x7 s2", 2, 3, 30, 16, 7, 2, 3},     {"strided 1x1", 3, 16, 12, 20, 1, 2, 0},
                        {"one image, large", 1, 64, 28, 64, 3, 1, 1}};
  const int max_threads = num_threads();
  for (const Case& c : cases)
    for (int threads : {1, 2})
      for (int variant = 0; variant < 4; ++variant) {
        set_num_threads(threads);
        const bool residual = variant & 1, relu = variant & 2;
        const uint64_t seed = 100 + uint64_t(variant);
        Tensor x = normal({c.N, c.C, c.H, c.H}, seed, 1.2f, 0.1f);
        Tensor w = normal({c.O, c.C, c.k, c.k}, seed + 1, 0.2f);
        Tensor g = variant == 1 ? Tensor() : normal({c.O}, seed + 2, 0.3f, 1.f);
        Tensor b = variant == 1 ? Tensor() : normal({c.O}, seed + 3, 0.5f);
        Tensor rm = normal({c.O}, seed + 4, 0.3f), rv = add(mul(normal({c.O}, seed + 5), normal({c.O}, seed + 5)), 0.2f);
        const int64_t OH = (c.H + 2 * c.pad - c.k) / c.stride + 1;
        Tensor r = residual ? normal({c.N, c.O, OH, OH}, seed + 6) : Tensor();
        NoGradGuard ng;
        Tensor ref = batch_norm2d_act(conv2d(x, w, Tensor(), c.stride, c.pad), g, b, rm, rv, false, 0.1f, 1e-5f, r, relu);
        Tensor got = conv2d_bn_act(x, w, Tensor(), c.stride, c.pad, g, b, rm, rv, 1e-5f, r, relu);
        CAPTURE(c.name);
        CAPTURE(threads);
        CAPTURE(variant);
        CHECK(same_bits(got, ref));
        if (relu) {  // the ReLU was applied
          const float* p = got.data();
          CHECK(*std::min_element(p, p + got.numel()) == 0.f);
        }
      }
  set_num_threads(max_threads);
}

TEST_CASE("engine: conv2d_bn_act with a gradient wanted is conv2d then batch_norm2d_act, gradients included") {
  Tensor x = normal({2, 8, 10, 10}, 7, 1.f).requires_grad_();
  Tensor w = normal({12, 8, 3, 3}, 8, 0.2f).requires_grad_();
  Tensor g = normal({12}, 9, 0.3f, 1.f), b = normal({12}, 10, 0.5f);
  Tensor rm = normal({12}, 11, 0.3f), rv = add(mul(normal({12}, 12), normal({12}, 12)), 0.2f);
  Tensor y1 = conv2d_bn_act(x, w, Tensor(), 1, 1, g, b, rm, rv, 1e-5f, Tensor(), true);
  sum(y1).backward();
  Tensor gx1 = x.grad().clone(), gw1 = w.grad().clone();
  x.zero_grad();
  w.zero_grad();
  Tensor y2 = batch_norm2d_act(conv2d(x, w, Tensor(), 1, 1), g, b, rm, rv, false, 0.1f, 1e-5f, Tensor(), true);
  sum(y2).backward();
  CHECK(same_bits(y1.detach(), y2.detach()));
  CHECK(same_bits(gx1, x.grad()));
  CHECK(same_bits(gw1, w.grad()));
  // a residual of another shape is named
  NoGradGuard ng;
  CHECK_THROWS_WITH_AS(conv2d_bn_act(x, w, Tensor(), 1, 1, g, b, rm, rv, 1e-5f, normal({2, 12, 9, 9}, 13), true),
                       doctest::Contains("residual [2,12,9,9]"), std::invalid_argument);
}

// MeDSLIP's stream split without gradients is one pass (mask_split_forward): the bits of
// mul(m, x) and mul(rsub(1, m), x), special values included; with a gradient wanted it is those
// ops, and the gradients reach m and x.
TEST_CASE("engine: mask_split equals mul and rsub bit for bit, and is the ops with gradients") {
  const int keep = num_threads();
  for (int th : {1, 2}) {
    set_num_threads(th);
    for (int64_t n : {int64_t(7), int64_t(3136 * 64)}) {  // serial and parallel loops
      Tensor m = normal({n}, 71, 3.f), x = normal({n}, 72);
      m.data()[0] = 1.f;  // 1 - m = +0
      m.data()[1] = -0.f;
      x.data()[2] = -0.f;
      x.data()[3] = std::numeric_limits<float>::infinity();
      m.data()[4] = std::numeric_limits<float>::quiet_NaN();
      m.data()[5] = 1e30f;  // (1 - m) x overflows like the ops do
      x.data()[5] = 1e30f;
      Tensor pa, pb;
      {
        NoGradGuard ng;
        std::tie(pa, pb) = mask_split(m, x);
      }
      Tensor ra = mul(m, x), rb = mul(rsub(1.f, m), x);
      CAPTURE(n);
      CAPTURE(th);
      CHECK(std::memcmp(pa.data(), ra.data(), size_t(n) * sizeof(float)) == 0);
      CHECK(std::memcmp(pb.data(), rb.data(), size_t(n) * sizeof(float)) == 0);
    }
  }
  set_num_threads(keep);
  Tensor m = normal({2, 5}, 73).requires_grad_(), x = normal({2, 5}, 74).requires_grad_();
  auto [pa, pb] = mask_split(m, x);
  sum(add(mul(pa, 2.f), pb)).backward();  // d/dm = 2x - x = x, d/dx = 2m + 1 - m = 1 + m
  for (int64_t i = 0; i < 10; ++i) {
    CHECK(m.grad().data()[i] == doctest::Approx(x.data()[i]).epsilon(1e-6));
    CHECK(x.grad().data()[i] == doctest::Approx(1.f + m.data()[i]).epsilon(1e-6));
  }
  CHECK_THROWS_AS(mask_split(normal({3}, 75), normal({4}, 76)), std::invalid_argument);
}
