// Convolution and pooling on [N, C, H, W]: conv2d (im2col + one GEMM per image),
// max_pool2d, adaptive_avg_pool2d. Semantics as torch.nn.functional (no dilation/groups).
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"
#include "engine/threads.h"

namespace ms {

static void check_4d(const Tensor& x, const char* op, const char* what) {
  if (!x.defined() || x.dim() != 4)
    throw std::invalid_argument(std::string(op) + ": " + what + " must be 4-D [N,C,H,W], got " +
                                (x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor")));
}

// floor((in + 2 pad - k) / stride) + 1, or a named error when the window does not fit.
static int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, const char* op, const Shape& xs) {
  if (in + 2 * pad < k)
    throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(k) + " larger than padded input " +
                                std::to_string(in + 2 * pad) + " (input " + shape_str(xs) + ")");
  return (in + 2 * pad - k) / stride + 1;
}

// ---- conv2d ------------------------------------------------------------------------------

// CPU: threads that take whole images (one image each at a time, its GEMMs on one thread);
// a single image keeps OpenBLAS's own threading.
static int conv_workers(int64_t N) { return int(std::max<int64_t>(1, std::min<int64_t>(num_threads(), N))); }

// The bias-free product y[n] = W[O, C*kh*kw] col(x[n])[C*kh*kw, OH*OW]; the bias is a
// broadcasting add on top, so its gradient comes from add's backward (sum over N, H, W).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding) {
  check_4d(x, "conv2d", "input");
  check_4d(w, "conv2d", "weight");
  const Device dev = common_device({x, w, b}, "conv2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  if (w.size(1) != C)
    throw std::invalid_argument("conv2d: weight " + shape_str(w.shape()) + " expects " + std::to_string(w.size(1)) +
                                " input channels, input " + shape_str(x.shape()) + " has " + std::to_string(C));
  if (kh < 1 || kw < 1) throw std::invalid_argument("conv2d: weight " + shape_str(w.shape()) + " has an empty kernel");
  if (b.defined() && b.shape() != Shape{O})
    throw std::invalid_argument("conv2d: bias " + shape_str(b.shape()) + " for weight " + shape_str(w.shape()) +
                                ", expected [" + std::to_string(O) + "]");
  if (stride < 1 || padding < 0)
    throw std::invalid_argument("conv2d: stride must be >= 1 and padding >= 0, got stride " + std::to_string(stride) +
                                ", padding " + std::to_string(padding));
  const int64_t OH = out_size(H, kh, stride, padding, "conv2d", x.shape());
  const int64_t OW = out_size(W, kw, stride, padding, "conv2d", x.shape());
  const int64_t K = C * kh * kw, L = OH * OW;  // GEMM depth and columns per image
  // 1x1, stride 1, no padding: x[n] viewed as [C, H*W] already is the column matrix.
  const bool direct = kh == 1 && kw == 1 && stride == 1 && padding == 0;

  Tensor y = Tensor::empty({N, O, OH, OW}, dev);  // (N, O, OH, OW)
  if (direct) {
    MS_DISPATCH(dev, gemm_batched, false, false, N, O, L, K, 1.f, w.data(), 0, x.data(), C * H * W, 0.f, y.data(),
                O * L);
  } else if (N > 0 && dev == Device::CPU) {  // images spread over the threads, one scratch per thread
    const int workers = conv_workers(N);
    Tensor col = Tensor::empty({workers, K, L});
    cpu::conv2d_forward(x.data(), w.data(), y.data(), col.data(), workers, N, C, H, W, O, kh, kw, stride, padding, OH,
                        OW);
  } else if (N > 0) {
    Tensor col = Tensor::empty({K, L}, dev);  // one image's columns, reused across the batch
    for (int64_t n = 0; n < N; ++n) {
      MS_DISPATCH(dev, im2col, x.data() + n * C * H * W, col.data(), C, H, W, kh, kw, stride, padding, OH, OW);
      MS_DISPATCH(dev, gemm_batched, false, false, 1, O, L, K, 1.f, w.data(), 0, col.data(), 0, 0.f,
                  y.data() + n * O * L, 0);
    }
  }

  // dW reads x and dx reads W: each is kept only if the other needs a gradient.
  auto backward = [x = needs_grad(w) ? x : grad_handle(x), w = needs_grad(x) ? w : grad_handle(w), N, C, H, W, O, kh,
                   kw, stride, padding, OH, OW, K, L, direct, dev](const Tensor& g) {
    const bool gx_on = needs_grad(x), gw_on = needs_grad(w);
    const bool cpu = dev == Device::CPU;
    // col2im accumulates, so that path starts from zeros (the CPU kernel zeroes each image
    // itself); the direct GEMM overwrites (beta = 0).
    Tensor gx = gx_on ? (direct || cpu ? Tensor::empty(x.shape(), dev) : Tensor::zeros(x.shape(), dev)) : Tensor();
    Tensor gw = gw_on ? Tensor::empty(w.shape(), dev) : Tensor();
    // CPU, several images: dW = sum_n dW_n with each image's dW_n computed on its own (in
    // parallel) and the sum taken in image order, so the bits do not depend on the threads.
    Tensor parts = gw_on && cpu && N > 1 ? Tensor::empty({N, w.numel()}) : Tensor();
    if (direct && cpu) {
      if (gx_on)  // dx[n] = W^T g[n]
        cpu::gemm_batched(true, false, N, C, L, O, 1.f, w.data(), 0, g.data(), O * L, 0.f, gx.data(), C * L);
      if (gw_on)  // dW_n = g[n] x[n]^T
        cpu::gemm_batched(false, true, N, O, C, L, 1.f, g.data(), O * L, x.data(), C * L, 0.f,
                          N > 1 ? parts.data() : gw.data(), O * C);
    } else if (cpu) {
      const int workers = conv_workers(N);
      Tensor col = Tensor::empty({workers, K, L});
      cpu::conv2d_backward(x.data(), w.data(), g.data(), gx_on ? gx.data() : nullptr,
                           gw_on ? (N > 1 ? parts.data() : gw.data()) : nullptr, col.data(), workers, N, C, H, W, O,
                           kh, kw, stride, padding, OH, OW);
    } else if (direct) {
      // dx[n] = W^T g[n]; dW = sum_n g[n] x[n]^T (images added in order: beta = 1 after the first)
      if (gx_on)
        MS_DISPATCH(dev, gemm_batched, true, false, N, C, L, O, 1.f, w.data(), 0, g.data(), O * L, 0.f, gx.data(),
                    C * L);
      if (gw_on)
        for (int64_t n = 0; n < N; ++n)
          MS_DISPATCH(dev, gemm_batched, false, true, 1, O, C, L, 1.f, g.data() + n * O * L, 0,
                      x.data() + n * C * L, 0, n ? 1.f : 0.f, gw.data(), 0);
    } else {
      Tensor col = Tensor::empty({K, L}, dev);
      for (int64_t n = 0; n < N; ++n) {
        const float* gn = g.data() + n * O * L;
        if (gw_on) {  // dW += g[n] col(x[n])^T
          MS_DISPATCH(dev, im2col, x.data() + n * C * H * W, col.data(), C, H, W, kh, kw, stride, padding, OH, OW);
          MS_DISPATCH(dev, gemm_batched, false, true, 1, O, K, L, 1.f, gn, 0, col.data(), 0, n ? 1.f : 0.f,
                      gw.data(), 0);
        }
        if (gx_on) {  // dx[n] = col2im(W^T g[n])
          MS_DISPATCH(dev, gemm_batched, true, false, 1, K, L, O, 1.f, w.data(), 0, gn, 0, 0.f, col.data(), 0);
          MS_DISPATCH(dev, col2im, col.data(), gx.data() + n * C * H * W, C, H, W, kh, kw, stride, padding, OH, OW);
        }
      }
    }
    if (parts.defined()) cpu::sum_parts(parts.data(), gw.data(), N, w.numel());
    if (gw_on && N == 0) gw.fill_(0.f);
    if (gx_on) accumulate_grad(x, gx);
    if (gw_on) accumulate_grad(w, gw);
  };
  record(y, "conv2d", {x, w}, backward);
  if (b.defined()) y = add(y, b.reshape({1, O, 1, 1}));
  return y;
}

// ---- max_pool2d --------------------------------------------------------------------------

namespace {
// Argmax indices on the tensor's device (the kernels take int64_t*, Tensor holds floats).
struct IndexBuffer {
  int64_t* data = nullptr;
  int64_t n = 0;
  Device dev = Device::CPU;
  IndexBuffer(int64_t count, Device d) : n(count), dev(d) {
    const size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(int64_t);
    data = static_cast<int64_t*>(d == Device::CUDA ? device_alloc(bytes) : ::operator new(bytes));
  }
  ~IndexBuffer() {
    if (dev == Device::CUDA) device_free(data, size_t(std::max<int64_t>(n, 1)) * sizeof(int64_t));
    else ::operator delete(data);
  }
  IndexBuffer(const IndexBuffer&) = delete;
  IndexBuffer& operator=(const IndexBuffer&) = delete;
};
}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_4d(x, "max_pool2d", "input");
  if (kernel < 1 || stride < 1 || padding < 0)
    throw std::invalid_argument("max_pool2d: need kernel >= 1, stride >= 1, padding >= 0, got " +
                                std::to_string(kernel) + ", " + std::to_string(stride) + ", " +
                                std::to_string(padding));
  if (2 * padding > kernel)  // as PyTorch: a window must always hold a real cell
    throw std::invalid_argument("max_pool2d: padding " + std::to_string(padding) +
                                " should be at most half of kernel " + std::to_string(kernel));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = out_size(H, kernel, stride, padding, "max_pool2d", x.shape());
  const int64_t OW = out_size(W, kernel, stride, padding, "max_pool2d", x.shape());
  const Device dev = x.device();
  Tensor y = Tensor::empty({N, C, OH, OW}, dev);  // (N, C, OH, OW)
  if (dev == Device::CPU && !any_requires_grad({x})) {  // no backward: the values alone, vectorised
    cpu::max_pool2d_values(x.data(), y.data(), N * C, H, W, kernel, stride, padding, OH, OW);
    return y;
  }
  auto arg = std::make_shared<IndexBuffer>(N * C * OH * OW, dev);
  MS_DISPATCH(dev, max_pool2d_forward, x.data(), y.data(), arg->data, N * C, H, W, kernel, stride, padding, OH, OW);
  record(y, "max_pool2d", {x}, [x = grad_handle(x), arg, N, C, H, W, OH, OW](const Tensor& g) {
    Tensor gx = Tensor::empty(x.shape(), x.device());  // d max = g routed to the (first) argmax of each window
    MS_DISPATCH(x.device(), max_pool2d_backward, g.data(), arg->data, gx.data(), N * C, H, W, OH, OW);
    accumulate_grad(x, gx);
  });
  return y;
}

// ---- adaptive_avg_pool2d -----------------------------------------------------------------

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_4d(x, "adaptive_avg_pool2d", "input");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (out_h < 1 || out_w < 1 || H < 1 || W < 1)
    throw std::invalid_argument("adaptive_avg_pool2d: output " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                                " for input " + shape_str(x.shape()) + " (both need positive sizes)");
  Tensor y = Tensor::empty({N, C, out_h, out_w}, x.device());  // (N, C, OH, OW)
  MS_DISPATCH(x.device(), adaptive_avg_pool2d_forward, x.data(), y.data(), N * C, H, W, out_h, out_w);
  record(y, "adaptive_avg_pool2d", {x}, [x = grad_handle(x), N, C, H, W, out_h, out_w](const Tensor& g) {
    Tensor gx = Tensor::empty(x.shape(), x.device());  // d avg = g / bin area, spread over each bin
    MS_DISPATCH(x.device(), adaptive_avg_pool2d_backward, g.data(), gx.data(), N * C, H, W, out_h, out_w);
    accumulate_grad(x, gx);
  });
  return y;
}

}  // namespace ms
