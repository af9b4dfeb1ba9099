// Training faults on the synthetic set, through the real binary (build/medslip beside this
// test binary): kill -9 at random moments (during checkpoint writes too) then --resume ends with
// the same weights as an uninterrupted run; a run killed before its first checkpoint restarts
// with one command; a full disk while writing a checkpoint (RLIMIT_FSIZE) is a one-line error
// naming the file with the previous checkpoint intact; a NaN loss or gradient (injected) stops
// with the step and the loss term, or is skipped when asked; a corrupt or truncated checkpoint
// given to --resume or zeroshot is a named error.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "engine/io.h"
#include "engine/rng.h"
#include "model/config.h"
#include "tests/test_util.h"
#include "train/finetune.h"
#include "train/hash.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

fs::path medslip_exe() { return fs::read_symlink("/proc/self/exe").parent_path() / "medslip"; }

std::string slurp_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct Proc {
  pid_t pid = -1;
  fs::path out, err;
};

struct SpawnOptions {
  std::map<std::string, std::string> env;
  long long fsize_limit = -1;  // RLIMIT_FSIZE in bytes (SIGXFSZ ignored: writes fail with EFBIG)
};

// medslip ARGS... with stdout/stderr to files named after `tag` in `dir`.
Proc spawn(const std::vector<std::string>& args, const fs::path& dir, const std::string& tag, const SpawnOptions& so = {}) {
  Proc p;
  p.out = dir / (tag + ".out");
  p.err = dir / (tag + ".err");
  std::vector<std::string> a = {medslip_exe().string()};
  a.insert(a.end(), args.begin(), args.end());
  p.pid = fork();
  if (p.pid == 0) {
    int o = open(p.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(p.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1), dup2(e, 2);
    for (const auto& [k, v] : so.env) setenv(k.c_str(), v.c_str(), 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    if (so.fsize_limit >= 0) {
      signal(SIGXFSZ, SIG_IGN);
      rlimit rl{rlim_t(so.fsize_limit), rlim_t(so.fsize_limit)};
      setrlimit(RLIMIT_FSIZE, &rl);
    }
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return p;
}

int wait_rc(const Proc& p) {
  int st = 0;
  waitpid(p.pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct Result {
  int rc;
  std::string out, err;
};

Result run(const std::vector<std::string>& args, const fs::path& dir, const std::string& tag, const SpawnOptions& so = {}) {
  Proc p = spawn(args, dir, tag, so);
  int rc = wait_rc(p);
  return {rc, slurp_text(p.out), slurp_text(p.err)};
}

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n + (!s.empty() && s.back() != '\n');
}

// The synthetic set, random books and a config whose run is 2 epochs x 3 steps of 4 images.
fs::path setup() {
  static fs::path dir;
  if (!dir.empty()) return dir;
  dir = fs::temp_directory_path() / "medslip_test_faults";
  fs::remove_all(dir);
  test::write_tiny_pretrain_set(dir, 40, 64, 32);
  MedslipConfig c = test::tiny_pretrain_config(dir, 64, 4);
  c.max_steps_per_epoch = 3;
  std::ofstream(dir / "tiny.yaml") << c.to_yaml();
  return dir;
}

std::vector<std::string> pretrain_args(const fs::path& dir, const fs::path& run, bool resume) {
  std::vector<std::string> a = {"pretrain", "--config", (dir / "tiny.yaml").string(), "--out", run.string()};
  if (resume) a.insert(a.end(), {"--resume", run.string()});
  return a;
}

bool same_tensors(const std::string& a, const std::string& b) {
  auto x = load_safetensors_raw(a), y = load_safetensors_raw(b);
  if (x.size() != y.size()) return false;
  for (const auto& [k, t] : x) {
    auto it = y.find(k);
    if (it == y.end() || it->second.dtype != t.dtype || it->second.shape != t.shape || it->second.bytes != t.bytes) return false;
  }
  return true;
}

bool has_tmp(const fs::path& dir) {
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

void copy_run(const fs::path& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}

void flip_byte(const fs::path& p, double where) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const std::streamoff n = f.tellg();
  const std::streamoff at = std::streamoff(double(n) * where);
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ 0x10);
  f.seekp(at);
  f.write(&c, 1);
}

bool usable() {
  if (fs::exists(medslip_exe())) return true;
  MESSAGE("skipping: " << medslip_exe() << " is not built");
  return false;
}

}  // namespace

TEST_CASE("train: faults kill -9 at random moments, then --resume: same weights as an uninterrupted run") {
  if (!usable()) return;
  const fs::path dir = setup();
  const fs::path straight = dir / "straight", killed = dir / "killed";
  fs::remove_all(straight), fs::remove_all(killed);
  const auto t0 = std::chrono::steady_clock::now();
  auto args = pretrain_args(dir, straight, false);
  args.insert(args.end(), {"--checkpoint-every", "1"});
  Result s = run(args, dir, "straight");
  REQUIRE_MESSAGE(s.rc == 0, s.err);
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // 20 kills at moments drawn over the run's length; every run is the same command. A run that
  // finishes before its kill is compared with the uninterrupted one and the folder starts over.
  args = pretrain_args(dir, killed, true);
  args.insert(args.end(), {"--checkpoint-every", "1"});
  Rng rng(2024, 7);
  int kills = 0, during_write = 0, cycles = 0, fresh_starts = 0;
  for (int i = 0; kills < 20 && i < 60; ++i) {
    // The first kill lands before any checkpoint exists; later ones anywhere in a run.
    const double ms = i == 0 ? 30.0 : (0.05 + 0.3 * rng.uniform()) * total_ms;
    Proc p = spawn(args, dir, "kill" + std::to_string(i));
    std::this_thread::sleep_for(std::chrono::microseconds(int64_t(ms * 1000)));
    kill(p.pid, SIGKILL);
    int rc = wait_rc(p);
    fresh_starts += slurp_text(p.out).find("starting from the beginning") != std::string::npos;
    if (rc == 128 + SIGKILL) {
      ++kills;
      if (fs::exists(killed) && has_tmp(killed)) ++during_write;
    } else {
      REQUIRE_MESSAGE(rc == 0, "run " << i << " exited with " << rc << ": " << slurp_text(p.err));
      ++cycles;
      CHECK_MESSAGE(same_tensors((straight / "checkpoint_last.safetensors").string(),
                                 (killed / "checkpoint_last.safetensors").string()),
                    "cycle " << cycles << ": the killed-and-resumed run's final weights differ");
      fs::remove_all(killed);
    }
  }
  Result last = run(args, dir, "kill_final");
  REQUIRE_MESSAGE(last.rc == 0, last.err);
  fresh_starts += last.out.find("starting from the beginning") != std::string::npos;
  MESSAGE(kills << " kills (" << during_write << " left a checkpoint half-written), " << cycles
                << " earlier runs completed and matched, " << fresh_starts << " fresh starts; uninterrupted run "
                << int(total_ms) << " ms");
  CHECK(kills == 20);
  CHECK(fresh_starts >= 1);  // the run killed before its first checkpoint restarted with one command
  CHECK(!has_tmp(killed));
  CHECK_MESSAGE(same_tensors((straight / "checkpoint_last.safetensors").string(), (killed / "checkpoint_last.safetensors").string()),
                "the killed-and-resumed run's final weights differ from the uninterrupted run's");
  auto ma = safetensors_metadata((straight / "checkpoint_last.safetensors").string());
  auto mb = safetensors_metadata((killed / "checkpoint_last.safetensors").string());
  CHECK(ma.at("global_step") == "6");
  CHECK(mb.at("global_step") == "6");
  CHECK(ma.at("payload_sha256") == mb.at("payload_sha256"));
  // metrics.jsonl reads as one run: 6 step lines, steps 1..6 once each.
  std::ifstream mf(killed / "metrics.jsonl");
  std::string line;
  int step_lines = 0;
  while (std::getline(mf, line)) step_lines += line.find("\"type\":\"step\"") != std::string::npos;
  CHECK(step_lines == 6);
}

TEST_CASE("train: faults --resume of a folder with no checkpoint starts from the beginning, saying so") {
  if (!usable()) return;
  const fs::path dir = setup(), r = dir / "fresh";
  fs::remove_all(r);
  fs::create_directories(r);
  auto args = pretrain_args(dir, r, true);
  args.insert(args.end(), {"--max-steps", "1"});
  Result x = run(args, dir, "fresh");
  CHECK_MESSAGE(x.rc == 0, x.err);
  CHECK(x.out.find("no checkpoint there yet") != std::string::npos);
  CHECK(x.out.find("starting from the beginning") != std::string::npos);
  CHECK(fs::exists(r / "checkpoint_last.safetensors"));
  // Another folder named by --resume without a checkpoint is still an error (a typo, not a restart).
  args = {"pretrain", "--config", (dir / "tiny.yaml").string(), "--out", (dir / "other").string(), "--resume",
          (dir / "no_such_run").string()};
  x = run(args, dir, "typo");
  CHECK(x.rc == 1);
  CHECK(x.err.find("no checkpoint") != std::string::npos);
}

TEST_CASE("train: faults disk full while writing a checkpoint: one line naming the file, previous checkpoint intact") {
  if (!usable()) return;
  const fs::path dir = setup(), r = dir / "diskfull";
  fs::remove_all(r);
  auto args = pretrain_args(dir, r, false);
  args.insert(args.end(), {"--max-steps", "2"});
  Result a = run(args, dir, "df0");
  REQUIRE_MESSAGE(a.rc == 0, a.err);
  const std::string ck = (r / "checkpoint_last.safetensors").string();
  const std::string before = sha256_file(ck);
  SpawnOptions so;
  so.fsize_limit = 4 << 20;  // 4 MB: the record and logs fit, a checkpoint does not
  args = pretrain_args(dir, r, true);
  args.insert(args.end(), {"--max-steps", "1"});
  Result b = run(args, dir, "df1", so);
  CHECK(b.rc == 1);
  CHECK_MESSAGE(lines(b.err) == 1, b.err);
  CHECK_MESSAGE(b.err.find(r.string() + "/") != std::string::npos, b.err);
  CHECK_MESSAGE(b.err.find(".safetensors.tmp: write failed") != std::string::npos, b.err);
  CHECK_MESSAGE(b.err.find("File too large") != std::string::npos, b.err);
  CHECK(sha256_file(ck) == before);
  CHECK(!has_tmp(r));
  CHECK(safetensors_metadata(ck).at("global_step") == "2");
  // With room again the same command continues.
  Result c = run(args, dir, "df2");
  CHECK_MESSAGE(c.rc == 0, c.err);
  CHECK(safetensors_metadata(ck).at("global_step") == "3");
}

TEST_CASE("train: faults a non-finite loss or gradient stops with the step and the term, or is skipped") {
  if (!usable()) return;
  const fs::path dir = setup();
  struct Case {
    std::string inject, expect;
  };
  for (const Case& c : {Case{"nan_loss@4", "loss term 'loss_ce_pathology' is nan"},
                        Case{"nan_grad@4", "the gradient of '"}}) {
    CAPTURE(c.inject);
    const fs::path r = dir / ("nan_" + c.inject.substr(4, 4));
    fs::remove_all(r);
    SpawnOptions so;
    so.env["MEDSLIP_FAULT_INJECT"] = c.inject;
    Result x = run(pretrain_args(dir, r, false), dir, "nan", so);
    CHECK(x.rc == 1);
    CHECK_MESSAGE(lines(x.err) == 1, x.err);
    CHECK_MESSAGE(x.err.find("step 4 (epoch 1 batch 1)") != std::string::npos, x.err);
    CHECK_MESSAGE(x.err.find(c.expect) != std::string::npos, x.err);
    CHECK_MESSAGE(x.err.find("the last good checkpoint") != std::string::npos, x.err);
    // The epoch-0 checkpoint (step 3) is kept and resumes.
    CHECK(safetensors_metadata((r / "checkpoint_last.safetensors").string()).at("global_step") == "3");
  }
  // --skip-nonfinite 1: the update is skipped, the run finishes.
  const fs::path r = dir / "nan_skip";
  fs::remove_all(r);
  SpawnOptions so;
  so.env["MEDSLIP_FAULT_INJECT"] = "nan_loss@4";
  auto args = pretrain_args(dir, r, false);
  args.insert(args.end(), {"--skip-nonfinite", "1"});
  Result x = run(args, dir, "nan_skip", so);
  CHECK_MESSAGE(x.rc == 0, x.err);
  CHECK(x.err.find("update skipped (1 of at most 1)") != std::string::npos);
  CHECK(slurp_text(r / "metrics.jsonl").find("\"type\":\"skipped\"") != std::string::npos);
}

TEST_CASE("train: faults a corrupt or truncated checkpoint is a named error for --resume and zeroshot") {
  if (!usable()) return;
  const fs::path dir = setup(), good = dir / "good";
  fs::remove_all(good);
  auto args = pretrain_args(dir, good, false);
  args.insert(args.end(), {"--max-steps", "2"});
  REQUIRE(run(args, dir, "good").rc == 0);
  const std::string name = "checkpoint_last.safetensors";
  auto optim_of = [&](const fs::path& r) { return safetensors_metadata((r / name).string()).at("optimizer"); };

  struct Case {
    std::string what;
    std::function<void(const fs::path&)> damage;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"bit flip in the weights", [&](const fs::path& r) { flip_byte(r / name, 0.6); }, "corrupt checkpoint"},
      {"bit flip in the optimiser state", [&](const fs::path& r) { flip_byte(r / optim_of(r), 0.7); }, "corrupt checkpoint"},
      {"truncated weights", [&](const fs::path& r) { fs::resize_file(r / name, fs::file_size(r / name) / 2); }, name},
      {"optimiser file missing", [&](const fs::path& r) { fs::remove(r / optim_of(r)); }, "is missing"},
  };
  int i = 0;
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const fs::path r = dir / ("bad" + std::to_string(i++));
    copy_run(good, r);
    const std::string before_optim = optim_of(r);
    c.damage(r);
    args = pretrain_args(dir, r, true);
    args.insert(args.end(), {"--max-steps", "1"});
    Result x = run(args, dir, "bad");
    CHECK(x.rc == 1);
    CHECK_MESSAGE(lines(x.err) == 1, x.err);
    CHECK_MESSAGE(x.err.find(r.string()) != std::string::npos, x.err);
    CHECK_MESSAGE(x.err.find(c.expect) != std::string::npos, x.err);
    (void)before_optim;
    if (c.what.find("weights") != std::string::npos) {
      Result z = run({"zeroshot", "--checkpoint", (r / name).string(), "--books", (dir / "books.safetensors").string(), "--csv",
                      (dir / "data/cxr14_test.csv").string(), "--out", (r / "eval").string()},
                     dir, "zs");
      CHECK(z.rc == 1);
      CHECK_MESSAGE(lines(z.err) == 1, z.err);
      CHECK_MESSAGE(z.err.find((r / name).string()) != std::string::npos, z.err);
      CHECK_MESSAGE(z.err.find(c.expect) != std::string::npos, z.err);
    }
  }
}

