#include "engine/autograd.h"

#include <stdexcept>
#include <unordered_set>

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

void record(Tensor& out, const char* name, std::vector<Tensor> inputs,
            std::function<void(const Tensor& grad_out)> backward) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

void accumulate_grad(const Tensor& t, const Tensor& g) {
  if (!needs_grad(t)) return;
  if (g.shape() != t.shape())
    throw std::logic_error("accumulate_grad: gradient " + shape_str(g.shape()) + " for tensor " + shape_str(t.shape()));
  TensorImpl* impl = t.impl();
  NoGradGuard ng;
  if (!impl->grad) {
    // Own a fresh buffer: g may alias storage that a later op still reads.
    Tensor copy = Tensor::empty(g.shape(), g.device());
    copy.copy_(g);
    impl->grad = copy.impl_ptr();
  } else {
    Tensor acc(impl->grad);
    Tensor sum = add(acc, g);
    impl->grad = sum.impl_ptr();
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

  // Reverse topological order by iterative DFS over grad_fn edges.
  // `order` holds owning pointers: freeing a node below must not free a tensor that
  // is still waiting for its turn.
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_set<TensorImpl*> seen;
  std::vector<std::pair<std::shared_ptr<TensorImpl>, size_t>> stack{{impl_ptr(), 0}};
  seen.insert(impl());
  while (!stack.empty()) {
    auto& top = stack.back();
    Node* fn = top.first->grad_fn.get();
    if (fn && top.second < fn->inputs.size()) {
      const auto& in = fn->inputs[top.second++].impl_ptr();
      if (in && in->requires_grad && !seen.count(in.get())) {
        seen.insert(in.get());
        stack.push_back({in, 0});
      }
      continue;
    }
    order.push_back(top.first);
    stack.pop_back();
  }

  accumulate_grad(*this, seed);
  NoGradGuard ng;  // backward closures build no graph of their own
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    TensorImpl* t = it->get();
    if (!t->grad_fn) continue;  // leaf: keeps its .grad
    std::shared_ptr<Node> fn = std::move(t->grad_fn);
    t->grad_fn.reset();
    if (t->grad) fn->backward(Tensor(t->grad));
    if (!t->retain_grad) t->grad.reset();  // intermediates release their gradient
    // fn (and the inputs it saved) is released here.
  }
}

}  // namespace ms
