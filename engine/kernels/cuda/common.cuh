// defines: what every CUDA kernel file shares — cudaCheck / cublasCheck (errors that name
// the call, file and line), CEIL_DIV, launch sizes, and deterministic warp/block sums.
// All kernels run on the legacy default stream (0), so launches, copies and the caching
// allocator's reuse of a freed block are ordered without extra synchronisation.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ms::cuda {

[[noreturn]] inline void throw_cuda_error(const char* call, cudaError_t e, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " +
                           call + " at " + file + ":" + std::to_string(line));
}
[[noreturn]] inline void throw_cublas_error(const char* call, cublasStatus_t s, const char* file, int line) {
  throw std::runtime_error(std::string("cuBLAS error ") + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) +
                           ") in " + call + " at " + file + ":" + std::to_string(line));
}

}  // namespace ms::cuda

// Every CUDA runtime / cuBLAS call goes through one of these.
#define cudaCheck(call)                                                                           \
  do {                                                                                            \
    cudaError_t ms_err_ = (call);                                                                 \
    if (ms_err_ != cudaSuccess) ::ms::cuda::throw_cuda_error(#call, ms_err_, __FILE__, __LINE__); \
  } while (0)
#define cublasCheck(call)                                                                                   \
  do {                                                                                                      \
    cublasStatus_t ms_st_ = (call);                                                                         \
    if (ms_st_ != CUBLAS_STATUS_SUCCESS) ::ms::cuda::throw_cublas_error(#call, ms_st_, __FILE__, __LINE__); \
  } while (0)
// After a kernel launch: reports a bad launch configuration at the launch site. (Faults inside
// the kernel surface at the next synchronising call, which checks too.)
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

namespace ms::cuda {

constexpr int kBlock = 256;  // threads per block for one-thread-per-element kernels
constexpr unsigned kFullMask = 0xffffffffu;

// Blocks for n elements at kBlock threads, one element per thread (grid-stride loops in the
// kernels cover anything beyond the cap).
inline unsigned grid_for(int64_t n, int block = kBlock) {
  int64_t g = CEIL_DIV(n, int64_t(block));
  if (g < 1) g = 1;
  if (g > (int64_t(1) << 30)) g = int64_t(1) << 30;
  return unsigned(g);
}

// Grid-stride loop over [0, n) with 64-bit indices.
#define CUDA_FOR(i, n)                                                                                           \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, ms_stride_ = int64_t(gridDim.x) * blockDim.x; \
       i < (n); i += ms_stride_)

// Butterfly-free sums in a fixed order: the result depends only on which lane held which
// value, never on timing, so a launch configuration gives the same bits on every run.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFullMask, v, off);
  return v;  // valid in lane 0
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, off));
  return v;  // valid in every lane
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024). Every thread must call
// it; every thread gets the total. `smem` holds 33 values of T.
template <class T>
__device__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < nwarps ? smem[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) smem[32] = w;
  }
  __syncthreads();
  return smem[32];
}

}  // namespace ms::cuda
