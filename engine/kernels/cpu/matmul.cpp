// CPU matrix products: oneDNN's matmul (default) or OpenBLAS's cblas_sgemm (the reference),
// row-major, chosen by MEDSLIP_CPU_GEMM (dnnl | openblas); optionally with BF16 inputs.
#include <cblas.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include "engine/kernels/cpu/env_setting.h"
#include "engine/kernels/cpu/gemm.h"
#include "engine/kernels/kernels.h"

namespace ms::cpu {

// A statistic for `medslip bench` only; never read on the compute path.
static std::atomic<uint64_t> g_gemm_flops{0};
uint64_t gemm_flop_count() { return g_gemm_flops.load(std::memory_order_relaxed); }

// ---- the choice ------------------------------------------------------------------------------

GemmBackend parse_gemm_backend(const std::string& name) {
  if (name == "dnnl") return GemmBackend::Dnnl;
  if (name == "openblas") return GemmBackend::OpenBlas;
  throw std::invalid_argument("CPU GEMM '" + name + "': expected dnnl or openblas");
}
const char* gemm_backend_name(GemmBackend b) { return b == GemmBackend::Dnnl ? "dnnl" : "openblas"; }

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "bf16") return Precision::BF16;
  throw std::invalid_argument("precision '" + name + "': expected fp32 or bf16");
}
const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

static GemmBackend& backend_setting() {
  static GemmBackend b = env_setting("MEDSLIP_CPU_GEMM", GemmBackend::Dnnl, parse_gemm_backend);
  return b;
}
GemmBackend gemm_backend() { return backend_setting(); }
void set_gemm_backend(GemmBackend b) { backend_setting() = b; }

static Precision g_precision = Precision::FP32;
Precision gemm_precision() { return g_precision; }
void set_gemm_precision(Precision p) {
  if (p == Precision::BF16 && !bf16_supported())
    throw std::runtime_error("precision bf16: this CPU has no AVX512-BF16 (oneDNN found no bf16 matmul for it); use fp32");
  g_precision = p;
}

// ---- OpenBLAS --------------------------------------------------------------------------------

// OpenBLAS cuts K into blocks of GEMM_Q (320 for its SkylakeX/Cooperlake sgemm, 384 for
// Haswell/Zen) and splits a remainder between Q and 2Q in two, but its one-thread and its
// threaded drivers round that half differently, so e.g. K = 600 or 784 summed in a different
// order on 1 and on 2 threads (measured: about 1 in 3 entries of such a product differ).
// K is therefore cut here into chunks of at most kChunkK (<= Q), each a multiple of 32 but
// the last; every chunk is one block for OpenBLAS and C accumulates the chunks in order, so
// the result does not depend on the thread count. Measured cost: none (within 1-2 %).
// The oneDNN path cuts K the same way, for the same reason (its matmul may split a long K
// over the threads when M x N has too few blocks to go round).
constexpr int64_t kChunkK = 256;

// The K chunk for a product of depth K: K itself up to kChunkK, else K cut into equal pieces
// of at most kChunkK, each a multiple of 32 but the last.
static int64_t k_chunk(int64_t K) {
  const int64_t pieces = (K + kChunkK - 1) / kChunkK;
  return pieces > 1 ? std::min<int64_t>(kChunkK, ((K + pieces - 1) / pieces + 31) / 32 * 32) : K;
}

static void sgemm_openblas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t lda,
                           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// ---- oneDNN ----------------------------------------------------------------------------------
// One matmul primitive per product shape (transposes, sizes, leading dimensions, alpha,
// beta, input type, threads), built once and kept per thread with its own scratchpad, so
// that products on several threads at once (gemm_batched below) share nothing.

