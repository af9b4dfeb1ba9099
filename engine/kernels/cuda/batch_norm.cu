// CUDA twins of engine/kernels/cpu/batch_norm.cpp: batch norm over [N, C, HW]. Per-channel
// sums run in two deterministic passes: block (p, c) sums a contiguous piece p of channel c
// (image n, a 4096-element stretch of its plane) in double into partial[c][p]; one thread per
// channel then adds the partials in order of p. No atomics, so the bits repeat run to run.
#include <algorithm>

#include "engine/device.h"
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

constexpr int64_t kPiece = 4096;  // plane elements per partial sum

enum class Sum : int { X, SqDev, GradPair };

struct Pieces {
  int64_t per_plane, count;  // pieces per (n, c) plane and per channel (N * per_plane)
  int threads;               // per block: small planes (7x7) get fewer idle threads
};

Pieces pieces(int64_t N, int64_t HW) {
  Pieces p;
  p.per_plane = std::max<int64_t>(CEIL_DIV(HW, kPiece), 1);
  p.count = N * p.per_plane;
  p.threads = int(std::min<int64_t>(kBlock, std::max<int64_t>(32, CEIL_DIV(std::min(HW, kPiece), int64_t(32)) * 32)));
  return p;
}

// X: sum x. SqDev: sum (x - mean_d[c])^2. GradPair: sum gy and sum gy (x - mean[c]).
// ymask (GradPair only, may be null): gy counts only where ymask > 0 (relu's backward).
template <Sum S>
__global__ void channel_partial_kernel(const float* x, const float* gy, const double* mean_d, const float* mean,
                                       double* part0, double* part1, int64_t C, int64_t HW, int64_t per_plane,
                                       int64_t count, const float* ymask = nullptr) {
  __shared__ double smem[33];
  const int64_t p = blockIdx.x, c = blockIdx.y;
  const int64_t n = p / per_plane, k = p % per_plane;
  const int64_t base = (n * C + c) * HW;
  const int64_t h0 = k * kPiece, h1 = min(HW, h0 + kPiece);
  double s0 = 0.0, s1 = 0.0;
  if (S == Sum::X) {
    for (int64_t i = h0 + threadIdx.x; i < h1; i += blockDim.x) s0 += x[base + i];
  } else if (S == Sum::SqDev) {
    const double m = mean_d[c];
    for (int64_t i = h0 + threadIdx.x; i < h1; i += blockDim.x) {
      const double d = x[base + i] - m;
      s0 += d * d;
    }
  } else {
    const float m = mean[c];
    for (int64_t i = h0 + threadIdx.x; i < h1; i += blockDim.x) {
      const float g = ymask && !(ymask[base + i] > 0.f) ? 0.f : gy[base + i];
      s0 += g;
      s1 += double(g) * (x[base + i] - m);
    }
  }
  s0 = block_sum(s0, smem);
  if (S == Sum::GradPair) s1 = block_sum(s1, smem);
  if (threadIdx.x == 0) {
    part0[c * count + p] = s0;
    if (S == Sum::GradPair) part1[c * count + p] = s1;
  }
}

// Adds each channel's partials in order of p.
__device__ double sum_partials(const double* part, int64_t c, int64_t count) {
  double s = 0.0;
  for (int64_t p = 0; p < count; ++p) s += part[c * count + p];
  return s;
}

__global__ void stats_mean_kernel(const double* part, double* mean_d, float* mean, int64_t C, int64_t count, double M) {
  CUDA_FOR(c, C) {
    const double m = sum_partials(part, c, count) / M;
    mean_d[c] = m;
    mean[c] = float(m);
  }
}

__global__ void stats_var_kernel(const double* part, float* var, int64_t C, int64_t count, double M) {
  CUDA_FOR(c, C) var[c] = float(sum_partials(part, c, count) / M);
}

// y = x a + b' with a = rstd w, b' = b - mean a (the CPU's form).
__global__ void apply_kernel(const float* x, const float* mean, const float* rstd, const float* w, const float* b,
                             float* y, int64_t C, int64_t HW, int64_t n) {
  CUDA_FOR(t, n) {
    const int64_t c = (t / HW) % C;
    const float a = rstd[c] * (w ? w[c] : 1.f);
    const float sh = (b ? b[c] : 0.f) - mean[c] * a;
    y[t] = x[t] * a + sh;
  }
}

