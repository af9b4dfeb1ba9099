// CUDA twins of engine/kernels/cpu/shape.cpp: layout copies, index_select and the flat
// gather/scatter of masked_select. Backward scatters are deterministic without atomics: each
// thread owns a set of destinations and adds into them in the CPU's order.
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

struct PermuteArgs {
  int ndim;
  int64_t out_shape[kMaxDims];
  int64_t src_stride[kMaxDims];  // input stride of the input dim that output dim d reads
};

__global__ void permute_kernel(const float* in, float* out, PermuteArgs p, int64_t n) {
  CUDA_FOR(t, n) {
    int64_t off = 0, rem = t;
    for (int d = p.ndim - 1; d >= 0; --d) {
      off += (rem % p.out_shape[d]) * p.src_stride[d];
      rem /= p.out_shape[d];
    }
    out[t] = in[off];
  }
}

__global__ void slab_copy_kernel(const float* src, int64_t src_n, int64_t src_off, float* dst, int64_t dst_n,
                                 int64_t dst_off, int64_t len, int64_t outer, int64_t inner, bool accumulate) {
  const int64_t slab = len * inner;
  CUDA_FOR(t, outer * slab) {
    const int64_t o = t / slab, r = t % slab;
    const float v = src[(o * src_n + src_off) * inner + r];
    float* d = dst + (o * dst_n + dst_off) * inner + r;
    *d = accumulate ? *d + v : v;
  }
}

__global__ void index_select_kernel(const float* in, const int64_t* idx, float* out, int64_t outer, int64_t n_in,
                                    int64_t n_idx, int64_t inner) {
  CUDA_FOR(t, outer * n_idx * inner) {
    const int64_t i = t % inner, j = (t / inner) % n_idx, o = t / (inner * n_idx);
    out[t] = in[(o * n_in + idx[j]) * inner + i];
  }
}

// One thread per (o, i) column walks the index list in order: repeated indices add up in
// the same order as on the CPU, and no two threads touch one element.
__global__ void index_select_backward_kernel(const float* gout, const int64_t* idx, float* gin, int64_t outer,
                                             int64_t n_in, int64_t n_idx, int64_t inner) {
  CUDA_FOR(t, outer * inner) {
    const int64_t o = t / inner, i = t % inner;
    for (int64_t j = 0; j < n_idx; ++j) gin[(o * n_in + idx[j]) * inner + i] += gout[(o * n_idx + j) * inner + i];
  }
}

__global__ void gather_flat_kernel(const float* in, const int64_t* pos, float* out, int64_t n) {
  CUDA_FOR(k, n) out[k] = in[pos[k]];
}

// pos non-decreasing (masked_select makes it strictly increasing): the first k of each run of
// equal positions adds the run's values in order, so the result is the CPU's, bit for bit.
__global__ void scatter_add_flat_kernel(const float* gout, const int64_t* pos, float* gin, int64_t n) {
  CUDA_FOR(k, n) {
    const int64_t p = pos[k];
    if (k > 0 && pos[k - 1] == p) continue;
    float acc = gin[p];
    for (int64_t j = k; j < n && pos[j] == p; ++j) acc += gout[j];
    gin[p] = acc;
  }
}

}  // namespace

void permute_copy(const float* in, float* out, int ndim, const int64_t* shape, const int64_t* perm) {
  PermuteArgs p{};
  p.ndim = ndim;
  int64_t in_stride[kMaxDims];
  int64_t s = 1, n = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    in_stride[d] = s;
    s *= shape[d];
  }
  for (int d = 0; d < ndim; ++d) {
    p.out_shape[d] = shape[perm[d]];
    p.src_stride[d] = in_stride[perm[d]];
    n *= p.out_shape[d];
  }
  if (n <= 0) return;
  permute_kernel<<<grid_for(n), kBlock>>>(in, out, p, n);
  cudaCheckLaunch();
}

void slab_copy(const float* src, int64_t src_n, int64_t src_off, float* dst, int64_t dst_n, int64_t dst_off,
               int64_t len, int64_t outer, int64_t inner, bool accumulate) {
  const int64_t n = outer * len * inner;
  if (n <= 0) return;
  slab_copy_kernel<<<grid_for(n), kBlock>>>(src, src_n, src_off, dst, dst_n, dst_off, len, outer, inner, accumulate);
  cudaCheckLaunch();
}

void index_select_forward(const float* in, const int64_t* idx, float* out, int64_t outer, int64_t n_in, int64_t n_idx,
                          int64_t inner) {
  const int64_t n = outer * n_idx * inner;
  if (n <= 0) return;
  index_select_kernel<<<grid_for(n), kBlock>>>(in, idx, out, outer, n_in, n_idx, inner);
  cudaCheckLaunch();
}

void index_select_backward(const float* gout, const int64_t* idx, float* gin, int64_t outer, int64_t n_in,
                           int64_t n_idx, int64_t inner) {
  if (outer * inner <= 0 || n_idx <= 0) return;
  index_select_backward_kernel<<<grid_for(outer * inner), kBlock>>>(gout, idx, gin, outer, n_in, n_idx, inner);
  cudaCheckLaunch();
}

void gather_flat(const float* in, const int64_t* pos, float* out, int64_t n) {
  if (n <= 0) return;
  gather_flat_kernel<<<grid_for(n), kBlock>>>(in, pos, out, n);
  cudaCheckLaunch();
}

void scatter_add_flat(const float* gout, const int64_t* pos, float* gin, int64_t n) {
  if (n <= 0) return;
  scatter_add_flat_kernel<<<grid_for(n), kBlock>>>(gout, pos, gin, n);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
