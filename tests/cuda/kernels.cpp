// Every CUDA kernel against its CPU twin (ARCHITECTURE "Tests"; STYLE convention 2): random
// non-zero inputs at realistic sizes, GPU outputs poisoned with NaN (or a sentinel) first so
// an element the kernel never writes shows up, and per-element |gpu - cpu| <= tol (|cpu| +
// rms(cpu)) — llm.c's atol + rtol|ref| with atol = tol * rms, so a value that cancels to ~0
// is judged on the tensor's scale. Tolerances (issue 7): 1e-5 for elementwise and
// normalisation, 1e-4 for reductions, softmax and matrix products. Then the ops end to end
// (forward + backward of a small conv/attention/loss chain on both devices), two GPU runs
// bitwise equal, and the caching allocator. Skips with the reason when no GPU is present.
#include <doctest/doctest.h>

#ifndef MEDSLIP_CUDA

TEST_CASE("cuda: kernels match their CPU twins") {
  MESSAGE("skipping: CPU build (make CUDA=1 builds and tests the CUDA kernels)");
}

#else

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"
#include "engine/rng.h"

using namespace ms;

namespace {

constexpr double kElementwise = 1e-5;  // elementwise ops and normalisation (issue 7)
constexpr double kReduction = 1e-4;    // reductions, softmax, matrix products (issue 7)
constexpr Device GPU = Device::CUDA;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

bool skip_without_gpu() {
  if (cuda_available()) return false;
  MESSAGE("skipping: no usable CUDA device — " << cuda_device_name());
  return true;
}

std::vector<float> uniform(int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng(seed, 77).fill_uniform(v.data(), n, lo, hi);
  return v;
}
std::vector<float> normal(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng(seed, 78).fill_normal(v.data(), n);
  return v;
}
// Away from zero, either sign: safe divisors.
std::vector<float> nonzero(int64_t n, uint64_t seed) {
  auto v = uniform(n, seed, 0.5f, 2.f);
  Rng r(seed, 79);
  for (auto& x : v)
    if (r.uniform() < 0.5f) x = -x;
  return v;
}
std::vector<uint8_t> mask(int64_t n, uint64_t seed, float p_one = 0.5f) {
  std::vector<uint8_t> m(static_cast<size_t>(n));
  Rng r(seed, 80);
  for (auto& x : m) x = r.uniform() < p_one ? 1 : 0;
  return m;
}

// Device copies; outputs start as NaN.
template <class T>
DeviceArray<T> up(const std::vector<T>& v) {
  return DeviceArray<T>(v, GPU);
}
DeviceArray<float> poisoned(int64_t n) { return DeviceArray<float>(std::vector<float>(size_t(n), kNaN), GPU); }
template <class T>
std::vector<T> down(const DeviceArray<T>& d) {
  return d.to_host();
}

// |gpu - cpu| <= tol (|cpu| + rms(cpu)) per element; prints max|d|, the worst index and the
// share of the tolerance used, and the first few failures.
bool close(const std::string& name, const std::vector<float>& gpu, const std::vector<float>& cpu, double tol) {
  REQUIRE_MESSAGE(gpu.size() == cpu.size(), name << ": " << gpu.size() << " vs " << cpu.size() << " elements");
  double ss = 0.0;
  size_t finite = 0;
  for (float v : cpu)
    if (std::isfinite(v)) {
      ss += double(v) * v;
      ++finite;
    }
  REQUIRE_MESSAGE(finite > 0, name << ": the CPU reference has no finite value");
  const double rms = std::sqrt(ss / double(finite));
  double worst_ratio = 0.0, max_abs = 0.0;
  size_t worst = 0, bad = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!std::isfinite(cpu[i])) continue;  // non-finite references are not compared
    const double d = std::isfinite(gpu[i]) ? std::fabs(double(gpu[i]) - cpu[i]) : INFINITY;
    const double ratio = d / (tol * (std::fabs(double(cpu[i])) + rms) + 1e-30);
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst = i;
    }
    if (d > max_abs) max_abs = d;
    if (ratio > 1.0) {
      if (bad < 5) MESSAGE(name << "[" << i << "]: gpu " << gpu[i] << " cpu " << cpu[i]);
      ++bad;
    }
  }
  MESSAGE(name << ": " << cpu.size() << " elements, max|d| " << max_abs << ", worst [" << worst << "] " << gpu[worst]
               << " vs " << cpu[worst] << ", " << 100.0 * worst_ratio << "% of tol " << tol);
  CHECK_MESSAGE(bad == 0, name << ": " << bad << " elements outside tolerance");
  return bad == 0;
}

template <class T>
void same(const std::string& name, const std::vector<T>& gpu, const std::vector<T>& cpu) {
  REQUIRE(gpu.size() == cpu.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < cpu.size(); ++i)
    if (gpu[i] != cpu[i] && bad++ == 0) first = i;
  CHECK_MESSAGE(bad == 0, name << ": " << bad << " of " << cpu.size() << " differ, first at [" << first << "]: gpu "
                               << int64_t(gpu[first]) << " cpu " << int64_t(cpu[first]));
}

