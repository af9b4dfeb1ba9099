// defines: the CPU's choice of matrix-product library (oneDNN's matmul or OpenBLAS's sgemm)
// and of input precision (FP32, or BF16 inputs with FP32 accumulation), used by gemm_batched
// (matmul.cpp) and so by every CPU matmul, linear layer and convolution. CPU only.
#pragma once
#include <string>

namespace ms::cpu {

// Dnnl: oneDNN's matmul (brgemm kernels; the default). OpenBlas: cblas_sgemm, the reference.
// Initially from MEDSLIP_CPU_GEMM (dnnl | openblas; any other value throws on first use).
enum class GemmBackend { Dnnl, OpenBlas };
GemmBackend gemm_backend();
void set_gemm_backend(GemmBackend b);
const char* gemm_backend_name(GemmBackend b);
GemmBackend parse_gemm_backend(const std::string& name);  // throws std::invalid_argument

// FP32 (the default) or BF16: every product's inputs rounded to bfloat16 (nearest even),
// products and sums in FP32 (oneDNN's AVX512-BF16 matmul), outputs FP32. Opt-in only.
enum class Precision { FP32, BF16 };
Precision gemm_precision();
void set_gemm_precision(Precision p);  // BF16 throws where the CPU has no AVX512-BF16
const char* precision_name(Precision p);
Precision parse_precision(const std::string& name);  // throws std::invalid_argument
bool bf16_supported();

// C (M x N, rows ldc >= N apart) = A (M x K) B (K x N), both dense row-major: gemm_batched's
// product (the same bits, column for column) into a block of columns of a wider matrix.
void gemm_ldc(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C, int64_t ldc);

}  // namespace ms::cpu
