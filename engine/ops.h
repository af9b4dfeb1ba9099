// defines: the Tensor-level operations. Each records its backward on the autograd tape
// (engine/autograd.h) when an input requires grad. One family per file in engine/ops/,
// forward and backward side by side; the loops live in engine/kernels/.
//
// Conventions: float32 tensors; integer indices travel as std::vector<int64_t>;
// boolean masks as std::vector<uint8_t> (1 = selected). Negative dims count from the end.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace ms {

// ---- elementwise (ops/elementwise.cpp), NumPy broadcasting -------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// {m * x, (1 - m) * x}: MeDSLIP's pathology and anatomy streams; without gradients (same
// shapes) one pass over m and x instead of three ops, the same bits.
std::pair<Tensor, Tensor> mask_split(const Tensor& m, const Tensor& x);
Tensor add(const Tensor& a, float s);
Tensor mul(const Tensor& a, float s);
Tensor rsub(float s, const Tensor& a);  // s - a
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor relu(const Tensor& a);
// Temporaries (rvalues): on the CPU the result is written over the argument's own data when
// nothing else refers to it (no view, no other handle, no copy saved for a backward).
Tensor relu(Tensor&& a);
Tensor add(Tensor&& a, const Tensor& b);
Tensor gelu(const Tensor& a);  // erf form: x/2 (1 + erf(x/sqrt 2))
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor pow(const Tensor& a, float p);
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float s) { return add(a, s); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
// Sums a broadcast gradient back down to `shape` (used by broadcasting backward).
Tensor sum_to(const Tensor& g, const Shape& shape);

// ---- reductions (ops/reduce.cpp) ---------------------------------------------------
Tensor sum(const Tensor& a);                                  // all elements -> []
Tensor mean(const Tensor& a);
Tensor sum(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& a, int64_t dim, bool keepdim = false);  // grad to first argmax
std::vector<int64_t> argmax(const Tensor& a, int64_t dim);         // no grad

// ---- matrix products (ops/matmul.cpp), OpenBLAS sgemm on CPU ------------------------
// 2-D [M,K]x[K,N]; batched [B,M,K]x[B,K,N]; [B,M,K]x[K,N] (b broadcast). trans_a/b
// transpose the last two dims of an operand before the product.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// y = x W^T + b, x [..., in], W [out, in], b [out] or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
// relu(linear(x, w, b)); without gradients one kernel (bias and relu in the product's epilogue), the same bits.
Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// ---- shape ops, all copying (ops/shape.cpp) ----------------------------------------
Tensor permute(const Tensor& a, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);
Tensor concat(const std::vector<Tensor>& ts, int64_t dim);
Tensor narrow(const Tensor& a, int64_t dim, int64_t start, int64_t length);
Tensor index_select(const Tensor& a, int64_t dim, const std::vector<int64_t>& index);
Tensor embedding(const Tensor& weight, const std::vector<int64_t>& ids, const Shape& ids_shape);
// Elements where mask==1, flattened to 1-D (mask has a's numel). Grad flows to those only.
Tensor masked_select(const Tensor& a, const std::vector<uint8_t>& mask);
// out = mask ? a : b (mask has out's numel; a and b broadcast to a common shape).
Tensor where(const std::vector<uint8_t>& mask, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& a, const std::vector<uint8_t>& mask, float value);
Tensor expand(const Tensor& a, const Shape& shape);  // broadcast copy

// ---- softmax family (ops/softmax.cpp) ----------------------------------------------
Tensor softmax(const Tensor& a, int64_t dim);
Tensor log_softmax(const Tensor& a, int64_t dim);

// ---- normalisation (ops/layer_norm.cpp, ops/batch_norm.cpp) --------------------------------------------------
// Over the last dim; weight/bias [C] or undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
// x [N,C,H,W]. training: batch statistics (biased var to normalise), and running_mean /
// running_var updated in place with momentum (unbiased var). Else running statistics.
Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    Tensor& running_mean, Tensor& running_var, bool training,
                    float momentum = 0.1f, float eps = 1e-5f);
// Fused relu(batch_norm2d(x, ...) + residual): residual [N,C,H,W] or undefined (none), relu
// optional. The same values, bit for bit, as the unfused ops in that order, in one pass forward
// and two backward (ResNet blocks: docs/performance.md).
Tensor batch_norm2d_act(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                        Tensor& running_var, bool training, float momentum, float eps, const Tensor& residual,
                        bool relu);

// ---- convolution and pooling (ops/conv.cpp) ---------------------------------------
// x [N,C,H,W], w [O,C,kh,kw], b [O] or undefined.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding);
// Evaluation: batch_norm2d_act(conv2d(x, w, b, ...), bn_weight, bn_bias, running_mean,
// running_var, training = false, eps, residual, relu) in one op with the same values, bit for
// bit: the BatchNorm (+ residual) (+ ReLU) applied to the convolution's output in cache (CPU).
// With a gradient wanted (or a conv bias), it is those two ops.
Tensor conv2d_bn_act(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding,
                     const Tensor& bn_weight, const Tensor& bn_bias, Tensor& running_mean, Tensor& running_var,
                     float eps, const Tensor& residual, bool relu);
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// Transposed convolution (ops/conv_transpose.cpp), as F.conv_transpose2d with output_padding 0,
// no groups or dilation: x [N,C_in,H,W], w [C_in,C_out,kh,kw], b [C_out] or undefined;
// output [N, C_out, (H-1)*stride - 2*padding + kh, (W-1)*stride - 2*padding + kw].
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding);

// ---- dropout (ops/dropout.cpp) -------------------------------------------------
// Inverted dropout: kept elements scaled by 1/(1-p). Identity when !training or p==0.
Tensor dropout(const Tensor& x, float p, bool training, Rng& rng);

// ---- losses (ops/loss.cpp) ---------------------------------------------------------
// logits [R,C], target [R] class ids, valid [R] (1 = counted). Mean over valid rows;
// 0 (not NaN) when none is valid.
Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& target,
                     const std::vector<uint8_t>& valid);
// Elementwise BCE with logits, numerically stable: max(x,0) - x*t + log(1+exp(-|x|)).
// target has x's shape; mean over elements with valid==1; 0 when none.
Tensor bce_with_logits(const Tensor& x, const Tensor& target, const std::vector<uint8_t>& valid);
// The segmentation fine-tune's DiceBCELoss (spec E.6), over all elements of the batch at once:
// p = sigmoid(logits), BCE = mean of the binary cross-entropy, dice = (2 sum(p t) + smooth) /
// (sum(p) + sum(t) + smooth); returns BCE + 1 - dice as a scalar. target has logits' shape and
// gets no gradient. BCE is taken in the stable logits form (as bce_with_logits); the original
// (F.binary_cross_entropy on sigmoid outputs) agrees with it while sigmoid is not saturated
// in float32 (|logit| below about 16), where that one clamps log at -100 instead.
Tensor dice_bce_loss(const Tensor& logits, const Tensor& target, float smooth = 1.f);

}  // namespace ms
