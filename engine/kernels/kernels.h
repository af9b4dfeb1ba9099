// defines: the compute kernels — plain functions on raw float pointers. Each exists as
// ms::cpu::name (engine/kernels/cpu/, the reference) and, in CUDA builds, as
// ms::cuda::name with the same signature (engine/kernels/cuda/). Kernels know nothing of
// Tensor or autograd; ops (engine/ops/) pick the device once and call one of them.
#pragma once
#include <cstdint>
#include <vector>

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
// The Broadcast of operands shaped a and b into `out` (engine/ops/elementwise.cpp; throws past
// kMaxDims dims).
Broadcast make_broadcast(const std::vector<int64_t>& out, const std::vector<int64_t>& a, const std::vector<int64_t>& b);

#define MS_KERNEL_DECLS                                                                                              \
  /* elementwise */                                                                                                  \
  void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float s);                                      \
  /* gx = gy * dy/dx; x and y are the forward input and output */                                                    \
  void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n, float s);    \
  void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const Broadcast& bc);                  \
  /* out = mask ? a : b over broadcast operands */                                                                   \
  void where_forward(const uint8_t* mask, const float* a, const float* b, float* out, const Broadcast& bc);           \
  /* reductions over the middle axis of [outer, n, inner] */                                                         \
  void sum_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);                                   \
  void max_dim(const float* x, float* y, int64_t* arg, int64_t outer, int64_t n, int64_t inner);                     \
  /* y[o, idx[o,i], i] += gy[o,i] */                                                                                 \
  void max_dim_backward(const float* gy, const int64_t* arg, float* gx, int64_t outer, int64_t n, int64_t inner);    \
  /* y[o, j, i] = x[o, 0, i] for j < n (broadcast along the middle axis) */                                          \
  void repeat_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);                                \
  /* matrix products: C[b] = alpha op(A[b]) op(B[b]) + beta C[b], row-major */                                       \
  void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,   \
                    int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC);        \
  /* shape: out = permute(in) for in of `shape` and out dims `perm` */                                               \
  void permute_copy(const float* in, float* out, int ndim, const int64_t* shape, const int64_t* perm);               \
  /* [outer, n_in, inner] slab copy into [outer, n_out, inner] at offset (both ways) */                              \
  void slab_copy(const float* src, int64_t src_n, int64_t src_off, float* dst, int64_t dst_n, int64_t dst_off,       \
                 int64_t len, int64_t outer, int64_t inner, bool accumulate);                                        \
  /* out[o, j, i] = in[o, idx[j], i]; backward accumulates in index order (deterministic) */                         \
  void index_select_forward(const float* in, const int64_t* idx, float* out, int64_t outer, int64_t n_in,            \
                            int64_t n_idx, int64_t inner);                                                           \
  void index_select_backward(const float* gout, const int64_t* idx, float* gin, int64_t outer, int64_t n_in,         \
                             int64_t n_idx, int64_t inner);                                                          \
  /* out[k] = in[pos[k]]; backward gin[pos[k]] += gout[k] */                                                         \
  void gather_flat(const float* in, const int64_t* pos, float* out, int64_t n);                                      \
  void scatter_add_flat(const float* gout, const int64_t* pos, float* gin, int64_t n);                               \
  /* softmax over the middle axis of [outer, n, inner] */                                                            \
  void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log);                 \
  void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t n, int64_t inner,         \
                        bool log);                                                                                   \
  /* layer norm over rows of [R, C]; mean/rstd [R] saved for backward */                                             \
  void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,        \
                          int64_t R, int64_t C, float eps);                                                          \
  void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* gy,    \
                           float* gx, float* gw, float* gb, int64_t R, int64_t C);                                   \
  /* batch norm over [N, C, HW]: per-channel statistics */                                                          \
  void batch_norm_stats(const float* x, float* mean, float* var_biased, int64_t N, int64_t C, int64_t HW);           \
  void batch_norm_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b,        \
                        float* y, int64_t N, int64_t C, int64_t HW);                                                 \
  /* gx for train mode (batch statistics); gw, gb per channel (written, not accumulated) */                          \
  void batch_norm_backward(const float* x, const float* mean, const float* rstd, const float* w, const float* gy,    \
                           float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t HW, bool training);        \
  /* im2col for one image: col [C*kh*kw, OH*OW] */                                                                   \
  void im2col(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,   \
              int64_t pad, int64_t OH, int64_t OW);                                                                  \
  void col2im(const float* col, float* x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,   \
              int64_t pad, int64_t OH, int64_t OW); /* accumulates into x */                                         \
  void max_pool2d_forward(const float* x, float* y, int64_t* arg, int64_t NC, int64_t H, int64_t W, int64_t k,       \
                          int64_t stride, int64_t pad, int64_t OH, int64_t OW);                                      \
  void max_pool2d_backward(const float* gy, const int64_t* arg, float* gx, int64_t NC, int64_t H, int64_t W,         \
                           int64_t OH, int64_t OW);                                                                  \
  void adaptive_avg_pool2d_forward(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t OH,           \
                                   int64_t OW);                                                                      \
  void adaptive_avg_pool2d_backward(const float* gy, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,        \
                                    int64_t OW);                                                                     \
  /* transposed convolution (the adjoint of conv2d) over a batch: x [N,C,H,W], w [C,O,kh,kw],  */                    \
  /* y [N,O,OH,OW] written; col: scratch of O*kh*kw * H*W floats. Backward: gx [N,C,H,W] and  */                     \
  /* gw [C,O,kh,kw] written (null: skip; x is read for gw only, w for gx only), images in order. */                  \
  void conv_transpose2d_forward(const float* x, const float* w, float* y, float* col, int64_t N, int64_t C,          \
                                int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw, int64_t stride, int64_t pad,\
                                int64_t OH, int64_t OW);                                                             \
  void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw, float* col,  \
                                 int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw,      \
                                 int64_t stride, int64_t pad, int64_t OH, int64_t OW);                               \
  /* dropout with the shared Philox rule (engine/rng.h philox_keep) */                                               \
  void dropout_forward(const float* x, float* y, uint8_t* keep, int64_t n, float p, uint64_t key, uint64_t counter0);\
  void dropout_backward(const float* gy, const uint8_t* keep, float* gx, int64_t n, float p);                        \
  /* losses: per-row CE terms and gradient given the upstream scale */                                               \
  void cross_entropy_forward(const float* logits, const int64_t* target, const uint8_t* valid, float* row_loss,      \
                             int64_t R, int64_t C);                                                                  \
  void cross_entropy_backward(const float* logits, const int64_t* target, const uint8_t* valid, float scale,         \
                              float* glogits, int64_t R, int64_t C);                                                 \
  void bce_with_logits_forward(const float* x, const float* t, const uint8_t* valid, float* elem_loss, int64_t n);   \
  void bce_with_logits_backward(const float* x, const float* t, const uint8_t* valid, float scale, float* gx,        \
                                int64_t n);                                                                          \
  /* AdamW (torch.optim.AdamW): decoupled decay, bias correction, eps outside the sqrt */                            \
  void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,        \
                  float eps, float weight_decay, float bc1, float bc2);                                              \
  /* sum of all elements in a fixed order (pairwise over blocks) */                                                  \
  double sum_all(const float* x, int64_t n);

