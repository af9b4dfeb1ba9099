#include "train/distributed.h"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>
#include <unistd.h>

#ifdef MEDSLIP_MPI
#include <mpi.h>
#endif
#if defined(MEDSLIP_MPI) && defined(MEDSLIP_CUDA)
#include <cuda_runtime.h>
#include <nccl.h>
#define MEDSLIP_NCCL 1
#endif

#include "engine/ops.h"

namespace ms {

std::vector<double> Communicator::allgatherv(const std::vector<double>& v, const std::string& what) {
  if (world_ == 1) return v;
  const std::vector<double> sizes = allgather({double(v.size())}, what);
  const size_t longest = size_t(*std::max_element(sizes.begin(), sizes.end()));
  if (longest == 0) return {};
  std::vector<double> padded = v;
  padded.resize(longest, 0.0);
  const std::vector<double> all = allgather(padded, what);
  std::vector<double> out;
  for (int r = 0; r < world_; ++r)
    out.insert(out.end(), all.begin() + ptrdiff_t(size_t(r) * longest), all.begin() + ptrdiff_t(size_t(r) * longest + size_t(sizes[size_t(r)])));
  return out;
}

std::string Communicator::describe() const {
  return fmt::format("rank {} of {} on {} (local rank {})", rank_, world_, hosts_.empty() ? "?" : hosts_[size_t(rank_)],
                     local_rank_);
}

static std::string this_host() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

bool launched_by_mpi_launcher() {
  for (const char* k : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(k)) return true;
  return false;
}

bool built_with_mpi() {
#ifdef MEDSLIP_MPI
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#ifdef MEDSLIP_NCCL
  return true;
#else
  return false;
#endif
}

namespace {

class SingleProcess final : public Communicator {
 public:
  SingleProcess() { hosts_ = {this_host()}; }
  std::string backend(Device) const override { return "none"; }
  void broadcast(Tensor&, const std::string&) override {}
  void broadcast(std::string&, const std::string&) override {}
  void allreduce_sum(Tensor&, const std::string&) override {}
  std::vector<double> allgather(const std::vector<double>& v, const std::string&) override { return v; }
  void barrier(const std::string&) override {}
};

}  // namespace

std::unique_ptr<Communicator> single_process_communicator() { return std::make_unique<SingleProcess>(); }

#ifdef MEDSLIP_MPI
namespace {

std::atomic<bool> g_sigterm{false};
extern "C" void on_sigterm(int) { g_sigterm = true; }

// A flat [n] view of `t` starting at element `off` (no copy, no grad).
[[maybe_unused]] Tensor flat_view(const Tensor& t, int64_t off, int64_t n) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->offset = t.impl()->offset + off;
  impl->shape = {n};
  return Tensor(impl);
}

class Mpi final : public Communicator {
 public:
  Mpi(const DistOptions& opt, Device device) : opt_(opt) {
    launcher_ = std::getenv("OMPI_COMM_WORLD_SIZE") ? "mpirun" : std::getenv("SLURM_PROCID") ? "srun" : "mpi";
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm local;  // the ranks sharing this host's memory: local rank picks the GPU
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_free(&local);
    hosts_.assign(size_t(world_), "?");
    hosts_[size_t(rank_)] = this_host();
    std::signal(SIGTERM, on_sigterm);
    watchdog_ = std::thread([this] { watch(); });
    try {
      start_up(device);
    } catch (...) {
      stop_watch_ = true;
      watchdog_.join();
      throw;
    }
  }

  void start_up(Device device) {
    // Host names, in rank order (every error names the ranks' hosts).
    std::vector<char> mine(kHostLen, 0), all(size_t(kHostLen) * size_t(world_), 0);
    std::strncpy(mine.data(), hosts_[size_t(rank_)].c_str(), kHostLen - 1);
    exchange("start-up (host names)", [&](std::vector<MPI_Request>& rq, std::vector<int>& peer) {
      for (int r = 0; r < world_; ++r) {
        if (r == rank_) { std::copy(mine.begin(), mine.end(), all.begin() + int64_t(r) * kHostLen); continue; }
        post_recv(all.data() + int64_t(r) * kHostLen, kHostLen, MPI_CHAR, r, rq, peer);
        post_send(mine.data(), kHostLen, MPI_CHAR, r, rq, peer);
      }
    });
    for (int r = 0; r < world_; ++r) hosts_[size_t(r)] = std::string(all.data() + int64_t(r) * kHostLen);
#ifdef MEDSLIP_CUDA
    if (device == Device::CUDA) {
      int n = 0;
      if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
        fail("start-up", {}, "--device cuda but this host has no CUDA device");
      cudaSetDevice(local_rank_ % n);  // one rank per GPU: the local rank picks it
#ifdef MEDSLIP_NCCL
      if (opt_.backend != "mpi") init_nccl();
#endif
    }
#endif
    if (opt_.backend == "nccl" && !nccl_)
      fail("start-up", {}, "--dist-backend nccl needs --device cuda and a build with CUDA=1 MPI=1");
  }

