// The CPU matrix-product seam (engine/kernels/cpu/matmul.cpp): oneDNN (the default) against
// OpenBLAS (the reference) on the shapes and strides gemm_batched is called with, and the opt-in
// BF16 precision against an exact product of the BF16-rounded inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels/cpu/gemm.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/threads.h"

using namespace ms;

namespace {

std::vector<float> randn(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  Rng r(seed, 3);
  r.fill_normal(v.data(), int64_t(n));
  return v;
}

float round_bf16(float f) {  // nearest even, as the BF16 path rounds
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

// C_b = alpha op(A_b) op(B_b) + beta C_b in double, from inputs passed through `in`.
template <class F>
std::vector<double> reference(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                              const std::vector<float>& A, int64_t sA, const std::vector<float>& B, int64_t sB,
                              float beta, const std::vector<float>& C0, F in) {
  std::vector<double> C(C0.begin(), C0.end());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          const float a = A[size_t(b * sA + (ta ? k * M + i : i * K + k))];
          const float x = B[size_t(b * sB + (tb ? j * K + k : k * N + j))];
          s += double(in(a)) * double(in(x));
        }
        double& c = C[size_t((b * M + i) * N + j)];
        c = double(alpha) * s + double(beta) * c;
      }
  return C;
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) num += (got[i] - want[i]) * (got[i] - want[i]), den += want[i] * want[i];
  return std::sqrt(num / den);
}

struct Case {
  bool ta, tb;
  int64_t batch, M, N, K;
  bool shareA;
  float alpha, beta;
};

const Case kCases[] = {
    {false, false, 1, 37, 53, 600, false, 1.f, 0.f},  // K cut into chunks
    {true, false, 1, 64, 96, 300, false, 0.5f, 1.f},  // transposed A, alpha, accumulate
    {false, true, 3, 20, 33, 70, false, 1.f, 0.f},    // batched, transposed B
    {false, false, 4, 16, 49, 64, true, 1.f, 0.f},    // shared left matrix (a conv weight)
    {true, true, 2, 9, 7, 5, false, 1.f, 1.f},
};

}  // namespace

TEST_CASE("engine: CPU gemm, oneDNN and OpenBLAS agree with a float64 product on gemm_batched's shapes") {
  const auto keep = cpu::gemm_backend();
  for (auto backend : {cpu::GemmBackend::Dnnl, cpu::GemmBackend::OpenBlas}) {
    cpu::set_gemm_backend(backend);
    for (const Case& c : kCases) {
      const int64_t sA = c.shareA ? 0 : c.M * c.K, sB = c.K * c.N;
      auto A = randn(size_t((c.shareA ? 1 : c.batch) * c.M * c.K), 1), B = randn(size_t(c.batch * sB), 2);
      auto C = randn(size_t(c.batch * c.M * c.N), 3);
      const auto want = reference(c.ta, c.tb, c.batch, c.M, c.N, c.K, c.alpha, A, sA, B, sB, c.beta, C, [](float v) { return v; });
      cpu::gemm_batched(c.ta, c.tb, c.batch, c.M, c.N, c.K, c.alpha, A.data(), sA, B.data(), sB, c.beta, C.data(), c.M * c.N);
      CAPTURE(cpu::gemm_backend_name(backend));
      CAPTURE(c.batch);
      CAPTURE(c.K);
      CHECK(rel_l2(C, want) < 1e-6);
    }
  }
  cpu::set_gemm_backend(keep);
}

TEST_CASE("engine: CPU gemm, BF16 precision is the FP32-summed product of BF16-rounded inputs") {
  if (!cpu::bf16_supported()) {
    MESSAGE("skipped: this CPU has no AVX512-BF16 matmul in oneDNN");
    CHECK_THROWS_WITH(cpu::set_gemm_precision(cpu::Precision::BF16), doctest::Contains("AVX512-BF16"));
    return;
  }
  cpu::set_gemm_precision(cpu::Precision::BF16);
  for (const Case& c : kCases) {
    const int64_t sA = c.shareA ? 0 : c.M * c.K, sB = c.K * c.N;
    auto A = randn(size_t((c.shareA ? 1 : c.batch) * c.M * c.K), 4), B = randn(size_t(c.batch * sB), 5);
    auto C = randn(size_t(c.batch * c.M * c.N), 6);
    const auto exact = reference(c.ta, c.tb, c.batch, c.M, c.N, c.K, c.alpha, A, sA, B, sB, c.beta, C, [](float v) { return v; });
    const auto rounded = reference(c.ta, c.tb, c.batch, c.M, c.N, c.K, c.alpha, A, sA, B, sB, c.beta, C, round_bf16);
    cpu::gemm_batched(c.ta, c.tb, c.batch, c.M, c.N, c.K, c.alpha, A.data(), sA, B.data(), sB, c.beta, C.data(), c.M * c.N);
    CAPTURE(c.batch);
    CAPTURE(c.K);
    // Sums in FP32: as close to the rounded inputs' exact product as FP32 is ...
    CHECK(rel_l2(C, rounded) < 1e-6);
    // ... and BF16's 8-bit mantissa away from the FP32 inputs' product (~2^-9 per input).
    const double e = rel_l2(C, exact);
    CHECK(e > 1e-4);
    CHECK(e < 1e-2);
  }
  // Bitwise the same on 1 and 2 threads, like FP32.
  const Case c = kCases[0];
  auto A = randn(size_t(c.M * c.K), 7), B = randn(size_t(c.K * c.N), 8);
  std::vector<float> C1(size_t(c.M * c.N)), C2(C1.size());
  const int keep_threads = num_threads();
  set_num_threads(1);
  cpu::gemm_batched(false, false, 1, c.M, c.N, c.K, 1.f, A.data(), 0, B.data(), 0, 0.f, C1.data(), 0);
  set_num_threads(2);
  cpu::gemm_batched(false, false, 1, c.M, c.N, c.K, 1.f, A.data(), 0, B.data(), 0, 0.f, C2.data(), 0);
  set_num_threads(keep_threads);
  CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
  cpu::set_gemm_precision(cpu::Precision::FP32);
}

