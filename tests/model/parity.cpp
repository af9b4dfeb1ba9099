// MeDSLIP against the official PyTorch model: one training step of the reference problem
// (ResNet-18, 64 px, batch 2, dropout 0, BatchNorm train) compared with
// tests/fixtures/model_r18_ref.safetensors (made by tests/make_fixtures_model.py from the
// official code on the tensors `medslip verify --export` writes). The fixture keeps, per
// parameter, the gradient norm and 48 evenly spaced entries (full gradients: 45 MB).
// The full-size check (ResNet-50, 224, every gradient) is `make test-full`.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include "engine/io.h"
#include "engine/nn_state.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"
#include "train/reference_problem.h"

using namespace ms;

namespace {
bool is_trunk(const std::string& n) {
  return n.rfind("res_features.", 0) == 0 || n.rfind("mask_generator.", 0) == 0 || n.rfind("res_l1_", 0) == 0 ||
         n.rfind("res_l2_", 0) == 0;
}
}  // namespace

TEST_CASE("model: parity with the official MeDSLIP (ResNet-18, 64 px, one step)") {
  auto path = test::fixture("model_r18_ref.safetensors");
  REQUIRE_MESSAGE(std::filesystem::exists(path), "missing fixture " << path << " (run make fixtures)");
  auto ref = load_safetensors_raw(path.string());
  ReferenceProblem p = make_reference_problem();
  MedslipOutput o = p.model->forward(p.batch.image);
  MedslipLosses L = p.model->losses(o, p.batch);
  L.total.backward();

  const std::pair<const char*, Tensor> losses[] = {{"loss", L.total},
                                                   {"loss_ce_pathology", L.ce_pathology},
                                                   {"loss_cl_pathology", L.cl_pathology},
                                                   {"loss_ce_anatomy", L.ce_anatomy},
                                                   {"loss_cl_anatomy", L.cl_anatomy},
                                                   {"loss_ap", L.icl}};
  for (auto& [name, t] : losses) test::compare(name, t.reshape({1}), ref.at(name).to_float().reshape({1}), tol::kModelForward);
  test::compare("logits_pathology", o.logits_pathology, ref.at("logits_pathology").to_float(), tol::kModelForward);
  test::compare("logits_anatomy", o.logits_anatomy, ref.at("logits_anatomy").to_float(), tol::kModelForward);
  for (const char* s : {"pathology", "anatomy"}) {
    auto& maps = std::string(s) == "pathology" ? o.attn_pathology : o.attn_anatomy;
    std::vector<Tensor> u;
    for (auto& m : maps) u.push_back(m.detach().unsqueeze(0));
    test::compare(std::string("attn_") + s, concat(u, 0), ref.at(std::string("attn_") + s).to_float(), tol::kModelForward);
  }

  // Every parameter (named_parameters lists the shared decoder norm once, as torch does).
  int compared = 0;
  double worst_trunk = 0, worst_head = 0;
  for (auto& [name, param] : p.model->named_parameters()) {
    INFO(name);
    REQUIRE_MESSAGE(ref.count("gradnorm." + name), "fixture has no gradient for " << name);
    Tensor g = param.grad();
    REQUIRE(g.defined());
    auto idx = ref.at("gradidx." + name).to_i64();
    auto want = ref.at("gradval." + name).to_float_vector();
    auto gv = g.to_vector();
    std::vector<float> got;
    for (auto i : idx) got.push_back(gv[size_t(i)]);
    double tol = is_trunk(name) ? tol::kTrunkGrad : tol::kModelGrad;
    auto r = test::compare_values(got, want);
    double norm = 0;
    for (float v : gv) norm += double(v) * v;
    double ref_norm = ref.at("gradnorm." + name).to_f64()[0];
    double norm_err = std::fabs(std::sqrt(norm) - ref_norm) / std::max(ref_norm, 1e-30);
    if (name.find(".in_proj_bias") != std::string::npos) {
      // The K third has an exactly-zero true gradient (softmax ignores a per-key constant):
      // its computed value is rounding noise in both engines, so only the norm is compared.
      CHECK_MESSAGE(norm_err <= tol, name << " gradient norm off by " << norm_err);
    } else {
      CHECK_MESSAGE(r.rel_l2 <= tol, name << " sampled gradient rel_l2 " << r.rel_l2 << " > " << tol);
      CHECK_MESSAGE(norm_err <= tol, name << " gradient norm off by " << norm_err);
    }
    (is_trunk(name) ? worst_trunk : worst_head) = std::max(is_trunk(name) ? worst_trunk : worst_head, std::max(r.rel_l2, norm_err));
    ++compared;
  }
  MESSAGE("compared " << compared << " parameter gradients; worst trunk " << worst_trunk << " ("
                      << int(100 * worst_trunk / tol::kTrunkGrad) << "% of " << tol::kTrunkGrad << "), worst head/decoder "
                      << worst_head << " (" << int(100 * worst_head / tol::kModelGrad) << "% of " << tol::kModelGrad << ")");
  CHECK(compared == int(p.model->named_parameters().size()));
  // The trajectory of 10 AdamW steps is `medslip verify`'s job (same constants).
}

