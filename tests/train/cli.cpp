// The command line as a user meets it: every command with a missing, unknown or malformed
// argument exits with code 2 and one line on stderr that says what to do (see --help), and
// a failed command leaves no partial output file. Runs build/medslip (the binary beside
// this test binary) in a shell.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

fs::path medslip_exe() { return fs::read_symlink("/proc/self/exe").parent_path() / "medslip"; }

struct Run {
  int rc = -1;
  std::string out, err;
};

std::string slurp_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

Run run(const std::string& args, const fs::path& dir) {
  const fs::path o = dir / "stdout.txt", e = dir / "stderr.txt";
  std::string cmd = medslip_exe().string() + " " + args + " >" + o.string() + " 2>" + e.string() + " </dev/null";
  int st = std::system(cmd.c_str());
  Run r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = slurp_text(o), r.err = slurp_text(e);
  return r;
}

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n + (!s.empty() && s.back() != '\n');
}

}  // namespace

TEST_CASE("train: cli bad arguments exit 2 with one line saying what to do") {
  if (!fs::exists(medslip_exe())) {
    MESSAGE("skipping: " << medslip_exe() << " is not built");
    return;
  }
  const fs::path dir = ms::test::scratch_dir("cli_args");
  const std::string cfg = "train/configs/demo.yaml";
  const std::vector<std::string> commands = {"inspect", "convert", "books",   "pretrain", "verify",     "zeroshot",
                                             "ground",  "predict", "synth",   "step",     "preprocess", "bench",
                                             "triplets", "report",  "finetune", "finetune-eval"};
  std::vector<std::string> cases = {"", "no-such-command"};
  for (const auto& c : commands) cases.push_back(c + " --no-such-flag");
  // Missing required arguments (verify and bench have none: they would run).
  for (const auto& c : commands)
    if (c != "verify" && c != "bench") cases.push_back(c);
  // Malformed values: CLI11 conversions and checks, and our own checks after parsing.
  cases.push_back("pretrain --config " + cfg + " --threads abc");
  cases.push_back("pretrain --config no/such/config.yaml");
  cases.push_back("zeroshot --checkpoint x --books y --csv z --batch -3");
  cases.push_back("zeroshot --checkpoint x --books y --csv z --dataset mnist");
  cases.push_back("ground --checkpoint x --books y --csv z --query 99");
  cases.push_back("synth --out " + (dir / "s").string() + " --finding-gain 500");
  cases.push_back("preprocess tests/fixtures/images/rgb8.png --out " + (dir / "p.safetensors").string() + " --epoch 1");
  cases.push_back("predict x.png --checkpoint x --books y --threads -2");
  cases.push_back("bench --rows resnet18:64:2:fly");
  cases.push_back("pretrain --config " + cfg + " --device tpu");
  cases.push_back("triplets --reports r.csv --text-columns a --id-column b --out o --test-frac 0.9 --valid-frac 0.2");
  cases.push_back("report " + (dir / "no-such-run").string());
  cases.push_back("report " + dir.string() + " --max-overlays -1");
  for (const auto& args : cases) {
    CAPTURE(args);
    Run r = run(args, dir);
    CHECK_MESSAGE(r.rc == 2, "exit code " << r.rc << ", stderr: " << r.err);
    CHECK_MESSAGE(lines(r.err) == 1, "stderr is not one line: '" << r.err << "'");
    CHECK_MESSAGE(r.err.find("--help") != std::string::npos, "stderr does not point at --help: " << r.err);
    if (args.rfind("bench --rows", 0) != 0) CHECK(r.out.empty());  // bench prints its machine header first
  }
  // --help is not an error.
  for (const auto& c : commands) {
    Run r = run(c + " --help", dir);
    CHECK_MESSAGE(r.rc == 0, c << " --help exit code " << r.rc);
    CHECK(r.out.find("--help") != std::string::npos);
  }
  CHECK(!fs::exists(dir / "p.safetensors"));
  CHECK(!fs::exists(dir / "s"));
}

TEST_CASE("train: cli a failed command leaves no partial output") {
  if (!fs::exists(medslip_exe())) {
    MESSAGE("skipping: " << medslip_exe() << " is not built");
    return;
  }
  const fs::path dir = ms::test::scratch_dir("cli_partial");
  // convert: the pickle is cut short, the output must not exist (nor its temporary).
  const fs::path out = dir / "w.safetensors";
  Run r = run("convert tests/fixtures/weights_truncpickle.pth " + out.string(), dir);
  CHECK(r.rc == 1);
  CHECK(lines(r.err) == 1);
  CHECK(r.err.find("weights_truncpickle.pth") != std::string::npos);
  CHECK(!fs::exists(out));
  CHECK(!fs::exists(out.string() + ".tmp"));
  // preprocess into a folder that does not exist: a one-line error naming the path.
  const fs::path bad = dir / "missing" / "x.safetensors";
  r = run("preprocess tests/fixtures/images/rgb8.png --out " + bad.string(), dir);
  CHECK(r.rc == 1);
  CHECK(lines(r.err) == 1);
  CHECK(r.err.find(bad.string()) != std::string::npos);
  // A successful run leaves exactly its output, no temporary beside it.
  const fs::path good = dir / "ok.safetensors";
  r = run("preprocess tests/fixtures/images/rgb8.png --size 16 --out " + good.string(), dir);
  CHECK(r.rc == 0);
  CHECK(fs::exists(good));
  CHECK(!fs::exists(good.string() + ".tmp"));
}
