// Shape ops; each copies: permute/transpose, concat, narrow, index_select, embedding,
// masked_select, expand.
#include <numeric>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

static int64_t norm_dim(int64_t d, int64_t n, const char* op) {
  if (d < 0) d += n;
  if (d < 0 || d >= n) throw std::out_of_range(std::string(op) + ": dim " + std::to_string(d) + " out of range");
  return d;
}

static void split(const Shape& s, int64_t d, int64_t& outer, int64_t& inner) {
  outer = 1; inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[size_t(i)];
  for (size_t i = size_t(d) + 1; i < s.size(); ++i) inner *= s[i];
}

Tensor permute(const Tensor& a, const std::vector<int64_t>& dims_in) {
  const int64_t n = a.dim();
  if (int64_t(dims_in.size()) != n) throw std::invalid_argument("permute: " + std::to_string(dims_in.size()) + " dims for a " + shape_str(a.shape()) + " tensor");
  std::vector<int64_t> dims(dims_in.size());
  std::vector<bool> used(static_cast<size_t>(n), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    dims[i] = norm_dim(dims_in[i], n, "permute");
    if (used[size_t(dims[i])]) throw std::invalid_argument("permute: repeated dim");
    used[size_t(dims[i])] = true;
  }
  Shape out_shape(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out_shape[size_t(i)] = a.shape()[size_t(dims[size_t(i)])];
  Tensor out = Tensor::empty(out_shape, a.device());
  MS_DISPATCH(a.device(), permute_copy, a.data(), out.data(), int(n), a.shape().data(), dims.data());
  record(out, "permute", {a}, [a, dims](const Tensor& g) {
    std::vector<int64_t> inv(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inv[size_t(dims[i])] = int64_t(i);
    accumulate_grad(a, permute(g, inv));  // d permute = inverse permute
  });
  return out;
}

Tensor transpose(const Tensor& a, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(size_t(a.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(norm_dim(d0, a.dim(), "transpose"))], dims[size_t(norm_dim(d1, a.dim(), "transpose"))]);
  return permute(a, dims);
}

Tensor concat(const std::vector<Tensor>& ts, int64_t dim) {
  if (ts.empty()) throw std::invalid_argument("concat: no tensors");
  const int64_t d = norm_dim(dim, ts[0].dim(), "concat");
  Shape out_shape = ts[0].shape();
  int64_t total = 0;
  for (const auto& t : ts) {
    Shape s = t.shape();
    if (t.dim() != ts[0].dim()) throw std::invalid_argument("concat: rank mismatch");
    s[size_t(d)] = out_shape[size_t(d)];
    if (s != out_shape) throw std::invalid_argument("concat: " + shape_str(t.shape()) + " does not match " + shape_str(ts[0].shape()) + " outside dim " + std::to_string(d));
    if (t.device() != ts[0].device()) throw std::invalid_argument("concat: tensors on different devices");
    total += t.size(d);
  }
  out_shape[size_t(d)] = total;
  Tensor out = Tensor::empty(out_shape, ts[0].device());
  int64_t outer, inner;
  split(out_shape, d, outer, inner);
  int64_t off = 0;
  for (const auto& t : ts) {
    MS_DISPATCH(t.device(), slab_copy, t.data(), t.size(d), 0, out.data(), total, off, t.size(d), outer, inner, false);
    off += t.size(d);
  }
  record(out, "concat", ts, [ts, d](const Tensor& g) {
    int64_t o = 0;
    for (const auto& t : ts) {  // d concat = the matching slab of g
      if (needs_grad(t)) accumulate_grad(t, narrow(g, d, o, t.size(d)));
      o += t.size(d);
    }
  });
  return out;
}

Tensor narrow(const Tensor& a, int64_t dim, int64_t start, int64_t length) {
  const int64_t d = norm_dim(dim, a.dim(), "narrow");
  if (start < 0 || length < 0 || start + length > a.size(d))
    throw std::out_of_range("narrow: [" + std::to_string(start) + ", " + std::to_string(start + length) + ") outside dim " + std::to_string(d) + " of " + shape_str(a.shape()));
  Shape out_shape = a.shape();
  out_shape[size_t(d)] = length;
  Tensor out = Tensor::empty(out_shape, a.device());
  int64_t outer, inner;
  split(a.shape(), d, outer, inner);
  const int64_t n = a.size(d);
  MS_DISPATCH(a.device(), slab_copy, a.data(), n, start, out.data(), length, 0, length, outer, inner, false);
  record(out, "narrow", {a}, [a, d, start, length, outer, inner, n](const Tensor& g) {
    Tensor ga = Tensor::zeros(a.shape(), a.device());  // d narrow = g placed back, 0 elsewhere
    MS_DISPATCH(a.device(), slab_copy, g.data(), length, 0, ga.data(), n, start, length, outer, inner, false);
    accumulate_grad(a, ga);
  });
  return out;
}

Tensor index_select(const Tensor& a, int64_t dim, const std::vector<int64_t>& index) {
  const int64_t d = norm_dim(dim, a.dim(), "index_select");
  const int64_t n = a.size(d);
  for (auto i : index)
    if (i < 0 || i >= n) throw std::out_of_range("index_select: index " + std::to_string(i) + " out of range [0, " + std::to_string(n) + ") for dim " + std::to_string(d));
  Shape out_shape = a.shape();
  out_shape[size_t(d)] = int64_t(index.size());
  Tensor out = Tensor::empty(out_shape, a.device());
  int64_t outer, inner;
  split(a.shape(), d, outer, inner);
  const DeviceArray<int64_t> idx(index, a.device());  // the host indices on a's device
  MS_DISPATCH(a.device(), index_select_forward, a.data(), idx.data(), out.data(), outer, n, int64_t(index.size()),
              inner);
  record(out, "index_select", {a}, [a, index, outer, inner, n](const Tensor& g) {
    Tensor ga = Tensor::zeros(a.shape(), a.device());  // d gather = scatter-add, in index order
    const DeviceArray<int64_t> idx(index, a.device());
    MS_DISPATCH(a.device(), index_select_backward, g.data(), idx.data(), ga.data(), outer, n, int64_t(index.size()),
                inner);
    accumulate_grad(a, ga);
  });
  return out;
}

Tensor embedding(const Tensor& weight, const std::vector<int64_t>& ids, const Shape& ids_shape) {
  if (weight.dim() != 2) throw std::invalid_argument("embedding: weight must be [V,D], got " + shape_str(weight.shape()));
  if (int64_t(ids.size()) != shape_numel(ids_shape)) throw std::invalid_argument("embedding: ids do not match their shape");
  Shape out_shape = ids_shape;
  out_shape.push_back(weight.size(1));
  return index_select(weight, 0, ids).reshape(out_shape);
}

Tensor masked_select(const Tensor& a, const std::vector<uint8_t>& mask) {
  if (int64_t(mask.size()) != a.numel())
    throw std::invalid_argument("masked_select: mask of " + std::to_string(mask.size()) + " for tensor " + shape_str(a.shape()));
  std::vector<int64_t> pos;
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) pos.push_back(int64_t(i));
  Tensor out = Tensor::empty({int64_t(pos.size())}, a.device());
  const DeviceArray<int64_t> dpos(pos, a.device());  // increasing positions, on a's device
  MS_DISPATCH(a.device(), gather_flat, a.data(), dpos.data(), out.data(), int64_t(pos.size()));
  record(out, "masked_select", {a}, [a, pos](const Tensor& g) {
    Tensor ga = Tensor::zeros(a.shape(), a.device());  // grad only to the selected elements
    const DeviceArray<int64_t> dpos(pos, a.device());
    MS_DISPATCH(a.device(), scatter_add_flat, g.data(), dpos.data(), ga.data(), int64_t(pos.size()));
    accumulate_grad(a, ga);
  });
  return out;
}

Tensor expand(const Tensor& a, const Shape& shape) {
  return add(a, Tensor::zeros(shape, a.device()));  // broadcasting add; backward sums to a's shape
}

}  // namespace ms
