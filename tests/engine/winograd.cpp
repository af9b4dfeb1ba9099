// The CPU's Winograd path for 3x3 stride-1 convolutions (engine/kernels/cpu/winograd.cpp)
// against the im2col reference (MEDSLIP_CONV_ALGO=im2col) on odd shapes, against central
// finite differences, and for determinism (two runs, 1 vs 2 threads). Each case forces the
// algorithm with set_conv_algo and restores the previous one. A timing table per ResNet-50
// layer shape is a skipped case: ./build/medslip_tests -tc='*conv2d algorithm timing*' --no-skip
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels/cpu/winograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/threads.h"

using namespace ms;
using cpu::ConvAlgo;

namespace {

struct AlgoScope {
  ConvAlgo prev;
  explicit AlgoScope(ConvAlgo a) : prev(cpu::conv_algo()) { cpu::set_conv_algo(a); }
  ~AlgoScope() { cpu::set_conv_algo(prev); }
};
struct ThreadScope {
  int prev;
  explicit ThreadScope(int n) : prev(num_threads()) { set_num_threads(n); }
  ~ThreadScope() { set_num_threads(prev); }
};

Tensor normal(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  Rng(seed, kStreamInit).fill_normal(t.data(), t.numel());
  return t;
}

double rel_l2(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double(a.data()[i]) - b.data()[i];
    num += d * d;
    den += double(b.data()[i]) * b.data()[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

struct Out {
  Tensor y, gx, gw;
};
// y = conv2d(x, w), then backward with gy: y, dL/dx, dL/dW under algorithm `a`.
Out run(ConvAlgo a, const Tensor& x0, const Tensor& w0, const Tensor& gy, int64_t pad) {
  AlgoScope scope(a);
  Tensor x = x0.clone().detach().requires_grad_(), w = w0.clone().detach().requires_grad_();
  Tensor y = conv2d(x, w, Tensor(), 1, pad);
  y.backward(gy);
  return {y.detach(), x.grad(), w.grad()};
}

std::string name(ConvAlgo a) { return cpu::conv_algo_name(a); }

}  // namespace

TEST_CASE("engine: winograd conv2d matches im2col on odd shapes, forward and both gradients") {
  struct Cfg { int64_t N, C, O, H, W, pad; };
  // Odd and non-square sizes, partial tiles, batch 1 and 3, channels not multiples of 8,
  // padding 0, 1 and 2 (dx then runs at padding 2, 1 and 0).
  const Cfg cfgs[] = {{1, 3, 5, 7, 9, 1},   {3, 13, 7, 11, 6, 1}, {3, 5, 11, 9, 13, 0}, {1, 17, 9, 5, 5, 2},
                      {3, 10, 6, 3, 3, 1},  {1, 4, 4, 3, 4, 0},   {3, 37, 21, 14, 14, 1}, {2, 128, 128, 8, 8, 1}, {2, 64, 64, 16, 16, 1}};
  // Measured worst cases (rel-L2 vs im2col): F(2x2) y 1.4e-7, dx 1.4e-7, dW 1.5e-7; F(4x4) y
  // 4.2e-7, dx 4.6e-7, dW 1.2e-6. The bounds leave ~10x.
  for (ConvAlgo a : {ConvAlgo::Winograd2, ConvAlgo::Winograd4}) {
    const double tol_y = a == ConvAlgo::Winograd2 ? 2e-6 : 5e-6, tol_w = a == ConvAlgo::Winograd2 ? 2e-6 : 1e-5;
    for (const Cfg& c : cfgs) {
      const Tensor x = normal({c.N, c.C, c.H, c.W}, 11), w = normal({c.O, c.C, 3, 3}, 12);
      const int64_t OH = c.H + 2 * c.pad - 2, OW = c.W + 2 * c.pad - 2;
      const Tensor gy = normal({c.N, c.O, OH, OW}, 13);
      const Out ref = run(ConvAlgo::Im2col, x, w, gy, c.pad), got = run(a, x, w, gy, c.pad);
      REQUIRE(got.y.shape() == ref.y.shape());
      const double ey = rel_l2(got.y, ref.y), ex = rel_l2(got.gx, ref.gx), ew = rel_l2(got.gw, ref.gw);
      MESSAGE(name(a) << " x " << shape_str(x.shape()) << " w " << shape_str(w.shape()) << " pad " << c.pad
                      << ": rel-L2 vs im2col y " << ey << ", dx " << ex << ", dW " << ew);
      CHECK(ey <= tol_y);
      CHECK(ex <= tol_y);
      CHECK(ew <= tol_w);
    }
  }
}

TEST_CASE("engine: winograd conv2d gradients match central finite differences") {
  // L = sum(conv2d(x, w) * R) in float32, summed in double. L is linear in each of x and w, so
  // central differences have no truncation error and a large step h = 0.25 only shrinks the
  // float rounding of L over 2h (at h = 1e-2 F(4x4) measured 1.5e-4 of pure rounding).
  for (ConvAlgo a : {ConvAlgo::Winograd2, ConvAlgo::Winograd4}) {
    AlgoScope scope(a);
    for (int64_t pad : {0, 1}) {
      Tensor x = normal({2, 3, 6, 5}, 21).requires_grad_(), w = normal({4, 3, 3, 3}, 22).requires_grad_();
      const Tensor R = normal({2, 4, 6 + 2 * pad - 2, 5 + 2 * pad - 2}, 23);
      auto loss = [&]() {
        NoGradGuard ng;
        const Tensor y = conv2d(x, w, Tensor(), 1, pad);
        double s = 0;
        for (int64_t i = 0; i < y.numel(); ++i) s += double(y.data()[i]) * R.data()[i];
        return s;
      };
      sum(mul(conv2d(x, w, Tensor(), 1, pad), R)).backward();
      for (Tensor* v : {&x, &w}) {
        const Tensor g = v->grad();
        double num = 0, den = 0;
        for (int64_t i = 0; i < v->numel(); ++i) {
          float* p = v->data() + i;
          const float keep = *p;
          *p = keep + 0.25f;
          const float hp = *p - keep;
          const double lp = loss();
          *p = keep - 0.25f;
          const float hm = keep - *p;
          const double lm = loss();
          *p = keep;
          const double fd = (lp - lm) / (double(hp) + hm);
          num += (fd - g.data()[i]) * (fd - g.data()[i]);
          den += fd * fd;
        }
        const double e = std::sqrt(num / den);
        MESSAGE(name(a) << " pad " << pad << (v == &x ? " dx" : " dW") << ": rel-L2 vs finite differences " << e);
        CHECK(e < 2e-4);
      }
    }
  }
}

TEST_CASE("engine: winograd conv2d gives the same bits on two runs and on 1 and 2 threads") {
  ThreadScope keep(num_threads());
  for (ConvAlgo a : {ConvAlgo::Winograd2, ConvAlgo::Winograd4}) {
    for (int64_t N : {1, 3}) {
      const Tensor x = normal({N, 40, 13, 12}, 31), w = normal({24, 40, 3, 3}, 32), gy = normal({N, 24, 13, 12}, 33);
      std::vector<Out> outs;
      for (int t : {1, 1, 2}) {
        set_num_threads(t);
        outs.push_back(run(a, x, w, gy, 1));
      }
      for (size_t r : {size_t(1), size_t(2)}) {
        CHECK_MESSAGE(same_bits(outs[0].y, outs[r].y), name(a) << " N " << N << " y, run " << r);
        CHECK_MESSAGE(same_bits(outs[0].gx, outs[r].gx), name(a) << " N " << N << " dx, run " << r);
        CHECK_MESSAGE(same_bits(outs[0].gw, outs[r].gw), name(a) << " N " << N << " dW, run " << r);
      }
    }
  }
}

TEST_CASE("engine: conv algorithm names parse, and a bad one is named") {
  CHECK(cpu::parse_conv_algo("im2col") == ConvAlgo::Im2col);
  CHECK(cpu::parse_conv_algo("winograd4") == ConvAlgo::Winograd4);
  CHECK_THROWS_WITH_AS(cpu::parse_conv_algo("fft"), doctest::Contains("auto, im2col, winograd2 or winograd4"),
                       std::invalid_argument);
  // Shapes Winograd cannot take fall back to im2col whatever the setting.
  AlgoScope scope(ConvAlgo::Winograd4);
  CHECK(cpu::winograd_tile(Conv2dShape{1, 8, 9, 9, 8, 3, 3, 2, 1, 5, 5}, cpu::ConvPass::Forward) == 0);
  CHECK(cpu::winograd_tile(Conv2dShape{1, 8, 9, 9, 8, 1, 1, 1, 0, 9, 9}, cpu::ConvPass::Forward) == 0);
  CHECK(cpu::winograd_tile(Conv2dShape{1, 8, 9, 9, 8, 3, 3, 1, 1, 9, 9}, cpu::ConvPass::Forward) == 4);
}

// Not a test: seconds per call of each algorithm on the ResNet-50 3x3 shapes (forward, dx, dW),
// medians of 5 after a warm-up, with the load average. Run explicitly (see the top of the file).
TEST_CASE("engine: conv2d algorithm timing" * doctest::skip()) {
  struct L { int64_t C, HW; };
  std::FILE* la = std::fopen("/proc/loadavg", "r");
  char load[64] = "?";
  if (la) {
    if (!std::fgets(load, sizeof load, la)) load[0] = 0;
    std::fclose(la);
  }
  // MEDSLIP_TIMING_CPU=1: process CPU time instead of wall time (on one thread, the figure a
  // loaded machine disturbs least).
  const bool cpu_time = std::getenv("MEDSLIP_TIMING_CPU") != nullptr;
  std::printf("threads %d, %s time, load average %s", num_threads(), cpu_time ? "CPU" : "wall", load);
  std::printf("| layer | N | algo | fwd ms | dx ms | dW ms |\n|---|---|---|---|---|---|\n");
  for (int64_t N : {8, 16})
    for (L l : {L{64, 56}, L{128, 28}, L{256, 14}}) {
      const Tensor x = normal({N, l.C, l.HW, l.HW}, 1), w = normal({l.C, l.C, 3, 3}, 2), gy = normal(x.shape(), 3);
      for (ConvAlgo a : {ConvAlgo::Im2col, ConvAlgo::Winograd2, ConvAlgo::Winograd4}) {
        AlgoScope scope(a);
        const Conv2dShape s{N, l.C, l.HW, l.HW, l.C, 3, 3, 1, 1, l.HW, l.HW};
        Tensor y = Tensor::empty(x.shape()), gx = Tensor::empty(x.shape()), gw = Tensor::empty(w.shape());
        auto ms_of = [&](auto f) {
          std::vector<double> t;
          for (int r = 0; r < 6; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            const std::clock_t c0 = std::clock();
            f();
            t.push_back(cpu_time ? 1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC
                                 : std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
          }
          t.erase(t.begin());
          std::sort(t.begin(), t.end());
          return t[t.size() / 2];
        };
        const double f = ms_of([&] { cpu::conv2d_forward(x.data(), w.data(), y.data(), s); });
        const double d = ms_of([&] { cpu::conv2d_backward(x.data(), w.data(), gy.data(), gx.data(), nullptr, s); });
        const double g = ms_of([&] { cpu::conv2d_backward(x.data(), w.data(), gy.data(), nullptr, gw.data(), s); });
        std::printf("| %lldch %lldx%lld | %lld | %s | %.1f | %.1f | %.1f |\n", (long long)l.C, (long long)l.HW,
                    (long long)l.HW, (long long)N, name(a).c_str(), f, d, g);
        std::fflush(stdout);
      }
    }
  la = std::fopen("/proc/loadavg", "r");
  if (la) {
    if (!std::fgets(load, sizeof load, la)) load[0] = 0;
    std::fclose(la);
  }
  std::printf("load average at the end %s", load);
}
