// CPU reference kernels: unary and broadcasting binary elementwise ops.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/kernels/cpu/bn_act.h"
#include "engine/kernels/kernels.h"

namespace ms::cpu {

// relu uses positive / keep_or_zero (bn_act.h): x > 0 decided on the bit pattern (sign clear,
// not zero, not NaN) and a select done by masking bits: the same answers as the float compare
// and select, but integer operations, which GCC vectorises (under its default -ftrapping-math
// float compares stay branches).

static inline float unary1(UnaryOp op, float x, float s) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return 1.0f / std::sqrt(x);
    case UnaryOp::Relu: return keep_or_zero(positive(x), x);
    case UnaryOp::Gelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + std::exp(-x));
    case UnaryOp::Pow: return std::pow(x, s);
    case UnaryOp::AddScalar: return x + s;
    case UnaryOp::MulScalar: return x * s;
    case UnaryOp::RSubScalar: return s - x;
  }
  return 0.f;
}

// dy/dx, from the input x and/or the output y.
static inline float dunary(UnaryOp op, float x, float y, float s) {
  switch (op) {
    case UnaryOp::Neg: return -1.f;
    case UnaryOp::Exp: return y;                     // d e^x = e^x
    case UnaryOp::Log: return 1.f / x;               // d log x = 1/x
    case UnaryOp::Sqrt: return 0.5f / y;             // d sqrt x = 1/(2 sqrt x)
    case UnaryOp::Rsqrt: return -0.5f * y * y * y;   // d x^-1/2 = -1/2 x^-3/2
    case UnaryOp::Relu: return positive(x) ? 1.f : 0.f;  // 0 at the kink, as PyTorch
    case UnaryOp::Gelu: {                            // Phi(x) + x phi(x)
      float cdf = 0.5f * (1.0f + std::erf(x * 0.70710678118654752f));
      float pdf = 0.3989422804014327f * std::exp(-0.5f * x * x);
      return cdf + x * pdf;
    }
    case UnaryOp::Tanh: return 1.f - y * y;
    case UnaryOp::Sigmoid: return y * (1.f - y);
    case UnaryOp::Pow: return s * std::pow(x, s - 1.f);
    case UnaryOp::AddScalar: return 1.f;
    case UnaryOp::MulScalar: return s;
    case UnaryOp::RSubScalar: return -1.f;
  }
  return 0.f;
}

// One loop per op (the op is a template parameter), so that each loop is a plain
// vectorisable map; the per-element formulas are unary1/dunary above.
constexpr int64_t kParallelMin = 32768;

template <UnaryOp OP>
static void unary_forward_t(const float* x, float* y, int64_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = unary1(OP, x[i], s);
}

template <UnaryOp OP>
static void unary_backward_t(const float* x, const float* y, const float* gy, float* gx, int64_t n, float s) {
  if (OP == UnaryOp::Relu) {  // gy where x > 0, else 0 (as torch's threshold_backward); y > 0 exactly where x > 0
    const float* r = x ? x : y;
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) gx[i] = keep_or_zero(positive(r[i]), gy[i]);
    return;
  }
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * dunary(OP, x ? x[i] : 0.f, y ? y[i] : 0.f, s);
}

#define MS_UNARY_CASES(M)                                                                                      \
  M(Neg) M(Exp) M(Log) M(Sqrt) M(Rsqrt) M(Relu) M(Gelu) M(Tanh) M(Sigmoid) M(Pow) M(AddScalar) M(MulScalar) \
  M(RSubScalar)

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float s) {
  switch (op) {
#define MS_CASE(name) \
  case UnaryOp::name: unary_forward_t<UnaryOp::name>(x, y, n, s); break;
    MS_UNARY_CASES(MS_CASE)
#undef MS_CASE
  }
}

// x or y may be null when the op's derivative does not need it (relu accepts either).
void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n, float s) {
  switch (op) {
#define MS_CASE(name) \
  case UnaryOp::name: unary_backward_t<UnaryOp::name>(x, y, gy, gx, n, s); break;
    MS_UNARY_CASES(MS_CASE)
#undef MS_CASE
  }
}

static inline float binary1(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return 0.f;
}

