// medslip bench: training-step and forward-only throughput of MeDSLIP on synthetic batches,
// printed as one table (docs/performance.md). Each configuration runs in its own worker
// process (`medslip bench --worker ...`), so its peak RSS is its own; with --official the
// original PyTorch model runs in a worker of its own (tests/bench_torch.py). The two sides
// never run at the same time: each row is timed in --rounds A/B rounds, each round a whole
// run of one side (fresh process: warm-up and timed steps, then it exits) followed by a whole
// run of the other, the order alternating between rounds (AB, BA, AB, ...). While one side
// runs, the other has exited and the driver waits in a blocking read, so no idle OpenMP pool
// spins and no second working set shares the caches. The ratio is the median of the rounds'.
//
// Worker protocol (stdin/stdout, one line each): the driver sends "step", "peak", "phases N" or
// "quit"; a worker answers with a line "@bench {json}" (other stdout lines are ignored, the
// original model prints to stdout).
#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/triplets.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/io.h"
#include "engine/kernels/kernels.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "model/medslip.h"
#include "train/bench_dp.h"
#include "train/commands.h"
#include "train/common.h"
#include "train/reference_problem.h"
#include "train/platform.h"

extern char** environ;

namespace ms {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

double cpu_seconds() {  // all threads of this process
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Peak resident set (VmHWM) of this process in MiB.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- worker: one configuration ---------------------------------------------------------------

struct WorkerArgs {
  std::string backbone = "resnet50", mode = "train", device = "cpu";
  int res = 224, batch = 8;
  uint64_t seed = 0;
};

void reply(const json& j) {
  std::printf("@bench %s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Phase times of one training step: Medslip::forward reports the end of its parts through
// on_phase (trunk, patch MLPs, decoders); the worker checks that the timed step gives the same
// loss, bit for bit, as an untimed forward at the same dropout counter.
struct Phases {
  double trunk = 0, patch_mlps = 0, decoders = 0, losses = 0, backward = 0, optimiser = 0;
  float loss = 0;
  double forward_live_mib = 0;  // tensor memory in use once the losses are computed
};

Phases timed_step(Medslip& m, const MedslipBatch& batch, AdamW& opt) {
  Phases ph;
  auto t = Clock::now();
  auto lap = [&](double& dst) { dst = seconds_since(t); t = Clock::now(); };
  opt.zero_grad();
  m.on_phase = [&](const char* phase) {
    const std::string p = phase;
    lap(p == "trunk" ? ph.trunk : p == "patch_mlps" ? ph.patch_mlps : ph.decoders);
  };
  MedslipOutput out;
  try {
    out = m.forward(batch.image);
  } catch (...) {
    m.on_phase = nullptr;
    throw;
  }
  m.on_phase = nullptr;
  MedslipLosses L = m.losses(out, batch);
  ph.loss = L.total.item();
  lap(ph.losses);
  ph.forward_live_mib = double(host_memory_stats().in_use) / 1048576.0;
  L.total.backward();
  lap(ph.backward);
  opt.step();
  lap(ph.optimiser);
  return ph;
}

int run_worker(const WorkerArgs& a) {
  try {
    const auto t0 = Clock::now();
    MedslipConfig cfg;  // the pretraining config: dropout 0.1 in the heads and decoders
    cfg.res_base_model = a.backbone;
    cfg.image_res = a.res;
    cfg.batch_size = a.batch;
    const int64_t T = 768;
    Rng text(a.seed, 11);  // books: fixed N(0,1) vectors standing in for BERT [CLS] rows
    Tensor pbook = Tensor::empty({kNumPathologies, T}), abook = Tensor::empty({kNumAnatomies, T});
    text.fill_normal(pbook.data(), pbook.numel());
    text.fill_normal(abook.data(), abook.numel());
    // "cpu-bf16": the CPU with BF16 matrix-product inputs (--precision bf16).
    const bool bf16 = a.device == "cpu-bf16";
    const Device dev = parse_device(bf16 ? "cpu" : a.device);
    set_cpu_precision(bf16 ? "bf16" : "fp32");
    Medslip model(cfg, T, a.seed);
    model.to(dev);
    model.set_books(pbook.to(dev), abook.to(dev));
    MedslipBatch batch = reference_batch(a.batch, a.res, a.seed);
    batch.image = batch.image.to(dev);
    const bool train = a.mode == "train";
    std::unique_ptr<AdamW> opt;
    if (train) {
      model.train();
      opt = std::make_unique<AdamW>(decay_groups(model, 0.02f), 1e-4f);
    } else {
      model.eval();
    }
    reply({{"event", "ready"}, {"init_s", seconds_since(t0)}, {"params", model.num_parameters()},
           {"blas", blas_info()}});
    char line[256];
    while (std::fgets(line, sizeof line, stdin)) {
      std::string cmd(line);
      while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r')) cmd.pop_back();
      if (cmd == "step") {
        const uint64_t f0 = cpu::gemm_flop_count();
        const long pf0 = minor_faults();
        const double c0 = cpu_seconds();
        const auto w0 = Clock::now();
        float loss = 0.f;
        if (train) {
          opt->zero_grad();
          MedslipOutput o = model.forward(batch.image);
          MedslipLosses L = model.losses(o, batch);
          L.total.backward();
          opt->step();
          loss = L.total.item();
        } else {
          NoGradGuard ng;
          MedslipOutput o = model.forward(batch.image);
          loss = o.logits_pathology.reshape({-1}).to(Device::CPU).data()[0];  // waits for the device
        }
        reply({{"event", "step"}, {"s", seconds_since(w0)}, {"cpu_s", cpu_seconds() - c0},
               {"flop", double(cpu::gemm_flop_count() - f0)}, {"loss", loss},
               {"page_faults", minor_faults() - pf0}});
      } else if (cmd.rfind("phases", 0) == 0 && train) {
        const int n = std::max(1, std::atoi(cmd.c_str() + 6));
        std::vector<Phases> all;
        bool same = true;
        for (int i = 0; i < n; ++i) {
          // The model's own forward first (same weights, same dropout counter), untimed.
          model.set_rng(std::make_shared<Rng>(a.seed + 1000 + uint64_t(i), kStreamDropout));
          float ref;
          {
            MedslipOutput o = model.forward(batch.image);
            ref = model.losses(o, batch).total.item();
          }
          model.set_rng(std::make_shared<Rng>(a.seed + 1000 + uint64_t(i), kStreamDropout));
          Phases ph = timed_step(model, batch, *opt);
          same = same && ref == ph.loss;
          all.push_back(ph);
        }
        auto med = [&](double Phases::*f) {
          std::vector<double> v;
          for (auto& p : all) v.push_back(p.*f);
          return median(v);
        };
        reply({{"event", "phases"},
               {"trunk", med(&Phases::trunk)},
               {"patch_mlps", med(&Phases::patch_mlps)},
               {"decoders", med(&Phases::decoders)},
               {"losses", med(&Phases::losses)},
               {"backward", med(&Phases::backward)},
               {"optimiser", med(&Phases::optimiser)},
               {"forward_live_mib", med(&Phases::forward_live_mib)},
               {"matches_model_forward", same}});
      } else if (cmd == "peak") {
        reply({{"event", "peak"}, {"peak_mib", peak_rss_mib()},
               {"device_peak_mib", double(device_memory_stats().peak_in_use) / 1048576.0}});
      } else if (cmd == "quit") {
        const HostMemoryStats hs = host_memory_stats();
        reply({{"event", "done"}, {"peak_mib", peak_rss_mib()}, {"tensor_peak_mib", double(hs.peak_in_use) / 1048576.0},
               {"device_peak_mib", double(device_memory_stats().peak_in_use) / 1048576.0},
               {"cached_mib", double(hs.cached) / 1048576.0}, {"allocations", hs.allocations}, {"hits", hs.hits},
               {"releases", hs.releases}});
        return 0;
      } else {
        reply({{"event", "error"}, {"message", "unknown worker command '" + cmd + "'"}});
      }
    }
    return 0;
  } catch (const std::exception& e) {
    reply({{"event", "error"}, {"message", e.what()}});
    return 1;
  }
}

// ---- driver ------------------------------------------------------------------------------------

// A worker process with its stdin and stdout on pipes.
class Worker {
 public:
  Worker(const std::string& name, const std::vector<std::string>& argv) : name_(name) {
    int to_child[2], from_child[2];
    if (pipe(to_child) || pipe(from_child)) throw std::runtime_error("bench: pipe() failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to_child[0], 0);
    posix_spawn_file_actions_adddup2(&fa, from_child[1], 1);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) posix_spawn_file_actions_addclose(&fa, fd);
    std::vector<char*> args;
    for (auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(to_child[0]);
    close(from_child[1]);
    if (rc != 0) {
      close(to_child[1]);
      close(from_child[0]);
      throw std::runtime_error("bench: cannot start " + name + " (" + argv[0] + "): " + std::strerror(rc));
    }
    in_ = fdopen(to_child[1], "w");
    out_ = fdopen(from_child[0], "r");
  }
  ~Worker() {
    if (in_) std::fclose(in_);
    if (out_) std::fclose(out_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  json call(const std::string& cmd) {
    if (!cmd.empty()) {
      std::fprintf(in_, "%s\n", cmd.c_str());
      std::fflush(in_);
    }
    return read();
  }
  json read() {
    std::string buf;
    char chunk[4096];
    while (true) {
      buf.clear();
      while (std::fgets(chunk, sizeof chunk, out_)) {
        buf += chunk;
        if (!buf.empty() && buf.back() == '\n') break;
      }
      if (buf.empty()) {
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
        throw std::runtime_error("bench: " + name_ + " exited (status " + std::to_string(WEXITSTATUS(status)) +
                                 ") without answering; see its messages above");
      }
      if (buf.rfind("@bench ", 0) != 0) continue;  // the original model prints to stdout
      json j = json::parse(buf.substr(7));
      if (j.value("event", "") == "error") throw std::runtime_error("bench: " + name_ + ": " + j.value("message", "?"));
      return j;
    }
  }

 private:
  std::string name_;
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

struct Row {
  std::string backbone, mode;
  int res, batch;
  bool original;  // also time the original (A/B rounds)
  bool phases;    // print the phase split (main configuration)
  std::string device = "cpu";
};

// One A/B round of a row: the median seconds per step of each side's whole run.
struct Round {
  double ours = 0, orig = 0;  // median s/step of this round's run (orig 0: not run)
  std::string load;           // load average when the round ended
};

struct RowResult {
  Row row;
  std::vector<double> ours_s, ours_cpu, orig_s, orig_cpu;  // every timed step of every round
  std::vector<Round> rounds;
  double flop = 0, peak_mib = 0, orig_peak_mib = 0;  // peaks: the largest of the rounds
  json phases, orig_ready;
  std::string error;
};

// The median ratio original/ours over the rounds (0 when the original did not run).
double median_ratio(const RowResult& r) {
  std::vector<double> v;
  for (const Round& d : r.rounds)
    if (d.orig > 0 && d.ours > 0) v.push_back(d.orig / d.ours);
  return median(v);
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("bench: cannot read /proc/self/exe");
  buf[n] = 0;
  return buf;
}

// Best of a few large sgemm calls on this process's threads: the ceiling the step's
// GFLOP/s is compared with.
double sgemm_ceiling_gflops() {
  const int64_t n = 2048;
  std::vector<float> A(size_t(n * n), 0.5f), B(size_t(n * n), 0.25f), C(size_t(n * n));
  double best = 0;
  for (int r = 0; r < 6; ++r) {
    const auto t0 = Clock::now();
    cpu::gemm_batched(false, false, 1, n, n, n, 1.f, A.data(), 0, B.data(), 0, 0.f, C.data(), 0);
    const double s = seconds_since(t0);
    if (r > 0) best = std::max(best, 2.0 * double(n * n * n) / s / 1e9);
  }
  return best;
}

// This CPU's FP32 multiply-add peak on this process's threads: per thread 12 independent
// chains of vector FMAs (enough to cover the FMA latency on 2-3 pipes), no memory traffic;
// AVX2 and, where the CPU has it, AVX-512 (the larger counts: CPUs that split 512-bit ops in
// two, like Zen 4, give the same figure for both). 0 on other architectures. Printed under
// the sgemm ceiling, with the ceiling as a share of it.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float fma_chains_avx2(int64_t iters) {
  __m256 a[12];
  const __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(float(i));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  float s = 0;
  for (int i = 0; i < 12; ++i) s += _mm256_cvtss_f32(a[i]);
  return s;
}
__attribute__((target("avx512f"))) static float fma_chains_avx512(int64_t iters) {
  __m512 a[12];
  const __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(float(i));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  float s = 0;
  for (int i = 0; i < 12; ++i) s += _mm512_cvtss_f32(a[i]);
  return s;
}
#endif

struct FmaPeak {
  double gflops = 0;
  const char* isa = "none";
};

FmaPeak fma_peak_gflops() {
  FmaPeak best;
#if defined(__x86_64__)
  const int64_t iters = 20'000'000;
  const int threads = num_threads();
  auto time_it = [&](int width, float (*chains)(int64_t), const char* isa) {
    for (int r = 0; r < 3; ++r) {
      volatile float sink = 0;
      int ran = 0;  // the threads the team really had
      const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
      {
        const float v = chains(iters);
#pragma omp critical
        {
          sink = sink + v;
          ++ran;
        }
      }
      const double s = seconds_since(t0);
      const double g = 2.0 * width * 12 * double(iters) * ran / s / 1e9;
      if (g > best.gflops) best = {g, isa};
    }
  };
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) time_it(8, fma_chains_avx2, "AVX2 FMA");
  if (__builtin_cpu_supports("avx512f")) time_it(16, fma_chains_avx512, "AVX-512 FMA");
#endif
  return best;
}

bool python_has_torch(const std::string& python) {
  const std::string cmd = "'" + python + "' -c 'import torch, yaml' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

std::string find_torch_driver(const std::string& exe) {
  const std::string dir = exe.substr(0, exe.rfind('/'));
  for (std::string p : {dir + "/../tests/bench_torch.py", std::string("tests/bench_torch.py")})
    if (std::ifstream(p).good()) return p;
  return "";
}

// One whole run of one side: start the worker, warm-up + timed steps, (phases), quit; the
// process has exited when this returns. Returns the median s/step of the timed steps.
double run_side(Worker& w, bool ours_side, int warmup, int steps, bool phases, RowResult& r) {
  const json ready = w.read();
  if (!ours_side) r.orig_ready = ready;
  std::vector<double> s;
  std::fprintf(stderr, " %s", ours_side ? "ours" : "original");
  for (int i = 0; i < warmup + steps; ++i) {
    const json a = w.call("step");
    const bool measured = i >= warmup;
    std::fprintf(stderr, " %s%.2f%s", measured ? "" : "(", a["s"].get<double>(), measured ? "" : ")");
    if (!measured) continue;
    s.push_back(a["s"]);
    (ours_side ? r.ours_s : r.orig_s).push_back(a["s"]);
    (ours_side ? r.ours_cpu : r.orig_cpu).push_back(a["cpu_s"]);
    if (ours_side) r.flop = a["flop"];
  }
  std::fprintf(stderr, ";");
  // The peak is the steps' peak, as the original's: taken before the phase split, whose extra
  // untimed forward (the bit-for-bit check) would otherwise count.
  json peak_at = phases ? w.call("peak") : json();
  if (phases) r.phases = w.call("phases " + std::to_string(std::max(2, steps / 2)));
  const json done = w.call("quit");
  if (!phases) peak_at = done;
  const double peak = ours_side && r.row.device == "cuda" ? peak_at["device_peak_mib"].get<double>()
                                                         : peak_at["peak_mib"].get<double>();
  double& dst = ours_side ? r.peak_mib : r.orig_peak_mib;
  dst = std::max(dst, peak);
  return median(s);
}

RowResult run_row(const Row& row, const std::string& exe, int warmup, int steps, int rounds,
                  const std::vector<std::string>& orig_cmd) {
  RowResult r;
  r.row = row;
  const std::vector<std::string> ours_cmd = {exe, "bench", "--worker", "--backbone", row.backbone, "--res",
                                             std::to_string(row.res), "--batch", std::to_string(row.batch), "--mode",
                                             row.mode, "--device", row.device};
  std::vector<std::string> c;
  if (row.original && !orig_cmd.empty()) {
    c = orig_cmd;
    for (const std::string& a : {std::string("--device"), row.device == "cuda" ? row.device : std::string("cpu"), std::string("--backbone"), row.backbone,
                                 std::string("--res"), std::to_string(row.res), std::string("--batch"),
                                 std::to_string(row.batch), std::string("--mode"), row.mode})
      c.push_back(a);
  }
  std::fprintf(stderr, "  %s %d b%d %s %s (seconds per step, (warm-up)):\n", row.backbone.c_str(), row.res, row.batch,
               row.mode.c_str(), row.device.c_str());
  for (int k = 0; k < rounds; ++k) {
    Round d;
    std::fprintf(stderr, "    round %d:", k + 1);
    // AB in odd rounds, BA in even ones: a drift in machine load hits both sides alike.
    const bool ours_first = c.empty() || k % 2 == 0;
    for (int side = 0; side < 2; ++side) {
      const bool ours_side = (side == 0) == ours_first;
      if (!ours_side && c.empty()) continue;
      // The worker object lives only for its run: its destructor waits for the process to exit.
      Worker w(ours_side ? "medslip worker" : "the original (bench_torch.py)", ours_side ? ours_cmd : c);
      const double m = run_side(w, ours_side, warmup, steps, ours_side && k == 0 && row.phases && row.mode == "train", r);
      (ours_side ? d.ours : d.orig) = m;
    }
    d.load = loadavg();
    std::fprintf(stderr, " load %s\n", d.load.c_str());
    r.rounds.push_back(d);
  }
  return r;
}

std::string cell(double v, const char* fmt_spec) { return v > 0 ? fmt::format(fmt::runtime(fmt_spec), v) : "-"; }

// The original's serve command (tests/bench_torch.py under `python` on the clone `official`),
// empty when it cannot run; `note` says which.
std::vector<std::string> original_command(const std::string& official, const std::string& python,
                                          const std::string& exe, std::string& orig_note) {
  std::vector<std::string> orig_cmd;
  // The original: a clone of Shef-AIRE/MeDSLIP and Debian's python3 with torch.
  if (official.empty()) {
    orig_note = "original: not run (set OFFICIAL=PATH to a clone of Shef-AIRE/MeDSLIP to time it beside ours)";
  } else if (!python_has_torch(python)) {
    orig_note = "original: not run (" + python + " cannot import torch and yaml; install python3-torch python3-yaml)";
  } else {
    const std::string driver = find_torch_driver(exe);
    if (driver.empty()) orig_note = "original: not run (tests/bench_torch.py not found next to the build)";
    else orig_cmd = {python, driver, "--serve", "--repo", official, "--threads", std::to_string(num_threads())};
  }
  return orig_cmd;
}

// The rows to time: the default set (more with --full, GPU rows when a GPU is present), or
// --rows "backbone:res:batch:train|infer[:cpu|cpu-bf16|cuda],...". The BF16 rows (ours with
// --precision bf16, on CPUs with AVX512-BF16) are never timed against the original, which
// runs FP32: their own figures and ours in FP32 are the comparison.
std::vector<Row> bench_rows(bool full, const std::string& only) {
  std::vector<Row> rows = {
      {"resnet50", "train", 224, 8, true, true},   // the main configuration
      {"resnet50", "infer", 224, 16, true, false},
      {"resnet50", "train", 224, 1, true, false},  // linear in batch
      {"resnet50", "train", 224, 2, true, false},
      {"resnet50", "train", 224, 4, true, false},
      {"resnet50", "train", 128, 8, true, false},  // linear in image area
      {"resnet50", "train", 320, 8, true, false},
  };
  if (cpu_bf16_supported()) {
    rows.push_back({"resnet50", "train", 224, 8, false, false, "cpu-bf16"});
    rows.push_back({"resnet50", "infer", 224, 16, false, false, "cpu-bf16"});
  }
  if (full) {
    rows.push_back({"resnet50", "infer", 224, 1, true, false});
    rows.push_back({"resnet50", "infer", 224, 4, true, false});
    rows.push_back({"resnet18", "train", 224, 8, true, false});
    rows.push_back({"resnet18", "infer", 224, 16, true, false});
  }
  if (cuda_available()) {  // the GPU rows (peak MiB is then device memory)
    for (int b : {8, 16, 32, 64}) rows.push_back({"resnet50", "train", 224, b, true, false, "cuda"});
    rows.push_back({"resnet50", "infer", 224, 64, true, false, "cuda"});
  }
  if (!only.empty()) {  // "resnet50:224:8:train,..."
    std::vector<Row> pick;
    size_t pos = 0;
    while (pos <= only.size()) {
      size_t end = only.find(',', pos);
      if (end == std::string::npos) end = only.size();
      std::string spec = only.substr(pos, end - pos);
      char bb[32], md[16], dv[16] = "cpu";
      int res, b;
      const int got = std::sscanf(spec.c_str(), "%31[^:]:%d:%d:%15[^:]:%15s", bb, &res, &b, md, dv);
      if (got < 4 || (std::string(md) != "train" && std::string(md) != "infer") ||
          (std::string(dv) != "cpu" && std::string(dv) != "cuda" && std::string(dv) != "cpu-bf16"))
        throw UsageError("--rows: '" + spec + "' is not backbone:res:batch:train|infer[:cpu|cpu-bf16|cuda]");
      pick.push_back({bb, md, res, b, std::string(dv) != "cpu-bf16", pick.empty() && std::string(md) == "train", dv});
      pos = end + 1;
    }
    rows = pick;
  }
  return rows;
}

// Every row in its own worker processes (ours and the original's, one at a time); a failed row is
// reported in the table, not fatal.
std::vector<RowResult> run_rows(const std::vector<Row>& rows, const std::string& exe, int warmup, int steps,
                                int rounds, const std::vector<std::string>& orig_cmd) {
  std::vector<RowResult> results;
  for (const Row& row : rows) {
    try {
      results.push_back(run_row(row, exe, warmup, steps, rounds, orig_cmd));
    } catch (const std::exception& e) {
      RowResult r;
      r.row = row;
      r.error = e.what();
      std::fprintf(stderr, "%s\n", e.what());
      results.push_back(r);
    }
  }
  return results;
}

// The main table (one line per row); returns the rows as JSON.
json print_table(const std::vector<RowResult>& results, double ceiling) {
  fmt::print("| backbone | res | batch | mode | device | median s/step (min-max) | img/s | GFLOP/s "
             "| % of sgemm ceiling | peak MiB | original img/s | ratio |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  json jrows = json::array();
  for (const auto& r : results) {
    const Row& w = r.row;
    if (!r.error.empty()) {
      fmt::print("| {} | {} | {} | {} | {} | failed: {} | | | | | | |\n", w.backbone, w.res, w.batch, w.mode, w.device,
                 r.error);
      continue;
    }
    const double med = median(r.ours_s);
    const double lo = *std::min_element(r.ours_s.begin(), r.ours_s.end());
    const double hi = *std::max_element(r.ours_s.begin(), r.ours_s.end());
    // GEMM FLOPs are counted on the CPU; a GPU row takes them per image from a CPU row.
    double flop = r.flop;
    if (w.device == "cuda")
      for (const auto& c : results)
        if (c.error.empty() && c.row.device == "cpu" && c.row.backbone == w.backbone && c.row.res == w.res &&
            c.row.mode == w.mode && c.flop > 0)
          flop = c.flop / c.row.batch * w.batch;
    const double ips = w.batch / med, gflops = flop / med / 1e9;
    const double orig_med = median(r.orig_s), orig_ips = orig_med > 0 ? w.batch / orig_med : 0;
    const double ratio = median_ratio(r);
    const std::string ceiling_share = w.device == "cpu" ? fmt::format("{:.0f} %", 100.0 * gflops / ceiling) : "-";
    fmt::print("| {} | {} | {} | {} | {} | {:.3f} ({:.3f}-{:.3f}) | {:.2f} | {} | {} | {:.0f} | {} | {} |\n",
               w.backbone, w.res, w.batch, w.mode, w.device, med, lo, hi, ips, cell(gflops, "{:.0f}"), ceiling_share,
               r.peak_mib, cell(orig_ips, "{:.2f}"), cell(ratio, "{:.2f}x"));
    json jr = json::array();
    for (const Round& d : r.rounds) jr.push_back({{"ours_s", d.ours}, {"original_s", d.orig}, {"load", d.load}});
    jrows.push_back({{"backbone", w.backbone}, {"res", w.res}, {"batch", w.batch}, {"mode", w.mode},
                     {"device", w.device}, {"s", r.ours_s}, {"cpu_s", r.ours_cpu}, {"flop_per_step", flop},
                     {"peak_mib", r.peak_mib}, {"original_s", r.orig_s}, {"original_cpu_s", r.orig_cpu},
                     {"original_peak_mib", r.orig_peak_mib}, {"rounds", jr}, {"median_ratio", ratio}});
  }
  fmt::print("\n");
  return jrows;
}

void print_rounds(const std::vector<RowResult>& results, double fma_peak) {
  // Per round: each side's median s/step of its own run and their ratio; CPU seconds (a check
  // on machine load: on an idle machine CPU seconds are about threads x wall seconds); peaks.
  fmt::print("Per row and round: median s/step of each side's own run (img/s), original/ours; then the median\n"
             "ratio, CPU seconds per step (all threads; about threads x wall on an idle machine) and peak RSS.\n");
  for (const auto& r : results) {
    if (!r.error.empty()) continue;
    const Row& w = r.row;
    fmt::print("  {} {} b{} {} {}:\n", w.backbone, w.res, w.batch, w.mode, w.device);
    for (size_t k = 0; k < r.rounds.size(); ++k) {
      const Round& d = r.rounds[k];
      std::string line = fmt::format("    round {}: ours {:.3f} ({:.2f} img/s)", k + 1, d.ours, w.batch / d.ours);
      if (d.orig > 0)
        line += fmt::format(", original {:.3f} ({:.2f} img/s), ratio {:.2f}x", d.orig, w.batch / d.orig, d.orig / d.ours);
      fmt::print("{}; load {}\n", line, d.load);
    }
    std::string line = fmt::format("    ours: cpu s/step {:.2f}, wall {:.2f}, peak {:.0f} MiB", median(r.ours_cpu),
                                   median(r.ours_s), r.peak_mib);
    if (!r.orig_s.empty())
      line += fmt::format("; original: cpu s/step {:.2f}, wall {:.2f}, peak {:.0f} MiB (ours {:.0f} % of it); median ratio {:.2f}x",
                          median(r.orig_cpu), median(r.orig_s), r.orig_peak_mib, 100.0 * r.peak_mib / r.orig_peak_mib,
                          median_ratio(r));
    fmt::print("{}\n", line);
    // The floor of an FP32 CPU row: its matrix products alone at the FMA peak (nothing else
    // of the step counted), against ours and, with the original, against half its step.
    if (w.device == "cpu" && fma_peak > 0 && r.flop > 0) {
      const double floor_s = r.flop / (fma_peak * 1e9);
      std::string fl = fmt::format("    products: {:.1f} GFLOP per step, {:.3f} s at the FMA peak ({:.0f} % of ours)",
                                   r.flop / 1e9, floor_s, 100.0 * floor_s / median(r.ours_s));
      if (!r.orig_s.empty()) fl += fmt::format("; 2x the original is a step of {:.3f} s", median(r.orig_s) / 2);
      fmt::print("{}\n", fl);
    }
  }
}

void print_linearity(const std::vector<RowResult>& results) {
  // Linearity: seconds per image across batch sizes, and per image scaled to 224x224 area.
  for (const char* dev : {"cpu", "cuda"}) {
    std::string per_img, per_px;
    for (const auto& r : results)
      if (r.error.empty() && r.row.device == dev && r.row.backbone == "resnet50" && r.row.mode == "train") {
        const double s = median(r.ours_s);
        if (r.row.res == 224) per_img += fmt::format(" b{} {:.3f}", r.row.batch, s / r.row.batch);
        if (r.row.batch == 8)
          per_px += fmt::format(" {}px {:.3f}", r.row.res, s / r.row.batch / (double(r.row.res) * r.row.res / 50176.0));
      }
    if (per_img.find(' ', 1) != std::string::npos)
      fmt::print("linearity ({}), train s per image at 224:{}\n", dev, per_img);
    if (per_px.find("px", per_px.find("px") + 1) != std::string::npos)
      fmt::print("linearity ({}), train s per image per 224x224 area, batch 8:{}\n", dev, per_px);
  }
}

// The phase table of each row that measured phases (Medslip::on_phase).
void print_phases(const std::vector<RowResult>& results, int steps) {
  for (const auto& r : results) {
    if (r.phases.is_null()) continue;
    const char* names[] = {"trunk", "patch_mlps", "decoders", "losses", "backward", "optimiser"};
    double total = 0;
    for (auto n : names) total += r.phases[n].get<double>();
    fmt::print("\nphases of one training step, {} {} batch {} (median of {} timed steps{}):\n", r.row.backbone,
               r.row.res, r.row.batch, std::max(2, steps / 2),
               r.phases["matches_model_forward"].get<bool>() ? ", same loss as Medslip::forward"
                                                             : ", WARNING: loss differs from Medslip::forward");
    fmt::print("| phase | s | share |\n|---|---|---|\n");
    for (auto n : names) {
      const double t = r.phases[n].get<double>();
      fmt::print("| {} | {:.3f} | {:.0f} % |\n", n, t, 100.0 * t / total);
    }
    fmt::print("| total | {:.3f} | |\n", total);
  }
}

std::string env_or_unset(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(name) + "=" + v : std::string(name) + " unset";
}

// The thread settings both sides inherit from this process (the workers get its environment).
std::string thread_settings() {
  const char* wp = std::getenv("OMP_WAIT_POLICY");
  return fmt::format("{} per side; {}{}, {}, {}, {}", num_threads(), env_or_unset("OMP_WAIT_POLICY"),
                     wp ? "" : " (libgomp default: a short spin, then sleep)", env_or_unset("GOMP_SPINCOUNT"),
                     env_or_unset("OPENBLAS_NUM_THREADS"), env_or_unset("OPENBLAS_CORETYPE"));
}

int run_driver(bool full, const std::string& official, const std::string& python, int warmup, int steps,
               int rounds, const std::string& only, const std::string& json_out) {
  const std::string exe = self_exe();
  const std::vector<Row> rows = bench_rows(full, only);  // a bad --rows fails before any output
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  fmt::print("medslip bench — {} — {}\n", build_version(), date);
  fmt::print("cpu     {} ({} threads; load average {})\n", cpu_model(), num_threads(), loadavg());
  fmt::print("blas    {}\n", blas_info());
  std::fflush(stdout);
  const double ceiling0 = sgemm_ceiling_gflops();

  std::string orig_note;
  const std::vector<std::string> orig_cmd = original_command(official, python, exe, orig_note);
  if (!orig_cmd.empty()) orig_note = "original: tests/bench_torch.py on " + official + " (" + python + ")";
  fmt::print("{}\n", orig_note);
  fmt::print("threads {}\n", thread_settings());
  fmt::print("          ours: OpenMP (libgomp) loops, oneDNN and OpenBLAS (OpenMP builds) share one pool of OMP_NUM_THREADS threads\n");
  if (!orig_cmd.empty())
    fmt::print("          original: torch.set_num_threads({}) (ATen OpenMP pool; what it reports is printed below the table)\n",
               num_threads());
  if (orig_cmd.empty())
    fmt::print("method  {} round(s) per row, each a whole run of a fresh worker process: {} warm-up + {} timed steps\n\n",
               rounds, warmup, steps);
  else
    fmt::print("method  one process at a time: {} A/B rounds per row, each round a whole run of ours and then of the\n"
               "        original (or the reverse: AB, BA, AB, ...), each run a fresh process doing {} warm-up + {} timed\n"
               "        steps and exiting before the other side starts (the driver waits in a blocking read, nothing\n"
               "        spins); img/s from the median step over all rounds, ratio = median over rounds of\n"
               "        (original median s/step / ours), peak RSS the largest of the rounds\n\n",
               rounds, warmup, steps);
  std::fflush(stdout);

  const std::vector<RowResult> results = run_rows(rows, exe, warmup, steps, rounds, orig_cmd);
  const double ceiling1 = sgemm_ceiling_gflops();
  const double ceiling = std::max(ceiling0, ceiling1);

  const FmaPeak peak = fma_peak_gflops();
  fmt::print("sgemm ceiling (2048^3, {} threads): {:.0f} GFLOP/s before, {:.0f} after; load average now {}\n",
             num_threads(), ceiling0, ceiling1, loadavg());
  if (peak.gflops > 0)
    fmt::print("FP32 FMA peak ({} threads, {} loop): {:.0f} GFLOP/s; the sgemm ceiling is {:.0f} % of it\n\n",
               num_threads(), peak.isa, peak.gflops, 100.0 * ceiling / peak.gflops);
  else
    fmt::print("FP32 FMA peak: not measured (not an x86-64 CPU with AVX2)\n\n");
  const json jrows = print_table(results, ceiling);
  print_rounds(results, peak.gflops);
  for (const auto& r : results)
    if (!r.orig_ready.is_null()) {  // what the original's process says about its threads and libraries
      fmt::print("original's settings: {}\n", r.orig_ready.value("settings", json()).dump());
      break;
    }
  print_linearity(results);
  print_phases(results, steps);
  if (!json_out.empty()) {
    json j = {{"date", date}, {"version", build_version()}, {"cpu", cpu_model()}, {"threads", num_threads()},
              {"blas", blas_info()}, {"sgemm_ceiling_gflops", ceiling}, {"fma_peak_gflops", peak.gflops}, {"rows", jrows}, {"rounds", rounds},
              {"warmup", warmup}, {"steps", steps}, {"threads_settings", thread_settings()}};
    write_file_atomic(json_out, j.dump(1) + "\n");
  }
  int failed = 0;
  for (auto& r : results) failed += !r.error.empty();
  return failed ? 1 : 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  CLI::App app{"Time MeDSLIP training steps and forward passes on synthetic batches and print one table\n"
               "(docs/performance.md). With --official (a clone of Shef-AIRE/MeDSLIP) and python3-torch, the\n"
               "original model is timed too, one process at a time: --rounds A/B rounds of whole runs per row.",
               "medslip bench"};
  bool full = false, worker = false;
  std::string official, python = "/usr/bin/python3", only, json_out;
  int warmup = -1, steps = -1, threads = 0, rounds = 3;
  WorkerArgs w;
  app.add_flag("--full", full, "the full sweep: more steps, inference at batch 1 and 4, ResNet-18 rows");
  app.add_option("--official", official, "git clone of Shef-AIRE/MeDSLIP (a bare clone is enough)");
  app.add_option("--python", python, "python with torch, torchvision and yaml for the original");
  app.add_option("--warmup", warmup, "untimed steps per row (default 1; 2 with --full)");
  app.add_option("--steps", steps, "timed steps per row (default 3; 5 with --full)");
  app.add_option("--rounds", rounds, "A/B rounds per row, each a whole run of each side alone (default 3)")
      ->check(CLI::Range(1, 100));
  app.add_option("--rows", only, "only these rows: backbone:res:batch:train|infer[:cpu|cpu-bf16|cuda],... (none: only the --ranks rows)");
  app.add_option("--json", json_out, "also write the results as JSON");
  app.add_option("--threads", threads, "threads for ours and the original (default: OMP_NUM_THREADS or all cores)");
  int ranks = 0;
  std::string mpi_bin;
  bool dp_worker = false;
  DpBenchArgs dpa;
  app.add_option("--ranks", ranks, "also time data-parallel steps on this many ranks (mpirun of --mpi-bin; docs/distributed.md)");
  app.add_option("--mpi-bin", mpi_bin, "the MPI build for --ranks (default build-mpi/medslip)");
  app.add_flag("--dp-worker", dp_worker, "(internal) one data-parallel bench run")->group("");
  auto* wk = app.add_flag("--worker", worker, "(internal) run one configuration under the driver's protocol");
  wk->group("");
  app.add_option("--backbone", w.backbone, "(worker)")->group("");
  app.add_option("--res", w.res, "(worker)")->group("");
  app.add_option("--batch", w.batch, "(worker)")->group("");
  app.add_option("--mode", w.mode, "(worker)")->group("")->check(CLI::IsMember({"train", "infer"}));
  app.add_option("--device", w.device, "(worker)")->group("")->check(CLI::IsMember({"cpu", "cpu-bf16", "cuda"}));
  MS_PARSE_ARGS(app, argc, argv);
  if (threads > 0) {
    set_num_threads(threads);
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);  // for the workers
  }
  if (worker) return run_worker(w);
  if (dp_worker) {
    dpa.backbone = w.backbone;
    dpa.res = w.res;
    dpa.batch = w.batch;
    if (warmup >= 0) dpa.warmup = warmup;
    if (steps > 0) dpa.steps = steps;
    return run_dp_worker(dpa);
  }
  if (warmup < 0) warmup = full ? 2 : 1;
  if (steps < 1) steps = full ? 5 : 3;
  int rc = only == "none" ? 0 : run_driver(full, official, python, warmup, steps, rounds, only, json_out);
  if (ranks > 1 && rc == 0) {
    DpBenchArgs d;
    d.steps = std::max(steps, 4);
    rc = run_dp_bench(d, ranks, threads > 0 ? threads : ranks, mpi_bin.empty() ? "build-mpi/medslip" : mpi_bin, self_exe());
  }
  return rc;
}

}  // namespace ms
