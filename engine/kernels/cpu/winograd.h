// defines: the CPU's Winograd path for 3x3 stride-1 convolutions (winograd.cpp) and the
// process-wide choice between it and the im2col reference (conv.cpp). CPU only: the CUDA
// kernels keep im2col (cuBLAS), so nothing here is in decls.h.
#pragma once
#include <cstdint>
#include <string>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

// Auto: Winograd where it was measured to pay (winograd_tile below), im2col elsewhere.
// Im2col: the reference everywhere. Winograd2 / Winograd4: F(2x2,3x3) / F(4x4,3x3) wherever
// the shape allows it (3x3, stride 1, padding <= 2), for tests and timing.
enum class ConvAlgo { Auto, Im2col, Winograd2, Winograd4 };

// Initially from MEDSLIP_CONV_ALGO (auto | im2col | winograd2 | winograd4; default auto; any
// other value throws on first use, naming the variable and the choices).
ConvAlgo conv_algo();
void set_conv_algo(ConvAlgo a);
const char* conv_algo_name(ConvAlgo a);
ConvAlgo parse_conv_algo(const std::string& name);  // throws std::invalid_argument

// Which of the three products of a conv the choice is for: y, dL/dx, dL/dW.
enum class ConvPass { Forward, BackwardData, BackwardWeight };

// The output tile m (2 or 4) of the Winograd F(m x m, 3x3) to use for this shape and pass
// under the current conv_algo(), or 0 for im2col.
int winograd_tile(const Conv2dShape& s, ConvPass pass);

// y = conv2d(x, w) for a 3x3 stride-1 shape with pad <= 2, through F(m x m, 3x3), m = 2 or 4.
struct BnAct;
// ep (optional): an evaluation BatchNorm (+ residual) (+ ReLU) applied to each output plane as
// the output transform writes it (conv2d_bn_act_forward)
void winograd_conv2d_forward(const float* x, const float* w, float* y, const Conv2dShape& s, int m,
                             const BnAct* ep = nullptr);
// gx = the transposed conv of gy: a forward with the kernel turned 180 degrees and O, C swapped,
// padding 2 - pad (written, not accumulated).
void winograd_conv2d_backward_data(const float* w, const float* gy, float* gx, const Conv2dShape& s, int m);
// gw = G^T [sum over tiles (A gy A^T) . (B^T x B)] G (written): the adjoint of the forward in W.
void winograd_conv2d_backward_weight(const float* x, const float* gy, float* gw, const Conv2dShape& s, int m);

}  // namespace ms::cpu