namespace {

dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct Key {
  int64_t batch, sa, sb, sc, M, N, K, lda, ldb, ldc;
  float alpha, beta;
  int flags;  // ta | tb << 1 | bf16 << 2 | nested << 3, threads << 4
  int epilogue;  // 1: + a row vector [N] after the sum (linear_forward); | 2: then relu; else 0 (fills the padding)
  bool operator==(const Key& o) const { return std::memcmp(this, &o, sizeof(Key)) == 0; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(&k);
    for (size_t i = 0; i < sizeof(Key); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
};

struct Product {
  dnnl::matmul mm;
  dnnl::memory::desc a, b, c;
  size_t scratch_bytes = 0;
};

using dt = dnnl::memory::data_type;

// [rows, cols] with row stride ld, or (transposed) the same matrix stored as [cols, rows];
// with batch > 1, [batch, rows, cols] with matrices `stride` apart (stride 0: one matrix for all).
dnnl::memory::desc matrix(int64_t batch, int64_t stride, int64_t rows, int64_t cols, int64_t ld, bool transposed,
                          dt type) {
  const dnnl::memory::dims st = transposed ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  if (batch <= 1) return dnnl::memory::desc({rows, cols}, type, st);
  if (stride == 0) return dnnl::memory::desc({1, rows, cols}, type, {rows * cols, st[0], st[1]});
  return dnnl::memory::desc({batch, rows, cols}, type, {stride, st[0], st[1]});
}

struct ThreadState {
  std::unordered_map<Key, Product, KeyHash> products;
  std::unique_ptr<dnnl::stream> stream;
  std::vector<char> scratch;
  std::vector<uint16_t> a16, b16;  // BF16 copies of the inputs
};

constexpr size_t kMaxProducts = 2048;

ThreadState& thread_state() {
  thread_local ThreadState s;
  if (!s.stream) s.stream = std::make_unique<dnnl::stream>(dnnl_engine());
  return s;
}

Product make_product(const Key& k) {
  const bool ta = k.flags & 1, tb = k.flags & 2;
  const dt in = (k.flags & 4) ? dt::bf16 : dt::f32;
  Product p;
  p.a = matrix(k.batch, k.sa, k.M, k.K, k.lda, ta, in);
  p.b = matrix(k.batch, k.sb, k.K, k.N, k.ldb, tb, in);
  p.c = matrix(k.batch, k.sc, k.M, k.N, k.ldc, false, dt::f32);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (k.alpha != 1.f) attr.set_output_scales(0, {k.alpha});
  // C = acc (+ beta C) (+ bias): each step rounded in turn, as the separate add would
  dnnl::post_ops po;
  if (k.beta != 0.f) po.append_sum(k.beta);
  if (k.epilogue & 1)
    po.append_binary(dnnl::algorithm::binary_add, dnnl::memory::desc({1, k.N}, dt::f32, dnnl::memory::dims{k.N, 1}));
  // relu with alpha 0 is max(x, +0) in oneDNN's kernels: x where x > 0, else +0 (NaN and -0 too),
  // the relu op's own rule (bn_act.h), so the same bits (test "linear_relu").
  if (k.epilogue & 2) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  if (k.beta != 0.f || k.epilogue) attr.set_post_ops(po);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.a, p.b, p.c), attr, dnnl_engine());
  p.scratch_bytes = pd.scratchpad_desc().get_size();
  p.mm = dnnl::matmul(pd);
  return p;
}

// C = alpha op(A) op(B) + beta C for `batch` products (strides as gemm_batched's; batch 1: one
// product), inputs FP32 or (bf16) BF16.
void run_dnnl(int64_t batch, int64_t sa, int64_t sb, int64_t sc, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
              float alpha, const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c, int64_t ldc,
              bool bf16, const float* bias = nullptr, bool relu = false) {
  ThreadState& ts = thread_state();
  const bool nested = omp_in_parallel();
  const Key key{batch, sa, sb, sc, M, N, K, lda, ldb, ldc, alpha, beta,
                int(ta) | int(tb) << 1 | int(bf16) << 2 | int(nested) << 3 | (nested ? 1 : omp_get_max_threads()) << 4,
                (bias ? 1 : 0) | (relu ? 2 : 0)};
  auto it = ts.products.find(key);
  if (it == ts.products.end()) {
    // A training or evaluation loop has a few hundred shapes; a caller with ever new ones (e.g.
    // text of every length) starts over rather than keep every kernel ever built.
    if (ts.products.size() >= kMaxProducts) ts.products.clear();
    it = ts.products.emplace(key, make_product(key)).first;
  }
  Product& p = it->second;
  if (ts.scratch.size() < p.scratch_bytes) ts.scratch.resize(p.scratch_bytes);
  dnnl::engine& e = dnnl_engine();
  dnnl::memory ma(p.a, e, const_cast<void*>(a)), mb(p.b, e, const_cast<void*>(b)), mc(p.c, e, c),
      ms(dnnl::memory::desc({int64_t(p.scratch_bytes)}, dt::u8, dnnl::memory::dims{1}), e, ts.scratch.data());
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, ms}};
  if (bias)
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(beta != 0.f ? 1 : 0) | DNNL_ARG_SRC_1,
                 dnnl::memory(dnnl::memory::desc({1, N}, dt::f32, dnnl::memory::dims{N, 1}), e, const_cast<float*>(bias)));
  p.mm.execute(*ts.stream, args);
  ts.stream->wait();
}

