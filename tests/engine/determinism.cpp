// Same seed -> bitwise-equal results, on two runs and on 1 vs 2 threads (OpenMP and
// OpenBLAS), for the RNG fills, a conv/batch_norm/pool block, transposed convolutions with the
// DiceBCE loss, an attention-like matmul/softmax/layer_norm chain (forward and backward), and
// dropout masks. Sizes are chosen above the kernels' OpenMP thresholds so that 2 threads
// really split the work.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/threads.h"

using namespace ms;

namespace {

// Sets the thread count for a scope and restores the previous one.
struct ThreadScope {
  int prev;
  explicit ThreadScope(int n) : prev(num_threads()) { set_num_threads(n); }
  ~ThreadScope() { set_num_threads(prev); }
};

// Named float buffers produced by one run.
using Run = std::vector<std::pair<std::string, std::vector<float>>>;

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `f` twice on 1 thread and once on 2; every buffer must match bit for bit.
void check_deterministic(const std::string& what, const std::function<Run()>& f) {
  Run a, b, c;
  {
    ThreadScope t(1);
    a = f();
    b = f();
  }
  {
    ThreadScope t(2);
    c = f();
  }
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() == c.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK_MESSAGE(bitwise_equal(a[i].second, b[i].second), what << ": " << a[i].first << " differs between two runs");
    CHECK_MESSAGE(bitwise_equal(a[i].second, c[i].second), what << ": " << a[i].first << " differs on 1 vs 2 threads");
  }
  MESSAGE(what << ": " << a.size() << " buffers bitwise equal over 2 runs and 1 vs 2 threads");
}

Tensor seeded(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(s);
  Rng(seed, kStreamInit).fill_uniform(t.data(), t.numel(), lo, hi);
  return t;
}

// sum(y * R) for a fixed R: a scalar whose gradient reaches every output element.
Tensor probe_loss(const Tensor& y, uint64_t seed) { return sum(mul(y, seeded(y.shape(), seed))); }

