// CUDA twins of engine/kernels/cpu/elementwise.cpp: unary ops and broadcasting binary ops,
// one thread per output element. The formulas are the CPU's, written once more for the device.
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

__device__ __forceinline__ float unary1(UnaryOp op, float x, float s) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Rsqrt: return 1.0f / sqrtf(x);  // not rsqrtf (approximate)
    case UnaryOp::Relu: return x > 0.f ? x : 0.f;
    case UnaryOp::Gelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-x));
    case UnaryOp::Pow: return powf(x, s);
    case UnaryOp::AddScalar: return x + s;
    case UnaryOp::MulScalar: return x * s;
    case UnaryOp::RSubScalar: return s - x;
  }
  return 0.f;
}

// dy/dx from the input x and/or the output y (as the CPU's dunary).
__device__ __forceinline__ float dunary(UnaryOp op, float x, float y, float s) {
  switch (op) {
    case UnaryOp::Neg: return -1.f;
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return 1.f / x;
    case UnaryOp::Sqrt: return 0.5f / y;
    case UnaryOp::Rsqrt: return -0.5f * y * y * y;
    case UnaryOp::Relu: return x > 0.f || y > 0.f ? 1.f : 0.f;  // from x or y (the other is 0): y > 0 exactly where x > 0
    case UnaryOp::Gelu: {
      float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
      float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
      return cdf + x * pdf;
    }
    case UnaryOp::Tanh: return 1.f - y * y;
    case UnaryOp::Sigmoid: return y * (1.f - y);
    case UnaryOp::Pow: return s * powf(x, s - 1.f);
    case UnaryOp::AddScalar: return 1.f;
    case UnaryOp::MulScalar: return s;
    case UnaryOp::RSubScalar: return -1.f;
  }
  return 0.f;
}

__device__ __forceinline__ float binary1(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return 0.f;
}

__global__ void unary_forward_kernel(UnaryOp op, const float* x, float* y, int64_t n, float s) {
  CUDA_FOR(i, n) y[i] = unary1(op, x[i], s);
}

__global__ void unary_backward_kernel(UnaryOp op, const float* x, const float* y, const float* gy, float* gx,
                                      int64_t n, float s) {
  CUDA_FOR(i, n) gx[i] = gy[i] * dunary(op, x ? x[i] : 0.f, y ? y[i] : 0.f, s);
}

// Element offsets of output element i in a and b (right-aligned strides, 0 on broadcast dims).
__device__ __forceinline__ void bcast_offsets(const Broadcast& bc, int64_t i, int64_t& oa, int64_t& ob) {
  oa = 0;
  ob = 0;
  for (int d = bc.ndim - 1; d >= 0; --d) {
    const int64_t k = i % bc.shape[d];
    i /= bc.shape[d];
    oa += k * bc.stride_a[d];
    ob += k * bc.stride_b[d];
  }
}

// Both operands have the output's layout: flat indices, no index arithmetic.
__global__ void binary_flat_kernel(BinaryOp op, const float* a, const float* b, float* out, int64_t n) {
  CUDA_FOR(i, n) out[i] = binary1(op, a[i], b[i]);
}

__global__ void binary_bcast_kernel(BinaryOp op, const float* a, const float* b, float* out, Broadcast bc) {
  CUDA_FOR(i, bc.numel) {
    int64_t oa, ob;
    bcast_offsets(bc, i, oa, ob);
    out[i] = binary1(op, a[oa], b[ob]);
  }
}

__global__ void where_kernel(const uint8_t* mask, const float* a, const float* b, float* out, Broadcast bc) {
  CUDA_FOR(i, bc.numel) {
    int64_t oa, ob;
    bcast_offsets(bc, i, oa, ob);
    out[i] = mask[i] ? a[oa] : b[ob];
  }
}

// True when an operand's strides are the output's contiguous strides (no broadcasting).
bool is_full(const Broadcast& bc, const int64_t* stride) {
  int64_t s = 1;
  for (int d = bc.ndim - 1; d >= 0; --d) {
    if (bc.shape[d] != 1 && stride[d] != s) return false;
    s *= bc.shape[d];
  }
  return true;
}

}  // namespace

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float s) {
  if (n <= 0) return;
  unary_forward_kernel<<<grid_for(n), kBlock>>>(op, x, y, n, s);
  cudaCheckLaunch();
}

void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n, float s) {
  if (n <= 0) return;
  unary_backward_kernel<<<grid_for(n), kBlock>>>(op, x, y, gy, gx, n, s);
  cudaCheckLaunch();
}

void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const Broadcast& bc) {
  if (bc.numel <= 0) return;
  if (is_full(bc, bc.stride_a) && is_full(bc, bc.stride_b))
    binary_flat_kernel<<<grid_for(bc.numel), kBlock>>>(op, a, b, out, bc.numel);
  else
    binary_bcast_kernel<<<grid_for(bc.numel), kBlock>>>(op, a, b, out, bc);
  cudaCheckLaunch();
}

__global__ void mask_split_kernel(const float* m, const float* x, float* pa, float* pb, int64_t n) {
  CUDA_FOR(i, n) {
    const float mi = m[i], xi = x[i];
    pa[i] = __fmul_rn(mi, xi);  // no contraction into an FMA: the bits of mul and rsub
    pb[i] = __fmul_rn(__fsub_rn(1.f, mi), xi);
  }
}

void mask_split_forward(const float* m, const float* x, float* pa, float* pb, int64_t n) {
  if (n <= 0) return;
  mask_split_kernel<<<grid_for(n), kBlock>>>(m, x, pa, pb, n);
  cudaCheckLaunch();
}

void where_forward(const uint8_t* mask, const float* a, const float* b, float* out, const Broadcast& bc) {
  if (bc.numel <= 0) return;
  where_kernel<<<grid_for(bc.numel), kBlock>>>(mask, a, b, out, bc);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
