#include "train/bench_dp.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/optim.h"
#include "engine/threads.h"
#include "model/medslip.h"
#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/reference_problem.h"

namespace ms {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int run_dp_worker(const DpBenchArgs& a) {
  auto comm = make_communicator({}, Device::CPU);
  MedslipConfig cfg;
  cfg.res_base_model = a.backbone;
  cfg.image_res = a.res;
  cfg.batch_size = a.batch;
  const int64_t T = 768;
  Rng text(7, 11);
  Tensor pbook = Tensor::empty({kNumPathologies, T}), abook = Tensor::empty({kNumAnatomies, T});
  text.fill_normal(pbook.data(), pbook.numel());
  text.fill_normal(abook.data(), abook.numel());
  Medslip model(cfg, T, 7);
  model.set_books(pbook, abook);
  model.train();
  AdamW opt(decay_groups(model, 0.02f), 1e-4f);
  DataParallel dp(*comm, model, 1);
  dp.broadcast_state("bench start");
  MedslipBatch batch = reference_batch(a.batch, a.res, 7 + uint64_t(comm->rank()));  // each rank its own images
  std::vector<double> step_s, comm_s;
  for (int i = 0; i < a.warmup + a.steps; ++i) {
    const auto t0 = Clock::now();
    dp.broadcast_buffers("bench buffers");
    opt.zero_grad();
    MedslipLosses L = model.losses(model.forward(batch.image), batch);
    L.total.backward();
    dp.add_micro_gradients(0);
    const double c = dp.reduce_gradients("bench all-reduce");
    opt.step();
    dp.mean_over_micro_batches({{L.total.item()}}, "bench losses");
    if (i >= a.warmup) {
      step_s.push_back(since(t0));
      comm_s.push_back(c);
    }
  }
  if (comm->is_root()) {
    nlohmann::json j = {{"ranks", comm->world()}, {"threads", num_threads()}, {"step_s", median(step_s)},
                        {"allreduce_s", median(comm_s)}, {"images_per_update", a.batch * comm->world()},
                        {"gradient_floats", dp.gradient_floats()}, {"params", model.num_parameters()}};
    std::printf("@dp %s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

int run_dp_bench(const DpBenchArgs& a, int ranks, int threads, const std::string& mpi_bin, const std::string& self_exe) {
  auto run = [&](const std::string& cmd) -> nlohmann::json {
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return nullptr;
    nlohmann::json j;
    std::string all;
    char line[4096];
    while (std::fgets(line, sizeof line, p)) {
      all += line;
      if (std::string(line).rfind("@dp ", 0) == 0) j = nlohmann::json::parse(line + 4);
    }
    if (pclose(p) != 0 || j.is_null()) {
      std::fprintf(stderr, "bench: '%s' failed:\n%s", cmd.c_str(), all.c_str());
      return nullptr;
    }
    return j;
  };
  const std::string args = fmt::format(" bench --dp-worker --backbone {} --res {} --batch {} --warmup {} --steps {}", a.backbone,
                                       a.res, a.batch, a.warmup, a.steps);
  fmt::print("\nData-parallel training steps: {} {} px, batch {} per rank, median of {} steps (CPU; the all-reduce is\n"
             "the fixed-order MPI one of docs/distributed.md, over loopback TCP). Timings on a shared machine are noisy.\n",
             a.backbone, a.res, a.batch, a.steps);
  std::vector<std::pair<std::string, nlohmann::json>> rows;
  rows.push_back({"1 rank x 1 thread", run("OMP_NUM_THREADS=1 " + self_exe + args)});
  rows.push_back({fmt::format("1 rank x {} threads", threads), run(fmt::format("OMP_NUM_THREADS={} ", threads) + self_exe + args)});
  if (mpi_bin.empty() || !std::filesystem::exists(mpi_bin) || std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    fmt::print("  ({} ranks: skipped — no MPI build (make MPI=1) or no mpirun)\n", ranks);
  } else {
    rows.push_back({fmt::format("{} ranks x 1 thread", ranks),
                    run(fmt::format("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 mpirun "
                                    "--oversubscribe --bind-to none --mca btl self,tcp --mca btl_tcp_if_include lo "
                                    "--mca oob_tcp_if_include lo -x OMP_NUM_THREADS -np {} ",
                                    ranks) + mpi_bin + args)});
  }
  fmt::print("{:<22} {:>10} {:>9} {:>14} {:>10} {:>12}\n", "row", "step ms", "img/s", "all-reduce ms", "share", "efficiency");
  double base = 0;  // images/s of 1 rank x 1 thread
  for (auto& [name, j] : rows) {
    if (j.is_null()) {
      fmt::print("{:<22} failed (see above)\n", name);
      continue;
    }
    const double s = j["step_s"], c = j["allreduce_s"], ips = j["images_per_update"].get<double>() / s;
    const int used = std::max(j["ranks"].get<int>(), j["threads"].get<int>());
    if (base == 0) base = ips;
    fmt::print("{:<22} {:>10.1f} {:>9.2f} {:>14.2f} {:>9.1f}% {:>11.0f}%\n", name, s * 1e3, ips, c * 1e3, 100 * c / s,
               100 * ips / (base * used));
    if (j["ranks"].get<int>() > 1)
      fmt::print("  all-reduce of {} floats ({:.1f} MiB) per step; efficiency = img/s / ({} x the 1x1 row)\n",
                 j["gradient_floats"].get<int64_t>(), j["gradient_floats"].get<double>() * 4 / 1048576.0, used);
  }
  return 0;
}

}  // namespace ms