bool bitwise(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("cuda: device, allocator and copies") {
  if (skip_without_gpu()) return;
  MESSAGE("device: " << cuda_device_name());
  CHECK(cuda_built());
  const auto v = normal(100003, 1);
  DeviceArray<float> a = up(v);
  CHECK(bitwise(down(a), v));
  {  // device -> device, fill
    DeviceArray<float> b(int64_t(v.size()), GPU);
    device_copy(b.data(), GPU, a.data(), GPU, v.size() * sizeof(float));
    CHECK(bitwise(down(b), v));
    device_fill(b.data(), 2.5f, int64_t(v.size()));
    CHECK(bitwise(down(b), std::vector<float>(v.size(), 2.5f)));
  }
  // A freed block is cached and handed out again for the same size: no new cudaMalloc.
  const DeviceMemoryStats s0 = device_memory_stats();
  void* p = device_alloc(3 << 20);
  device_free(p, 3 << 20);
  const DeviceMemoryStats s1 = device_memory_stats();
  CHECK(s1.cached >= (size_t(3) << 20));
  void* q = device_alloc(3 << 20);
  CHECK(q == p);
  CHECK(device_memory_stats().in_use == s1.in_use + (size_t(3) << 20));
  device_free(q, 3 << 20);
  CHECK(device_memory_stats().peak_in_use >= s0.in_use + (size_t(3) << 20));
  // Out of memory names the size.
  try {
    device_alloc(size_t(1) << 52);
    FAIL("a 4 PiB allocation succeeded");
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    MESSAGE("expected error: " << m);
    CHECK(m.find("out of memory") != std::string::npos);
    CHECK(m.find("MiB") != std::string::npos);
  }
  // Tensors: to() both ways, fill_, item.
  Tensor t = Tensor::from_vector(v, {int64_t(v.size())});
  Tensor g = t.to(GPU);
  CHECK(g.is_cuda());
  CHECK(bitwise(g.to_vector(), v));
  g.fill_(-1.25f);
  CHECK(g.to(Device::CPU).to_vector()[7] == -1.25f);
}

TEST_CASE("cuda: elementwise kernels") {
  if (skip_without_gpu()) return;
  const int64_t n = (1 << 20) + 3;
  const auto xn = normal(n, 2), xp = uniform(n, 3, 0.1f, 3.f), gy = normal(n, 4);
  const struct {
    UnaryOp op;
    const char* name;
    bool positive;
    float s;
  } ops[] = {{UnaryOp::Neg, "neg", false, 0.f},          {UnaryOp::Exp, "exp", false, 0.f},
             {UnaryOp::Log, "log", true, 0.f},           {UnaryOp::Sqrt, "sqrt", true, 0.f},
             {UnaryOp::Rsqrt, "rsqrt", true, 0.f},       {UnaryOp::Relu, "relu", false, 0.f},
             {UnaryOp::Gelu, "gelu", false, 0.f},        {UnaryOp::Tanh, "tanh", false, 0.f},
             {UnaryOp::Sigmoid, "sigmoid", false, 0.f},  {UnaryOp::Pow, "pow", true, 1.7f},
             {UnaryOp::AddScalar, "add_s", false, 0.3f}, {UnaryOp::MulScalar, "mul_s", false, -1.5f},
             {UnaryOp::RSubScalar, "rsub_s", false, 2.f}};
  for (const auto& o : ops) {
    const auto& x = o.positive ? xp : xn;
    std::vector<float> y(x.size()), gx(x.size());
    cpu::unary_forward(o.op, x.data(), y.data(), n, o.s);
    cpu::unary_backward(o.op, x.data(), y.data(), gy.data(), gx.data(), n, o.s);
    auto dx = up(x), dyy = up(y), dgy = up(gy);
    auto dy = poisoned(n), dgx = poisoned(n);
    cuda::unary_forward(o.op, dx.data(), dy.data(), n, o.s);
    cuda::unary_backward(o.op, dx.data(), dyy.data(), dgy.data(), dgx.data(), n, o.s);
    close(std::string("unary_forward ") + o.name, down(dy), y, kElementwise);
    close(std::string("unary_backward ") + o.name, down(dgx), gx, kElementwise);
  }

  const struct {
    Shape out, a, b;
  } shapes[] = {{{64, 128, 33}, {64, 128, 33}, {64, 128, 33}},
                {{64, 128, 33}, {64, 128, 33}, {1, 128, 1}},
                {{16, 50, 256}, {16, 50, 256}, {256}},
                {{8, 1, 40, 40}, {8, 1, 40, 40}, {}},
                {{7, 9, 11}, {7, 1, 11}, {9, 1}},
                {{}, {}, {}}};
  const BinaryOp bops[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div};
  const char* bnames[] = {"add", "sub", "mul", "div"};
  int si = 0;
  for (const auto& s : shapes) {
    const Broadcast bc = make_broadcast(s.out, s.a, s.b);
    const auto a = normal(shape_numel(s.a), 10 + si), b = nonzero(shape_numel(s.b), 20 + si);
    auto da = up(a), db = up(b);
    for (int k = 0; k < 4; ++k) {
      std::vector<float> out(static_cast<size_t>(bc.numel));
      cpu::binary_forward(bops[k], a.data(), b.data(), out.data(), bc);
      auto dout = poisoned(bc.numel);
      cuda::binary_forward(bops[k], da.data(), db.data(), dout.data(), bc);
      close(std::string("binary ") + bnames[k] + " " + shape_str(s.a) + " . " + shape_str(s.b), down(dout), out,
            kElementwise);
    }
    const auto m = mask(bc.numel, 30 + si);
    std::vector<float> out(static_cast<size_t>(bc.numel));
    cpu::where_forward(m.data(), a.data(), b.data(), out.data(), bc);
    auto dm = up(m);
    auto dout = poisoned(bc.numel);
    cuda::where_forward(dm.data(), da.data(), db.data(), dout.data(), bc);
    close("where " + shape_str(s.out), down(dout), out, kElementwise);
    ++si;
  }
}

TEST_CASE("cuda: reduction kernels") {
  if (skip_without_gpu()) return;
  const struct {
    int64_t outer, n, inner;
  } shapes[] = {{1, 200000, 1}, {37, 5000, 1}, {16, 300, 64}, {8, 17, 513}, {100, 10, 33}, {1, 1, 7}, {70000, 70, 2}};
  int si = 0;
  for (const auto& s : shapes) {
    const std::string dims =
        "[" + std::to_string(s.outer) + "," + std::to_string(s.n) + "," + std::to_string(s.inner) + "]";
    const int64_t N = s.outer * s.n * s.inner, R = s.outer * s.inner;
    const auto x = normal(N, 40 + si);
    auto dx = up(x);
    std::vector<float> y(static_cast<size_t>(R));
    cpu::sum_dim(x.data(), y.data(), s.outer, s.n, s.inner);
    auto dy = poisoned(R);
    cuda::sum_dim(dx.data(), dy.data(), s.outer, s.n, s.inner);
    close("sum_dim " + dims, down(dy), y, kReduction);

    std::vector<float> m(static_cast<size_t>(R));
    std::vector<int64_t> arg(static_cast<size_t>(R));
    cpu::max_dim(x.data(), m.data(), arg.data(), s.outer, s.n, s.inner);
    auto dm = poisoned(R);
    DeviceArray<int64_t> darg(std::vector<int64_t>(size_t(R), -777), GPU);
    cuda::max_dim(dx.data(), dm.data(), darg.data(), s.outer, s.n, s.inner);
    close("max_dim " + dims, down(dm), m, kElementwise);
    same("max_dim arg " + dims, down(darg), arg);

    const auto g = normal(R, 50 + si);
    auto gx = normal(N, 60 + si);  // accumulates into existing values
    auto dg = up(g), dgx = up(gx);
    cpu::max_dim_backward(g.data(), arg.data(), gx.data(), s.outer, s.n, s.inner);
    cuda::max_dim_backward(dg.data(), darg.data(), dgx.data(), s.outer, s.n, s.inner);
    close("max_dim_backward " + dims, down(dgx), gx, kElementwise);

    std::vector<float> rep(static_cast<size_t>(N));
    cpu::repeat_dim(g.data(), rep.data(), s.outer, s.n, s.inner);
    auto drep = poisoned(N);
    cuda::repeat_dim(dg.data(), drep.data(), s.outer, s.n, s.inner);
    close("repeat_dim " + dims, down(drep), rep, kElementwise);
    ++si;
  }
}

TEST_CASE("cuda: gemm_batched (cuBLAS, TF32 off)") {
  if (skip_without_gpu()) return;
  CHECK(!tf32_enabled());
  const int64_t B = 3, M = 67, N = 129, K = 257;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    for (bool shared_a : {false, true}) {
      const auto a = normal(B * M * K, 80 + t), b = normal(B * K * N, 90 + t);
      auto c = normal(B * M * N, 100 + t);
      const int64_t sa = shared_a ? 0 : M * K;
      auto da = up(a), db = up(b), dc = up(c);
      cpu::gemm_batched(ta, tb, B, M, N, K, 0.7f, a.data(), sa, b.data(), K * N, 0.3f, c.data(), M * N);
      cuda::gemm_batched(ta, tb, B, M, N, K, 0.7f, da.data(), sa, db.data(), K * N, 0.3f, dc.data(), M * N);
      close(std::string("gemm ta=") + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0") + (shared_a ? " shared A" : ""),
            down(dc), c, kReduction);
    }
  }
  {  // beta = 0 overwrites (poison must vanish); a shared C accumulates batch after batch
    const auto a = normal(B * M * K, 110), b = normal(B * K * N, 111);
    std::vector<float> c(size_t(M * N), 0.f);
    auto da = up(a), db = up(b), dc = poisoned(M * N);
    cpu::gemm_batched(false, false, 1, M, N, K, 1.f, a.data(), 0, b.data(), 0, 0.f, c.data(), 0);
    cuda::gemm_batched(false, false, 1, M, N, K, 1.f, da.data(), 0, db.data(), 0, 0.f, dc.data(), 0);
    close("gemm beta=0 over NaN", down(dc), c, kReduction);
    auto c2 = normal(M * N, 112);
    auto dc2 = up(c2);
    cpu::gemm_batched(false, true, B, M, N, K, 1.f, a.data(), M * K, b.data(), N * K, 1.f, c2.data(), 0);
    cuda::gemm_batched(false, true, B, M, N, K, 1.f, da.data(), M * K, db.data(), N * K, 1.f, dc2.data(), 0);
    close("gemm shared C (strideC 0)", down(dc2), c2, kReduction);
    auto c3 = normal(M * N, 113);
    auto dc3 = up(c3);
    cpu::gemm_batched(false, false, 1, M, N, 0, 1.f, a.data(), 0, b.data(), 0, 0.5f, c3.data(), 0);
    cuda::gemm_batched(false, false, 1, M, N, 0, 1.f, da.data(), 0, db.data(), 0, 0.5f, dc3.data(), 0);
    close("gemm K=0 (C = beta C)", down(dc3), c3, kElementwise);
  }
}

