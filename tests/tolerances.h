// defines: every numeric threshold of the test suites, in one place, each with its reason
// (ARCHITECTURE.md "Tests"; STYLE.md convention 5). Parity errors are relative L2,
// ||ours - ref|| / ||ref|| per tensor, float32, TF32 off, unless a name says otherwise.
// Never loosen one without a comment that names the measured cause.
#pragma once

namespace ms::tol {

// ---- PyTorch parity: engine ops (tests/engine/parity.cpp) -----------------------------
// Forward outputs and losses. A float32 op differs from torch only by summation order and
// libm (expf/erff/tanhf): measured worst 2.4e-7 (conv 7x7 s2, 0.24% used), so 1e-4 leaves
// room for longer chains without hiding a wrong formula (those show up at >= 1e-3).
constexpr double kForward = 1e-4;
// Input and parameter gradients of engine ops and small blocks (conv+BN, attention). Backward
// sums more terms in a different order than torch (conv weight grads over N*H*W, BN's two
// reductions) and cancellation in BN/LayerNorm/softmax backward amplifies it; measured worst
// 4.4e-7 (softmax after a -inf mask), 4.1e-7 (BN weight in the eval block).
constexpr double kOpGrad = 1e-3;
// Running statistics after BatchNorm forward(s) in train mode: a forward quantity.
constexpr double kRunningStats = kForward;

// ---- PyTorch parity: model (model_*.cpp) ----------------------------------------------
// Forward outputs, the five losses and the total.
constexpr double kModelForward = 1e-4;
// Gradients of the decoders, heads and text side: a few dozen ops deep, no BatchNorm.
constexpr double kModelGrad = 1e-3;
// Gradients of the ResNet trunk and the 1024-wide patch MLPs. Loose for a measured reason:
// BatchNorm backward through 40+ layers amplifies summation-order noise; PyTorch differs from
// itself by up to 5e-3 on these between 1 and 2 threads (ResNet-50, batch 2).
constexpr double kTrunkGrad = 1e-2;

// ---- optimiser and schedule -----------------------------------------------------------
// Parameters after each of three AdamW steps (lr 1e-3) on a well-conditioned MLP. The update
// m/(sqrt(v)+eps) is ~1 per element, so a parameter's error is one float32 rounding of
// p - lr*u plus lr times the error of u: measured worst 5.7e-8. A flipped first-step sign
// (lr*sign(g)) of one element of 96 shows up at ~7e-4.
constexpr double kAdamWParam = 1e-5;
// The same steps' updates p_k - p_{k-1} on their own: float32 cancellation of the subtraction
// (ulp(|p|) ~ 3e-8 against updates ~1e-3) dominates; measured worst 1.0e-5.
constexpr double kAdamWUpdate = 1e-3;
// Losses along the AdamW trajectory: forward quantities.
constexpr double kAdamWLoss = kForward;
// LrSchedule::at vs the official timm CosineLRScheduler stepped as train_MeDSLIP.py does,
// per value (max |ours - ref| / ref). LrSchedule stores and returns float32, so 1e-4f itself
// is off by 1e-8 relative and the warmup arithmetic adds a few float32 roundings (2^-24
// = 6e-8 each): measured worst 1.1e-7. A double API would meet ~1e-15. A wrong step boundary
// or epoch offset is off by >= 1e-4 (late cosine) and usually by >= 1e-2.
constexpr double kLrSchedule = 5e-7;

}  // namespace ms::tol