TEST_CASE("model: state_dict has the official 426 keys for ResNet-50 and 21,237,572 parameters") {
  MedslipConfig cfg;  // defaults: ResNet-50, 224 px, d 256, N 4
  Medslip m(cfg, 768, 1);
  auto entries = m.state_entries();
  CHECK(entries.size() == 426);
  CHECK(m.num_parameters() == 21237572);
  // The final decoder norm is one parameter under two names (spec A.3, H.1).
  auto sd = m.state_dict();
  CHECK(sd.count("decoder_anatomy.norm.weight"));
  CHECK(sd.count("decoder_pathology.norm.weight"));
  CHECK(sd["decoder_anatomy.norm.weight"].data() == sd["decoder_pathology.norm.weight"].data());
  int norm_params = 0;
  for (auto& [n, t] : m.named_parameters())
    if (n.find(".norm.") != std::string::npos && n.find("layers") == std::string::npos) ++norm_params;
  CHECK(norm_params == 2);  // weight + bias, listed once
  // spec A.5: linear1/linear2 biases start identical in all 8 decoder layers.
  auto b0 = sd["decoder_anatomy.layers.0.linear1.bias"].to_vector();
  CHECK(b0 == sd["decoder_pathology.layers.3.linear1.bias"].to_vector());
  CHECK(sd["decoder_anatomy.layers.0.linear1.weight"].to_vector() != sd["decoder_anatomy.layers.1.linear1.weight"].to_vector());
}

TEST_CASE("model: losses never mutate the matrix and empty selections give 0, not NaN") {
  ReferenceProblem p = make_reference_problem(7);
  auto before = p.batch.matrix;
  MedslipOutput o = p.model->forward(p.batch.image);
  MedslipLosses L = p.model->losses(o, p.batch);
  CHECK(p.batch.matrix == before);  // spec B.6.1
  // A batch with no label 1 anywhere: ProtoCL terms are 0 (B.6.5); all -1: CE and ICL too.
  MedslipBatch empty = p.batch;
  std::fill(empty.matrix.begin(), empty.matrix.end(), -1.f);
  std::fill(empty.label_pathology.begin(), empty.label_pathology.end(), -1);
  std::fill(empty.label_anatomy.begin(), empty.label_anatomy.end(), -1);
  for (auto& i : empty.index_pathology) i = std::max<int64_t>(i, 0);
  for (auto& i : empty.index_anatomy) i = std::max<int64_t>(i, 0);
  MedslipLosses E = p.model->losses(o, empty);
  CHECK(E.total.item() == 0.f);
  CHECK(E.cl_pathology.item() == 0.f);
  CHECK(std::isfinite(L.total.item()));
}

