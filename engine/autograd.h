// defines: the define-by-run autograd tape. An op computes its output and, when grad
// mode is on and an input requires grad, attaches a Node whose closure turns the
// output's gradient into input gradients (accumulated with +=, so a tensor used twice
// receives the sum). Tensor::backward() runs the Nodes in reverse topological order.
#pragma once
#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace ms {

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;  // the op's differentiable inputs (edges of the graph)
  // Receives dL/d(output); calls accumulate_grad on the inputs that need it.
  std::function<void(const Tensor& grad_out)> backward;
};

bool grad_enabled();
void set_grad_enabled(bool on);

// Turns recording off in a scope (evaluation, optimiser updates).
struct NoGradGuard {
  bool prev;
  NoGradGuard() : prev(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev); }
};

// True when grad mode is on and any of the tensors requires grad.
bool any_requires_grad(std::initializer_list<Tensor> ts);
bool any_requires_grad(const std::vector<Tensor>& ts);

// Attaches a node to `out` if any input requires grad (and grad mode is on).
// The node keeps grad handles of `inputs` (their autograd state, not their data).
void record(Tensor& out, const char* name, std::vector<Tensor> inputs,
            std::function<void(const Tensor& grad_out)> backward);

// t.grad += g (allocating on first use). No-op when t does not require grad.
void accumulate_grad(const Tensor& t, const Tensor& g);

// A handle on t's autograd state (requires_grad, grad, grad_fn) and shape and device,
// without its data (data() is null). Backward closures capture handles for the inputs
// whose values they do not need, so the forward pass frees those values early (the tape
// itself holds only handles).
Tensor grad_handle(const Tensor& t);

// True if gradient should be computed for input t inside a backward closure.
inline bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

}  // namespace ms