  ~Mpi() override {
    stop_watch_ = true;
    if (watchdog_.joinable()) watchdog_.join();
#ifdef MEDSLIP_NCCL
    if (nccl_) { if (failed_) ncclCommAbort(nccl_); else ncclCommDestroy(nccl_); }
    if (stream_) cudaStreamDestroy(stream_);
#endif
    // While an exception of this rank alone (a write error of rank 0) unwinds, a peer may
    // never answer Finalize: exit without it; the launcher then stops the others.
    if (!failed_ && std::uncaught_exceptions() == 0) MPI_Finalize();
  }

  std::string backend(Device d) const override {
    if (d == Device::CUDA) return nccl_ ? "nccl" : "mpi (host staging)";
    return "mpi";
  }

  void broadcast(Tensor& t, const std::string& what) override {
#ifdef MEDSLIP_NCCL
    if (nccl_ && t.is_cuda()) {
      cudaDeviceSynchronize();
      ncclBroadcast(t.data(), t.data(), size_t(t.numel()), ncclFloat, 0, nccl_, stream_);
      nccl_wait(what);
      return;
    }
#endif
    Tensor h = t.is_cuda() ? t.to(Device::CPU) : t;
    bcast_bytes(h.data(), int64_t(h.numel()) * 4, what);
    if (t.is_cuda() && rank_ != 0) t.copy_(h);
  }

  void broadcast(std::string& s, const std::string& what) override {
    std::vector<double> len = {double(s.size())};
    bcast_bytes(len.data(), sizeof(double), what);
    s.resize(size_t(len[0]));
    bcast_bytes(s.data(), int64_t(s.size()), what);
  }

  void allreduce_sum(Tensor& t, const std::string& what) override {
    if (world_ == 1 && !(nccl_ && t.is_cuda())) return;  // NCCL runs even alone: the GPU check's world-1 path
    const int64_t n = t.numel(), W = world_, L = (n + W - 1) / W;  // chunk r = [r*L, min(n,(r+1)*L))
    auto lo = [&](int64_t c) { return std::min(n, c * L); };
    auto len = [&](int64_t c) { return std::min(n, (c + 1) * L) - lo(c); };
#ifdef MEDSLIP_NCCL
    if (nccl_ && t.is_cuda()) {
      // Reduce-scatter by hand: chunk c of every rank goes to rank c; the W copies are
      // added in rank order with engine ops; then an all-gather (a copy) spreads the sums.
      Tensor recv = Tensor::empty({W * L}, Device::CUDA), gathered = Tensor::zeros({W * L}, Device::CUDA);
      cudaDeviceSynchronize();
      ncclGroupStart();
      for (int r = 0; r < W; ++r) {
        if (r == rank_ || len(rank_) == 0) continue;
        ncclSend(t.data() + lo(r), size_t(len(r)), ncclFloat, r, nccl_, stream_);
        ncclRecv(recv.data() + r * L, size_t(len(rank_)), ncclFloat, r, nccl_, stream_);
      }
      ncclGroupEnd();
      nccl_wait(what);
      Tensor mine = flat_view(gathered, rank_ * L, len(rank_));
      if (len(rank_) > 0) {
        flat_view(recv, rank_ * L, len(rank_)).copy_(flat_view(t, lo(rank_), len(rank_)));
        Tensor acc = flat_view(recv, 0, len(rank_)).clone();
        for (int r = 1; r < W; ++r) acc = add(acc, flat_view(recv, r * L, len(rank_)));
        mine.copy_(acc);
      }
      cudaDeviceSynchronize();
      ncclAllGather(gathered.data() + rank_ * L, gathered.data(), size_t(L), ncclFloat, nccl_, stream_);
      nccl_wait(what);
      t.copy_(flat_view(gathered, 0, n));
      return;
    }
#endif
    Tensor h = t.is_cuda() ? t.to(Device::CPU) : t;
    float* x = h.data();
    std::vector<float> recv(size_t(W * L));
    const int64_t my_lo = lo(rank_), my_len = len(rank_);
    exchange(what, [&](std::vector<MPI_Request>& rq, std::vector<int>& peer) {
      for (int r = 0; r < W; ++r) {
        if (r == rank_) continue;
        post_recv(recv.data() + r * L, my_len, MPI_FLOAT, r, rq, peer);
        post_send(x + lo(r), len(r), MPI_FLOAT, r, rq, peer);
      }
    });
    // Rank order: ((x0 + x1) + x2) ...; this rank's own chunk stands in at position rank_.
    std::vector<float> acc(static_cast<size_t>(my_len));
    for (int r = 0; r < W; ++r) {
      const float* src = r == rank_ ? x + my_lo : recv.data() + r * L;
      if (r == 0) std::copy(src, src + my_len, acc.begin());
      else for (int64_t i = 0; i < my_len; ++i) acc[size_t(i)] += src[i];
    }
    std::copy(acc.begin(), acc.end(), x + my_lo);
    exchange(what, [&](std::vector<MPI_Request>& rq, std::vector<int>& peer) {
      for (int r = 0; r < W; ++r) {
        if (r == rank_) continue;
        post_recv(x + lo(r), len(r), MPI_FLOAT, r, rq, peer);
        post_send(x + my_lo, my_len, MPI_FLOAT, r, rq, peer);
      }
    });
    if (t.is_cuda()) t.copy_(h);
  }

