// defines: every kernel a device implements, as plain declarations. engine/kernels/kernels.h
// includes this file twice, inside namespace ms::cpu (engine/kernels/cpu/*.cpp, the reference)
// and, in CUDA builds, inside namespace ms::cuda (engine/kernels/cuda/*.cu): one list, so the
// two devices cannot drift apart, and a compiler error or a tag jump lands on a real line here.
// Kernels take raw pointers on their device and know nothing of Tensor or autograd. Deliberately
// no include guard: include engine/kernels/kernels.h, never this file.

// ---- elementwise (elementwise.cpp / .cu) --------------------------------------------------

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float s);
// gx = gy * dy/dx; x and y are the forward input and output (either may be null when the
// derivative does not read it; relu reads whichever is given)
void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n, float s);
// out = a op b over broadcast operands (out may be a for an in-place update of a)
void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const Broadcast& bc);
// out = mask ? a : b over broadcast operands
void where_forward(const uint8_t* mask, const float* a, const float* b, float* out, const Broadcast& bc);
// pa = m * x and pb = (1 - m) * x over n elements (MeDSLIP's two streams): one pass, the bits
// of binary_forward(Mul) and unary_forward(RSubScalar, s = 1)
void mask_split_forward(const float* m, const float* x, float* pa, float* pb, int64_t n);

// ---- reductions over the middle axis of [outer, n, inner] (reduce.cpp / .cu) ---------------

void sum_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
void max_dim(const float* x, float* y, int64_t* arg, int64_t outer, int64_t n, int64_t inner);
// gx[o, arg[o,i], i] += gy[o,i]
void max_dim_backward(const float* gy, const int64_t* arg, float* gx, int64_t outer, int64_t n, int64_t inner);
// y[o, j, i] = x[o, 0, i] for j < n (broadcast along the middle axis)
void repeat_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);

// ---- matrix products (matmul.cpp / .cu) -----------------------------------------------------

// C[b] = alpha op(A[b]) op(B[b]) + beta C[b], row-major
void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC);

// y [R, out] = x [R, in] w [out, in]^T + b [out] (b may be null), then (relu) relu(y): the linear
// layer's forward, the same bits as gemm_batched, the broadcast add and unary_forward(Relu) (the
// CPU applies b and the relu in the product's epilogue)
void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t R, int64_t in, int64_t out,
                    bool relu = false);

// ---- shape (shape.cpp / .cu) ------------------------------------------------------------------

// out = permute(in) for in of `shape` and out dims `perm`
void permute_copy(const float* in, float* out, int ndim, const int64_t* shape, const int64_t* perm);
// [outer, src_n, inner] slab copy into [outer, dst_n, inner] at offsets (both ways)
void slab_copy(const float* src, int64_t src_n, int64_t src_off, float* dst, int64_t dst_n, int64_t dst_off,
               int64_t len, int64_t outer, int64_t inner, bool accumulate);
// out[o, j, i] = in[o, idx[j], i]; backward accumulates in index order (deterministic)
void index_select_forward(const float* in, const int64_t* idx, float* out, int64_t outer, int64_t n_in,
                          int64_t n_idx, int64_t inner);
void index_select_backward(const float* gout, const int64_t* idx, float* gin, int64_t outer, int64_t n_in,
                           int64_t n_idx, int64_t inner);
// out[k] = in[pos[k]]; backward gin[pos[k]] += gout[k]
void gather_flat(const float* in, const int64_t* pos, float* out, int64_t n);
void scatter_add_flat(const float* gout, const int64_t* pos, float* gin, int64_t n);

// ---- softmax over the middle axis of [outer, n, inner] (softmax.cpp / .cu) ------------------

void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log);
void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t n, int64_t inner, bool log);

// ---- layer norm over rows of [R, C]; mean/rstd [R] saved for backward (layer_norm.cpp / .cu)

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t R,
                        int64_t C, float eps);
void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* gy,
                         float* gx, float* gw, float* gb, int64_t R, int64_t C);

// ---- batch norm over [N, C, HW]: per-channel statistics (batch_norm.cpp / .cu) --------------

void batch_norm_stats(const float* x, float* mean, float* var_biased, int64_t N, int64_t C, int64_t HW);
void batch_norm_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b, float* y,
                      int64_t N, int64_t C, int64_t HW);
// gx for train mode (batch statistics); gw, gb per channel (written, not accumulated)
void batch_norm_backward(const float* x, const float* mean, const float* rstd, const float* w, const float* gy,
                         float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t HW, bool training);
// fused: y = relu?(x a + b' [+ res]) (res may be null; each step rounded as the unfused ops)
void batch_norm_act_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b,
                          const float* res, float* y, int64_t N, int64_t C, int64_t HW, bool relu);