// Without a gradient, linear's bias (and linear_relu's relu) go into the product's epilogue
// (oneDNN: after the last K chunk's sum, linear_forward): the same bits as the product, then
// the broadcast add, then the relu op (the path with a gradient), for K in one chunk and several,
// odd sizes, 1 and 2 threads, and with OpenBLAS (which adds the bias and the relu in loops of its
// own). Rows of zeros, -0 and NaN check relu's rule at the edges: x > 0 kept, else +0.
TEST_CASE("engine: linear and linear_relu without a gradient give the bits of the product, bias add, relu") {
  Rng r(23, kStreamInit);
  auto normal = [&](const Shape& s) {
    Tensor t = Tensor::empty(s);
    r.fill_normal(t.data(), t.numel());
    return t;
  };
  const auto backend = cpu::gemm_backend();
  const int threads = num_threads();
  int64_t zeros = 0, nans = 0, negative = 0;
  for (auto be : {cpu::GemmBackend::Dnnl, cpu::GemmBackend::OpenBlas})
    for (int th : {1, 2})
      for (int64_t in : {37, 256, 300, 1024})
        for (int64_t R : {1, 75, 1200})
          for (bool with_relu : {false, true}) {
            cpu::set_gemm_backend(be);
            set_num_threads(th);
            const int64_t out = 96;
            Tensor x = normal({R, in}), w = normal({out, in}).requires_grad_(), b = normal({out}).requires_grad_();
            if (R > 2) {
              std::fill(x.data(), x.data() + in, 0.f);                       // row 0: b exactly
              std::fill(x.data() + in, x.data() + 2 * in, -0.f);             // row 1: b exactly, from -0
              x.data()[2 * in + 3] = std::numeric_limits<float>::quiet_NaN();  // row 2: NaN
              b.data()[5] = 0.f;
              b.data()[6] = -0.f;
            }
            auto op = [&] { return with_relu ? linear_relu(x, w, b) : linear(x, w, b); };
            Tensor with_grad = op();  // the product, then add (then relu)
            Tensor fused;
            {
              NoGradGuard ng;
              fused = op();
            }
            CAPTURE(in);
            CAPTURE(R);
            CAPTURE(th);
            CAPTURE(with_relu);
            CHECK(std::memcmp(fused.data(), with_grad.detach().data(), size_t(R * out) * sizeof(float)) == 0);
            if (with_relu)
              for (int64_t i = 0; i < R * out; ++i) {
                const float v = fused.data()[i];
                negative += std::signbit(v);
                zeros += v == 0.f;
                nans += std::isnan(v);
              }
          }
  CHECK(zeros > 1000);  // relu did cut (about half the outputs) ...
  CHECK(nans == 0);     // ... turned the NaN row into +0, as the relu op does
  CHECK(negative == 0);  // ... and left no negative value nor -0
  cpu::set_gemm_backend(backend);
  set_num_threads(threads);
}

// A convolution whose columns outgrow L2 but whose weights do not (the 7x7 stem) runs its
// im2col and GEMM in bands of output rows (conv.cpp): the same bits as one im2col of the whole
// image and one product, which is what the other convolutions do; on 1 and 2 threads, with
// bands that do not divide the output evenly (OH = 112 and 75), both GEMM backends.
TEST_CASE("engine: conv2d in bands of output rows gives the bits of one whole-image product") {
  Rng r(29, kStreamInit);
  const int threads = num_threads();
  const auto backend = cpu::gemm_backend();
  for (auto be : {cpu::GemmBackend::Dnnl, cpu::GemmBackend::OpenBlas})
  for (int64_t S : {224, 150})
    for (int th : {1, 2}) {
      cpu::set_gemm_backend(be);
      set_num_threads(th);
      const int64_t N = 2, C = 3, O = 64, k = 7, stride = 2, pad = 3, OH = (S + 2 * pad - k) / stride + 1;
      Tensor x = Tensor::empty({N, C, S, S}), w = Tensor::empty({O, C, k, k});
      r.fill_normal(x.data(), x.numel());
      r.fill_normal(w.data(), w.numel());
      Tensor y;
      {
        NoGradGuard ng;
        y = conv2d(x, w, Tensor(), stride, pad);
      }
      const int64_t K = C * k * k, L = OH * OH;
      REQUIRE(K * L > (int64_t(128) << 10));  // banded: the columns are over 512 KiB
      std::vector<float> col(size_t(K * L)), ref(size_t(O * L));
      int64_t differ = 0;
      for (int64_t n = 0; n < N; ++n) {
        cpu::im2col(x.data() + n * C * S * S, col.data(), C, S, S, k, k, stride, pad, OH, OH);
        cpu::gemm_batched(false, false, 1, O, L, K, 1.f, w.data(), 0, col.data(), 0, 0.f, ref.data(), 0);
        differ += std::memcmp(ref.data(), y.data() + n * O * L, ref.size() * sizeof(float)) != 0;
      }
      CAPTURE(S);
      CAPTURE(th);
      CAPTURE(int(be));
      CHECK(differ == 0);
    }
  cpu::set_gemm_backend(backend);
  set_num_threads(threads);
}
