// Data-parallel training (docs/distributed.md), run for real: `mpirun -np 2` of the MPI build
// ($MEDSLIP_MPI_BIN, which make test sets to build-mpi/medslip) over loopback TCP, against one
// process with accum_steps 2 (bitwise), twice (determinism), rank 0 alone writing, a resume on
// another world size, a kill -9 of one rank, and two network namespaces as two hosts.
// Each case skips with a printed reason where Open MPI (or namespaces) is missing.
// Tiny configs (ResNet-18, 32 px, batch 2): seconds per run.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/io.h"
#include "engine/nn_state.h"
#include "model/config.h"
#include "tests/test_util.h"
#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/finetune.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

// The MPI build and mpirun, or the reason they are not usable here.
std::string mpi_skip_reason() {
  const char* b = std::getenv("MEDSLIP_MPI_BIN");
  if (b && !*b) return "make test found no mpicxx (make deps MPI=1 installs Open MPI)";
  const std::string bin = b ? b : "build-mpi/medslip";
  if (!fs::exists(bin)) return "no MPI build at '" + bin + "' (make MPI=1, or run through make test)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) return "no mpirun on PATH";
  return "";
}
std::string mpi_bin() {
  const char* b = std::getenv("MEDSLIP_MPI_BIN");
  return fs::absolute(b && *b ? b : "build-mpi/medslip").string();
}
#define SKIP_WITHOUT_MPI()                                                     \
  do {                                                                         \
    std::string why_ = mpi_skip_reason();                                      \
    if (!why_.empty()) {                                                       \
      MESSAGE("skipped: " << why_);                                            \
      return;                                                                  \
    }                                                                          \
  } while (0)

// mpirun over loopback TCP only (btl self,tcp on lo), as root, more ranks than cores allowed.
// In a sanitizer build (make test SAN=...) the ranks run without LeakSanitizer: Open MPI 4.1
// leaves allocations of its dlclose'd plugins at exit (ompi_op_base_op_select, <unknown module>),
// which no suppression can name; the same code paths keep LSan in the non-MPI binary. A plain
// build ignores ASAN_OPTIONS.
const char* kMpirun =
    "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" "
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none "
    "--mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo ";

using test::sh;

// Data (synthetic, 32 px) and random books in a folder per set size.
fs::path setup(int n = 40) {
  const fs::path dir = fs::temp_directory_path() / ("medslip_test_dist_" + std::to_string(n));
  test::write_tiny_pretrain_set(dir, n, 32, 16);
  return dir;
}

std::string write_config(const fs::path& dir, const std::string& name, int accum, int max_steps, int epochs = 2) {
  MedslipConfig c = test::tiny_pretrain_config(dir, 32, 2);
  c.epochs = epochs;
  c.max_steps_per_epoch = max_steps;
  c.accum_steps = accum;
  const fs::path p = dir / (name + ".yaml");
  std::ofstream(p) << c.to_yaml();
  return p.string();
}

// Fine-tuning on the tiny set at 32 px: its 16 training rows, its 8 test rows as the validation
// set (one image per validation batch), batch 2.
std::string write_finetune_config(const std::string& root, const fs::path& dir, const std::string& task,
                                  const std::string& name, int accum, int max_steps, int epochs) {
  FinetuneConfig c = test::tiny_finetune_config(root, task, 32);
  c.valid_split = "test";
  c.test_batch_size = 1;
  c.num_workers = 1;
  c.accum_steps = accum;
  c.max_steps_per_epoch = max_steps;
  c.epochs = epochs;
  const fs::path p = dir / (name + ".yaml");
  std::ofstream(p) << c.to_yaml();
  return p.string();
}

std::vector<nlohmann::json> metrics(const fs::path& run, const std::string& type) {
  std::vector<nlohmann::json> v;
  std::ifstream f(run / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == type) {
      j.erase("images_per_s");
      j.erase("seconds");
      v.push_back(j);
    }
  }
  return v;
}

bool is_bn_statistic(const std::string& k) {
  return k.find("running_") != std::string::npos || k.find("num_batches_tracked") != std::string::npos;
}

// Tensors of two checkpoints that differ in any bit (BN running statistics skipped if asked).
std::vector<std::string> differing(const fs::path& a, const fs::path& b, bool skip_bn) {
  auto A = load_safetensors((a / "checkpoint_last.safetensors").string());
  auto B = load_safetensors((b / "checkpoint_last.safetensors").string());
  std::vector<std::string> d;
  for (auto& [k, t] : A) {
    if (skip_bn && is_bn_statistic(k)) continue;
    if (!B.count(k) || B[k].numel() != t.numel() ||
        std::memcmp(t.to_vector().data(), B[k].to_vector().data(), sizeof(float) * size_t(t.numel())) != 0)
      d.push_back(k);
  }
  return d;
}