TEST_CASE("train: faults finetune takes --checkpoint-every and --skip-nonfinite as pretrain does") {
  const std::string root = test::write_tiny_finetune_set("faults_ft_data", 24, 32);
  const fs::path dir = test::scratch_dir("faults_ft");
  FinetuneConfig c = test::tiny_finetune_config(root, "classify", 32);
  c.epochs = 1;  // 16 training rows less the 25 % validation carve-out: 6 steps of 2
  c.test_batch_size = 8;
  std::ofstream(dir / "ft.yaml") << c.to_yaml();
  SpawnOptions nan3;
  nan3.env["MEDSLIP_FAULT_INJECT"] = "nan_grad@3";
  auto args = [&](const std::string& run, const std::string& flag, const std::string& n) {
    return std::vector<std::string>{"finetune", "--config", (dir / "ft.yaml").string(), "--out", (dir / run).string(), flag, n};
  };
  // A NaN gradient at update 3 stops the run; the periodic checkpoint of update 2 is the last good one.
  Result r = run(args("stop", "--checkpoint-every", "2"), dir, "stop", nan3);
  INFO(r.out << r.err);
  CHECK(r.rc == 1);
  CHECK(r.err.find("step 3 (epoch 0 batch 3): the gradient of '") != std::string::npos);
  CHECK(r.err.find("the last good checkpoint " + (dir / "stop").string() + "/checkpoint_last.safetensors is kept") != std::string::npos);
  CHECK(safetensors_metadata((dir / "stop/checkpoint_last.safetensors").string())["global_step"] == "2");
  // --skip-nonfinite 1 skips it and finishes the epoch.
  r = run(args("skip", "--skip-nonfinite", "1"), dir, "skip", nan3);
  CHECK(r.rc == 0);
  CHECK(r.err.find("step 3 (epoch 0 batch 3): the gradient of") != std::string::npos);
  CHECK(r.err.find("update skipped (1 of at most 1)") != std::string::npos);
  const std::string m = slurp_text(dir / "skip/metrics.jsonl");
  CHECK(m.find("\"type\":\"skipped\"") != std::string::npos);
  CHECK(safetensors_metadata((dir / "skip/checkpoint_last.safetensors").string())["global_step"] == "5");
}
