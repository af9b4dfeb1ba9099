#include "engine/autograd.h"

#include <stdexcept>
#include <unordered_set>

#include "engine/kernels/kernels.h"
#include "engine/ops.h"

namespace ms {

static thread_local bool g_grad_enabled = true;

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

bool any_requires_grad(std::initializer_list<Tensor> ts) {
  if (!g_grad_enabled) return false;
  for (const auto& t : ts)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& ts) {
  if (!g_grad_enabled) return false;
  for (const auto& t : ts)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor grad_handle(const Tensor& t) {
  if (!t.defined()) return t;
  // One data-less Storage per device, shared by every handle.
  static const std::shared_ptr<Storage> none_cpu = std::make_shared<Storage>();
  static const std::shared_ptr<Storage> none_cuda = [] {
    auto s = std::make_shared<Storage>();
    s->device = Device::CUDA;
    return s;
  }();
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.device() == Device::CUDA ? none_cuda : none_cpu;
  impl->shape = t.shape();
  impl->autograd = t.impl()->autograd;
  return Tensor(impl);
}

void record(Tensor& out, const char* name, std::vector<Tensor> inputs,
            std::function<void(const Tensor& grad_out)> backward) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.reserve(inputs.size());
  for (const auto& t : inputs) node->inputs.push_back(grad_handle(t));
  node->backward = std::move(backward);
  out.impl()->autograd->grad_fn = std::move(node);
  out.impl()->autograd->requires_grad = true;
}

void accumulate_grad(const Tensor& t, const Tensor& g) {
  if (!needs_grad(t)) return;
  if (g.shape() != t.shape())
    throw std::logic_error("accumulate_grad: gradient " + shape_str(g.shape()) + " for tensor " + shape_str(t.shape()));
  AutogradMeta* meta = t.impl()->autograd.get();
  NoGradGuard ng;
  // g (resp. the gradient so far) is private when nobody else holds its data (sole_owner, the
  // one rule for in-place reuse) and it carries no autograd state of its own.
  auto is_private = [](const std::shared_ptr<TensorImpl>& p) {
    return sole_owner(p) && !p->autograd->grad_fn && !p->autograd->grad;
  };
  if (!meta->grad) {
    if (is_private(g.impl_ptr())) {  // a fresh buffer from the backward closure: keep it
      meta->grad = g.impl_ptr();
      return;
    }
    // Own a fresh buffer: g may alias storage that a later op still reads.
    Tensor copy = Tensor::empty(g.shape(), g.device());
    copy.copy_(g);
    meta->grad = copy.impl_ptr();
  } else if (g.device() == meta->grad->storage->device && is_private(meta->grad)) {
    // grad += g in place: the same additions as add(grad, g), without a new buffer.
    Broadcast bc;
    bc.ndim = 1;
    bc.shape[0] = bc.numel = g.numel();
    bc.stride_a[0] = bc.stride_b[0] = 1;
    float* acc = meta->grad->storage->data;
    MS_DISPATCH(g.device(), binary_forward, BinaryOp::Add, acc, g.data(), acc, bc);
  } else {
    Tensor acc(meta->grad);
    Tensor sum = add(acc, g);
    meta->grad = sum.impl_ptr();
  }
}

void Tensor::backward(const Tensor& grad_output) const {
  if (!requires_grad()) throw std::logic_error("backward(): tensor does not require grad");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    if (numel() != 1) throw std::logic_error("backward(): no gradient given for a non-scalar of shape " + shape_str(shape()));
    seed = Tensor::ones(shape(), device());
  }
  check_shape(seed, shape(), "backward(): grad_output");

  // Reverse topological order by iterative DFS over grad_fn edges (between autograd
  // states: a tensor and its grad handles share one). `order` holds owning pointers:
  // freeing a node below must not free a state that is still waiting for its turn.
  using MetaPtr = std::shared_ptr<AutogradMeta>;
  std::vector<MetaPtr> order;
  std::unordered_set<AutogradMeta*> seen;
  std::vector<std::pair<MetaPtr, size_t>> stack{{impl()->autograd, 0}};
  seen.insert(impl()->autograd.get());
  while (!stack.empty()) {
    auto& top = stack.back();
    Node* fn = top.first->grad_fn.get();
    if (fn && top.second < fn->inputs.size()) {
      const Tensor& in_t = fn->inputs[top.second++];
      if (in_t.defined()) {
        const MetaPtr& in = in_t.impl()->autograd;
        if (in->requires_grad && !seen.count(in.get())) {
          seen.insert(in.get());
          stack.push_back({in, 0});
        }
      }
      continue;
    }
    order.push_back(top.first);
    stack.pop_back();
  }

  accumulate_grad(*this, seed);
  NoGradGuard ng;  // backward closures build no graph of their own
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    AutogradMeta* t = it->get();
    if (!t->grad_fn) continue;  // leaf: keeps its .grad
    std::shared_ptr<Node> fn = std::move(t->grad_fn);
    t->grad_fn.reset();
    if (t->retain_grad) {
      if (t->grad) fn->backward(Tensor(t->grad));
    } else if (t->grad) {
      // Intermediates release their gradient: moved out, so that the closure's g is
      // private and accumulate_grad can hand the buffer on instead of copying it.
      Tensor g(std::move(t->grad));
      fn->backward(g);
    }
    // fn (and the inputs it saved) is released here.
  }
}

}  // namespace ms