TEST_CASE("cuda: shape kernels") {
  if (skip_without_gpu()) return;
  const Shape s = {6, 50, 7, 64};
  const int64_t n = shape_numel(s);
  const auto x = normal(n, 120);
  auto dx = up(x);
  for (const std::vector<int64_t>& perm :
       {std::vector<int64_t>{0, 2, 1, 3}, std::vector<int64_t>{3, 1, 0, 2}, std::vector<int64_t>{0, 1, 2, 3}}) {
    std::vector<float> out(static_cast<size_t>(n));
    cpu::permute_copy(x.data(), out.data(), 4, s.data(), perm.data());
    auto dout = poisoned(n);
    cuda::permute_copy(dx.data(), dout.data(), 4, s.data(), perm.data());
    close("permute_copy (" + std::to_string(perm[0]) + std::to_string(perm[1]) + std::to_string(perm[2]) +
              std::to_string(perm[3]) + ")",
          down(dout), out, 0.0);
  }
  {  // [outer=12, 350, inner=64] slabs: narrow out of, and add back into, a larger tensor
    const int64_t outer = 12, src_n = 350, inner = 64, len = 123;
    const auto src = normal(outer * src_n * inner, 121);
    auto dsrc = up(src);
    std::vector<float> dst(static_cast<size_t>(outer * len * inner));
    cpu::slab_copy(src.data(), src_n, 17, dst.data(), len, 0, len, outer, inner, false);
    auto ddst = poisoned(outer * len * inner);
    cuda::slab_copy(dsrc.data(), src_n, 17, ddst.data(), len, 0, len, outer, inner, false);
    close("slab_copy", down(ddst), dst, 0.0);
    auto acc = normal(outer * src_n * inner, 122);
    auto dacc = up(acc);
    cpu::slab_copy(dst.data(), len, 0, acc.data(), src_n, 200, len, outer, inner, true);
    cuda::slab_copy(ddst.data(), len, 0, dacc.data(), src_n, 200, len, outer, inner, true);
    close("slab_copy accumulate", down(dacc), acc, 0.0);
  }
  {  // index_select with repeated indices (embedding-like: outer 1) and with outer > 1
    for (int64_t outer : {int64_t(1), int64_t(5)}) {
      const int64_t n_in = 1000, inner = 96, n_idx = 3000;
      std::vector<int64_t> idx(static_cast<size_t>(n_idx));
      Rng r(123, 1);
      for (auto& i : idx) i = r.randint(n_in);
      idx[1] = idx[0];
      const auto in = normal(outer * n_in * inner, 124);
      auto din = up(in);
      auto didx = up(idx);
      std::vector<float> out(static_cast<size_t>(outer * n_idx * inner));
      cpu::index_select_forward(in.data(), idx.data(), out.data(), outer, n_in, n_idx, inner);
      auto dout = poisoned(outer * n_idx * inner);
      cuda::index_select_forward(din.data(), didx.data(), dout.data(), outer, n_in, n_idx, inner);
      close("index_select_forward outer=" + std::to_string(outer), down(dout), out, 0.0);
      auto gin = normal(outer * n_in * inner, 125);
      auto dgin = up(gin);
      cpu::index_select_backward(out.data(), idx.data(), gin.data(), outer, n_in, n_idx, inner);
      cuda::index_select_backward(dout.data(), didx.data(), dgin.data(), outer, n_in, n_idx, inner);
      CHECK_MESSAGE(bitwise(down(dgin), gin), "index_select_backward: not the CPU's bits (same order expected)");
      close("index_select_backward outer=" + std::to_string(outer), down(dgin), gin, kElementwise);
    }
  }
  {  // masked_select's gather / scatter with increasing positions
    const int64_t N = 500000;
    const auto m = mask(N, 126, 0.3f);
    std::vector<int64_t> pos;
    for (int64_t i = 0; i < N; ++i)
      if (m[size_t(i)]) pos.push_back(i);
    const int64_t k = int64_t(pos.size());
    const auto in = normal(N, 127);
    auto din = up(in);
    auto dpos = up(pos);
    std::vector<float> out(static_cast<size_t>(k));
    cpu::gather_flat(in.data(), pos.data(), out.data(), k);
    auto dout = poisoned(k);
    cuda::gather_flat(din.data(), dpos.data(), dout.data(), k);
    close("gather_flat", down(dout), out, 0.0);
    auto gin = normal(N, 128);
    auto dgin = up(gin);
    cpu::scatter_add_flat(out.data(), pos.data(), gin.data(), k);
    cuda::scatter_add_flat(dout.data(), dpos.data(), dgin.data(), k);
    close("scatter_add_flat", down(dgin), gin, kElementwise);
    // Repeated (sorted) positions add up in order.
    std::vector<int64_t> rep = {3, 3, 3, 10, 11, 11, 500};
    const auto gv = normal(int64_t(rep.size()), 129);
    auto g2 = normal(600, 130);
    auto dg2 = up(g2);
    auto drep = up(rep);
    auto dgv = up(gv);
    cpu::scatter_add_flat(gv.data(), rep.data(), g2.data(), int64_t(rep.size()));
    cuda::scatter_add_flat(dgv.data(), drep.data(), dg2.data(), int64_t(rep.size()));
    CHECK(bitwise(down(dg2), g2));
  }
}