// its backward from x and the output y: g = relu ? gy (y > 0) : gy; gres = g; gx, gw, gb as
// batch_norm_backward from g. Any of gx, gw, gb, gres may be null; all are written. One of gx
// or gres may be gy itself (written over it).
void batch_norm_act_backward(const float* x, const float* y, const float* mean, const float* rstd, const float* w,
                             const float* gy, float* gx, float* gw, float* gb, float* gres, int64_t N, int64_t C,
                             int64_t HW, bool training, bool relu);

// ---- convolution and pooling on [N, C, H, W] (conv.cpp / .cu) -------------------------------

// y [N, O, OH, OW] = W [O, C*kh*kw] col(x[n]) for every image n (no bias: the op adds it)
void conv2d_forward(const float* x, const float* w, float* y, const Conv2dShape& s);
// Evaluation only: batch_norm_act_apply(conv2d_forward(x, w), mean, rstd, bn_w, bn_b, res,
// relu) with the same bits, the BatchNorm (+ residual) (+ ReLU) applied by the convolution to
// its own output while it is in cache (CPU) instead of in a pass of its own.
void conv2d_bn_act_forward(const float* x, const float* w, float* y, const Conv2dShape& s, const float* mean,
                           const float* rstd, const float* bn_w, const float* bn_b, const float* res, bool relu);
// gx [N, C, H, W] and gw [O, C, kh, kw] written (either null: skipped); gy is dL/dy. The weight
// gradient sums the images' contributions in image order on every device and thread count.
void conv2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw, const Conv2dShape& s);
// im2col for one image: col [C*kh*kw, OH*OW]; col2im is its adjoint and accumulates into x
void im2col(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            int64_t pad, int64_t OH, int64_t OW);
void col2im(const float* col, float* x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            int64_t pad, int64_t OH, int64_t OW);
// arg (the argmax within each plane) may be null when no backward follows; the CPU then takes
// a faster values-only path (a tie of -0 and +0 gives +0 there, a NaN window the default NaN)
void max_pool2d_forward(const float* x, float* y, int64_t* arg, int64_t NC, int64_t H, int64_t W, int64_t k,
                        int64_t stride, int64_t pad, int64_t OH, int64_t OW);
void max_pool2d_backward(const float* gy, const int64_t* arg, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                         int64_t OW);
void adaptive_avg_pool2d_forward(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW);
void adaptive_avg_pool2d_backward(const float* gy, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW);

// ---- transposed convolution on [N, C, H, W] (conv_transpose.cpp / .cu) ----------------------

// y [N, O, OH, OW] = col2im(W^T x[n]) for every image n, written (no bias: the op adds it)
void conv_transpose2d_forward(const float* x, const float* w, float* y, const ConvTranspose2dShape& s);
// gx [N, C, H, W] = W im2col(gy[n]) and gw [C, O, kh, kw] = sum_n x[n] im2col(gy[n])^T, written
// (either null: skipped; x is read for gw only, w for gx only). Images are added into gw in
// order on every device and thread count.
void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw,
                               const ConvTranspose2dShape& s);

// ---- dropout with the shared Philox rule (engine/philox.h) (dropout.cpp / .cu) -------------

void dropout_forward(const float* x, float* y, uint8_t* keep, int64_t n, float p, uint64_t key, uint64_t counter0);
void dropout_backward(const float* gy, const uint8_t* keep, float* gx, int64_t n, float p);

// ---- losses: per-row CE terms and gradient given the upstream scale (loss.cpp / .cu) --------

void cross_entropy_forward(const float* logits, const int64_t* target, const uint8_t* valid, float* row_loss,
                           int64_t R, int64_t C);
void cross_entropy_backward(const float* logits, const int64_t* target, const uint8_t* valid, float scale,
                            float* glogits, int64_t R, int64_t C);
void bce_with_logits_forward(const float* x, const float* t, const uint8_t* valid, float* elem_loss, int64_t n);
void bce_with_logits_backward(const float* x, const float* t, const uint8_t* valid, float scale, float* gx,
                              int64_t n);

// ---- AdamW (torch.optim.AdamW): decoupled decay, bias correction, eps outside the sqrt -------

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay, float bc1, float bc2);

// ---- memory: the device's caching allocator, copies, fills (alloc.cpp / alloc.cu) ------------
// engine/device.h is the public face of these; Storage (engine/tensor.cpp) allocates through them.

// Whether the device can run kernels; *about (when not null) gets its name, or why not.
bool present(std::string* about);
// A block of at least `bytes` (0 allowed) from the caching allocator (CPU: 64-byte aligned).
void* alloc(size_t bytes);
// Hands a block from alloc back to the cache; never throws (called from destructors).
void release(void* p, size_t bytes);
MemoryStats memory_stats();
// Copies bytes between two buffers, either (or both) of them on this device.
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void fill(float* p, float v, int64_t n);
// TF32 tensor cores for float32 matrix products (the CPU has no such mode: ignored, false).
void set_tf32(bool on);
bool tf32_enabled();