// gb = sg, gw = sd rstd; coef = (sg/M, sd rstd^2/M) for gx.
__global__ void backward_final_kernel(const double* part_g, const double* part_d, const float* rstd, float* gw,
                                      float* gb, float* coef, int64_t C, int64_t count, double M) {
  CUDA_FOR(c, C) {
    const double sg = sum_partials(part_g, c, count), sd = sum_partials(part_d, c, count);
    const float rs = rstd[c];
    if (gb) gb[c] = float(sg);
    if (gw) gw[c] = float(sd * rs);
    coef[c] = float(sg / M);
    coef[C + c] = float(sd * double(rs) * double(rs) / M);
  }
}

// training: gx = (gy - sg/M - (x - mean) sd rstd^2/M) w rstd; eval: gx = gy w rstd
__global__ void backward_gx_kernel(const float* x, const float* mean, const float* rstd, const float* w,
                                   const float* gy, const float* coef, float* gx, int64_t C, int64_t HW, int64_t n,
                                   bool training) {
  CUDA_FOR(t, n) {
    const int64_t c = (t / HW) % C;
    const float a = (w ? w[c] : 1.f) * rstd[c];
    if (training)
      gx[t] = (gy[t] - coef[c] - (x[t] - mean[c]) * coef[C + c]) * a;
    else
      gx[t] = gy[t] * a;
  }
}

// The fused batch_norm2d_act: z = x a + b', + res, relu; each step rounded as the unfused ops.
__global__ void apply_act_kernel(const float* x, const float* mean, const float* rstd, const float* w, const float* b,
                                 const float* res, float* y, int64_t C, int64_t HW, int64_t n, bool relu) {
  CUDA_FOR(t, n) {
    const int64_t c = (t / HW) % C;
    const float a = rstd[c] * (w ? w[c] : 1.f);
    const float sh = (b ? b[c] : 0.f) - mean[c] * a;
    float z = x[t] * a + sh;
    if (res) z = z + res[t];
    y[t] = relu ? (z > 0.f ? z : 0.f) : z;
  }
}

// Its backward: g = relu ? (y > 0 ? gy : 0) : gy; gres = g; gx as backward_gx_kernel from g.
__global__ void backward_act_gx_kernel(const float* x, const float* y, const float* mean, const float* rstd,
                                       const float* w, const float* gy, const float* coef, float* gx, float* gres,
                                       int64_t C, int64_t HW, int64_t n, bool training) {
  CUDA_FOR(t, n) {
    const int64_t c = (t / HW) % C;
    const float g = y && !(y[t] > 0.f) ? 0.f : gy[t];
    if (gres) gres[t] = g;
    if (!gx) continue;
    const float a = (w ? w[c] : 1.f) * rstd[c];
    gx[t] = training ? (g - coef[c] - (x[t] - mean[c]) * coef[C + c]) * a : g * a;
  }
}

void check_channels(int64_t C, const char* what) {
  if (C > 65535)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(C) +
                                " channels exceed the CUDA kernel's limit");
}

// Scratch from the caching allocator, returned when the scope ends.
struct Scratch {
  void* p;
  size_t bytes;
  explicit Scratch(size_t b) : p(device_alloc(b)), bytes(b) {}
  ~Scratch() { device_free(p, bytes); }
  template <class T>
  T* as(size_t offset_elems = 0) const {
    return static_cast<T*>(p) + offset_elems;
  }
};

}  // namespace

void batch_norm_stats(const float* x, float* mean, float* var_biased, int64_t N, int64_t C, int64_t HW) {
  if (C <= 0) return;
  check_channels(C, "batch_norm_stats");
  const Pieces pc = pieces(N, HW);
  const double M = double(N * HW);
  Scratch s(size_t(C * pc.count + C) * sizeof(double));
  double* part = s.as<double>();
  double* mean_d = s.as<double>(size_t(C * pc.count));
  const dim3 grid(unsigned(pc.count), unsigned(C));
  if (pc.count > 0 && HW > 0) {
    channel_partial_kernel<Sum::X>
        <<<grid, pc.threads>>>(x, nullptr, nullptr, nullptr, part, nullptr, C, HW, pc.per_plane, pc.count);
    cudaCheckLaunch();
  } else {
    cudaCheck(cudaMemset(part, 0, size_t(C * pc.count) * sizeof(double)));
  }
  stats_mean_kernel<<<grid_for(C), kBlock>>>(part, mean_d, mean, C, pc.count, M);
  cudaCheckLaunch();
  if (pc.count > 0 && HW > 0) {
    channel_partial_kernel<Sum::SqDev>
        <<<grid, pc.threads>>>(x, nullptr, mean_d, nullptr, part, nullptr, C, HW, pc.per_plane, pc.count);
    cudaCheckLaunch();
  }
  stats_var_kernel<<<grid_for(C), kBlock>>>(part, var_biased, C, pc.count, M);
  cudaCheckLaunch();
}