TEST_CASE("cuda: softmax kernels") {
  if (skip_without_gpu()) return;
  const struct { int64_t outer, n, inner; } shapes[] = {{4096, 77, 1}, {64, 2000, 1}, {30, 40, 5}, {1000, 2, 1}};
  int si = 0;
  for (const auto& s : shapes) {
    for (bool log : {false, true}) {
      const std::string name = std::string(log ? "log_softmax" : "softmax") + " [" + std::to_string(s.outer) + "," +
                               std::to_string(s.n) + "," + std::to_string(s.inner) + "]";
      const int64_t N = s.outer * s.n * s.inner;
      auto x = normal(N, 140 + si);
      for (auto& v : x) v *= 3.f;
      const auto gy = normal(N, 150 + si);
      std::vector<float> y(static_cast<size_t>(N)), gx(static_cast<size_t>(N));
      cpu::softmax_forward(x.data(), y.data(), s.outer, s.n, s.inner, log);
      cpu::softmax_backward(y.data(), gy.data(), gx.data(), s.outer, s.n, s.inner, log);
      auto dx = up(x), dyin = up(y), dgy = up(gy);
      auto dy = poisoned(N), dgx = poisoned(N);
      cuda::softmax_forward(dx.data(), dy.data(), s.outer, s.n, s.inner, log);
      cuda::softmax_backward(dyin.data(), dgy.data(), dgx.data(), s.outer, s.n, s.inner, log);
      close(name + " forward", down(dy), y, kReduction);
      close(name + " backward", down(dgx), gx, kReduction);
      ++si;
    }
  }
}

TEST_CASE("cuda: layer_norm kernels") {
  if (skip_without_gpu()) return;
  const struct { int64_t R, C; } shapes[] = {{2000, 768}, {300, 37}, {5, 4096}};
  int si = 0;
  for (const auto& s : shapes) {
    for (bool affine : {true, false}) {
      const std::string name =
          "layer_norm [" + std::to_string(s.R) + "," + std::to_string(s.C) + "]" + (affine ? "" : " no affine");
      const int64_t N = s.R * s.C;
      auto x = normal(N, 160 + si);
      for (size_t i = 0; i < x.size(); ++i) x[i] = 2.f * x[i] + 0.5f;  // mean and scale away from 0 and 1
      const auto w = uniform(s.C, 161 + si, 0.5f, 1.5f), b = normal(s.C, 162 + si), gy = normal(N, 163 + si);
      const float* wp = affine ? w.data() : nullptr;
      const float* bp = affine ? b.data() : nullptr;
      std::vector<float> y(static_cast<size_t>(N)), mean(static_cast<size_t>(s.R)), rstd(static_cast<size_t>(s.R)),
          gx(static_cast<size_t>(N)), gw(static_cast<size_t>(s.C)), gb(static_cast<size_t>(s.C));
      cpu::layer_norm_forward(x.data(), wp, bp, y.data(), mean.data(), rstd.data(), s.R, s.C, 1e-5f);
      cpu::layer_norm_backward(x.data(), wp, mean.data(), rstd.data(), gy.data(), gx.data(), gw.data(), gb.data(), s.R,
                               s.C);
      auto dx = up(x), dw = up(w), db = up(b), dgy = up(gy), dmean_in = up(mean), drstd_in = up(rstd);
      auto dy = poisoned(N), dmean = poisoned(s.R), drstd = poisoned(s.R);
      auto dgx = poisoned(N), dgw = poisoned(s.C), dgb = poisoned(s.C);
      cuda::layer_norm_forward(dx.data(), affine ? dw.data() : nullptr, affine ? db.data() : nullptr, dy.data(),
                               dmean.data(), drstd.data(), s.R, s.C, 1e-5f);
      // Backward from the CPU's saved statistics, so it is judged on its own.
      cuda::layer_norm_backward(dx.data(), affine ? dw.data() : nullptr, dmean_in.data(), drstd_in.data(), dgy.data(),
                                dgx.data(), dgw.data(), dgb.data(), s.R, s.C);
      close(name + " y", down(dy), y, kElementwise);
      close(name + " mean", down(dmean), mean, kElementwise);
      close(name + " rstd", down(drstd), rstd, kElementwise);
      close(name + " gx", down(dgx), gx, kElementwise);
      close(name + " gw", down(dgw), gw, kReduction);
      close(name + " gb", down(dgb), gb, kReduction);
      ++si;
    }
  }
}

TEST_CASE("cuda: batch_norm kernels") {
  if (skip_without_gpu()) return;
  const struct { int64_t N, C, HW; } shapes[] = {{4, 24, 9000}, {16, 256, 49}, {2, 64, 1024}, {1, 3, 5}};
  int si = 0;
  for (const auto& s : shapes) {
    const std::string dims = "[" + std::to_string(s.N) + "," + std::to_string(s.C) + "," + std::to_string(s.HW) + "]";
    const int64_t n = s.N * s.C * s.HW;
    auto x = normal(n, 170 + si);
    for (auto& v : x) v = 1.5f * v + 0.7f;
    const auto w = uniform(s.C, 171 + si, 0.5f, 1.5f), b = normal(s.C, 172 + si), gy = normal(n, 173 + si);
    auto dx = up(x), dw = up(w), db = up(b), dgy = up(gy);
    std::vector<float> mean(static_cast<size_t>(s.C)), var(static_cast<size_t>(s.C)), rstd(static_cast<size_t>(s.C));
    cpu::batch_norm_stats(x.data(), mean.data(), var.data(), s.N, s.C, s.HW);
    auto dmean = poisoned(s.C), dvar = poisoned(s.C);
    cuda::batch_norm_stats(dx.data(), dmean.data(), dvar.data(), s.N, s.C, s.HW);
    close("batch_norm_stats mean " + dims, down(dmean), mean, kReduction);
    close("batch_norm_stats var " + dims, down(dvar), var, kReduction);
    for (int64_t c = 0; c < s.C; ++c) rstd[size_t(c)] = 1.f / std::sqrt(var[size_t(c)] + 1e-5f);
    auto dmean_c = up(mean), drstd = up(rstd);  // the CPU's statistics, so each kernel is judged alone
    for (bool affine : {true, false}) {
      const std::string name = dims + (affine ? "" : " no affine");
      std::vector<float> y(static_cast<size_t>(n));
      cpu::batch_norm_apply(x.data(), mean.data(), rstd.data(), affine ? w.data() : nullptr,
                            affine ? b.data() : nullptr, y.data(), s.N, s.C, s.HW);
      auto dy = poisoned(n);
      cuda::batch_norm_apply(dx.data(), dmean_c.data(), drstd.data(), affine ? dw.data() : nullptr,
                             affine ? db.data() : nullptr, dy.data(), s.N, s.C, s.HW);
      close("batch_norm_apply " + name, down(dy), y, kElementwise);
      for (bool training : {true, false}) {
        std::vector<float> gx(static_cast<size_t>(n)), gw(static_cast<size_t>(s.C)), gb(static_cast<size_t>(s.C));
        cpu::batch_norm_backward(x.data(), mean.data(), rstd.data(), affine ? w.data() : nullptr, gy.data(), gx.data(),
                                 gw.data(), gb.data(), s.N, s.C, s.HW, training);
        auto dgx = poisoned(n), dgw = poisoned(s.C), dgb = poisoned(s.C);
        cuda::batch_norm_backward(dx.data(), dmean_c.data(), drstd.data(), affine ? dw.data() : nullptr, dgy.data(),
                                  dgx.data(), dgw.data(), dgb.data(), s.N, s.C, s.HW, training);
        const std::string nm = "batch_norm_backward " + name + (training ? " train" : " eval");
        close(nm + " gx", down(dgx), gx, kElementwise);
        close(nm + " gw", down(dgw), gw, kReduction);
        close(nm + " gb", down(dgb), gb, kReduction);
      }
    }
    {  // gx only (no gw/gb), eval: no sums needed
      std::vector<float> gx(static_cast<size_t>(n));
      cpu::batch_norm_backward(x.data(), mean.data(), rstd.data(), w.data(), gy.data(), gx.data(), nullptr, nullptr,
                               s.N, s.C, s.HW, false);
      auto dgx = poisoned(n);
      cuda::batch_norm_backward(dx.data(), dmean_c.data(), drstd.data(), dw.data(), dgy.data(), dgx.data(), nullptr,
                                nullptr, s.N, s.C, s.HW, false);
      close("batch_norm_backward gx only " + dims, down(dgx), gx, kElementwise);
    }
    ++si;
  }
}