namespace cpu {
MS_KERNEL_DECLS
// 2*M*N*K summed over every gemm_batched call of this process (medslip bench's GFLOP/s).
uint64_t gemm_flop_count();

// CPU only (the op takes im2col + gemm_batched on other devices): conv2d on [N,C,H,W] as
// im2col + one GEMM per image, the images spread over `workers` threads (each GEMM then
// runs on one thread; an image's result does not depend on which thread computes it).
// col: workers * C*kh*kw * OH*OW floats of scratch.
void conv2d_forward(const float* x, const float* w, float* y, float* col, int workers, int64_t N, int64_t C,
                    int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw, int64_t stride, int64_t pad, int64_t OH,
                    int64_t OW);
// gx [N,C,H,W] written (null: skip); gw_parts [N,O,C*kh*kw]: each image's weight gradient
// (null: skip), to be summed in image order with sum_parts.
void conv2d_backward(const float* x, const float* w, const float* g, float* gx, float* gw_parts, float* col,
                     int workers, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw,
                     int64_t stride, int64_t pad, int64_t OH, int64_t OW);
// y[i] = ((parts[0][i] + parts[1][i]) + ...) over n parts of len floats: a fixed order.
void sum_parts(const float* parts, float* y, int64_t n, int64_t len);
// max_pool2d_forward without the argmax (no backward): the same values, except that a tie of
// -0 and +0 gives +0 and a NaN window gives the default NaN (its payload is not kept).
void max_pool2d_values(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t k, int64_t stride,
                       int64_t pad, int64_t OH, int64_t OW);
}
#ifdef MEDSLIP_CUDA
namespace cuda {
MS_KERNEL_DECLS
}
#endif

}  // namespace ms

// Calls cpu::fn or cuda::fn for device `dev` (an ms::Device).
#ifdef MEDSLIP_CUDA
#define MS_DISPATCH(dev, fn, ...) \
  ((dev) == ::ms::Device::CUDA ? ::ms::cuda::fn(__VA_ARGS__) : ::ms::cpu::fn(__VA_ARGS__))
#else
#include <stdexcept>
#define MS_DISPATCH(dev, fn, ...)                                                                          \
  ((dev) == ::ms::Device::CUDA ? throw std::runtime_error(#fn ": this build has no CUDA support (make CUDA=1)") \
                               : ::ms::cpu::fn(__VA_ARGS__))
#endif