TEST_CASE("model: bad weights and configs give named errors") {
  MedslipConfig cfg = make_reference_problem().cfg;
  Medslip m(cfg, 768, 1);
  auto sd = m.state_dict();
  sd["mask_generator.weight"] = Tensor::zeros({3, 3});
  CHECK_THROWS_WITH(load_module_state(m, sd, true, "w.safetensors"),
                    doctest::Contains("'mask_generator.weight' has shape [3,3] in the file, the model expects [256,256]"));
  sd = m.state_dict();
  sd.erase("classifier_anatomy.bias");
  sd["extra.weight"] = Tensor::zeros({1});
  CHECK_THROWS_WITH(load_module_state(m, sd, true, "w.safetensors"),
                    doctest::Contains("missing keys: classifier_anatomy.bias"));
  sd = m.state_dict();
  sd["decoder_pathology.norm.weight"] = add(sd["decoder_pathology.norm.weight"], 1.f);
  CHECK_THROWS_WITH(load_module_state(m, sd, true, "w.safetensors"), doctest::Contains("shared parameter"));
  // module. prefix is stripped; the shared norm may come under one name only.
  std::map<std::string, Tensor> pref;
  for (auto& [k, v] : m.state_dict())
    if (k.rfind("decoder_pathology.norm.", 0) != 0) pref["module." + k] = v;
  CHECK_NOTHROW(load_module_state(m, pref, true, "w.pth"));

  auto warn = MedslipConfig::from_yaml_string("image_res: 64\nres_base_model: resnet18\nfoo: 3\ntemp: 0.07\n");
  REQUIRE(warn.warnings.size() == 2);
  CHECK(warn.warnings[0].find("unknown key 'foo'") != std::string::npos);
  CHECK_THROWS_WITH(MedslipConfig::from_yaml_string("image_res: 100\n", "c.yaml"),
                    doctest::Contains("c.yaml: key 'image_res': must be a positive multiple of 16"));
  CHECK_THROWS_WITH(MedslipConfig::from_yaml_string("N: two\n", "c.yaml"), doctest::Contains("key 'N' has an invalid value"));
  CHECK_THROWS_WITH(MedslipConfig::from_yaml_string("res_base_model: vgg\n", "c.yaml"), doctest::Contains("res_base_model"));
  // num_neg_samples is the K - 1 = 7 of the batch layout (model/vocab.h): 7 reads, others are named errors.
  CHECK(MedslipConfig::from_yaml_string("num_neg_samples: 7\n").num_neg_samples == kNumNegatives);
  CHECK_THROWS_WITH(MedslipConfig::from_yaml_string("num_neg_samples: 5\n", "c.yaml"),
                    doctest::Contains("c.yaml: key 'num_neg_samples': only 7 is supported"));
  // The augmentation keys: the reference's values by default, ours read, bad ones named, and
  // they survive the round trip through to_yaml (checkpoint metadata, reproducibility.json).
  const MedslipConfig dflt;
  CHECK(dflt.crop_scale_min == 0.2f);
  CHECK(dflt.rand_augment_n == 2);
  CHECK(dflt.rand_augment_m == 7);
  auto aug = MedslipConfig::from_yaml_string("crop_scale_min: 0.8\nrand_augment_n: 0\nrand_augment_m: 5\n");
  CHECK(aug.warnings.empty());
  CHECK(aug.crop_scale_min == 0.8f);
  CHECK(aug.rand_augment_n == 0);
  CHECK(aug.rand_augment_m == 5);
  auto back = MedslipConfig::from_yaml_string(aug.to_yaml());
  CHECK(back.crop_scale_min == 0.8f);
  CHECK(back.rand_augment_n == 0);
  CHECK(back.rand_augment_m == 5);
  CHECK_THROWS_WITH(MedslipConfig::from_yaml_string("crop_scale_min: 0\n", "c.yaml"),
                    doctest::Contains("c.yaml: key 'crop_scale_min': must be in (0,1]"));
  CHECK_THROWS_WITH(MedslipConfig::from_yaml_string("rand_augment_n: 11\n", "c.yaml"),
                    doctest::Contains("key 'rand_augment_n'"));
}