TEST_CASE("cuda: fused batch_norm_act kernels") {
  if (skip_without_gpu()) return;
  const struct { int64_t N, C, HW; } shapes[] = {{4, 24, 9000}, {8, 256, 196}, {1, 3, 5}};
  int si = 0;
  for (const auto& s : shapes) {
    const std::string dims = "[" + std::to_string(s.N) + "," + std::to_string(s.C) + "," + std::to_string(s.HW) + "]";
    const int64_t n = s.N * s.C * s.HW;
    auto x = normal(n, 180 + si);
    for (auto& v : x) v = 1.5f * v + 0.7f;
    const auto w = uniform(s.C, 181 + si, 0.5f, 1.5f), b = normal(s.C, 182 + si), gy = normal(n, 183 + si);
    const auto res = normal(n, 184 + si);
    std::vector<float> mean(static_cast<size_t>(s.C)), var(static_cast<size_t>(s.C)), rstd(static_cast<size_t>(s.C));
    cpu::batch_norm_stats(x.data(), mean.data(), var.data(), s.N, s.C, s.HW);
    for (int64_t c = 0; c < s.C; ++c) rstd[size_t(c)] = 1.f / std::sqrt(var[size_t(c)] + 1e-5f);
    auto dx = up(x), dw = up(w), db = up(b), dgy = up(gy), dres = up(res), dmean = up(mean), drstd = up(rstd);
    for (bool with_res : {true, false})
      for (bool relu : {true, false}) {
        const std::string name = dims + (with_res ? " +residual" : "") + (relu ? " relu" : "");
        std::vector<float> y(static_cast<size_t>(n));
        cpu::batch_norm_act_apply(x.data(), mean.data(), rstd.data(), w.data(), b.data(),
                                  with_res ? res.data() : nullptr, y.data(), s.N, s.C, s.HW, relu);
        auto dy = poisoned(n);
        cuda::batch_norm_act_apply(dx.data(), dmean.data(), drstd.data(), dw.data(), db.data(),
                                   with_res ? dres.data() : nullptr, dy.data(), s.N, s.C, s.HW, relu);
        close("batch_norm_act_apply " + name, down(dy), y, kElementwise);
        auto dyc = up(y);  // the CPU's output as the mask, so the backward is judged alone
        for (bool training : {true, false}) {
          std::vector<float> gx(static_cast<size_t>(n)), gr(static_cast<size_t>(n)), gw(static_cast<size_t>(s.C)),
              gb(static_cast<size_t>(s.C));
          cpu::batch_norm_act_backward(x.data(), y.data(), mean.data(), rstd.data(), w.data(), gy.data(), gx.data(),
                                       gw.data(), gb.data(), gr.data(), s.N, s.C, s.HW, training, relu);
          auto dgx = poisoned(n), dgr = poisoned(n), dgw = poisoned(s.C), dgb = poisoned(s.C);
          cuda::batch_norm_act_backward(dx.data(), dyc.data(), dmean.data(), drstd.data(), dw.data(), dgy.data(),
                                        dgx.data(), dgw.data(), dgb.data(), dgr.data(), s.N, s.C, s.HW, training, relu);
          const std::string nm = "batch_norm_act_backward " + name + (training ? " train" : " eval");
          close(nm + " gx", down(dgx), gx, kElementwise);
          close(nm + " gres", down(dgr), gr, kElementwise);
          close(nm + " gw", down(dgw), gw, kReduction);
          close(nm + " gb", down(dgb), gb, kReduction);
        }
      }
    ++si;
  }
}

TEST_CASE("cuda: convolution and pooling kernels") {
  if (skip_without_gpu()) return;
  const struct {
    int64_t C, H, W, k, stride, pad;
  } convs[] = {{3, 64, 64, 7, 2, 3}, {32, 20, 20, 3, 1, 1}, {8, 17, 13, 3, 2, 0}, {4, 9, 9, 1, 2, 0}};
  int si = 0;
  for (const auto& c : convs) {
    const int64_t OH = (c.H + 2 * c.pad - c.k) / c.stride + 1, OW = (c.W + 2 * c.pad - c.k) / c.stride + 1;
    const std::string g = "C" + std::to_string(c.C) + " " + std::to_string(c.H) + "x" + std::to_string(c.W) + " k" +
                          std::to_string(c.k) + " s" + std::to_string(c.stride) + " p" + std::to_string(c.pad);
    const int64_t nx = c.C * c.H * c.W, ncol = c.C * c.k * c.k * OH * OW;
    const auto x = normal(nx, 180 + si);
    auto dx = up(x);
    std::vector<float> col(static_cast<size_t>(ncol));
    cpu::im2col(x.data(), col.data(), c.C, c.H, c.W, c.k, c.k, c.stride, c.pad, OH, OW);
    auto dcol = poisoned(ncol);
    cuda::im2col(dx.data(), dcol.data(), c.C, c.H, c.W, c.k, c.k, c.stride, c.pad, OH, OW);
    close("im2col " + g, down(dcol), col, 0.0);
    const auto gcol = normal(ncol, 181 + si);
    auto gx = normal(nx, 182 + si);  // col2im accumulates
    auto dgcol = up(gcol), dgx = up(gx);
    cpu::col2im(gcol.data(), gx.data(), c.C, c.H, c.W, c.k, c.k, c.stride, c.pad, OH, OW);
    cuda::col2im(dgcol.data(), dgx.data(), c.C, c.H, c.W, c.k, c.k, c.stride, c.pad, OH, OW);
    CHECK_MESSAGE(bitwise(down(dgx), gx), "col2im " << g << ": not the CPU's bits (same order expected)");
    close("col2im " + g, down(dgx), gx, kElementwise);
    ++si;
  }
  const struct {
    int64_t NC, H, W, k, stride, pad;
  } pools[] = {{2 * 64, 56, 56, 3, 2, 1}, {40, 17, 13, 2, 2, 0}, {10, 9, 9, 3, 1, 1}};
  for (const auto& p : pools) {
    const int64_t OH = (p.H + 2 * p.pad - p.k) / p.stride + 1, OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
    const std::string g = std::to_string(p.NC) + "x" + std::to_string(p.H) + "x" + std::to_string(p.W) + " k" +
                          std::to_string(p.k) + " s" + std::to_string(p.stride) + " p" + std::to_string(p.pad);
    const int64_t nx = p.NC * p.H * p.W, ny = p.NC * OH * OW;
    auto x = normal(nx, 190 + si);
    for (int64_t i = 0; i < nx; i += 97) x[size_t(i)] = 0.25f;  // some ties
    auto dx = up(x);
    std::vector<float> y(static_cast<size_t>(ny));
    std::vector<int64_t> arg(static_cast<size_t>(ny));
    cpu::max_pool2d_forward(x.data(), y.data(), arg.data(), p.NC, p.H, p.W, p.k, p.stride, p.pad, OH, OW);
    auto dy = poisoned(ny);
    DeviceArray<int64_t> darg(std::vector<int64_t>(size_t(ny), -777), GPU);
    cuda::max_pool2d_forward(dx.data(), dy.data(), darg.data(), p.NC, p.H, p.W, p.k, p.stride, p.pad, OH, OW);
    close("max_pool2d_forward " + g, down(dy), y, 0.0);
    same("max_pool2d_forward arg " + g, down(darg), arg);
    const auto gy = normal(ny, 191 + si);
    std::vector<float> gx(static_cast<size_t>(nx));
    cpu::max_pool2d_backward(gy.data(), arg.data(), gx.data(), p.NC, p.H, p.W, OH, OW);
    auto dgy = up(gy);
    auto dgx = poisoned(nx);
    cuda::max_pool2d_backward(dgy.data(), darg.data(), dgx.data(), p.NC, p.H, p.W, OH, OW);
    CHECK_MESSAGE(bitwise(down(dgx), gx), "max_pool2d_backward " << g << ": not the CPU's bits");
    close("max_pool2d_backward " + g, down(dgx), gx, kElementwise);
    ++si;
  }
  const struct { int64_t NC, H, W, OH, OW; } ap[] = {{128, 20, 20, 7, 7}, {256, 7, 7, 1, 1}, {30, 10, 7, 3, 5}};
  for (const auto& a : ap) {
    const std::string g = std::to_string(a.NC) + "x" + std::to_string(a.H) + "x" + std::to_string(a.W) + " -> " +
                          std::to_string(a.OH) + "x" + std::to_string(a.OW);
    const int64_t nx = a.NC * a.H * a.W, ny = a.NC * a.OH * a.OW;
    const auto x = normal(nx, 200 + si), gy = normal(ny, 201 + si);
    auto dx = up(x), dgy = up(gy);
    std::vector<float> y(static_cast<size_t>(ny)), gx(static_cast<size_t>(nx));
    cpu::adaptive_avg_pool2d_forward(x.data(), y.data(), a.NC, a.H, a.W, a.OH, a.OW);
    cpu::adaptive_avg_pool2d_backward(gy.data(), gx.data(), a.NC, a.H, a.W, a.OH, a.OW);
    auto dy = poisoned(ny), dgx = poisoned(nx);
    cuda::adaptive_avg_pool2d_forward(dx.data(), dy.data(), a.NC, a.H, a.W, a.OH, a.OW);
    cuda::adaptive_avg_pool2d_backward(dgy.data(), dgx.data(), a.NC, a.H, a.W, a.OH, a.OW);
    close("adaptive_avg_pool2d_forward " + g, down(dy), y, kElementwise);
    close("adaptive_avg_pool2d_backward " + g, down(dgx), gx, kElementwise);
    ++si;
  }
}