  std::vector<double> allgather(const std::vector<double>& v, const std::string& what) override {
    const int64_t k = int64_t(v.size());
    std::vector<double> all(size_t(k * world_));
    std::copy(v.begin(), v.end(), all.begin() + rank_ * k);
    exchange(what, [&](std::vector<MPI_Request>& rq, std::vector<int>& peer) {
      for (int r = 0; r < world_; ++r) {
        if (r == rank_) continue;
        post_recv(all.data() + r * k, k, MPI_DOUBLE, r, rq, peer);
        post_send(v.data(), k, MPI_DOUBLE, r, rq, peer);
      }
    });
    return all;
  }

  void barrier(const std::string& what) override { allgather({0.0}, what); }

 private:
  static constexpr int kHostLen = 256;
  static constexpr int64_t kMaxCount = int64_t(1) << 30;  // MPI counts are int: long messages go in pieces

  // Rank 0 sends to every rank (point-to-point, so a silent rank is named).
  void bcast_bytes(void* p, int64_t bytes, const std::string& what) {
    exchange(what, [&](std::vector<MPI_Request>& rq, std::vector<int>& peer) {
      if (rank_ == 0) {
        for (int r = 1; r < world_; ++r) post_send(p, bytes, MPI_BYTE, r, rq, peer);
      } else {
        post_recv(p, bytes, MPI_BYTE, 0, rq, peer);
      }
    });
  }

  static int64_t type_size(MPI_Datatype t) { int s = 0; MPI_Type_size(t, &s); return s; }
  void post_send(const void* p, int64_t count, MPI_Datatype t, int to, std::vector<MPI_Request>& rq, std::vector<int>& peer) {
    for (int64_t o = 0; o < count; o += kMaxCount) {
      rq.emplace_back();
      peer.push_back(to);
      int e = MPI_Isend(static_cast<const char*>(p) + o * type_size(t), int(std::min(kMaxCount, count - o)), t, to, tag_,
                        MPI_COMM_WORLD, &rq.back());
      if (e != MPI_SUCCESS) fail(cur_, {to}, "MPI_Isend failed: " + error_string(e));
    }
  }
  void post_recv(void* p, int64_t count, MPI_Datatype t, int from, std::vector<MPI_Request>& rq, std::vector<int>& peer) {
    for (int64_t o = 0; o < count; o += kMaxCount) {
      rq.emplace_back();
      peer.push_back(from);
      int e = MPI_Irecv(static_cast<char*>(p) + o * type_size(t), int(std::min(kMaxCount, count - o)), t, from, tag_,
                        MPI_COMM_WORLD, &rq.back());
      if (e != MPI_SUCCESS) fail(cur_, {from}, "MPI_Irecv failed: " + error_string(e));
    }
  }