std::string read(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("train: distributed communicator of one process and the accumulation bookkeeping") {
  auto c = single_process_communicator();
  CHECK(c->world() == 1);
  CHECK(c->rank() == 0);
  Tensor t = Tensor::from_vector({1.f, 2.f}, {2});
  c->allreduce_sum(t, "test");
  CHECK(t.to_vector() == std::vector<float>{1.f, 2.f});
  CHECK(c->allgather({3.0, 4.0}, "test") == std::vector<double>{3.0, 4.0});
  if (!launched_by_mpi_launcher()) CHECK(make_communicator({}, Device::CPU)->world() == 1);
  CHECK_THROWS_WITH_AS(make_communicator({300, "gloo"}, Device::CPU), doctest::Contains("--dist-backend"), std::invalid_argument);
}

TEST_CASE("train: distributed 2 ranks on loopback equal accum_steps 2 bit for bit; deterministic; rank 0 alone writes") {
  SKIP_WITHOUT_MPI();
  const fs::path dir = setup();
  const std::string c1 = write_config(dir, "dp", 1, 2), c2 = write_config(dir, "accum", 2, 2);
  const std::string bin = mpi_bin();
  // Rank 0 and rank 1 in different working folders, the run folder relative: whatever rank 1
  // wrote would land in its own folder.
  for (const char* w : {"a0", "a1", "b0", "b1"}) {
    fs::remove_all(dir / w);
    fs::create_directories(dir / w);
  }
  auto two_ranks = [&](const std::string& w0, const std::string& w1) {
    std::string out;
    const std::string args = " pretrain --config " + c1 + " --out run --threads 1";
    int rc = sh(std::string(kMpirun) + "-np 1 -wdir " + (dir / w0).string() + " " + bin + args + " : -np 1 -wdir " +
                    (dir / w1).string() + " " + bin + args,
                &out);
    INFO(out);
    REQUIRE(rc == 0);
  };
  two_ranks("a0", "a1");
  two_ranks("b0", "b1");
  // One process (the MPI build without a launcher is a plain single process), accum_steps 2.
  fs::remove_all(dir / "one");
  std::string out;
  int rc = sh(bin + " pretrain --config " + c2 + " --out " + (dir / "one").string() + " --threads 1", &out);
  INFO(out);
  REQUIRE(rc == 0);

  const fs::path A = dir / "a0/run", B = dir / "b0/run", one = dir / "one";
  auto steps_a = metrics(A, "step"), steps_one = metrics(one, "step");
  REQUIRE(steps_a.size() == 4);
  // 2 ranks x batch 2 == one process x 2 micro-batches: every loss, lr and step, bit for bit
  // (JSON numbers are the floats' exact decimal round trip) ...
  CHECK(steps_a == steps_one);
  auto ep_a = metrics(A, "epoch"), ep_one = metrics(one, "epoch");
  REQUIRE(ep_a.size() == 2);
  for (size_t e = 0; e < 2; ++e) CHECK(ep_a[e]["train"] == ep_one[e]["train"]);
  // ... and every parameter; BatchNorm running statistics differ by design (DDP keeps rank 0's).
  CHECK(differing(A, one, true).empty());
  CHECK(!differing(A, one, false).empty());
  // Determinism: the same world size twice, everything bit for bit (BN statistics included).
  CHECK(metrics(B, "step") == steps_a);
  CHECK(metrics(B, "epoch") == ep_a);
  CHECK(differing(A, B, false).empty());
  // Rank 0 alone wrote; rank 1's folder is empty.
  CHECK(fs::is_empty(dir / "a1"));
  CHECK(fs::is_empty(dir / "b1"));
  auto rec = nlohmann::json::parse(read(A / "reproducibility.json"));
  CHECK(rec["distributed"]["world_size"] == 2);
  CHECK(rec["distributed"]["launcher"] == "mpirun");
  CHECK(rec["distributed"]["hosts"].size() == 2);
  CHECK(nlohmann::json::parse(read(one / "reproducibility.json"))["distributed"]["accum_steps"] == 2);
  // Validation is reduced over both ranks: each saw a share of the set, the record one mean.
  CHECK(ep_a[0].contains("valid"));
}

TEST_CASE("train: distributed resume of a 2-rank checkpoint on 1 rank continues from the global sample") {
  SKIP_WITHOUT_MPI();
  const fs::path dir = setup();
  const std::string c1 = write_config(dir, "dp", 1, 5);
  const fs::path run = dir / "resume";
  fs::remove_all(run);
  std::string out;
  int rc = sh(std::string(kMpirun) + "-np 2 " + mpi_bin() + " pretrain --config " + c1 + " --out " + run.string() +
                  " --threads 1 --max-steps 3",
              &out);
  INFO(out);
  REQUIRE(rc == 0);
  auto meta = safetensors_metadata((run / "checkpoint_last.safetensors").string());
  CHECK(meta["world_size"] == "2");
  CHECK(meta["epoch_sample"] == "12");  // 3 steps x 2 ranks x batch 2
  rc = sh(mpi_bin() + " pretrain --config " + c1 + " --resume " + run.string() + " --threads 1", &out);
  INFO(out);
  REQUIRE(rc == 0);
  auto steps = metrics(run, "step");
  // Epoch 0: 3 steps on 2 ranks, then 2 on 1 rank (the cap of 5 per epoch); epoch 1: 5.
  REQUIRE(steps.size() == 10);
  CHECK(steps[3]["batch"] == 3);
  CHECK(steps[9]["step"] == 10);
  auto rec = nlohmann::json::parse(read(run / "reproducibility.json"));
  REQUIRE(rec["resumes"].size() == 1);
  CHECK(rec["resumes"][0]["world_size_before"] == 2);
  CHECK(rec["resumes"][0]["world_size"] == 1);
  CHECK(rec["resumes"][0]["epoch_sample"] == 12);
  CHECK(rec["resumes"][0]["note"].get<std::string>().find("changed") != std::string::npos);
}

TEST_CASE("train: distributed kill -9 of one rank stops the other with a named error; the checkpoint resumes") {
  SKIP_WITHOUT_MPI();
  const fs::path dir = setup();
  const std::string cfg = write_config(dir, "fault", 1, 0, 2);  // 7 steps per epoch on 2 ranks
  const fs::path run = dir / "fault_run", log = dir / "fault.log";
  fs::remove_all(run);
  const std::string cmd = std::string(kMpirun) + "-np 2 " + mpi_bin() + " pretrain --config " + cfg + " --out " +
                          run.string() + " --threads 1 --dist-timeout 30 > " + log.string() + " 2>&1";
  pid_t launcher = fork();
  REQUIRE(launcher >= 0);
  if (launcher == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  auto waited = [&](double limit_s, int* status) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < limit_s) {
      if (waitpid(launcher, status, WNOHANG) == launcher) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  // Wait until epoch 0 is checkpointed and epoch 1 has begun, then kill rank 1 (found by its
  // Open MPI rank in /proc/<pid>/environ and the run folder on its command line).
  pid_t victim = -1;
  int status = 0;
  bool ended_early = false;
  const auto t0 = std::chrono::steady_clock::now();
  while (victim < 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 120) {
    if (waitpid(launcher, &status, WNOHANG) == launcher) { ended_early = true; break; }
    bool epoch1 = false;
    for (auto& s : metrics(run, "step")) epoch1 |= s["epoch"] == 1;
    if (epoch1) {
      for (auto& e : fs::directory_iterator("/proc")) {
        const std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string cmdline = read(e.path() / "cmdline"), env = read(e.path() / "environ");
        std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
        if (cmdline.find(run.string()) != std::string::npos && cmdline.find("mpirun") == std::string::npos &&
            env.find(std::string("OMPI_COMM_WORLD_RANK=1") + '\0') != std::string::npos)
          victim = std::stoi(name);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE_MESSAGE(!ended_early, "the run ended before rank 1 could be killed: " << read(log));
  REQUIRE_MESSAGE(victim > 0, "rank 1 not found: " << read(log));
  REQUIRE(kill(victim, SIGKILL) == 0);
  const auto t_kill = std::chrono::steady_clock::now();
  const bool ended = waited(60, &status);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_kill).count();
  if (!ended) kill(-launcher, SIGKILL), waitpid(launcher, &status, 0);
  const std::string text = read(log);
  INFO(text);
  REQUIRE(ended);
  MESSAGE("rank 1 killed; the job ended " << took << " s later");
  CHECK(took < 30);
  CHECK((WIFEXITED(status) ? WEXITSTATUS(status) : 1) != 0);
  // Rank 0's one line names the silent rank and its host. One race is Open MPI's: when rank 0's
  // TCP transport sees the peer's socket close before mpirun's SIGTERM arrives, Open MPI 4.1
  // aborts rank 0 itself (its ob1 error handler ignores MPI_ERRORS_RETURN) before our line;
  // then mpirun's own line names the dead rank and its node. Either way: named, bounded, non-zero.
  const std::string host = nlohmann::json::parse(read(run / "reproducibility.json"))["distributed"]["hosts"][1];
  const bool ours = text.find("medslip: error: rank 0 on ") != std::string::npos &&
                    (text.find("no answer from rank 1 on " + host) != std::string::npos ||
                     text.find("stopped by the launcher") != std::string::npos);
  const bool open_mpi = text.find("process rank 1 with PID") != std::string::npos && text.find("on node " + host) != std::string::npos;
  MESSAGE("reported by " << std::string(ours ? "medslip's line" : open_mpi ? "Open MPI's abort and mpirun's line" : "nobody"));
  CHECK((ours || open_mpi));
  // The last complete checkpoint (end of epoch 0) is intact and resumes on one rank.
  auto meta = safetensors_metadata((run / "checkpoint_last.safetensors").string());
  CHECK(meta["epoch"] == "1");
  std::string out;
  int rc = sh(mpi_bin() + " pretrain --config " + cfg + " --resume " + run.string() + " --threads 1 --max-steps 2", &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("resumed from " + run.string() + "/checkpoint_last.safetensors: epoch 1, batch 0, step 7") != std::string::npos);
  CHECK(safetensors_metadata((run / "checkpoint_last.safetensors").string())["global_step"] == "9");
}

TEST_CASE("train: distributed across two network namespaces (two hosts over TCP) equals loopback") {
  SKIP_WITHOUT_MPI();
  const fs::path dir = setup();
  const std::string c1 = write_config(dir, "dp", 1, 2);
  const fs::path run = dir / "netns";
  fs::remove_all(run);
  std::string out;
  int rc = sh("tests/netns_mpi.sh " + mpi_bin() + " -- pretrain --config " + c1 + " --out " + run.string() + " --threads 1",
              &out);
  if (rc == 77) {
    MESSAGE("skipped: " << out);
    return;
  }
  INFO(out);
  REQUIRE(rc == 0);
  auto rec = nlohmann::json::parse(read(run / "reproducibility.json"));
  CHECK(rec["distributed"]["hosts"] == nlohmann::json::array({"nodea", "nodeb"}));
  // The same numbers as two ranks on one host (the loopback case's run, when it ran first).
  const fs::path loop = dir / "a0/run";
  if (fs::exists(loop / "metrics.jsonl")) {
    CHECK(metrics(run, "step") == metrics(loop, "step"));
    CHECK(differing(run, loop, false).empty());
  } else {
    CHECK(metrics(run, "step").size() == 4);
  }
}

TEST_CASE("train: distributed finetune on 2 ranks equals accum_steps 2 bit for bit; validation over every rank's images") {
  SKIP_WITHOUT_MPI();
  const std::string bin = mpi_bin();
  for (const std::string task : {"classify", "segment"}) {
    CAPTURE(task);
    const std::string root = test::write_tiny_finetune_set("dist_ft_data_" + task, 24, 32);
    const fs::path dir = test::scratch_dir("dist_ft_" + task);
    const std::string c1 = write_finetune_config(root, dir, task, "dp", 1, 2, 2);
    const std::string c2 = write_finetune_config(root, dir, task, "accum", 2, 2, 2);
    for (const char* w : {"a0", "a1"}) fs::create_directories(dir / w);
    // Two ranks in different working folders with a relative run folder: what rank 1 wrote
    // would land in its own folder.
    std::string out;
    const std::string args = " finetune --config " + c1 + " --out run --threads 1";
    int rc = sh(std::string(kMpirun) + "-np 1 -wdir " + (dir / "a0").string() + " " + bin + args + " : -np 1 -wdir " +
                    (dir / "a1").string() + " " + bin + args,
                &out);
    INFO(out);
    REQUIRE(rc == 0);
    rc = sh(bin + " finetune --config " + c2 + " --out " + (dir / "one").string() + " --threads 1 --quiet", &out);
    REQUIRE(rc == 0);

    const fs::path A = dir / "a0/run", one = dir / "one";
    auto steps = metrics(A, "step");
    REQUIRE(steps.size() == 4);
    CHECK(steps == metrics(one, "step"));  // every loss, lr and step, bit for bit
    auto ep = metrics(A, "epoch"), ep_one = metrics(one, "epoch");
    REQUIRE(ep.size() == 2);
    REQUIRE(ep_one.size() == 2);
    for (size_t e = 0; e < 2; ++e) CHECK(ep[e]["train"] == ep_one[e]["train"]);
    CHECK(differing(A, one, true).empty());    // every parameter
    CHECK(!differing(A, one, false).empty());  // BatchNorm statistics: rank 0's (DDP) vs every micro-batch's
    // Rank 0 alone wrote (the run folder, the best checkpoint, valid.jsonl, the test at the end).
    CHECK(fs::is_empty(dir / "a1"));
    CHECK(fs::exists(A / "checkpoint_best.safetensors"));
    CHECK(fs::exists(A / "test/metrics.json"));
    CHECK(nlohmann::json::parse(read(A / "reproducibility.json"))["distributed"]["world_size"] == 2);

    // The last epoch's validation metric is that of the whole validation set scored by one
    // process with the final weights (rank 0's BatchNorm statistics, in checkpoint_last): the
    // ranks' predictions were gathered, not their metrics averaged.
    std::vector<nlohmann::json> valid;
    {
      std::ifstream f(A / "valid.jsonl");
      for (std::string line; std::getline(f, line);) valid.push_back(nlohmann::json::parse(line));
    }
    REQUIRE(valid.size() == 2);
    FinetuneConfig cfg = FinetuneConfig::from_yaml(c1);
    auto model = make_finetune_model(cfg, 0);
    load_module_state(*model, load_safetensors((A / "checkpoint_last.safetensors").string()), true, "checkpoint_last");
    FinetuneDataset vs(cfg.train_file, cfg.csv_options({"test"}));
    REQUIRE(vs.size() == 8);
    FinetuneEvalOptions eo;
    eo.batch_size = 1;
    eo.quiet = true;
    const nlohmann::json whole = evaluate_finetune(*model, vs, cfg.transform_options(), eo);
    const nlohmann::json half = evaluate_finetune(*model, FinetuneDataset(vs, {0, 1, 2, 3}), cfg.transform_options(), eo);
    MESSAGE(task << ": validation " << valid[1]["value"] << ", one process on the whole set " << headline_metric(whole)
                 << ", on rank 0's half " << headline_metric(half));
    CHECK(valid[1]["value"].get<double>() == doctest::Approx(headline_metric(whole)).epsilon(1e-12));
    CHECK(valid[1]["loss"].get<double>() == doctest::Approx(whole["loss"].get<double>()).epsilon(1e-6));
    if (task == "segment") CHECK(valid[1]["miou"].get<double>() == doctest::Approx(whole["miou"].get<double>()).epsilon(1e-12));
    CHECK(ep[1]["metrics"][task == "segment" ? "dice" : "mean_auc"] == valid[1]["value"]);
  }
}

TEST_CASE("train: distributed finetune checkpoint of 2 ranks resumes on 1 rank") {
  SKIP_WITHOUT_MPI();
  const std::string root = test::write_tiny_finetune_set("dist_ft_resume_data", 24, 32);
  const fs::path dir = test::scratch_dir("dist_ft_resume");
  const std::string cfg = write_finetune_config(root, dir, "classify", "c", 1, 3, 2);
  const fs::path run = dir / "run";
  std::string out;
  int rc = sh(std::string(kMpirun) + "-np 2 " + mpi_bin() + " finetune --config " + cfg + " --out " + run.string() +
                  " --threads 1 --max-steps 2",
              &out);
  INFO(out);
  REQUIRE(rc == 0);
  auto meta = safetensors_metadata((run / "checkpoint_last.safetensors").string());
  CHECK(meta["world_size"] == "2");
  CHECK(meta["epoch_sample"] == "8");  // 2 steps x 2 ranks x batch 2
  rc = sh(mpi_bin() + " finetune --config " + cfg + " --resume " + run.string() + " --threads 1", &out);
  REQUIRE(rc == 0);
  auto steps = metrics(run, "step");
  REQUIRE(steps.size() == 6);  // epoch 0: 2 steps on 2 ranks, 1 on 1 rank; epoch 1: 3
  CHECK(steps[2]["batch"] == 2);
  CHECK(steps[5]["step"] == 6);
  auto rec = nlohmann::json::parse(read(run / "reproducibility.json"));
  REQUIRE(rec["resumes"].size() == 1);
  CHECK(rec["resumes"][0]["world_size_before"] == 2);
  CHECK(rec["resumes"][0]["world_size"] == 1);
  CHECK(fs::exists(run / "test/metrics.json"));
}