TEST_CASE("cuda: conv_transpose2d kernels") {
  if (skip_without_gpu()) return;
  // The U-Net's first up-block at 1/8 of its channels (k2 s2, 14 -> 28), an overlapping
  // cropped one, and one with gaps (k < stride).
  const struct {
    int64_t N, C, H, W, O, kh, kw, stride, pad;
  } cfgs[] = {{3, 128, 14, 14, 64, 2, 2, 2, 0}, {2, 16, 9, 7, 12, 3, 3, 2, 1}, {2, 6, 5, 6, 4, 2, 3, 3, 0}};
  int si = 0;
  for (const auto& c : cfgs) {
    const int64_t OH = (c.H - 1) * c.stride - 2 * c.pad + c.kh, OW = (c.W - 1) * c.stride - 2 * c.pad + c.kw;
    const std::string g = "N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " " + std::to_string(c.H) + "x" +
                          std::to_string(c.W) + " -> O" + std::to_string(c.O) + " k" + std::to_string(c.kh) + "x" +
                          std::to_string(c.kw) + " s" + std::to_string(c.stride) + " p" + std::to_string(c.pad);
    const int64_t nx = c.N * c.C * c.H * c.W, nw = c.C * c.O * c.kh * c.kw, ny = c.N * c.O * OH * OW;
    const ConvTranspose2dShape shape{c.N, c.C, c.H, c.W, c.O, c.kh, c.kw, c.stride, c.pad, OH, OW};
    const auto x = normal(nx, 260 + si), w = normal(nw, 261 + si), gy = normal(ny, 262 + si);
    std::vector<float> y(static_cast<size_t>(ny)), gx(static_cast<size_t>(nx)), gw(static_cast<size_t>(nw));
    cpu::conv_transpose2d_forward(x.data(), w.data(), y.data(), shape);
    cpu::conv_transpose2d_backward(x.data(), w.data(), gy.data(), gx.data(), gw.data(), shape);
    auto dx = up(x), dw = up(w), dgy = up(gy);
    std::vector<std::vector<float>> runs;
    for (int rep = 0; rep < 2; ++rep) {  // twice: the GPU must repeat its own bits
      auto dy = poisoned(ny), dgx = poisoned(nx), dgw = poisoned(nw);
      cuda::conv_transpose2d_forward(dx.data(), dw.data(), dy.data(), shape);
      cuda::conv_transpose2d_backward(dx.data(), dw.data(), dgy.data(), dgx.data(), dgw.data(), shape);
      runs.push_back(down(dy));
      runs.push_back(down(dgx));
      runs.push_back(down(dgw));
    }
    close("conv_transpose2d_forward " + g, runs[0], y, kReduction);
    close("conv_transpose2d_backward gx " + g, runs[1], gx, kReduction);
    close("conv_transpose2d_backward gw " + g, runs[2], gw, kReduction);
    for (int k = 0; k < 3; ++k)
      CHECK_MESSAGE(bitwise(runs[size_t(k)], runs[size_t(k + 3)]), "conv_transpose2d " << g << " output " << k
                                                                                      << " differs between two GPU runs");
    // gx only (x not given, gw skipped) must give the same gx.
    auto dgx_only = poisoned(nx);
    cuda::conv_transpose2d_backward(nullptr, dw.data(), dgy.data(), dgx_only.data(), nullptr, shape);
    CHECK(bitwise(down(dgx_only), runs[1]));
    ++si;
  }
}

TEST_CASE("cuda: conv_transpose2d and dice_bce_loss ops match the CPU") {
  if (skip_without_gpu()) return;
  auto run = [](Device dev) {
    auto t = [dev](const std::vector<float>& v, const Shape& s, bool grad) {
      Tensor d = Tensor::from_vector(v, s).to(dev);
      if (grad) d.requires_grad_(true);
      return d;
    };
    const int64_t N = 2, C = 32, H = 8, O = 16;
    Tensor x = t(normal(N * C * H * H, 270), {N, C, H, H}, true);
    Tensor w = t(uniform(C * O * 4, 271, -0.2f, 0.2f), {C, O, 2, 2}, true);
    Tensor b = t(uniform(O, 272), {O}, true);
    Tensor head = t(uniform(O, 273, -0.3f, 0.3f), {1, O, 1, 1}, true);
    Tensor logits = conv2d(conv_transpose2d(x, w, b, 2, 0), head, Tensor(), 1, 0);  // (N, 1, 16, 16)
    std::vector<float> m = uniform(N * 16 * 16, 274, 0.f, 1.f);
    for (auto& v : m) v = v < 0.3f ? 1.f : 0.f;
    Tensor loss = dice_bce_loss(logits, t(m, {N, 1, 16, 16}, false));
    loss.backward();
    return std::vector<std::vector<float>>{loss.to_vector(), logits.to_vector(), x.grad().to_vector(),
                                           w.grad().to_vector(), b.grad().to_vector(), head.grad().to_vector()};
  };
  const auto c = run(Device::CPU), g = run(GPU), g2 = run(GPU);
  const char* names[] = {"loss", "logits", "grad.x", "grad.w", "grad.b", "grad.head"};
  for (size_t i = 0; i < c.size(); ++i) {
    close(std::string("deconv+dicebce ") + names[i], g[i], c[i], i < 2 ? 1e-4 : 1e-3);
    CHECK_MESSAGE(bitwise(g[i], g2[i]), names[i] << " differs between two GPU runs");
  }
}