// Round to nearest even, as oneDNN's own f32 -> bf16 conversion does (NaN kept a NaN).
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

// op(X_i) (rows x cols, stored with leading dimension ld, transposed or not; n matrices
// `stride` apart) as n dense row-major BF16 matrices.
void pack_bf16(const float* x, int64_t n, int64_t stride, int64_t rows, int64_t cols, int64_t ld, bool transposed,
               std::vector<uint16_t>& out) {
  out.resize(size_t(n * rows * cols));
  const bool par = !omp_in_parallel() && n * rows * cols > (1 << 15);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t ir = 0; ir < n * rows; ++ir) {
    const int64_t i = ir / rows, r = ir % rows;
    const float* xi = x + i * stride;
    uint16_t* o = out.data() + ir * cols;
    if (!transposed) {
      const float* row = xi + r * ld;
      for (int64_t c = 0; c < cols; ++c) o[c] = to_bf16(row[c]);
    } else {
      for (int64_t c = 0; c < cols; ++c) o[c] = to_bf16(xi[c * ld + r]);
    }
  }
}

}  // namespace

bool bf16_supported() {
  static const bool ok = [] {
    try {
      const auto a = dnnl::memory::desc({32, 32}, dt::bf16, dnnl::memory::format_tag::ab);
      const auto c = dnnl::memory::desc({32, 32}, dt::f32, dnnl::memory::format_tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, c), dnnl_engine());
      // The reference (plain C++) matmul also takes BF16, at a fraction of FP32's speed: not that.
      return std::string(pd.impl_info_str()).find("ref") == std::string::npos;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

// ---- the products ----------------------------------------------------------------------------

// gemm_batched with C's rows ldc (>= N) apart.
static void gemm_impl(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                      int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC,
                      int64_t ldc) {
  g_gemm_flops.fetch_add(uint64_t(2 * batch * M * N * K), std::memory_order_relaxed);
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K == 0) {  // sgemm with K=0 would still apply beta; do it ourselves for clarity
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          float& c = C[b * strideC + i * ldc + j];
          c = beta == 0.f ? 0.f : beta * c;
        }
    return;
  }
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  const bool dnnl = gemm_backend() == GemmBackend::Dnnl || g_precision == Precision::BF16;
  const bool bf16 = g_precision == Precision::BF16;
  const int64_t chunk = k_chunk(K);
  // Products with distinct C (batch > 1, strideC != 0) may run side by side; several into one C
  // (strideC == 0) run in order.
  const bool separate = batch > 1 && strideC != 0;
  const bool nested = omp_in_parallel();

  if (bf16) {
    // Every op(A_b) and op(B_b) rounded once to dense row-major BF16 (a shared matrix, stride
    // 0, once), then oneDNN's BF16 matmul over the K chunks, batched where the C are distinct.
    ThreadState& ts = thread_state();
    const int64_t nA = strideA == 0 ? 1 : batch, nB = strideB == 0 ? 1 : batch;
    pack_bf16(A, nA, strideA, M, K, lda, ta, ts.a16);
    pack_bf16(B, nB, strideB, K, N, ldb, tb, ts.b16);
    const uint16_t* a16 = ts.a16.data();
    const uint16_t* b16 = ts.b16.data();
    auto chunks = [&](int64_t nb, int64_t ia, int64_t ib, float* c) {
      for (int64_t k0 = 0; k0 < K; k0 += chunk) {
        const int64_t kc = std::min(chunk, K - k0);
        run_dnnl(nb, nA == 1 ? 0 : M * K, nB == 1 ? 0 : K * N, strideC, false, false, M, N, kc, alpha,
                 a16 + ia * M * K + k0, K, b16 + ib * K * N + k0 * N, N, k0 == 0 ? beta : 1.f, c, ldc, true);
      }
    };
    if (separate) chunks(batch, 0, 0, C);
    else
      for (int64_t b = 0; b < batch; ++b) chunks(1, nA == 1 ? 0 : b, nB == 1 ? 0 : b, C + b * strideC);
    return;
  }
  if (dnnl && separate && !nested) {
    // oneDNN's batched matmul: one call for the whole batch (per K chunk), split over the
    // threads by oneDNN, with a matrix shared by every product (stride 0) packed once.
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      run_dnnl(batch, strideA, strideB, strideC, ta, tb, M, N, kc, alpha, A + (ta ? k0 * lda : k0), lda,
               B + (tb ? k0 : k0 * ldb), ldb, k0 == 0 ? beta : 1.f, C, ldc, false);
    }
    return;
  }
  auto one = [&](int64_t b) {
    float* c = C + b * strideC;
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      // The chunk's columns of op(A) and rows of op(B).
      const float* a = A + b * strideA + (ta ? k0 * lda : k0);
      const float* bb = B + b * strideB + (tb ? k0 : k0 * ldb);
      const float bt = k0 == 0 ? beta : 1.f;
      if (dnnl) run_dnnl(1, 0, 0, 0, ta, tb, M, N, kc, alpha, a, lda, bb, ldb, bt, c, ldc, false);
      else sgemm_openblas(ta, tb, M, N, kc, alpha, a, lda, bb, ldb, bt, c, ldc);
    }
  };
  // OpenBLAS: separate products go to the threads whole, one call per thread instead of every
  // call split over all threads, which syncs the threads per call and is far slower for the
  // many small products of attention and per-image convolutions. A product's bits do not
  // depend on the thread that computes it (see kChunkK).
  if (separate && omp_get_max_threads() > 1 && !nested) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batch; ++b) one(b);
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b);
  }
}