  // Posts the requests `post` makes, then polls them against the deadline. Every
  // collective goes through here, so each one is bounded in time and names who is silent.
  template <class Post>
  void exchange(const std::string& what, Post post) {
    cur_ = what;
    in_collective_ = true;
    std::vector<MPI_Request> rq;
    std::vector<int> peer;
    post(rq, peer);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int> idx(rq.size());
    std::vector<MPI_Status> st(rq.size());
    for (int64_t spins = 0;; ++spins) {
      int done = 0;
      int e = rq.empty() ? MPI_SUCCESS : MPI_Testsome(int(rq.size()), rq.data(), &done, idx.data(), st.data());
      if (rq.empty() || done == MPI_UNDEFINED) break;
      if (e != MPI_SUCCESS) fail(what, pending(rq, peer), "MPI error: " + error_string(e));
      if (g_sigterm) fail(what, pending(rq, peer), "the launcher is stopping the job (SIGTERM: a rank died or the job was cancelled)");
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > opt_.timeout_s) fail(what, pending(rq, peer), fmt::format("no answer within {:g} s (--dist-timeout)", opt_.timeout_s));
      if (spins > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));  // do not burn a shared core
    }
    tag_ = (tag_ + 1) % 30000;  // each collective its own tag: a late message never matches the next one
    in_collective_ = false;
  }

  static std::vector<int> pending(const std::vector<MPI_Request>& rq, const std::vector<int>& peer) {
    std::vector<int> p;
    for (size_t i = 0; i < rq.size(); ++i)
      if (rq[i] != MPI_REQUEST_NULL && std::find(p.begin(), p.end(), peer[i]) == p.end()) p.push_back(peer[i]);
    std::sort(p.begin(), p.end());
    return p;
  }

  static std::string error_string(int e) {
    char buf[MPI_MAX_ERROR_STRING] = {0};
    int n = 0;
    MPI_Error_string(e, buf, &n);
    return std::string(buf, size_t(n));
  }

  // A fault ends this rank at once with one line on stderr: the launcher follows SIGTERM with
  // SIGKILL one second later (Open MPI's default), too soon to unwind the stack first. Rank 0's
  // files are written atomically, so nothing half-written is left behind.
  [[noreturn]] void fail(const std::string& what, const std::vector<int>& silent, const std::string& why) {
    failed_ = true;
    std::string who;
    for (int r : silent) who += fmt::format("{}rank {} on {}", who.empty() ? "" : ", ", r, host(r));
    const std::string line = fmt::format("medslip: error: rank {} on {}: {}: {}{}; stopping\n", rank_, host(rank_), what,
                                         who.empty() ? "" : "no answer from " + who + ": ", why);
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    std::_Exit(1);
  }

  // A SIGTERM that arrives while this rank computes (not in a collective) is reported
  // here, so the launcher's kill never leaves a rank silent.
  void watch() {
    auto since = std::chrono::steady_clock::time_point{};
    while (!stop_watch_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (!g_sigterm || in_collective_) { since = {}; continue; }
      if (since == std::chrono::steady_clock::time_point{}) since = std::chrono::steady_clock::now();
      if (std::chrono::steady_clock::now() - since > std::chrono::milliseconds(200)) {  // SIGKILL follows in 1 s
        std::fprintf(stderr, "medslip: error: rank %d on %s: stopped by the launcher (SIGTERM) while computing after '%s': "
                     "another rank died or the job was cancelled; stopping\n", rank_, host(rank_).c_str(), cur_.c_str());
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
  }

#ifdef MEDSLIP_NCCL
  void init_nccl() {
    ncclUniqueId id;
    if (rank_ == 0 && ncclGetUniqueId(&id) != ncclSuccess) fail("start-up (NCCL)", {}, "ncclGetUniqueId failed");
    bcast_bytes(&id, sizeof id, "start-up (NCCL unique id)");  // over MPI, as llm.c does
    cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    ncclResult_t r = ncclCommInitRank(&nccl_, world_, id, rank_);
    if (r != ncclSuccess) fail("start-up (NCCL)", {}, std::string("ncclCommInitRank: ") + ncclGetErrorString(r));
  }
  // Polls the stream against the same deadline and SIGTERM as the MPI path.
  void nccl_wait(const std::string& what) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) fail(what, {}, std::string("CUDA: ") + cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(nccl_, &async);
      if (async != ncclSuccess) fail(what, {}, std::string("NCCL: ") + ncclGetErrorString(async));
      if (g_sigterm) fail(what, {}, "the launcher is stopping the job (SIGTERM: a rank died or the job was cancelled)");
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > opt_.timeout_s)
        fail(what, {}, fmt::format("NCCL did not finish within {:g} s (--dist-timeout)", opt_.timeout_s));
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;
#else
  void* nccl_ = nullptr;
#endif

  DistOptions opt_;
  int tag_ = 1;
  std::string cur_ = "start-up";
  std::atomic<bool> in_collective_{false}, stop_watch_{false};
  bool failed_ = false;
  std::thread watchdog_;
};

}  // namespace
#endif  // MEDSLIP_MPI

std::unique_ptr<Communicator> make_communicator(const DistOptions& opt, Device device) {
  if (opt.backend != "auto" && opt.backend != "mpi" && opt.backend != "nccl")
    throw std::invalid_argument("--dist-backend must be auto, mpi or nccl, got '" + opt.backend + "'");
  if (!(opt.timeout_s > 0)) throw std::invalid_argument("--dist-timeout must be positive");
#ifdef MEDSLIP_MPI
  if (launched_by_mpi_launcher()) return std::make_unique<Mpi>(opt, device);
#else
  if (launched_by_mpi_launcher() && std::getenv("OMPI_COMM_WORLD_SIZE") && std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) > 1)
    throw std::runtime_error("started by an MPI launcher with " + std::string(std::getenv("OMPI_COMM_WORLD_SIZE")) +
                             " ranks, but this medslip was built without MPI (rebuild with `make MPI=1`, run build-mpi/medslip)");
#endif
  (void)device;
  return single_process_communicator();
}

}  // namespace ms