void batch_norm_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b, float* y,
                      int64_t N, int64_t C, int64_t HW) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  apply_kernel<<<grid_for(n), kBlock>>>(x, mean, rstd, w, b, y, C, HW, n);
  cudaCheckLaunch();
}

void batch_norm_backward(const float* x, const float* mean, const float* rstd, const float* w, const float* gy,
                         float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t HW, bool training) {
  if (C <= 0) return;
  check_channels(C, "batch_norm_backward");
  const int64_t n = N * C * HW;
  const Pieces pc = pieces(N, HW);
  const double M = double(N * HW);
  const bool sums = gw || gb || (gx && training);
  Scratch s(size_t(2 * C * pc.count) * sizeof(double) + size_t(2 * C) * sizeof(float));
  double* part_g = s.as<double>();
  double* part_d = s.as<double>(size_t(C * pc.count));
  float* coef = reinterpret_cast<float*>(s.as<double>(size_t(2 * C * pc.count)));
  if (sums) {
    if (pc.count > 0 && HW > 0) {
      const dim3 grid(unsigned(pc.count), unsigned(C));
      channel_partial_kernel<Sum::GradPair>
          <<<grid, pc.threads>>>(x, gy, nullptr, mean, part_g, part_d, C, HW, pc.per_plane, pc.count);
      cudaCheckLaunch();
    } else {  // empty planes: every sum is 0
      cudaCheck(cudaMemset(part_g, 0, size_t(2 * C * pc.count) * sizeof(double)));
    }
    backward_final_kernel<<<grid_for(C), kBlock>>>(part_g, part_d, rstd, gw, gb, coef, C, pc.count, M);
    cudaCheckLaunch();
  }
  if (gx && n > 0) {
    backward_gx_kernel<<<grid_for(n), kBlock>>>(x, mean, rstd, w, gy, coef, gx, C, HW, n, training);
    cudaCheckLaunch();
  }
}

void batch_norm_act_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b,
                          const float* res, float* y, int64_t N, int64_t C, int64_t HW, bool relu) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  apply_act_kernel<<<grid_for(n), kBlock>>>(x, mean, rstd, w, b, res, y, C, HW, n, relu);
  cudaCheckLaunch();
}

void batch_norm_act_backward(const float* x, const float* y, const float* mean, const float* rstd, const float* w,
                             const float* gy, float* gx, float* gw, float* gb, float* gres, int64_t N, int64_t C,
                             int64_t HW, bool training, bool relu) {
  if (C <= 0) return;
  check_channels(C, "batch_norm_act_backward");
  const int64_t n = N * C * HW;
  const Pieces pc = pieces(N, HW);
  const double M = double(N * HW);
  const float* mask = relu ? y : nullptr;
  const bool sums = gw || gb || (gx && training);
  Scratch s(size_t(2 * C * pc.count) * sizeof(double) + size_t(2 * C) * sizeof(float));
  double* part_g = s.as<double>();
  double* part_d = s.as<double>(size_t(C * pc.count));
  float* coef = reinterpret_cast<float*>(s.as<double>(size_t(2 * C * pc.count)));
  if (sums) {
    if (pc.count > 0 && HW > 0) {
      const dim3 grid(unsigned(pc.count), unsigned(C));
      channel_partial_kernel<Sum::GradPair>
          <<<grid, pc.threads>>>(x, gy, nullptr, mean, part_g, part_d, C, HW, pc.per_plane, pc.count, mask);
      cudaCheckLaunch();
    } else {
      cudaCheck(cudaMemset(part_g, 0, size_t(2 * C * pc.count) * sizeof(double)));
    }
    backward_final_kernel<<<grid_for(C), kBlock>>>(part_g, part_d, rstd, gw, gb, coef, C, pc.count, M);
    cudaCheckLaunch();
  }
  if ((gx || gres) && n > 0) {
    backward_act_gx_kernel<<<grid_for(n), kBlock>>>(x, mask, mean, rstd, w, gy, coef, gx, gres, C, HW, n, training);
    cudaCheckLaunch();
  }
}

}  // namespace ms::cuda
