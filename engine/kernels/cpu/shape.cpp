// CPU reference kernels: copies that move data between layouts.
#include <cstring>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

void permute_copy(const float* in, float* out, int ndim, const int64_t* shape, const int64_t* perm) {
  int64_t in_stride[kMaxDims], out_shape[kMaxDims], src_stride[kMaxDims];
  int64_t s = 1, n = 1;
  for (int d = ndim - 1; d >= 0; --d) { in_stride[d] = s; s *= shape[d]; }
  for (int d = 0; d < ndim; ++d) { out_shape[d] = shape[perm[d]]; src_stride[d] = in_stride[perm[d]]; n *= out_shape[d]; }
  if (ndim == 0) { out[0] = in[0]; return; }
  const int64_t inner = out_shape[ndim - 1], rows = inner ? n / inner : 0, sin = src_stride[ndim - 1];
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0, rem = r;
    for (int d = ndim - 2; d >= 0; --d) { off += (rem % out_shape[d]) * src_stride[d]; rem /= out_shape[d]; }
    float* o = out + r * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = in[off + i * sin];
  }
}

void slab_copy(const float* src, int64_t src_n, int64_t src_off, float* dst, int64_t dst_n, int64_t dst_off,
               int64_t len, int64_t outer, int64_t inner, bool accumulate) {
#pragma omp parallel for schedule(static) if (outer * len * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    const float* s = src + (o * src_n + src_off) * inner;
    float* d = dst + (o * dst_n + dst_off) * inner;
    if (accumulate) {
      for (int64_t i = 0; i < len * inner; ++i) d[i] += s[i];
    } else {
      std::memcpy(d, s, size_t(len * inner) * sizeof(float));
    }
  }
}

void index_select_forward(const float* in, const int64_t* idx, float* out, int64_t outer, int64_t n_in, int64_t n_idx,
                          int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * n_idx * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n_idx; ++j)
      std::memcpy(out + (o * n_idx + j) * inner, in + (o * n_in + idx[j]) * inner, size_t(inner) * sizeof(float));
}

void index_select_backward(const float* gout, const int64_t* idx, float* gin, int64_t outer, int64_t n_in,
                           int64_t n_idx, int64_t inner) {
  // Parallel over (outer, inner) only: repeated indices accumulate in index order.
#pragma omp parallel for schedule(static) if (outer * n_idx * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n_idx; ++j) {
      const float* g = gout + (o * n_idx + j) * inner;
      float* d = gin + (o * n_in + idx[j]) * inner;
      for (int64_t i = 0; i < inner; ++i) d[i] += g[i];
    }
}

void gather_flat(const float* in, const int64_t* pos, float* out, int64_t n) {
  for (int64_t k = 0; k < n; ++k) out[k] = in[pos[k]];
}

void scatter_add_flat(const float* gout, const int64_t* pos, float* gin, int64_t n) {
  for (int64_t k = 0; k < n; ++k) gin[pos[k]] += gout[k];
}

}  // namespace ms::cpu