Tensor random_tensor(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  Rng(seed, 5).fill_normal(t.data(), t.numel());
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("engine: determinism of Rng fills (uniform, normal, keep mask)") {
  check_deterministic("rng fills", [] {
    const int64_t n = 100003;  // odd, and not a multiple of 4
    Rng r(42, kStreamData);
    std::vector<float> u(static_cast<size_t>(n)), g(static_cast<size_t>(n)), m(static_cast<size_t>(n));
    std::vector<uint8_t> keep(static_cast<size_t>(n));
    r.fill_uniform(u.data(), n, -2.f, 3.f);
    r.fill_normal(g.data(), n, 0.5f, 2.f);
    r.fill_keep_mask(keep.data(), n, 0.25f);
    for (int64_t i = 0; i < n; ++i) m[size_t(i)] = keep[size_t(i)];
    return Run{{"uniform", u}, {"normal", g}, {"keep", m}, {"next", {r.uniform()}}};
  });
}

TEST_CASE("engine: determinism of conv2d + batch_norm2d + max_pool2d forward and backward") {
  check_deterministic("conv block", [] {
    Tensor x = seeded({2, 8, 40, 40}, 1).requires_grad_();                // (N, C, H, W)
    Tensor w1 = seeded({16, 8, 3, 3}, 2, -0.2f, 0.2f).requires_grad_();  // 3x3, im2col path
    Tensor g = seeded({16}, 3, 0.5f, 1.5f).requires_grad_(), b = seeded({16}, 4).requires_grad_();
    Tensor w2 = seeded({12, 16, 1, 1}, 5, -0.3f, 0.3f).requires_grad_();  // 1x1, direct GEMM path
    Tensor b2 = seeded({12}, 6).requires_grad_();
    Tensor w3 = seeded({8, 12, 3, 3}, 7, -0.2f, 0.2f).requires_grad_();   // stride 2
    Tensor rm = Tensor::zeros({16}), rv = Tensor::ones({16});
    Tensor h = conv2d(x, w1, Tensor(), 1, 1);                           // (2, 16, 40, 40)
    h = relu(batch_norm2d(h, g, b, rm, rv, true));
    h = max_pool2d(h, 3, 2, 1);                                         // (2, 16, 20, 20)
    h = conv2d(h, w2, b2, 1, 0);                                        // (2, 12, 20, 20)
    h = conv2d(h, w3, Tensor(), 2, 1);                                  // (2, 8, 10, 10)
    Tensor y = adaptive_avg_pool2d(h, 3, 3);                            // (2, 8, 3, 3)
    probe_loss(y, 8).backward();
    return Run{{"y", y.to_vector()},           {"dx", x.grad().to_vector()},  {"dw1", w1.grad().to_vector()},
               {"dgamma", g.grad().to_vector()}, {"dbeta", b.grad().to_vector()}, {"dw2", w2.grad().to_vector()},
               {"db2", b2.grad().to_vector()},  {"dw3", w3.grad().to_vector()}, {"running_mean", rm.to_vector()},
               {"running_var", rv.to_vector()}};
  });
}

TEST_CASE("engine: determinism of conv_transpose2d + dice_bce_loss forward and backward") {
  check_deterministic("deconv + DiceBCE", [] {
    Tensor x = seeded({3, 32, 20, 20}, 20).requires_grad_();  // (N, C, H, W): 2 waves of images on 2 threads
    Tensor w1 = seeded({32, 24, 2, 2}, 21, -0.2f, 0.2f).requires_grad_();   // k2 s2: the U-Net's
    Tensor b1 = seeded({24}, 22).requires_grad_();
    Tensor w2 = seeded({24, 4, 3, 3}, 23, -0.2f, 0.2f).requires_grad_();    // k3 s2 p1: overlapping
    Tensor head = seeded({1, 4, 1, 1}, 24).requires_grad_();
    Tensor h = conv_transpose2d(x, w1, b1, 2, 0);                           // (3, 24, 40, 40)
    h = conv_transpose2d(relu(h), w2, Tensor(), 2, 1);                      // (3, 4, 79, 79)
    Tensor logits = conv2d(h, head, Tensor(), 1, 0);                        // (3, 1, 79, 79)
    Tensor mask = seeded(logits.shape(), 25, 0.f, 1.f);
    for (int64_t i = 0; i < mask.numel(); ++i) mask.data()[i] = mask.data()[i] < 0.3f ? 1.f : 0.f;
    Tensor loss = dice_bce_loss(logits, mask);
    loss.backward();
    return Run{{"loss", loss.to_vector()},   {"logits", logits.to_vector()}, {"dx", x.grad().to_vector()},
               {"dw1", w1.grad().to_vector()}, {"db1", b1.grad().to_vector()},  {"dw2", w2.grad().to_vector()},
               {"dhead", head.grad().to_vector()}};
  });
}

TEST_CASE("engine: determinism of a matmul / softmax / layer_norm chain forward and backward") {
  check_deterministic("attention-like chain", [] {
    Tensor x = seeded({4, 64, 96}, 11).requires_grad_();                // (B, T, D)
    Tensor wq = seeded({96, 96}, 12, -0.1f, 0.1f).requires_grad_();
    Tensor wk = seeded({96, 96}, 13, -0.1f, 0.1f).requires_grad_();
    Tensor ln_w = seeded({96}, 14, 0.5f, 1.5f).requires_grad_(), ln_b = seeded({96}, 15).requires_grad_();
    Tensor h = layer_norm(x, ln_w, ln_b, 1e-5f);                        // (B, T, D)
    Tensor q = linear(h, wq), k = linear(h, wk);                        // (B, T, D)
    Tensor att = softmax(mul(matmul(q, k, false, true), 0.1f), -1);      // (B, T, T)
    Tensor o = gelu(matmul(att, h));                                    // (B, T, D)
    Tensor y = log_softmax(sum(o, 1), -1);                              // (B, D)
    probe_loss(y, 16).backward();
    return Run{{"y", y.to_vector()},          {"dx", x.grad().to_vector()},       {"dwq", wq.grad().to_vector()},
               {"dwk", wk.grad().to_vector()}, {"dln_w", ln_w.grad().to_vector()}, {"dln_b", ln_b.grad().to_vector()}};
  });
}

TEST_CASE("engine: determinism of dropout masks") {
  const int64_t n = 50001;
  Tensor x = seeded({n}, 21, 0.5f, 1.5f);  // never 0, so a zero output means dropped
  check_deterministic("dropout", [x] {
    Rng rng(5, kStreamDropout);
    Tensor a = dropout(x, 0.1f, true, rng), b = dropout(x, 0.1f, true, rng);  // two draws, counter advances
    return Run{{"first", a.to_vector()}, {"second", b.to_vector()}};
  });
  // The masks follow the shared Philox rule, and the second call draws a fresh mask.
  Rng rng(5, kStreamDropout);
  const uint64_t c0 = rng.offset();
  auto a = dropout(x, 0.1f, true, rng).to_vector();
  auto b = dropout(x, 0.1f, true, rng).to_vector();
  int64_t mismatched = 0, differ = 0, kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool k = a[size_t(i)] != 0.f;
    mismatched += k != philox_keep(rng.key(), c0, i, 0.1f);
    differ += k != (b[size_t(i)] != 0.f);
    kept += k;
  }
  CHECK(mismatched == 0);
  CHECK(differ > n / 10);                              // independent masks differ in ~18% of places
  CHECK(double(kept) / n == doctest::Approx(0.9).epsilon(0.01));
}