TEST_CASE("cuda: dropout, losses and AdamW kernels") {
  if (skip_without_gpu()) return;
  {  // the same Philox keep rule on both devices: masks equal bit for bit
    const int64_t n = 1000003;
    const float p = 0.1f;
    const uint64_t key = Rng(1234, kStreamDropout).key(), c0 = 5555;
    const auto x = normal(n, 210), gy = normal(n, 211);
    std::vector<float> y(static_cast<size_t>(n)), gx(static_cast<size_t>(n));
    std::vector<uint8_t> keep(static_cast<size_t>(n));
    cpu::dropout_forward(x.data(), y.data(), keep.data(), n, p, key, c0);
    cpu::dropout_backward(gy.data(), keep.data(), gx.data(), n, p);
    auto dx = up(x), dgy = up(gy);
    auto dy = poisoned(n), dgx = poisoned(n);
    DeviceArray<uint8_t> dkeep(std::vector<uint8_t>(size_t(n), 0xCD), GPU);
    cuda::dropout_forward(dx.data(), dy.data(), dkeep.data(), n, p, key, c0);
    cuda::dropout_backward(dgy.data(), dkeep.data(), dgx.data(), n, p);
    const auto gkeep = down(dkeep);
    same("dropout keep mask", gkeep, keep);
    int64_t kept = 0;
    for (auto k : gkeep) kept += k;
    MESSAGE("dropout p=0.1: kept " << kept << " of " << n);
    CHECK(philox_keep(key, c0, 12345, p) == bool(gkeep[12345]));
    CHECK(bitwise(down(dy), y));
    CHECK(bitwise(down(dgx), gx));
  }
  for (int64_t C : {int64_t(75), int64_t(2), int64_t(1000)}) {
    const int64_t R = 1500;
    auto logits = normal(R * C, 220 + C);
    for (auto& v : logits) v *= 4.f;
    std::vector<int64_t> target(static_cast<size_t>(R));
    Rng r(221, 1);
    for (auto& t : target) t = r.randint(C);
    const auto valid = mask(R, 222, 0.8f);
    std::vector<float> row(static_cast<size_t>(R)), gl(static_cast<size_t>(R * C));
    cpu::cross_entropy_forward(logits.data(), target.data(), valid.data(), row.data(), R, C);
    cpu::cross_entropy_backward(logits.data(), target.data(), valid.data(), 0.37f, gl.data(), R, C);
    auto dl = up(logits);
    auto dt = up(target);
    auto dv = up(valid);
    auto drow = poisoned(R), dgl = poisoned(R * C);
    cuda::cross_entropy_forward(dl.data(), dt.data(), dv.data(), drow.data(), R, C);
    cuda::cross_entropy_backward(dl.data(), dt.data(), dv.data(), 0.37f, dgl.data(), R, C);
    close("cross_entropy_forward C=" + std::to_string(C), down(drow), row, kReduction);
    close("cross_entropy_backward C=" + std::to_string(C), down(dgl), gl, kReduction);
  }
  {
    const int64_t n = 300001;
    auto x = normal(n, 230);
    for (auto& v : x) v *= 5.f;
    const auto t = uniform(n, 231, 0.f, 1.f);
    const auto valid = mask(n, 232, 0.9f);
    std::vector<float> el(static_cast<size_t>(n)), gx(static_cast<size_t>(n));
    cpu::bce_with_logits_forward(x.data(), t.data(), valid.data(), el.data(), n);
    cpu::bce_with_logits_backward(x.data(), t.data(), valid.data(), 0.01f, gx.data(), n);
    auto dx = up(x), dt = up(t);
    auto dv = up(valid);
    auto del = poisoned(n), dgx = poisoned(n);
    cuda::bce_with_logits_forward(dx.data(), dt.data(), dv.data(), del.data(), n);
    cuda::bce_with_logits_backward(dx.data(), dt.data(), dv.data(), 0.01f, dgx.data(), n);
    close("bce_with_logits_forward", down(del), el, kElementwise);
    close("bce_with_logits_backward", down(dgx), gx, kElementwise);
  }
  {  // three AdamW steps from the same state
    const int64_t n = 500007;
    auto p = normal(n, 240), m = normal(n, 241), v = uniform(n, 242, 0.f, 0.1f);
    auto dp = up(p), dm = up(m), dv = up(v);
    for (int step = 1; step <= 3; ++step) {
      const auto g = normal(n, 243 + step);
      auto dg = up(g);
      const float bc1 = 1.f - std::pow(0.9f, float(step)), bc2 = 1.f - std::pow(0.999f, float(step));
      cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.02f, bc1, bc2);
      cuda::adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.02f, bc1, bc2);
    }
    close("adamw p", down(dp), p, kElementwise);
    close("adamw m", down(dm), m, kElementwise);
    close("adamw v", down(dv), v, kElementwise);
  }
}

