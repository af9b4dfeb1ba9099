// CPU reference kernels: unary and broadcasting binary elementwise ops.
#include <cmath>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

static inline float unary1(UnaryOp op, float x, float s) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return 1.0f / std::sqrt(x);
    case UnaryOp::Relu: return x > 0.f ? x : 0.f;
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
    case UnaryOp::Relu: return x > 0.f ? 1.f : 0.f;  // 0 at the kink, as PyTorch
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

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) y[i] = unary1(op, x[i], s);
}

void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * dunary(op, x ? x[i] : 0.f, y ? y[i] : 0.f, s);
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

// Walks the output in row-major order; the innermost dim is a tight loop.
template <class F>
static void bcast_loop(const Broadcast& bc, F&& f) {
  const int nd = bc.ndim;
  if (nd == 0) { f(0, 0, 0, 1, 0, 0); return; }
  const int64_t inner = bc.shape[nd - 1];
  const int64_t rows = inner ? bc.numel / inner : 0;
#pragma omp parallel for schedule(static) if (bc.numel > 32768)
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

void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const Broadcast& bc) {
  bcast_loop(bc, [&](int64_t o, int64_t oa, int64_t ob, int64_t len, int64_t sa, int64_t sb) {
    if (sa == 1 && sb == 1) {
      for (int64_t i = 0; i < len; ++i) out[o + i] = binary1(op, a[oa + i], b[ob + i]);
    } else {
      for (int64_t i = 0; i < len; ++i) out[o + i] = binary1(op, a[oa + i * sa], b[ob + i * sb]);
    }
  });
}

void where_forward(const uint8_t* mask, const float* a, const float* b, float* out, const Broadcast& bc) {
  bcast_loop(bc, [&](int64_t o, int64_t oa, int64_t ob, int64_t len, int64_t sa, int64_t sb) {
    for (int64_t i = 0; i < len; ++i) out[o + i] = mask[o + i] ? a[oa + i * sa] : b[ob + i * sb];
  });
}

}  // namespace ms::cpu