TEST_CASE("engine: determinism of matmul gives the same bits on 1 and 2 threads for K between OpenBLAS block sizes") {
  ThreadScope keep(num_threads());
  // K = 336, 600, 784: OpenBLAS's 1-thread and threaded drivers split these K differently.
  for (int64_t K : {336, 600, 784, 1568}) {
    Tensor a = random_tensor({300, K}, 1), at = random_tensor({K, 300}, 6), b = random_tensor({K, 200}, 2);
    set_num_threads(1);
    Tensor c1 = matmul(a, b), t1 = matmul(at, b, true, false);
    set_num_threads(2);
    Tensor c2 = matmul(a, b), t2 = matmul(at, b, true, false);
    CHECK_MESSAGE(same_bits(c1, c2), "K = " << K);
    CHECK_MESSAGE(same_bits(t1, t2), "K = " << K << " (A^T)");
    // and the product is right: compare one entry with a double-precision dot product
    double ref = 0;
    for (int64_t k = 0; k < K; ++k) ref += double(a.data()[5 * K + k]) * b.data()[k * 200 + 7];
    CHECK(c1.data()[5 * 200 + 7] == doctest::Approx(ref).epsilon(1e-4));
  }
}

TEST_CASE("engine: determinism of conv2d spread over images gives the same bits on 1 and 2 threads") {
  ThreadScope keep(num_threads());
  for (int64_t N : {1, 3, 4}) {
    for (int64_t k : {1, 3}) {
      Tensor x0 = random_tensor({N, 40, 12, 12}, 7), w0 = random_tensor({24, 40, k, k}, 8);
      Tensor gy = random_tensor({N, 24, 12, 12}, 9);
      std::vector<Tensor> out;
      for (int t : {1, 2}) {
        set_num_threads(t);
        Tensor x = x0.clone().detach().requires_grad_(), w = w0.clone().detach().requires_grad_();
        Tensor y = conv2d(x, w, Tensor(), 1, k / 2);
        y.backward(gy);
        out.insert(out.end(), {y.detach(), x.grad(), w.grad()});
      }
      for (size_t i = 0; i < 3; ++i) CHECK_MESSAGE(same_bits(out[i], out[i + 3]), "N " << N << " k " << k << " #" << i);
    }
  }
}

TEST_CASE("engine: dropout kernel follows the Philox rule across a 2^32 counter boundary") {
  // The vectorised kernel draws 8 Philox blocks at a time and carries the counter's low word
  // into its high word per lane; counters around 2^32 and a length that leaves a tail of
  // 3 elements check both paths against the scalar rule, element by element.
  const int64_t n = 32 * 40 + 3;
  std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  std::vector<uint8_t> keep(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = 0.5f + float(i % 7);
  for (uint64_t c0 : {uint64_t(0), (uint64_t(1) << 32) - 5, (uint64_t(7) << 32) - 160, ~uint64_t(0) - 100}) {
    const uint64_t key = 0x1234567890abcdefull;
    cpu::dropout_forward(x.data(), y.data(), keep.data(), n, 0.3f, key, c0);
    int64_t wrong = 0, kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool k = philox_keep(key, c0, i, 0.3f);
      wrong += keep[size_t(i)] != k || y[size_t(i)] != (k ? x[size_t(i)] * (1.f / 0.7f) : 0.f);
      kept += k;
    }
    CHECK_MESSAGE(wrong == 0, "counter0 = " << c0);
    CHECK(kept > n / 2);
  }
}