namespace {

// A small chain over the ops that dispatch (conv, BN, pools, linear, attention-like
// matmul/softmax/layer_norm, dropout, embedding, where, masked_select, max and both losses):
// losses and every input gradient, on `dev`.
std::vector<std::pair<std::string, std::vector<float> > > op_chain(Device dev) {
  Rng init(7, kStreamInit);
  auto param = [&](const Shape& s, float scale) {
    Tensor t = Tensor::empty(s);
    init.fill_normal(t.data(), t.numel(), 0.f, scale);
    Tensor d = t.to(dev);
    d.requires_grad_(true);
    return d;
  };
  const int64_t N = 4, C = 3, H = 32, D = 48, T = 10, V = 50;
  Tensor img = param({N, C, H, H}, 1.f);
  Tensor w1 = param({16, C, 3, 3}, 0.3f), b1 = param({16}, 0.1f);
  Tensor bn_w = param({16}, 0.2f), bn_b = param({16}, 0.1f);
  Tensor w2 = param({D, 16}, 0.2f);
  Tensor emb = param({V, D}, 1.f), ln_w = param({D}, 0.3f), ln_b = param({D}, 0.1f);
  Tensor head = param({7, D}, 0.2f);
  Tensor rm = Tensor::zeros({16}, dev), rv = Tensor::ones({16}, dev);

  Tensor h = conv2d(img, w1, b1, 1, 1);  // (N, 16, 32, 32)
  h = relu(batch_norm2d(h, add(bn_w, 1.f), bn_b, rm, rv, true, 0.1f, 1e-5f));
  h = max_pool2d(h, 3, 2, 1);                            // (N, 16, 16, 16)
  h = adaptive_avg_pool2d(h, 2, 2).reshape({N, 16, 4});  // (N, 16, 4)
  Tensor patches = linear(transpose(h, 1, 2), w2);       // (N, 4, D)
  std::vector<int64_t> ids(static_cast<size_t>(N * T));
  Rng r(8, kStreamData);
  for (auto& i : ids) i = r.randint(V);
  ids[1] = ids[0];
  Tensor q = embedding(emb, ids, {N, T});                                 // (N, T, D)
  Tensor att = softmax(mul(matmul(q, patches, false, true), 0.14f), -1);  // (N, T, 4)
  Tensor ctx = add(matmul(att, patches), q);                              // (N, T, D)
  Rng drop(9, kStreamDropout);
  ctx = dropout(gelu(layer_norm(ctx, add(ln_w, 1.f), ln_b, 1e-5f)), 0.1f, true, drop);
  std::vector<uint8_t> keep = mask(N * T * D, 10, 0.9f);
  ctx = where(keep, ctx, mul(ctx, 0.5f));
  Tensor logits = linear(ctx.reshape({N * T, D}), head);  // (N*T, 7)
  std::vector<int64_t> target(static_cast<size_t>(N * T));
  for (auto& t : target) t = r.randint(7);
  const std::vector<uint8_t> valid = mask(N * T, 11, 0.8f);
  Tensor ce = cross_entropy(logits, target, valid);
  Tensor bce_t = Tensor::from_vector(uniform(N * T * 7, 12, 0.f, 1.f), {N * T, 7}).to(dev);
  Tensor bce = bce_with_logits(logits, bce_t, mask(N * T * 7, 13, 0.7f));
  Tensor mx = sum(max(logits, 1));
  Tensor sel = sum(masked_select(logits, mask(N * T * 7, 14, 0.5f)));
  Tensor loss = add(add(ce, bce), mul(add(mx, sel), 0.01f));
  loss.backward();

  std::vector<std::pair<std::string, std::vector<float> > > out = {{"loss", loss.to_vector()},
                                                                   {"ce", ce.to_vector()},
                                                                   {"bce", bce.to_vector()},
                                                                   {"running_mean", rm.to_vector()},
                                                                   {"running_var", rv.to_vector()}};
  const std::pair<const char*, Tensor*> params[] = {{"img", &img},   {"w1", &w1},    {"b1", &b1},   {"bn_w", &bn_w},
                                                    {"bn_b", &bn_b}, {"w2", &w2},    {"emb", &emb}, {"ln_w", &ln_w},
                                                    {"ln_b", &ln_b}, {"head", &head}};
  for (const auto& [name, t] : params) {
    REQUIRE_MESSAGE(t->grad().defined(), name << " has no gradient on " << device_name(dev));
    out.push_back({std::string("grad.") + name, t->grad().to_vector()});
  }
  return out;
}

}  // namespace

TEST_CASE("cuda: ops end to end match the CPU, and two GPU runs are bitwise equal") {
  if (skip_without_gpu()) return;
  const auto cpu_run = op_chain(Device::CPU);
  const auto gpu_run = op_chain(GPU);
  const auto gpu_again = op_chain(GPU);
  REQUIRE(cpu_run.size() == gpu_run.size());
  auto rms_of = [](const std::vector<float>& v) {
    double ss = 0.0;
    for (float x : v) ss += double(x) * x;
    return std::sqrt(ss / double(v.size()));
  };
  double w1_rms = 0.0;
  for (const auto& [name, v] : cpu_run)
    if (name == "grad.w1") w1_rms = rms_of(v);
  REQUIRE(w1_rms > 0.0);
  for (size_t i = 0; i < cpu_run.size(); ++i) {
    const bool is_grad = cpu_run[i].first.rfind("grad.", 0) == 0;
    if (cpu_run[i].first == "grad.b1") {
      // The conv bias feeds a train-mode BatchNorm, which subtracts the batch mean: its true
      // gradient is exactly zero and both devices return rounding noise, which no relative
      // comparison can judge. Both must be noise-sized next to the conv weight's gradient.
      const double cpu_rms = rms_of(cpu_run[i].second), gpu_rms = rms_of(gpu_run[i].second);
      MESSAGE("ops grad.b1 (true value 0): rms cpu " << cpu_rms << ", gpu " << gpu_rms << ", grad.w1 rms " << w1_rms);
      CHECK(cpu_rms <= 1e-5 * w1_rms);
      CHECK(gpu_rms <= 1e-5 * w1_rms);
      CHECK_MESSAGE(bitwise(gpu_run[i].second, gpu_again[i].second), "grad.b1 differs between two GPU runs");
      continue;
    }
    // ARCHITECTURE tolerances for forward values (1e-4) and op gradients (1e-3), per element here.
    close("ops " + cpu_run[i].first, gpu_run[i].second, cpu_run[i].second, is_grad ? 1e-3 : 1e-4);
    CHECK_MESSAGE(bitwise(gpu_run[i].second, gpu_again[i].second), cpu_run[i].first << " differs between two GPU runs");
  }
  const DeviceMemoryStats st = device_memory_stats();
  MESSAGE("allocator after the chain: in use " << st.in_use / 1024 << " KiB, cached " << st.cached / 1024
                                               << " KiB, peak " << st.peak_in_use / 1024 << " KiB");
}

// The two pass-saving kernels (conv2d_bn_act_forward, linear_forward: on the GPU their two
// kernels in turn) through their ops without a gradient, against the CPU.
TEST_CASE("cuda: conv2d_bn_act and linear without a gradient match the CPU") {
  if (skip_without_gpu()) return;
  auto run = [](Device dev) {
    auto t = [dev](const std::vector<float>& v, const Shape& s) { return Tensor::from_vector(v, s).to(dev); };
    const int64_t N = 2, C = 32, H = 14, O = 40;
    Tensor x = t(normal(N * C * H * H, 280), {N, C, H, H});
    Tensor w = t(uniform(O * C * 9, 281, -0.2f, 0.2f), {O, C, 3, 3});
    Tensor g = t(uniform(O, 282, 0.5f, 1.5f), {O}), b = t(uniform(O, 283), {O});
    Tensor rm = t(uniform(O, 284, -0.2f, 0.2f), {O}), rv = t(uniform(O, 285, 0.5f, 1.5f), {O});
    Tensor res = t(normal(N * O * H * H, 286), {N, O, H, H});
    Tensor lw = t(uniform(24 * 50, 287, -0.2f, 0.2f), {24, 50}), lb = t(uniform(24, 288), {24});
    Tensor lx = t(normal(300 * 50, 289), {300, 50});
    NoGradGuard ng;
    return std::vector<std::vector<float>>{
        conv2d_bn_act(x, w, Tensor(), 1, 1, g, b, rm, rv, 1e-5f, res, true).to_vector(),
        conv2d_bn_act(x, w, Tensor(), 2, 1, g, b, rm, rv, 1e-5f, Tensor(), false).to_vector(),
        linear(lx, lw, lb).to_vector()};
  };
  const auto c = run(Device::CPU), gpu = run(GPU);
  const char* names[] = {"conv2d_bn_act 3x3 residual relu", "conv2d_bn_act 3x3 s2", "linear"};
  for (size_t i = 0; i < c.size(); ++i) close(names[i], gpu[i], c[i], 1e-4);
}

#endif  // MEDSLIP_CUDA