void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC) {
  gemm_impl(ta, tb, batch, M, N, K, alpha, A, strideA, B, strideB, beta, C, strideC, N);
}

void gemm_ldc(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C, int64_t ldc) {
  gemm_impl(false, false, 1, M, N, K, 1.f, A, 0, B, 0, 0.f, C, 0, ldc);
}

// y = x w^T + b, the linear layer (relu: then relu(y)): with oneDNN (FP32) the bias, and the
// relu, are applied in the last K chunk's epilogue, after the chunk sum, so y = relu(((acc_0 +
// acc_1) + ...) + b) exactly as gemm_batched followed by the broadcast add and the relu op,
// without passes of their own over y.
void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t R, int64_t in, int64_t out,
                    bool relu) {
  if (!b || in == 0 || gemm_backend() != GemmBackend::Dnnl || g_precision != Precision::FP32) {
    gemm_batched(false, true, 1, R, out, in, 1.f, x, 0, w, 0, 0.f, y, 0);
    if (b && R > 0 && out > 0) binary_forward(BinaryOp::Add, y, b, y, make_broadcast({R, out}, {R, out}, {out}));
    if (relu && R > 0 && out > 0) unary_forward(UnaryOp::Relu, y, y, R * out, 0.f);
    return;
  }
  g_gemm_flops.fetch_add(uint64_t(2 * R * out * in), std::memory_order_relaxed);
  if (R <= 0 || out <= 0) return;
  const int64_t chunk = k_chunk(in);
  for (int64_t k0 = 0; k0 < in; k0 += chunk) {
    const int64_t kc = std::min(chunk, in - k0);
    const bool last = k0 + kc >= in;
    run_dnnl(1, 0, 0, 0, false, true, R, out, kc, 1.f, x + k0, in, w + k0, in, k0 == 0 ? 0.f : 1.f, y, out, false,
             last ? b : nullptr, last && relu);
  }
}

}  // namespace ms::cpu

namespace ms::cpu {
// No TF32 on the CPU: float32 products throughout.
void set_tf32(bool) {}
bool tf32_enabled() { return false; }
}  // namespace ms::cpu