// Merges adjacent dims that both operands walk contiguously (or both skip), so that e.g.
// [N,C,H,W] + [1,C,1,1] becomes [N, C, H*W] with rows of H*W and one b per row.
static Broadcast collapse(const Broadcast& in) {
  Broadcast bc;
  bc.numel = in.numel;
  int nd = 0;
  for (int d = 0; d < in.ndim; ++d) {
    if (in.shape[d] == 1) continue;  // size-1 dims contribute no offset
    if (nd > 0 && in.stride_a[d] * in.shape[d] == bc.stride_a[nd - 1] &&
        in.stride_b[d] * in.shape[d] == bc.stride_b[nd - 1]) {
      bc.shape[nd - 1] *= in.shape[d];
      bc.stride_a[nd - 1] = in.stride_a[d];
      bc.stride_b[nd - 1] = in.stride_b[d];
      continue;
    }
    bc.shape[nd] = in.shape[d];
    bc.stride_a[nd] = in.stride_a[d];
    bc.stride_b[nd] = in.stride_b[d];
    ++nd;
  }
  bc.ndim = nd;
  return bc;
}

// Walks the output in row-major order; the innermost dim is a tight loop. Rows are
// independent and each output element is computed once, so any split over threads
// gives the same result.
template <class F>
static void bcast_loop(const Broadcast& in, F&& f) {
  const Broadcast bc = collapse(in);
  const int nd = bc.ndim;
  if (bc.numel == 0) return;
  if (nd == 0) { f(0, 0, 0, 1, 0, 0); return; }
  const int64_t inner = bc.shape[nd - 1];
  const int64_t rows = bc.numel / inner;
  if (rows == 1) {  // one long row: split it into chunks
    const int64_t chunk = 16384, nc = (inner + chunk - 1) / chunk;
    const int64_t sa = bc.stride_a[0], sb = bc.stride_b[0];
#pragma omp parallel for schedule(static) if (bc.numel > kParallelMin)
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t o = c * chunk, len = std::min(chunk, inner - o);
      f(o, o * sa, o * sb, len, sa, sb);
    }
    return;
  }
#pragma omp parallel for schedule(static) if (bc.numel > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t oa = 0, ob = 0, rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      int64_t i = rem % bc.shape[d];
      rem /= bc.shape[d];
      oa += i * bc.stride_a[d];
      ob += i * bc.stride_b[d];
    }
    f(r * inner, oa, ob, inner, bc.stride_a[nd - 1], bc.stride_b[nd - 1]);
  }
}

template <BinaryOp OP>
static void binary_t(const float* a, const float* b, float* out, const Broadcast& bc) {
  bcast_loop(bc, [&](int64_t o, int64_t oa, int64_t ob, int64_t len, int64_t sa, int64_t sb) {
    float* y = out + o;
    const float* pa = a + oa;
    const float* pb = b + ob;
    if (sa == 1 && sb == 1) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) y[i] = binary1(OP, pa[i], pb[i]);
    } else if (sa == 1 && sb == 0) {
      const float vb = pb[0];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) y[i] = binary1(OP, pa[i], vb);
    } else if (sa == 0 && sb == 1) {
      const float va = pa[0];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) y[i] = binary1(OP, va, pb[i]);
    } else {
      for (int64_t i = 0; i < len; ++i) y[i] = binary1(OP, pa[i * sa], pb[i * sb]);
    }
  });
}

// out may be a (out == a for an in-place accumulation, same shape).
void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const Broadcast& bc) {
  switch (op) {
    case BinaryOp::Add: binary_t<BinaryOp::Add>(a, b, out, bc); break;
    case BinaryOp::Sub: binary_t<BinaryOp::Sub>(a, b, out, bc); break;
    case BinaryOp::Mul: binary_t<BinaryOp::Mul>(a, b, out, bc); break;
    case BinaryOp::Div: binary_t<BinaryOp::Div>(a, b, out, bc); break;
  }
}

void where_forward(const uint8_t* mask, const float* a, const float* b, float* out, const Broadcast& bc) {
  bcast_loop(bc, [&](int64_t o, int64_t oa, int64_t ob, int64_t len, int64_t sa, int64_t sb) {
    for (int64_t i = 0; i < len; ++i) out[o + i] = mask[o + i] ? a[oa + i * sa] : b[ob + i * sb];
  });
}

void mask_split_forward(const float* m, const float* x, float* pa, float* pb, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const float mi = m[i], xi = x[i];
    pa[i] = mi * xi;
    pb[i] = (1.f - mi) * xi;
  }
}

}  // namespace ms::cpu
