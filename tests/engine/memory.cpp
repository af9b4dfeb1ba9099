// The engine's memory paths keep results exact: the caching allocator, the tape of grad
// handles (values freed when no backward reads them), gradients handed on instead of copied,
// in-place writes over temporaries, and max_pool2d without a recorded backward.
// (Thread-count bit-identity is in determinism.cpp, relu's edge values in basic.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace ms;

namespace {

Tensor random_tensor(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  Rng(seed, 5).fill_normal(t.data(), t.numel());
  return t;
}

}  // namespace

TEST_CASE("engine: memory - the host caching allocator reuses freed blocks") {
  const HostMemoryStats s0 = host_memory_stats();
  { Tensor t = Tensor::empty({1000, 1000}); }
  const HostMemoryStats s1 = host_memory_stats();
  { Tensor t = Tensor::empty({1000, 1000}); }  // same size class: served from the cache
  const HostMemoryStats s2 = host_memory_stats();
  CHECK(s1.allocations == s0.allocations + 1);
  CHECK(s2.hits == s1.hits + 1);
  CHECK(s2.in_use == s0.in_use);
  CHECK(s2.peak_in_use >= size_t(4000000));
  Tensor z = Tensor::zeros({1000, 1000});  // a reused block still starts from zeros when asked
  CHECK(z.to_vector()[123456] == 0.f);
}

TEST_CASE("engine: memory - the tape frees forward values that no backward reads") {
  Tensor x = random_tensor({64, 64}, 3).requires_grad_();
  Tensor h = mul(x, 2.f);  // d(2x) needs no values
  Tensor r = relu(h);      // relu's backward reads its output, not h
  Tensor s = add(r, r);    // add keeps no values
  std::weak_ptr<Storage> h_data = h.impl()->storage, r_data = r.impl()->storage;
  h = Tensor();
  CHECK(h_data.expired());  // only the tape referred to h, and it keeps a handle
  r = Tensor();
  CHECK_FALSE(r_data.expired());  // relu's backward reads its output
  Tensor y = mul(x, x);    // d(x*x) reads x: kept
  sum(add(s, y)).backward();
  // d/dx [2 relu(2x) + x^2] = 4 [x > 0] + 2x
  auto g = x.grad().to_vector(), xv = x.to_vector();
  for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx((xv[i] > 0 ? 4.f : 0.f) + 2.f * xv[i]));
}

TEST_CASE("engine: memory - gradients handed on stay correct when a tensor is used several times") {
  Tensor x = random_tensor({8, 5}, 4).requires_grad_();
  Tensor v = x.reshape({40});
  Tensor y = add(add(v, v), mul(v, 3.f));  // 5x
  sum(y).backward();
  for (float g : x.grad().to_vector()) CHECK(g == 5.f);
  sum(mul(x, 2.f)).backward();  // accumulates across calls
  for (float g : x.grad().to_vector()) CHECK(g == 7.f);
}

TEST_CASE("engine: memory - relu and add write over a temporary only when nothing else reads it") {
  Tensor x = random_tensor({6, 7}, 10).requires_grad_();
  // exp saves its output for its backward: relu must not overwrite it
  Tensor e = exp(x);
  const std::vector<float> ev = e.to_vector();
  Tensor r = relu(std::move(e));
  CHECK(ev == e.to_vector());  // (e is the moved-from handle, still on exp's output)
  // a temporary nobody else refers to is reused
  Tensor m = mul(x, 3.f);
  const Storage* m_data = m.impl()->storage.get();
  Tensor r2 = relu(std::move(m));
  CHECK(r2.impl()->storage.get() == m_data);
  // a view keeps its data: relu of a reshape of a live tensor writes elsewhere
  Tensor k = mul(x, 2.f);
  Tensor r3 = relu(k.reshape({42}));
  CHECK(r3.impl()->storage.get() != k.impl()->storage.get());
  Tensor b = random_tensor({7}, 11).requires_grad_();
  Tensor s = add(mul(x, 1.f), b);  // the product's buffer takes the sum, b broadcast
  CHECK(s.shape() == Shape{6, 7});
  sum(add(add(r, r2), add(r3.reshape({6, 7}), s))).backward();
  auto xv = x.to_vector(), g = x.grad().to_vector(), kv = k.to_vector();
  for (size_t i = 0; i < xv.size(); ++i) {
    CHECK(kv[i] == 2.f * xv[i]);  // untouched by relu
    // d/dx [relu(e^x) + relu(3x) + relu(2x) + x + b] = e^x + 3[x>0] + 2[x>0] + 1
    CHECK(g[i] == doctest::Approx(ev[i] + (xv[i] > 0 ? 5.f : 0.f) + 1.f));
  }
  for (float gb : b.grad().to_vector()) CHECK(gb == 6.f);
}

TEST_CASE("engine: memory - max_pool2d without a backward gives the values of the recorded path") {
  for (int64_t k : {2, 3}) {
    Tensor x = random_tensor({2, 3, 11, 10}, 12);
    x.data()[17] = std::numeric_limits<float>::quiet_NaN();
    x.data()[40] = -std::numeric_limits<float>::infinity();
    Tensor y_fast;
    {
      NoGradGuard ng;
      y_fast = max_pool2d(x, k, 2, k / 2);
    }
    Tensor xr = x.clone().requires_grad_();
    Tensor y_ref = max_pool2d(xr, k, 2, k / 2);
    auto a = y_fast.to_vector(), b = y_ref.to_vector();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK(((std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i]));
  }
}

TEST_CASE("engine: memory - add hands its gradient to one operand and copies it for the other") {
  // The backward loop's handle is the only other holder of the gradient that reaches add: the
  // first operand of the same shape adopts that buffer, the second gets one copy (before: two).
  Tensor a = random_tensor({64, 64}, 20).requires_grad_(), b = random_tensor({64, 64}, 21).requires_grad_();
  Tensor c = random_tensor({64}, 22).requires_grad_();
  Tensor y = add(a, b);
  Tensor gy = random_tensor({64, 64}, 23);
  const HostMemoryStats s0 = host_memory_stats();
  y.backward(gy);  // gy stays the caller's: y's gradient is a copy (1 block), then b's copy (1)
  const HostMemoryStats s1 = host_memory_stats();
  CHECK(s1.allocations - s0.allocations == 2);
  CHECK(a.grad().to_vector() == gy.to_vector());
  CHECK(b.grad().to_vector() == gy.to_vector());
  CHECK(a.grad().data() != b.grad().data());
  // Adopted or copied, a later gradient adds into each on its own: a += 2 gy, b unchanged.
  Tensor y2 = sub(mul(a, 2.f), mul(c, 0.f));  // sub with a broadcast second operand
  y2.backward(gy);
  auto ga = a.grad().to_vector(), gb = b.grad().to_vector(), g = gy.to_vector();
  for (size_t i = 0; i < g.size(); ++i) {
    CHECK(ga[i] == g[i] + 2.f * g[i]);
    CHECK(gb[i] == g[i]);
  }
  for (float v : c.grad().to_vector()) CHECK(v == 0.f);
}
