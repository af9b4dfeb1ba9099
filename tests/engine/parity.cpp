// Engine parity with PyTorch: every op family, a conv+BN+pool block (train and eval), the fine-tuning
// ops (conv_transpose2d, DiceBCE, a U-Net up-block), nn.MultiheadAttention,
// three AdamW steps and the reference's LR schedule, against the fixtures that tests/make_fixtures.py
// (section engine) writes. Errors are relative L2 per tensor; thresholds and reasons in tests/tolerances.h.
//
// Per-op case convention (make_fixtures.py): CASE.in.K inputs, CASE.out{j} outputs with upstream
// gradients CASE.R{j}, loss = sum_j sum(out_j * R_j), CASE.grad.K = dloss/dK for the inputs that take one.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

using namespace ms;

namespace {

constexpr const char* kFixtureVersion = "1";  // make_fixtures.py FIXTURE_VERSION

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// %.<digits>g, so a message's precision does not leak into doctest's shared stream.
std::string num(double v, int digits = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// One fixture file, loaded exactly as stored. Accessors throw naming the file and key.
struct Fixture {
  std::string path;
  std::map<std::string, FileTensor> t;

  explicit Fixture(const std::string& name) : path(test::fixture(name).string()) {
    if (!std::filesystem::exists(path))
      throw std::runtime_error(path + ": missing fixture (run `make fixtures`, section engine)");
    auto meta = safetensors_metadata(path);
    if (meta["fixture_version"] != kFixtureVersion)
      throw std::runtime_error(path + ": fixture_version '" + meta["fixture_version"] + "', expected '" +
                               kFixtureVersion + "' (re-run `make fixtures`)");
    t = load_safetensors_raw(path);
  }
  bool has(const std::string& k) const { return t.count(k) > 0; }
  const FileTensor& raw(const std::string& k) const {
    auto it = t.find(k);
    if (it == t.end()) throw std::runtime_error(path + ": no tensor '" + k + "' (re-run `make fixtures`)");
    return it->second;
  }
  Tensor f(const std::string& k) const { return raw(k).to_float(); }
  std::vector<int64_t> i64(const std::string& k) const { return raw(k).to_i64(); }
  std::vector<uint8_t> mask(const std::string& k) const {
    std::vector<uint8_t> m;
    for (int64_t v : i64(k)) m.push_back(v ? 1 : 0);
    return m;
  }
  std::vector<double> f64(const std::string& k) const { return raw(k).to_f64(); }
  // Tensors under "prefix" with the prefix removed (a state_dict stored as CASE.sd.<torch key>).
  std::map<std::string, Tensor> sub(const std::string& prefix) const {
    std::map<std::string, Tensor> out;
    for (auto& [k, v] : t)
      if (starts_with(k, prefix)) out[k.substr(prefix.size())] = v.to_float();
    return out;
  }
  // Case names (text before the first '.') that start with `family`.
  std::set<std::string> cases(const std::string& family) const {
    std::set<std::string> out;
    for (auto& [k, v] : t)
      if (starts_with(k, family)) out.insert(k.substr(0, k.find('.')));
    return out;
  }
};

// Compares and keeps the worst share of tolerance for a one-line summary per family.
struct Tally {
  std::string family;
  double worst_share = 0;
  std::string worst_name;
  int tensors = 0;

  explicit Tally(std::string fam) : family(std::move(fam)) {}

  void check(const std::string& name, const Tensor& ours, const Tensor& ref, double tol) {
    ++tensors;
    if (!ours.defined()) {
      FAIL_CHECK(name << ": no value (no gradient reached this tensor)");
      return;
    }
    test::compare(name, ours, ref, tol);
    if (ours.shape() != ref.shape()) return;
    double share = test::compare_values(ours.to_vector(), ref.to_vector()).rel_l2 / tol;
    if (!(share <= worst_share)) worst_share = share, worst_name = name;  // NaN sticks
  }
  void summary() const {
    MESSAGE("engine parity " << family << ": " << tensors << " tensors, worst " << num(100 * worst_share)
                             << "% of its tolerance (" << worst_name << ")");
  }
};

Tensor sum_products(const std::vector<Tensor>& outs, const std::vector<Tensor>& rs) {
  Tensor loss;
  for (size_t j = 0; j < outs.size(); ++j) {
    Tensor s = sum(mul(outs[j], rs[j]));
    loss = loss.defined() ? add(loss, s) : s;
  }
  return loss;
}

using Inputs = std::map<std::string, Tensor>;
using CaseFn = std::function<std::vector<Tensor>(const Inputs&)>;

// Runs the per-op cases of one family and checks that the fixture holds no case it did not run.
struct CaseRunner {
  const Fixture& fx;
  std::string family;  // case-name prefix, e.g. "ew_"
  std::set<std::string> done;
  Tally tally;

  CaseRunner(const Fixture& f, const std::string& fam) : fx(f), family(fam), tally(fam) {}

  void run(const std::string& name, const CaseFn& fn, double fwd_tol = tol::kForward, double grad_tol = tol::kOpGrad) {
    done.insert(name);
    try {
      Inputs in;
      const std::string pin = name + ".in.";
      for (auto& [k, v] : fx.sub(pin)) {
        Tensor leaf = v;
        if (fx.has(name + ".grad." + k)) leaf.requires_grad_(true);
        in[k] = leaf;
      }
      if (in.empty()) throw std::runtime_error(fx.path + ": case '" + name + "' has no inputs");
      std::vector<Tensor> outs = fn(in), rs;
      for (size_t j = 0; j < outs.size(); ++j) rs.push_back(fx.f(name + ".R" + std::to_string(j)));
      if (fx.has(name + ".out" + std::to_string(outs.size())))
        throw std::runtime_error("case '" + name + "': the fixture has more outputs than " +
                                 std::to_string(outs.size()));
      sum_products(outs, rs).backward();
      for (size_t j = 0; j < outs.size(); ++j) {
        const std::string o = ".out" + std::to_string(j);
        tally.check(name + o, outs[j], fx.f(name + o), fwd_tol);
      }
      for (auto& [k, leaf] : in) {
        if (!leaf.requires_grad()) continue;
        Tensor g = leaf.grad();
        if (!g.defined()) g = Tensor::zeros(leaf.shape());  // no path: torch's grad is zero too
        tally.check(name + ".grad." + k, g, fx.f(name + ".grad." + k), grad_tol);
      }
    } catch (const std::exception& e) {
      FAIL_CHECK(name << ": threw " << e.what());
    }
  }
  // Every case of the family in the fixture must have run (a new Python case needs a C++ twin).
  void finish() {
    for (const auto& c : fx.cases(family))
      CHECK_MESSAGE(done.count(c), fx.path << ": case '" << c << "' is not exercised by tests/engine/parity.cpp");
    tally.summary();
  }
};

Tensor in_or_undef(const Inputs& in, const std::string& k) {
  auto it = in.find(k);
  return it == in.end() ? Tensor() : it->second;
}

}  // namespace

// ---- op families (engine_ops.safetensors) ---------------------------------------------------

TEST_CASE("engine: parity elementwise with broadcasting") {
  Fixture fx("engine_ops.safetensors");
  CaseRunner r(fx, "ew_");
  auto un = [&](const char* name, Tensor (*op)(const Tensor&)) {
    r.run(name, [op](const Inputs& in) { return std::vector<Tensor>{op(in.at("a"))}; });
  };
  auto bin = [&](const char* name, Tensor (*op)(const Tensor&, const Tensor&)) {
    r.run(name, [op](const Inputs& in) { return std::vector<Tensor>{op(in.at("a"), in.at("b"))}; });
  };
  bin("ew_add", add);
  bin("ew_sub", sub);
  bin("ew_mul", mul);
  bin("ew_div", div);
  bin("ew_div_bcast_a", div);
  r.run("ew_square", [](const Inputs& in) { return std::vector<Tensor>{mul(in.at("a"), in.at("a"))}; });
  r.run("ew_add_scalar", [](const Inputs& in) { return std::vector<Tensor>{add(in.at("a"), 1.5f)}; });
  r.run("ew_mul_scalar", [](const Inputs& in) { return std::vector<Tensor>{mul(in.at("a"), -0.7f)}; });
  r.run("ew_rsub", [](const Inputs& in) { return std::vector<Tensor>{rsub(2.0f, in.at("a"))}; });
  r.run("ew_pow", [](const Inputs& in) { return std::vector<Tensor>{pow(in.at("a"), 2.5f)}; });
  r.run("ew_pow2", [](const Inputs& in) { return std::vector<Tensor>{pow(in.at("a"), 2.0f)}; });
  un("ew_neg", neg);
  un("ew_exp", exp);
  un("ew_log", log);
  un("ew_sqrt", sqrt);
  un("ew_rsqrt", rsqrt);
  un("ew_relu", relu);
  un("ew_gelu", gelu);
  un("ew_tanh", tanh);
  un("ew_sigmoid", sigmoid);
  r.finish();
}

TEST_CASE("engine: parity reductions") {
  Fixture fx("engine_ops.safetensors");
  CaseRunner r(fx, "red_");
  using V = std::vector<Tensor>;
  r.run("red_sum_all", [](const Inputs& in) { return V{sum(in.at("a"))}; });
  r.run("red_mean_all", [](const Inputs& in) { return V{mean(in.at("a"))}; });
  r.run("red_sum_d1_keep", [](const Inputs& in) { return V{sum(in.at("a"), 1, true)}; });
  r.run("red_sum_dm1", [](const Inputs& in) { return V{sum(in.at("a"), -1)}; });
  r.run("red_mean_d0", [](const Inputs& in) { return V{mean(in.at("a"), 0)}; });
  r.run("red_mean_d2_keep", [](const Inputs& in) { return V{mean(in.at("a"), 2, true)}; });
  r.run("red_max_d1", [](const Inputs& in) { return V{max(in.at("a"), 1)}; });
  r.run("red_max_dm1_keep", [](const Inputs& in) { return V{max(in.at("a"), -1, true)}; });
  r.finish();
}

TEST_CASE("engine: parity matmul and linear") {
  Fixture fx("engine_ops.safetensors");
  CaseRunner r(fx, "mm_");
  using V = std::vector<Tensor>;
  r.run("mm_2d", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"))}; });
  r.run("mm_batched", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"))}; });
  r.run("mm_ta", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"), true, false)}; });
  r.run("mm_tb", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"), false, true)}; });
  r.run("mm_tab_2d", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"), true, true)}; });
  r.run("mm_shared_b", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"))}; });
  r.run("mm_shared_b_tb", [](const Inputs& in) { return V{matmul(in.at("a"), in.at("b"), false, true)}; });
  r.run("mm_linear", [](const Inputs& in) { return V{linear(in.at("x"), in.at("w"), in.at("b"))}; });
  r.run("mm_linear_nobias", [](const Inputs& in) { return V{linear(in.at("x"), in.at("w"))}; });
  r.finish();
}

TEST_CASE("engine: parity shape ops") {
  Fixture fx("engine_ops.safetensors");
  CaseRunner r(fx, "sh_");
  using V = std::vector<Tensor>;
  r.run("sh_reshape", [](const Inputs& in) { return V{in.at("a").reshape({3, 4})}; });
  r.run("sh_permute", [](const Inputs& in) { return V{permute(in.at("a"), {2, 0, 1})}; });
  r.run("sh_transpose", [](const Inputs& in) { return V{transpose(in.at("a"), 0, 2)}; });
  r.run("sh_concat1", [](const Inputs& in) { return V{concat({in.at("a"), in.at("b"), in.at("c")}, 1)}; });
  r.run("sh_concat0", [](const Inputs& in) { return V{concat({in.at("a"), in.at("b")}, 0)}; });
  r.run("sh_narrow", [](const Inputs& in) { return V{narrow(in.at("a"), 1, 1, 3)}; });
  auto idx0 = fx.i64("sh_index_select0.idx");
  r.run("sh_index_select0", [&](const Inputs& in) { return V{index_select(in.at("a"), 0, idx0)}; });
  auto idx1 = fx.i64("sh_index_select1.idx");
  r.run("sh_index_select1", [&](const Inputs& in) { return V{index_select(in.at("a"), 1, idx1)}; });
  auto ids = fx.i64("sh_embedding.idx");
  Shape ids_shape = fx.raw("sh_embedding.idx").shape;
  r.run("sh_embedding", [&](const Inputs& in) { return V{embedding(in.at("w"), ids, ids_shape)}; });
  auto m_sel = fx.mask("sh_masked_select.mask");
  r.run("sh_masked_select", [&](const Inputs& in) { return V{masked_select(in.at("a"), m_sel)}; });
  auto m_where = fx.mask("sh_where.mask");
  r.run("sh_where", [&](const Inputs& in) { return V{where(m_where, in.at("a"), in.at("b"))}; });
  auto m_fill = fx.mask("sh_masked_fill.mask");
  r.run("sh_masked_fill", [&](const Inputs& in) { return V{masked_fill(in.at("a"), m_fill, -2.5f)}; });
  r.run("sh_expand", [](const Inputs& in) { return V{expand(in.at("a"), {2, 3, 4})}; });
  r.finish();
}

TEST_CASE("engine: parity softmax and layer_norm") {
  Fixture fx("engine_ops.safetensors");
  using V = std::vector<Tensor>;
  CaseRunner r(fx, "sm_");
  r.run("sm_softmax_last", [](const Inputs& in) { return V{softmax(in.at("a"), -1)}; });
  r.run("sm_softmax_d1", [](const Inputs& in) { return V{softmax(in.at("a"), 1)}; });
  r.run("sm_log_softmax_last", [](const Inputs& in) { return V{log_softmax(in.at("a"), -1)}; });
  r.run("sm_log_softmax_d0", [](const Inputs& in) { return V{log_softmax(in.at("a"), 0)}; });
  auto m = fx.mask("sm_softmax_neginf.mask");
  r.run("sm_softmax_neginf", [&](const Inputs& in) { return V{softmax(masked_fill(in.at("a"), m, -INFINITY), -1)}; });
  r.finish();
  CaseRunner ln(fx, "ln_");
  ln.run("ln_affine", [](const Inputs& in) { return V{layer_norm(in.at("x"), in.at("w"), in.at("b"), 1e-5f)}; });
  ln.run("ln_plain_eps12", [](const Inputs& in) { return V{layer_norm(in.at("x"), Tensor(), Tensor(), 1e-12f)}; });
  ln.finish();
}

TEST_CASE("engine: parity masked losses") {
  Fixture fx("engine_ops.safetensors");
  CaseRunner r(fx, "loss_");
  using V = std::vector<Tensor>;
  for (const char* c : {"loss_ce_mask", "loss_ce_allmasked"}) {
    auto target = fx.i64(std::string(c) + ".idx");
    auto valid = fx.mask(std::string(c) + ".mask");
    r.run(c, [&](const Inputs& in) { return V{cross_entropy(in.at("x"), target, valid)}; });
  }
  for (const char* c : {"loss_bce_mask", "loss_bce_allmasked"}) {
    auto valid = fx.mask(std::string(c) + ".mask");
    r.run(c, [&](const Inputs& in) { return V{bce_with_logits(in.at("x"), in.at("t"), valid)}; });
  }
  r.finish();
  // All-masked: exactly 0 (not NaN), with a zero gradient (spec B.6.5).
  Tensor x = fx.f("loss_ce_allmasked.in.x").requires_grad_(true);
  Tensor l = cross_entropy(x, fx.i64("loss_ce_allmasked.idx"), fx.mask("loss_ce_allmasked.mask"));
  CHECK(l.item() == 0.f);
}

// ---- convolution, pooling, conv+BN block (engine_conv.safetensors) ---------------------------

TEST_CASE("engine: parity conv2d and pooling") {
  Fixture fx("engine_conv.safetensors");
  using V = std::vector<Tensor>;
  CaseRunner r(fx, "conv_");
  for (const auto& c : fx.cases("conv_")) {
    auto geom = fx.i64(c + ".geom");  // stride, padding
    r.run(c, [&](const Inputs& in) {
      return V{conv2d(in.at("x"), in.at("w"), in_or_undef(in, "b"), geom[0], geom[1])};
    });
  }
  r.finish();
  CaseRunner p(fx, "pool_");
  p.run("pool_max_3_2_1", [](const Inputs& in) { return V{max_pool2d(in.at("x"), 3, 2, 1)}; });
  p.run("pool_max_3_2_1_even", [](const Inputs& in) { return V{max_pool2d(in.at("x"), 3, 2, 1)}; });
  p.run("pool_adapt_1x1", [](const Inputs& in) { return V{adaptive_avg_pool2d(in.at("x"), 1, 1)}; });
  p.run("pool_adapt_3x2", [](const Inputs& in) { return V{adaptive_avg_pool2d(in.at("x"), 3, 2)}; });
  p.finish();
}

namespace {

// torch.nn.Sequential(Conv2d(3,8,7,2,3,bias=False), BatchNorm2d(8), ReLU, MaxPool2d(3,2,1), AdaptiveAvgPool2d(1)):
// the ResNet stem plus the pooling head, under the Sequential's state_dict names "0.*" and "1.*".
struct StemBlock : nn::Module {
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  explicit StemBlock(Rng& init) {
    conv = register_module("0", std::make_shared<nn::Conv2d>(3, 8, 7, 2, 3, false, init));
    bn = register_module("1", std::make_shared<nn::BatchNorm2d>(8));
  }
  std::vector<Tensor> forward(const Tensor& x) {
    Tensor feat = max_pool2d(relu(bn->forward(conv->forward(x))), 3, 2, 1);  // [N,8,H/4,W/4]
    return {feat, adaptive_avg_pool2d(feat, 1, 1)};                          // [N,8,1,1]
  }
};

void check_block(const std::string& name, bool training) {
  Fixture fx("engine_conv.safetensors");
  Tally tally(name);
  Rng init(1);
  StemBlock block(init);
  block.load_state_dict(fx.sub(name + ".sd."));
  block.train(training);
  Tensor x = fx.f(name + ".in.x").requires_grad_(true);
  std::vector<Tensor> outs = block.forward(x);
  sum_products(outs, {fx.f(name + ".R0"), fx.f(name + ".R1")}).backward();
  tally.check(name + ".out0 (maxpool)", outs[0], fx.f(name + ".out0"), tol::kForward);
  tally.check(name + ".out1 (avgpool)", outs[1], fx.f(name + ".out1"), tol::kForward);
  tally.check(name + ".grad.x", x.grad(), fx.f(name + ".grad.x"), tol::kOpGrad);
  for (auto& [k, p] : block.named_parameters())
    tally.check(name + ".grad." + k, p.grad(), fx.f(name + ".grad." + k), tol::kOpGrad);
  // Running statistics: updated with momentum and the unbiased variance in train mode, untouched in eval.
  auto check_stats = [&](const std::string& when) {
    for (auto [stat, t] : {std::pair<const char*, Tensor>{"1.running_mean", block.bn->running_mean},
                           std::pair<const char*, Tensor>{"1.running_var", block.bn->running_var}})
      tally.check(name + when + stat, t, fx.f(name + when + stat), tol::kRunningStats);
    CHECK(block.bn->num_batches_tracked.item() == float(fx.i64(name + when + "1.num_batches_tracked")[0]));
  };
  check_stats(".after.");
  {
    NoGradGuard ng;
    Tensor second = block.forward(fx.f(name + ".in.x2"))[1];  // [N,8,1,1]
    tally.check(name + ".out_second", second, fx.f(name + ".out_second"), tol::kForward);
  }
  check_stats(".after2.");
  tally.summary();
}

}  // namespace

TEST_CASE("engine: parity conv+batchnorm+relu+maxpool+avgpool block, train mode") { check_block("block_train", true); }
TEST_CASE("engine: parity conv+batchnorm+relu+maxpool+avgpool block, eval mode") { check_block("block_eval", false); }

// ---- fine-tuning ops: conv_transpose2d, DiceBCE, a U-Net up-block (engine_finetune.safetensors) ---

TEST_CASE("engine: parity conv_transpose2d and the DiceBCE loss") {
  Fixture fx("engine_finetune.safetensors");
  using V = std::vector<Tensor>;
  CaseRunner r(fx, "deconv_");
  for (const auto& c : fx.cases("deconv_")) {
    auto geom = fx.i64(c + ".geom");  // stride, padding
    r.run(c, [&](const Inputs& in) {
      return V{conv_transpose2d(in.at("x"), in.at("w"), in_or_undef(in, "b"), geom[0], geom[1])};
    });
  }
  r.finish();
  CaseRunner d(fx, "dicebce_");
  for (const auto& c : fx.cases("dicebce_")) {
    const float smooth = float(fx.f64(c + ".smooth")[0]);
    d.run(c, [&](const Inputs& in) { return V{dice_bce_loss(in.at("x"), in.at("t"), smooth)}; });
  }
  d.finish();
}

namespace {

// resunet.py's ConvBlock (Conv3x3 + BN + ReLU) and UpBlockForUNetWithResNet50 (ConvTranspose2d
// k2 s2, cat with the skip, two ConvBlocks), plus the head's Conv1d 1x1, under the reference's names.
struct ConvBlock : nn::Module {
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  ConvBlock(int64_t cin, int64_t cout, Rng& init) {
    conv = register_module("conv", std::make_shared<nn::Conv2d>(cin, cout, 3, 1, 1, true, init));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(cout));
  }
  Tensor forward(const Tensor& x) const { return relu(bn->forward(conv->forward(x))); }
};

struct UpNet : nn::Module {
  std::shared_ptr<nn::ConvTranspose2d> upsample;
  std::shared_ptr<ConvBlock> block1, block2;
  std::shared_ptr<nn::Conv1d> seg_classifier;
  explicit UpNet(Rng& init) {
    auto up = register_module("up", std::make_shared<nn::Module>());
    upsample = up->register_module("upsample", std::make_shared<nn::ConvTranspose2d>(8, 6, 2, 2, 0, true, init));
    block1 = up->register_module("conv_block_1", std::make_shared<ConvBlock>(6 + 3, 6, init));
    block2 = up->register_module("conv_block_2", std::make_shared<ConvBlock>(6, 6, init));
    seg_classifier = register_module("seg_classifier", std::make_shared<nn::Conv1d>(6, 1, 1, 1, true, init));
  }
  Tensor forward(const Tensor& up_x, const Tensor& down_x) const {
    Tensor o = block2->forward(block1->forward(concat({upsample->forward(up_x), down_x}, 1)));  // (N, 6, 2H, 2W)
    const int64_t N = o.size(0), H = o.size(2), W = o.size(3);
    return seg_classifier->forward(o.reshape({N, 6, H * W})).reshape({N, 1, H, W});          // (N, 1, 2H, 2W)
  }
};

}  // namespace

TEST_CASE("engine: parity U-Net up-block + Conv1d head + DiceBCE, train mode (spec E.6)") {
  Fixture fx("engine_finetune.safetensors");
  const std::string name = "upblock";
  Tally tally(name);
  Rng init(4);
  UpNet net(init);
  net.load_state_dict(fx.sub(name + ".sd."));  // strict: every reference name must exist here
  net.train();
  Tensor up_x = fx.f(name + ".in.up_x").requires_grad_(true), down_x = fx.f(name + ".in.down_x").requires_grad_(true);
  Tensor logits = net.forward(up_x, down_x);
  Tensor loss = dice_bce_loss(logits, fx.f(name + ".mask"));
  loss.backward();
  tally.check(name + ".logits", logits, fx.f(name + ".logits"), tol::kForward);
  tally.check(name + ".loss", loss, fx.f(name + ".loss"), tol::kForward);
  tally.check(name + ".grad.up_x", up_x.grad(), fx.f(name + ".grad.up_x"), tol::kOpGrad);
  tally.check(name + ".grad.down_x", down_x.grad(), fx.f(name + ".grad.down_x"), tol::kOpGrad);
  auto params = net.named_parameters();
  CHECK(params.size() == 12);  // upsample 2, two ConvBlocks x (conv 2 + bn 2), seg_classifier 2
  auto rms = [](const Tensor& t) {
    double ss = 0;
    for (float v : t.to_vector()) ss += double(v) * v;
    return std::sqrt(ss / double(std::max<int64_t>(t.numel(), 1)));
  };
  for (auto& [k, p] : params) {
    const std::string key = name + ".grad." + k;
    if (k.size() > 10 && k.compare(k.size() - 10, 10, ".conv.bias") == 0) {
      // A conv bias that feeds a train-mode BatchNorm: the batch mean removes it, so its true
      // gradient is exactly 0 and both sides hold rounding noise that no relative error can
      // judge. Both must be noise-sized next to the same conv's weight gradient.
      REQUIRE(p.grad().defined());
      const std::string wk = k.substr(0, k.size() - 4) + "weight";
      const double w_rms = rms(fx.f(name + ".grad." + wk)), ours = rms(p.grad()), ref = rms(fx.f(key));
      MESSAGE(key << " (true value 0): rms ours " << ours << ", torch " << ref << ", " << wk << " grad rms " << w_rms);
      CHECK(ours <= 1e-5 * w_rms);
      CHECK(ref <= 1e-5 * w_rms);
      continue;
    }
    tally.check(key, p.grad(), fx.f(key), tol::kOpGrad);
  }
  tally.summary();
}

// ---- nn::MultiheadAttention (engine_mha.safetensors) -----------------------------------------

TEST_CASE("engine: parity MultiheadAttention with key padding mask") {
  Fixture fx("engine_mha.safetensors");
  for (const std::string name : {"mha_self", "mha_cross"}) {
    Tally tally(name);
    auto sd = fx.sub(name + ".sd.");
    const int64_t E = sd.at("in_proj_weight").size(1), H = fx.i64(name + ".heads")[0];
    Rng init(2);
    nn::MultiheadAttention mha(E, H, 0.f, init);
    mha.set_rng(std::make_shared<Rng>(3));  // dropout 0, but forward asks for the stream
    mha.load_state_dict(sd);
    mha.eval();
    auto mask = fx.mask(name + ".mask");  // [B,S], 1 = ignore the key
    Inputs in;
    for (auto& [k, v] : fx.sub(name + ".in.")) in[k] = v.requires_grad_(true);
    nn::MultiheadAttention::Output o;
    if (name == "mha_self") o = mha.forward(in.at("x"), in.at("x"), in.at("x"), mask);  // q = k = v: one tensor
    else o = mha.forward(in.at("q"), in.at("k"), in.at("v"), mask);
    sum_products({o.out, o.attn_weights}, {fx.f(name + ".R0"), fx.f(name + ".R1")}).backward();
    tally.check(name + ".out", o.out, fx.f(name + ".out0"), tol::kForward);
    tally.check(name + ".attn_weights", o.attn_weights, fx.f(name + ".out1"), tol::kForward);
    for (auto& [k, v] : in) tally.check(name + ".grad." + k, v.grad(), fx.f(name + ".grad." + k), tol::kOpGrad);
    auto params = mha.named_parameters();
    CHECK(params.size() == 4);
    for (auto& [k, p] : params) tally.check(name + ".grad." + k, p.grad(), fx.f(name + ".grad." + k), tol::kOpGrad);
    tally.summary();
  }
}

// ---- AdamW (engine_adamw.safetensors) --------------------------------------------------------

namespace {

struct MLP : nn::Module {  // torch: fc2(relu(fc1(x)))
  std::shared_ptr<nn::Linear> fc1, fc2;
  explicit MLP(Rng& init) {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(6, 16, true, init));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(16, 3, true, init));
  }
  Tensor forward(const Tensor& x) const { return fc2->forward(relu(fc1->forward(x))); }
};

}  // namespace

TEST_CASE("engine: parity AdamW, three steps with two parameter groups") {
  Fixture fx("engine_adamw.safetensors");
  Tally tally("adamw");
  auto hp = fx.f64("adamw.hparams");  // lr, weight_decay, beta1, beta2, eps, steps
  Rng init(4);
  MLP mlp(init);
  mlp.load_state_dict(fx.sub("adamw.sd."));
  auto groups = decay_groups(mlp, float(hp[1]));
  REQUIRE(groups.size() == 2);  // [no_decay, decay] as the reference's optim_factory
  CHECK(groups[0].names == std::vector<std::string>{"fc1.bias", "fc2.bias"});
  CHECK(groups[0].weight_decay == 0.f);
  CHECK(groups[1].names == std::vector<std::string>{"fc1.weight", "fc2.weight"});
  CHECK(groups[1].weight_decay == float(hp[1]));
  AdamW opt(groups, float(hp[0]), float(hp[2]), float(hp[3]), float(hp[4]));
  const Tensor x = fx.f("adamw.x"), y = fx.f("adamw.y");
  auto mse = [&] {
    Tensor d = sub(mlp.forward(x), y);
    return mean(mul(d, d));
  };
  std::vector<float> losses;
  std::map<std::string, Tensor> before = fx.sub("adamw.sd.");
  for (int step = 1; step <= int(hp[5]); ++step) {
    opt.zero_grad();
    Tensor loss = mse();
    losses.push_back(loss.item());
    loss.backward();
    opt.step();
    const std::string pre = "adamw.step" + std::to_string(step) + ".";
    auto after = fx.sub(pre);
    for (auto& [k, p] : mlp.named_parameters()) {
      tally.check(pre + k, p, after.at(k), tol::kAdamWParam);
      tally.check(pre + k + " (update)", sub(p.detach(), before.at(k)), sub(after.at(k), before.at(k)),
                  tol::kAdamWUpdate);
    }
    before = after;
  }
  {
    NoGradGuard ng;
    losses.push_back(mse().item());
  }
  Tensor ours = Tensor::from_vector(losses, {int64_t(losses.size())});  // before steps 1..3, after step 3
  tally.check("adamw.losses", ours, fx.f("adamw.losses"), tol::kAdamWLoss);
  tally.summary();
}

// ---- LR schedule (engine_lr.safetensors) ------------------------------------------------------

TEST_CASE("engine: parity LR schedule vs the official timm CosineLRScheduler, stepped as train_MeDSLIP.py") {
  Fixture fx("engine_lr.safetensors");
  std::set<std::string> names = fx.cases("lr_");
  CHECK(names.size() == 3);
  for (const auto& name : names) {
    auto cfg = fx.f64(name + ".config");  // lr, lr_min, warmup_lr_init, t_initial, warmup_t
    LrSchedule s;
    s.lr = float(cfg[0]);
    s.lr_min = float(cfg[1]);
    s.warmup_lr_init = float(cfg[2]);
    s.t_initial = int(cfg[3]);
    s.warmup_t = int(cfg[4]);
    auto epoch = fx.i64(name + ".epoch"), iter = fx.i64(name + ".iter");
    auto ref = fx.f64(name + ".lr");
    REQUIRE(epoch.size() == ref.size());
    REQUIRE(iter.size() == ref.size());
    double worst = 0;
    size_t worst_i = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      double ours = s.at(int(epoch[i]), iter[i]);
      double rel = std::fabs(ours - ref[i]) / std::fabs(ref[i]);
      if (!(rel <= worst)) worst = rel, worst_i = i;
    }
    const float ours = s.at(int(epoch[worst_i]), iter[worst_i]);
    MESSAGE(name << ": " << ref.size() << " (epoch, iter) points, max rel err " << num(worst) << " ("
                 << num(100 * worst / tol::kLrSchedule) << "% of " << tol::kLrSchedule << ") at epoch "
                 << epoch[worst_i] << " iter " << iter[worst_i] << ": " << num(ours, 9) << " vs "
                 << num(ref[worst_i], 9));
    CHECK(worst <= tol::kLrSchedule);
  }
}
