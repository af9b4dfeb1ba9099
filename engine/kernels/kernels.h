// defines: the device seam. Every kernel is a plain function on raw pointers, declared once in
// engine/kernels/decls.h and defined twice with the same signature: ms::cpu::name
// (engine/kernels/cpu/, the reference) and, in CUDA builds, ms::cuda::name
// (engine/kernels/cuda/). Kernels know nothing of Tensor or autograd; an op (engine/ops/)
// picks the device once per direction with MS_DISPATCH, the only place that names cpu:: or
// cuda::. This header also holds the small types kernels share (op codes, Broadcast, shapes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/device.h"

namespace ms {

enum class UnaryOp : int { Neg, Exp, Log, Sqrt, Rsqrt, Relu, Gelu, Tanh, Sigmoid, Pow, AddScalar, MulScalar, RSubScalar };
enum class BinaryOp : int { Add, Sub, Mul, Div };

constexpr int kMaxDims = 8;
// Output shape and per-operand element strides (0 on broadcast dims), right-aligned.
struct Broadcast {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride_a[kMaxDims] = {};
  int64_t stride_b[kMaxDims] = {};
  int64_t numel = 1;
};

// The Broadcast of operands shaped a and b into `out` (which the caller has checked to be
// their broadcast shape); throws past kMaxDims dims.
inline Broadcast make_broadcast(const std::vector<int64_t>& out, const std::vector<int64_t>& a,
                                const std::vector<int64_t>& b) {
  if (out.size() > size_t(kMaxDims)) throw std::invalid_argument("broadcast: more than 8 dims");
  Broadcast bc;
  bc.ndim = int(out.size());
  int64_t sa = 1, sb = 1;
  for (int d = bc.ndim - 1; d >= 0; --d) {
    bc.shape[d] = out[size_t(d)];
    const int ia = d - (bc.ndim - int(a.size())), ib = d - (bc.ndim - int(b.size()));
    const int64_t da = ia >= 0 ? a[size_t(ia)] : 1, db = ib >= 0 ? b[size_t(ib)] : 1;
    bc.stride_a[d] = da == 1 ? 0 : sa;
    bc.stride_b[d] = db == 1 ? 0 : sb;
    sa *= da;
    sb *= db;
  }
  bc.numel = 1;
  for (int64_t v : out) bc.numel *= v;
  return bc;
}

// conv2d of x [N, C, H, W] with weight [O, C, kh, kw] into y [N, O, OH, OW].
struct Conv2dShape {
  int64_t N, C, H, W, O, kh, kw, stride, pad, OH, OW;
  bool pointwise() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }  // x[n] is its own im2col
};

// conv_transpose2d of x [N, C, H, W] with weight [C, O, kh, kw] into y [N, O, OH, OW], where
// OH = (H - 1) * stride - 2 * pad + kh (and OW likewise): the adjoint of the conv2d from
// [N, O, OH, OW] to [N, C, H, W] with the same weight and geometry.
struct ConvTranspose2dShape {
  int64_t N, C, H, W, O, kh, kw, stride, pad, OH, OW;
};

namespace cpu {
#include "engine/kernels/decls.h"
// 2*M*N*K summed over every gemm_batched call of this process (medslip bench's GFLOP/s).
uint64_t gemm_flop_count();

// n floats of kernel scratch from the CPU caching allocator (alloc), handed back at scope exit.
struct Scratch {
  const size_t bytes;
  float* const data;
  explicit Scratch(int64_t n)
      : bytes(size_t(n > 1 ? n : 1) * sizeof(float)), data(static_cast<float*>(alloc(bytes))) {}
  ~Scratch() { release(data, bytes); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};
}  // namespace cpu

#ifdef MEDSLIP_CUDA
namespace cuda {
#include "engine/kernels/decls.h"
}  // namespace cuda
#endif

}  // namespace ms

// Calls cpu::fn or cuda::fn for device `dev` (an ms::Device).
#ifdef MEDSLIP_CUDA
#define MS_DISPATCH(dev, fn, ...) \
  ((dev) == ::ms::Device::CUDA ? ::ms::cuda::fn(__VA_ARGS__) : ::ms::cpu::fn(__VA_ARGS__))
#else
#define MS_DISPATCH(dev, fn, ...)                                                                          \
  ((dev) == ::ms::Device::CUDA ? throw std::runtime_error(#fn ": this build has no CUDA support (make CUDA=1)") \
                               : ::ms::cpu::fn(__VA_ARGS__))
#endif
