// The lexicon of report -> triplets (see report_lexicon.h for the sources of the entries).
#include "data/report_lexicon.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "model/vocab.h"

namespace ms {

// ---- observations ------------------------------------------------------------------------
// One row per phrase. Longest match wins, so "infectious process" (pneumonia) beats
// "process", "granulomatous disease" (tail) beats "disease".
static const std::vector<LexiconEntry> kEntries = {
    // normal words (§C.1 idx 0-7)
    {"normal", "normal", "spec"},
    {"within normal limits", "normal", "reading"},
    {"within normal limit", "normal", "reading"},
    {"wnl", "normal", "reading"},
    {"low normal", "normal", "reading"},
    {"clear", "clear", "spec"},
    {"sharp", "sharp", "spec"},
    {"sharply", "sharply", "spec"},
    {"unremarkable", "unremarkable", "spec"},
    {"intact", "intact", "spec"},
    {"stable", "stable", "spec"},
    {"stably", "stable", "spec"},
    // "free" is a normal word, but "free of" is a negation cue and "free air" is air.
    {"free", "free", "spec"},
    // findings (§C.1 idx 8-72)
    {"effusion", "effusion", "spec"},
    {"effusions", "effusion", "spec"},
    {"opacity", "opacity", "spec"},
    {"opacification", "opacity", "agxnet"},
    {"opacified", "opacity", "agxnet"},
    {"opacify", "opacity", "agxnet"},
    {"opaque", "opacity", "reading"},
    {"pneumothorax", "pneumothorax", "spec"},
    {"hydropneumothorax", "pneumothorax", "agxnet"},
    {"ptx", "pneumothorax", "reading"},
    {"edema", "edema", "spec"},
    {"oedema", "edema", "spec"},
    {"edematous", "edema", "spec"},
    {"atelectasis", "atelectasis", "spec"},
    {"atelectases", "atelectasis", "agxnet"},
    {"atelectatic", "atelectasis", "agxnet"},
    {"tube", "tube", "spec"},
    {"endotracheal", "tube", "description"},
    {"tracheostomy", "tube", "reading"},
    {"consolidation", "consolidation", "spec"},
    {"consolidated", "consolidation", "agxnet"},
    {"consolidative", "consolidation", "agxnet"},
    {"process", "process", "spec"},
    {"abnormality", "abnormality", "spec"},
    {"abnormal", "abnormality", "spec"},
    {"enlarge", "enlarge", "spec"},
    {"enlarged", "enlarge", "spec"},
    {"enlargement", "enlarge", "agxnet"},
    {"enlarging", "enlarge", "spec"},
    {"tip", "tip", "spec"},
    {"low lung volume", "low", "spec"},
    {"low volume", "low", "spec"},
    {"low inspiratory volume", "low", "spec"},
    {"low lung", "low", "spec"},
    {"lung volumes are low", "low", "spec"},
    {"lung volumes are diminished", "low", "reading"},
    {"lung volumes are reduced", "low", "reading"},
    {"hypoinflation", "low", "reading"},
    {"hypoinflated", "low", "reading"},
    {"hypoexpanded", "low", "reading"},
    {"hypoexpansion", "low", "reading"},
    {"hypoaeration", "low", "reading"},
    {"poor inspiration", "low", "reading"},
    {"poor inspiratory effort", "low", "reading"},
    {"shallow inspiration", "low", "reading"},
    {"pneumonia", "pneumonia", "spec"},
    {"pneumonias", "pneumonia", "spec"},
    {"bronchopneumonia", "pneumonia", "spec"},
    {"infection", "pneumonia", "agxnet"},
    {"infectious", "pneumonia", "agxnet"},
    {"infectious process", "pneumonia", "agxnet"},
    {"line", "line", "spec"},
    {"congestion", "congestion", "spec"},
    {"congested", "congestion", "spec"},
    {"catheter", "catheter", "spec"},
    {"port a cath", "catheter", "reading"},
    {"portacath", "catheter", "reading"},
    {"cardiomegaly", "cardiomegaly", "spec"},
    {"fracture", "fracture", "spec"},
    {"fractured", "fracture", "spec"},
    {"air", "air", "spec"},
    {"free air", "air", "reading"},
    {"tortuous", "tortuous", "spec"},
    {"tortuosity", "tortuous", "agxnet"},
    {"lead", "lead", "spec"},
    {"disease", "disease", "spec"},
    {"calcification", "calcification", "spec"},
    {"calcified", "calcification", "agxnet"},
    {"calcify", "calcification", "agxnet"},
    {"calcific", "calcification", "agxnet"},
    {"calcium", "calcification", "reading"},
    {"prominence", "prominence", "spec"},
    {"prominent", "prominence", "agxnet"},
    {"device", "device", "spec"},
    {"engorgement", "engorgement", "spec"},
    {"engorged", "engorgement", "agxnet"},
    {"engorge", "engorgement", "agxnet"},
    {"picc", "picc", "spec"},
    {"clip", "clip", "spec"},
    {"elevation", "elevation", "spec"},
    {"elevated", "elevation", "agxnet"},
    {"elevate", "elevation", "agxnet"},
    {"expand", "expand", "spec"},
    {"expanded", "expand", "spec"},
    {"expansion", "expand", "spec"},
    {"nodule", "nodule", "spec"},
    {"nodular", "nodule", "agxnet"},
    {"nodularity", "nodule", "agxnet"},
    {"micronodule", "nodule", "reading"},
    {"micronodular", "nodule", "reading"},
    {"wire", "wire", "spec"},
    {"fluid", "fluid", "spec"},
    {"degenerative", "degenerative", "spec"},
    {"degenerate", "degenerative", "agxnet"},
    {"degeneration", "degenerative", "agxnet"},
    {"djd", "degenerative", "reading"},
    {"pacemaker", "pacemaker", "spec"},
    {"pacer", "pacemaker", "agxnet"},
    {"thicken", "thicken", "spec"},
    {"thickening", "thicken", "spec"},
    {"thickened", "thicken", "spec"},
    {"marking", "marking", "spec"},
    {"scar", "scar", "spec"},
    {"scarring", "scar", "spec"},
    {"scarred", "scar", "spec"},
    {"hyperinflate", "hyperinflate", "spec"},
    {"hyperinflated", "hyperinflate", "spec"},
    {"hyperinflation", "hyperinflate", "spec"},
    {"hyperexpanded", "hyperinflate", "reading"},
    {"hyperexpansion", "hyperinflate", "reading"},
    {"hyperexpanded lung", "hyperinflate", "reading"},
    {"hyperaerated", "hyperinflate", "reading"},
    {"hyperaeration", "hyperinflate", "reading"},
    {"overinflated", "hyperinflate", "reading"},
    {"overinflation", "hyperinflate", "reading"},
    {"hyperlucent", "hyperinflate", "reading"},
    {"blunt", "blunt", "spec"},
    {"blunting", "blunt", "spec"},
    {"blunted", "blunt", "spec"},
    {"loss", "loss", "spec"},
    {"widen", "widen", "spec"},
    {"widened", "widen", "spec"},
    {"widening", "widen", "spec"},
    {"wide", "widen", "agxnet"},
    {"collapse", "collapse", "spec"},
    {"collapsed", "collapse", "spec"},
    {"density", "density", "spec"},
    {"emphysema", "emphysema", "spec"},
    {"emphysematous", "emphysema", "spec"},
    {"aerate", "aerate", "spec"},
    {"aerated", "aerate", "spec"},
    {"aeration", "aerate", "agxnet"},
    {"mass", "mass", "spec"},
    {"masslike", "mass", "spec"},
    {"crowd", "crowd", "spec"},
    {"crowding", "crowd", "spec"},
    {"crowded", "crowd", "spec"},
    {"infiltrate", "infiltrate", "spec"},
    {"infiltration", "infiltrate", "spec"},
    {"infiltrative", "infiltrate", "spec"},
    {"obscure", "obscure", "spec"},
    {"obscured", "obscure", "spec"},
    {"obscuring", "obscure", "spec"},
    {"obscuration", "obscure", "agxnet"},
    {"deformity", "deformity", "spec"},
    {"deformed", "deformity", "spec"},
    {"hernia", "hernia", "spec"},
    {"herniation", "hernia", "spec"},
    {"drainage", "drainage", "spec"},
    {"drain", "drainage", "agxnet"},
    {"distention", "distention", "spec"},
    {"distension", "distention", "agxnet"},
    {"distended", "distention", "agxnet"},
    {"shift", "shift", "spec"},
    {"shifted", "shift", "spec"},
    {"stent", "stent", "spec"},
    {"pressure", "pressure", "spec"},
    {"lesion", "lesion", "spec"},
    {"finding", "finding", "spec"},
    {"borderline", "borderline", "spec"},
    {"hardware", "hardware", "spec"},
    {"dilation", "dilation", "spec"},
    {"dilated", "dilation", "agxnet"},
    {"dilatation", "dilation", "agxnet"},
    {"chf", "chf", "spec"},
    {"congestive heart failure", "chf", "description"},
    {"heart failure", "chf", "description"},
    {"redistribution", "redistribution", "spec"},
    {"cephalization", "redistribution", "description"},
    {"aspiration", "aspiration", "spec"},
    {"aspirated", "aspiration", "spec"},
    // the tail (idx 73): other finding lemmas, grouped as AGXNet does
    {"granuloma", "tail_abnorm_obs", "agxnet"},
    {"granulomata", "tail_abnorm_obs", "agxnet"},
    {"granulomatous", "tail_abnorm_obs", "agxnet"},
    {"granulomatous disease", "tail_abnorm_obs", "agxnet"},
    {"fibrosis", "tail_abnorm_obs", "agxnet"},
    {"fibrotic", "tail_abnorm_obs", "agxnet"},
    {"scoliosis", "tail_abnorm_obs", "agxnet"},
    {"scoliotic", "tail_abnorm_obs", "agxnet"},
    {"kyphosis", "tail_abnorm_obs", "agxnet"},
    {"kyphotic", "tail_abnorm_obs", "agxnet"},
    {"kyphoscoliosis", "tail_abnorm_obs", "agxnet"},
    {"osteophyte", "tail_abnorm_obs", "agxnet"},
    {"spondylosis", "tail_abnorm_obs", "agxnet"},
    {"spurring", "tail_abnorm_obs", "agxnet"},
    {"bronchiectasis", "tail_abnorm_obs", "agxnet"},
    {"cyst", "tail_abnorm_obs", "agxnet"},
    {"cavitation", "tail_abnorm_obs", "agxnet"},
    {"cavitary", "tail_abnorm_obs", "agxnet"},
    {"bulla", "tail_abnorm_obs", "agxnet"},
    {"bullous", "tail_abnorm_obs", "agxnet"},
    {"bleb", "tail_abnorm_obs", "agxnet"},
    {"haziness", "tail_abnorm_obs", "agxnet"},
    {"hazy", "tail_abnorm_obs", "agxnet"},
    {"haze", "tail_abnorm_obs", "agxnet"},
    {"lucency", "tail_abnorm_obs", "agxnet"},
    {"eventration", "tail_abnorm_obs", "agxnet"},
    {"osteopenia", "tail_abnorm_obs", "agxnet"},
    {"osteopenic", "tail_abnorm_obs", "agxnet"},
    {"osteoporosis", "tail_abnorm_obs", "agxnet"},
    {"demineralization", "tail_abnorm_obs", "agxnet"},
    {"copd", "tail_abnorm_obs", "agxnet"},
    {"chronic obstructive pulmonary disease", "tail_abnorm_obs", "agxnet"},
    {"sarcoidosis", "tail_abnorm_obs", "agxnet"},
    {"tuberculosis", "tail_abnorm_obs", "agxnet"},
    {"adenopathy", "tail_abnorm_obs", "agxnet"},
    {"lymphadenopathy", "tail_abnorm_obs", "agxnet"},
    {"atherosclerosis", "tail_abnorm_obs", "agxnet"},
    {"atherosclerotic", "tail_abnorm_obs", "agxnet"},
    {"aneurysm", "tail_abnorm_obs", "agxnet"},
    {"aneurysmal", "tail_abnorm_obs", "agxnet"},
    {"ectasia", "tail_abnorm_obs", "agxnet"},
    {"ectatic", "tail_abnorm_obs", "agxnet"},
    {"arthritis", "tail_abnorm_obs", "agxnet"},
    {"arthritic", "tail_abnorm_obs", "agxnet"},
    {"arthropathy", "tail_abnorm_obs", "agxnet"},
    {"pectus excavatum", "tail_abnorm_obs", "agxnet"},
    {"pectus carinatum", "tail_abnorm_obs", "agxnet"},
    {"deviation", "tail_abnorm_obs", "agxnet"},
    {"deviated", "tail_abnorm_obs", "agxnet"},
    {"elongation", "tail_abnorm_obs", "agxnet"},
    {"elongated", "tail_abnorm_obs", "agxnet"},
    {"unfolding", "tail_abnorm_obs", "agxnet"},
    {"unfolded", "tail_abnorm_obs", "agxnet"},
    {"pneumoperitoneum", "tail_abnorm_obs", "agxnet"},
    {"pneumomediastinum", "tail_abnorm_obs", "agxnet"},
    {"subcutaneous emphysema", "tail_abnorm_obs", "agxnet"},
    {"bronchitis", "tail_abnorm_obs", "agxnet"},
    {"bronchiolitis", "tail_abnorm_obs", "agxnet"},
    {"cardiomyopathy", "tail_abnorm_obs", "agxnet"},
    {"metastasis", "tail_abnorm_obs", "agxnet"},
    {"metastatic", "tail_abnorm_obs", "agxnet"},
    {"malignancy", "tail_abnorm_obs", "agxnet"},
    {"neoplasm", "tail_abnorm_obs", "agxnet"},
    {"tumor", "tail_abnorm_obs", "agxnet"},
    {"hyperostosis", "tail_abnorm_obs", "agxnet"},
    {"sclerosis", "tail_abnorm_obs", "agxnet"},
    {"sclerotic", "tail_abnorm_obs", "agxnet"},
    {"reticular", "tail_abnorm_obs", "agxnet"},
    {"reticulonodular", "tail_abnorm_obs", "agxnet"},
    {"bronchial wall thickening", "thicken", "reading"},
    {"peribronchial cuffing", "tail_abnorm_obs", "agxnet"},
    {"cuffing", "tail_abnorm_obs", "agxnet"},
    {"hypertension", "tail_abnorm_obs", "agxnet"},
    {"pericardial effusion", "effusion", "spec"},
    {"generator", "device", "reading"},
    {"prosthesis", "device", "reading"},
    {"prosthetic", "device", "reading"},
    {"valve replacement", "device", "reading"},
    {"coil", "device", "reading"},
    {"vascular prominence", "congestion", "reading"},
    {"increased vascularity", "congestion", "reading"},
    {"increased lung vascularity", "congestion", "reading"},
    {"increased pulmonary vascularity", "congestion", "reading"},
    {"venous hypertension", "congestion", "reading"},
    {"pulmonary venous hypertension", "congestion", "reading"},
    {"vascular margination", "congestion", "reading"},
    {"indistinct vascular margination", "congestion", "reading"},
    {"disc disease", "degenerative", "reading"},
    {"degenerative disc disease", "degenerative", "reading"},
    {"metastatic disease", "tail_abnorm_obs", "reading"},
    {"atherosclerotic disease", "tail_abnorm_obs", "reading"},
    {"bullous disease", "tail_abnorm_obs", "reading"},
    {"interstitial disease", "tail_abnorm_obs", "reading"},
    {"nodular density", "density", "reading"},
    {"nodular opacity", "opacity", "reading"},
    {"nodular like opacity", "opacity", "reading"},
    {"septal line", "tail_abnorm_obs", "reading"},
    {"stimulator", "device", "reading"},
    {"defibrillator", "device", "reading"},
    {"icd", "device", "reading"},
    {"aicd", "device", "reading"},
    {"occluder", "device", "reading"},
    {"loop recorder", "device", "reading"},
    {"wedging", "deformity", "reading"},
    {"wedge", "deformity", "reading"},
    {"degenerative disease", "degenerative", "reading"},
    {"obstructive lung disease", "tail_abnorm_obs", "reading"},
    {"chronic obstructive lung disease", "tail_abnorm_obs", "reading"},
    {"interstitial lung disease", "tail_abnorm_obs", "reading"},
    {"chronic lung disease", "tail_abnorm_obs", "reading"},
    {"emphysematous disease", "emphysema", "reading"},
    {"vascular disease", "tail_abnorm_obs", "reading"},
    {"atherosclerotic vascular disease", "tail_abnorm_obs", "reading"},
    {"granulomatous infection", "tail_abnorm_obs", "reading"},
    {"flattening", "tail_abnorm_obs", "agxnet"},
    {"flattened", "tail_abnorm_obs", "agxnet"},
    // excluded lemmas (idx 74) that name a thing rather than a modifier
    {"sternotomy", "excluded_obs", "agxnet"},
    {"cabg", "excluded_obs", "agxnet"},
    {"postoperative", "excluded_obs", "agxnet"},
    {"replacement", "excluded_obs", "agxnet"},
};

const std::vector<LexiconEntry>& ReportLexicon::entries() { return kEntries; }

// ---- anatomy: AGXNet's DICT_ANATOMICAL_LANDMARKS, in its order (first match wins) ---------
namespace {
enum class Rule { kM0, kM1pM2m, kM1pM2p, kM1mM2p, kM1p, kM1m };
struct Landmark {
  const char* name;
  std::vector<std::string> a, m1, m2;
  std::vector<std::vector<std::string>> sc;  // special cases, each a set of words
  Rule t;
};
std::vector<std::string> split_words(const char* s, char sep = ' ') {
  std::vector<std::string> out;
  std::string w;
  for (const char* p = s; *p; ++p) {
    if (*p == sep) {
      if (!w.empty()) out.push_back(w);
      w.clear();
    } else {
      w.push_back(*p);
    }
  }
  if (!w.empty()) out.push_back(w);
  return out;
}
std::vector<std::vector<std::string>> sc(std::initializer_list<const char*> l) {
  std::vector<std::vector<std::string>> out;
  for (const char* s : l) {
    auto w = split_words(s, '|');
    std::sort(w.begin(), w.end());
    w.erase(std::unique(w.begin(), w.end()), w.end());
    out.push_back(w);
  }
  return out;
}
const std::vector<std::string> kHilar = {"hilar", "hilum", "perihilar", "infrahilar"};
const std::vector<std::string> kBaseWords = {"lower", "base", "basilar", "basal", "basis"};
const std::vector<std::string> kUnspecLungM2 = {"volume", "volumes", "lower", "base", "bases", "basilar", "basal",
                                                "basis", "middle", "mid", "upper", "apex", "apical", "perihilar"};
// adj_matrix.py l.153-633. Additions (ours, marked): vertebra(e)/vertebral/thoracic spine
// words under "spine"; the rest of the table is AGXNet's.
const std::vector<Landmark>& landmarks() {
  static const std::vector<Landmark> k = [] {
    std::vector<Landmark> v;
    auto L = [&](const char* n, std::vector<std::string> a, std::vector<std::string> m1, std::vector<std::string> m2,
                 std::vector<std::vector<std::string>> s, Rule t) { v.push_back({n, a, m1, m2, s, t}); };
    auto m2r = kUnspecLungM2;
    m2r.push_back("left");
    auto m2l = kUnspecLungM2;
    m2l.push_back("right");
    L("trachea", {"trachea", "tracheal"}, {}, {}, {}, Rule::kM0);
    L("left_hilar", kHilar, {"left"}, {"right"}, {}, Rule::kM1pM2m);
    L("right_hilar", kHilar, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("hilar_unspec", kHilar, {"left", "right"}, {}, sc({"hila", "perihilar|right|left"}), Rule::kM1m);
    L("left_pleural", {"pleural"}, {"left"}, {"right"}, {}, Rule::kM1pM2m);
    L("right_pleural", {"pleural"}, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("pleural_unspec", {"pleural"}, {"left", "right"}, {}, sc({"pleural|left|right", "pleural|bilateral|right|left"}),
      Rule::kM1m);
    L("heart_size", {"heart", "cardiac"}, {"border", "borders"}, {}, {}, Rule::kM1m);
    L("heart_border", {"heart", "cardiac"}, {"border", "borders"}, {}, {}, Rule::kM1p);
    L("left_diaphragm", {"diaphragm", "hemidiaphragm"}, {"left"}, {"right"}, {}, Rule::kM1pM2m);
    L("right_diaphragm", {"diaphragm", "hemidiaphragm"}, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("diaphragm_unspec", {"diaphragm", "diaphragms", "hemidiaphragms", "hemidiaphragm"}, {"left", "right"}, {},
      sc({"hemidiaphragm|left|right"}), Rule::kM1m);
    L("retrocardiac", {"retrocardiac"}, {}, {}, {}, Rule::kM0);
    L("lower_left_lobe", {"lobe"}, {"left"}, {"lower"}, {}, Rule::kM1pM2p);
    L("upper_left_lobe", {"lobe"}, {"left"}, {"upper"}, sc({"lingula", "lingular"}), Rule::kM1pM2p);
    L("lower_right_lobe", {"lobe"}, {"right"}, {"lower"}, {}, Rule::kM1pM2p);
    L("middle_right_lobe", {"lobe"}, {"right"}, {"middle"}, {}, Rule::kM1pM2p);
    L("upper_right_lobe", {"lobe"}, {"right"}, {"upper"}, {}, Rule::kM1pM2p);
    L("left_lower_lung", {"lung"}, {"left"}, kBaseWords, sc({"base|left", "basilar|left", "basal|left", "lung|left|bases"}),
      Rule::kM1pM2p);
    L("left_mid_lung", {"lung"}, {"left"}, {"middle", "mid"}, sc({"midlung|left"}), Rule::kM1pM2p);
    L("left_upper_lung", {"lung"}, {"left"}, {"upper"}, {}, Rule::kM1pM2p);
    L("left_apical_lung", {"apex", "apical", "apicolateral"}, {"left"}, {"right"}, {}, Rule::kM1pM2m);
    L("left_lung_unspec", {"lung", "hemithorax"}, {"left", "left-sided"}, m2l, sc({"left", "left|side", "thorax|left|hemi"}),
      Rule::kM1pM2m);
    L("right_lower_lung", {"lung"}, {"right"}, kBaseWords,
      sc({"base|right", "basilar|right", "basal|right", "lung|right|bases"}), Rule::kM1pM2p);
    L("right_mid_lung", {"lung"}, {"right"}, {"middle", "mid"}, {}, Rule::kM1pM2p);
    L("right_upper_lung", {"lung"}, {"right"}, {"upper"}, {}, Rule::kM1pM2p);
    L("right_apical_lung", {"apex", "apical", "apicolateral"}, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("right_lung_unspec", {"lung", "hemithorax"}, {"right", "right-sided"}, m2r,
      sc({"right", "right|side", "thorax|right|hemi"}), Rule::kM1pM2m);
    L("lung_apices", {"apices", "apical"}, {"left", "right"}, {}, sc({"biapical", "lungs|upper"}), Rule::kM1m);
    L("lung_bases", {"lung", "lungs"}, {"left", "right"}, {"bibasilar", "basilar", "base", "bases", "bibasal", "basal"},
      sc({"lung|lower", "lungs|lower", "bibasilar", "basilar", "bases", "bibasal", "basal", "basal|bilateral",
          "lobe|lower", "lobes|lower", "lobe|bilateral|lower", "bases|both", "bibasilar|left|right"}),
      Rule::kM1mM2p);
    L("left_costophrenic", {"costophrenic"}, {"left"}, {"right"}, {}, Rule::kM1pM2m);
    L("right_costophrenic", {"costophrenic"}, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("costophrenic_unspec", {"costophrenic"}, {"left", "right"}, {}, {}, Rule::kM1m);
    L("cardiophrenic_sulcus", {"cardiophrenic"}, {}, {}, {}, Rule::kM0);
    L("mediastinal", {"mediastinal", "cardiomediastinal", "mediastinum", "cardiomediastinum"}, {}, {}, {}, Rule::kM0);
    // ours: vertebra words (IU reports say "thoracic vertebrae", RadGraph's MIMIC text "spine")
    L("spine", {"spine", "spinal", "vertebra", "vertebrae", "vertebral", "thoracolumbar"}, {}, {}, {}, Rule::kM0);
    L("clavicle", {"clavicle", "clavicles"}, {}, {}, {}, Rule::kM0);
    L("rib", {"rib", "ribs"}, {}, {}, {}, Rule::kM0);
    L("stomach", {"stomach", "abdomen", "abdominal"}, {}, {}, {}, Rule::kM0);
    L("right_atrium", {"atrium", "atrial"}, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("right_ventricle", {"ventricle", "ventricular"}, {"right"}, {"left"}, {}, Rule::kM1pM2m);
    L("aorta", {"aorta", "aortic"}, {}, {}, {}, Rule::kM0);
    L("svc", {"svc"}, {}, {}, {}, Rule::kM0);
    L("interstitium", {"interstitium", "interstitial"}, {}, {}, {}, Rule::kM0);
    L("parenchymal", {"parenchymal"}, {}, {}, {}, Rule::kM0);
    L("cavoatrial_junction", {"cavoatrial"}, {}, {}, {}, Rule::kM0);  // "cavoatrial junction"
    L("cardiopulmonary", {"cardiopulmonary"}, {}, {}, {}, Rule::kM0);
    L("pulmonary", {"pulmonary"}, {}, {}, {}, Rule::kM0);
    L("lung_volumes", {"lungs", "lung", "volume", "volumes"},
      {"left", "right", "lower", "base", "bases", "basilar", "basal", "basis", "middle", "mid", "upper", "apex", "apical"},
      {}, {}, Rule::kM1m);
    return v;
  }();
  return k;
}
bool any_in(const std::vector<std::string>& words, const std::vector<std::string>& set) {
  for (const auto& w : words)
    if (std::find(set.begin(), set.end(), w) != set.end()) return true;
  return false;
}
}  // namespace

int ReportLexicon::landmark_of(const std::vector<std::string>& words_in) const {
  std::vector<std::string> words = words_in;
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  for (const auto& L : landmarks()) {
    bool a = any_in(words, L.a), m1 = any_in(words, L.m1), m2 = any_in(words, L.m2);
    bool flag = false;
    switch (L.t) {
      case Rule::kM0: flag = a; break;
      case Rule::kM1pM2m: flag = a && m1 && !m2; break;
      case Rule::kM1pM2p: flag = a && m1 && m2; break;
      case Rule::kM1mM2p: flag = a && !m1 && m2; break;
      case Rule::kM1p: flag = a && m1; break;
      case Rule::kM1m: flag = a && !m1; break;
    }
    for (const auto& s : L.sc) flag = flag || s == words;
    if (flag) return anatomy_index_or_throw(L.name);
  }
  return -1;
}

// ---- construction ------------------------------------------------------------------------

ReportLexicon::ReportLexicon() {
  for (const auto& e : kEntries) {
    int obs = observation_index(e.obs);
    if (obs < 0) throw std::logic_error(std::string("report lexicon: unknown observation '") + e.obs + "'");
    Phrase p;
    for (const auto& w : split_words(e.phrase)) p.words.push_back(report_normalize_word(w));
    p.obs = obs;
    p.source = e.source;
    for (const auto& w : p.words) known_.insert(w);
    if (p.words.size() == 1 && p.words[0].size() >= 7) typo_targets_.push_back(p.words[0]);
    by_first_[p.words[0]].push_back(std::move(p));
  }
  for (auto& kv : by_first_)
    std::stable_sort(kv.second.begin(), kv.second.end(),
                     [](const Phrase& x, const Phrase& y) { return x.words.size() > y.words.size(); });
  for (const auto& L : landmarks()) {
    for (const auto& w : L.a) anatomy_words_.insert(w);
    for (const auto& w : L.m1) modifier_words_.insert(w);
    for (const auto& w : L.m2) modifier_words_.insert(w);
    for (const auto& s : L.sc)
      for (const auto& w : s) (s.size() == 1 ? anatomy_words_ : modifier_words_).insert(w);
  }
  modifier_words_.insert({"bilateral", "both", "bibasilar", "biapical", "lungs", "lobes", "bases", "hemi", "side"});
  anatomy_words_.insert({"lingula", "lingular", "midlung", "hila", "bibasilar", "bibasal", "biapical", "left", "right"});
  // Anatomy words AGXNet's table does not place: a phrase with one of these and no landmark
  // goes to "other" (as an unmatched RadGraph anatomy does).
  for (const char* w : {"chest", "thorax", "thoracic", "osseous", "bony", "bone", "bones", "skeletal", "sternum",
                        "sternal", "shoulder", "humerus", "humeral", "scapula", "breast", "soft", "tissue", "tissues",
                        "neck", "airway", "airways", "airspace", "bronchovascular", "vascular", "vasculature",
                        "vessels", "vessel", "artery", "arteries", "lobe", "lobes", "hemithoraces", "mediastinal",
                        "paratracheal", "azygos", "subsegmental", "lymph", "node", "nodes", "ventricle", "esophagus",
                        "colon", "bowel", "gastric"})
    anatomy_words_.insert(w);
  filler_words_ = {"the", "of", "sided", "lateral", "medial", "posterior", "anterior", "inferior", "superior",
                   "zone", "zones", "field", "fields", "portion", "aspect", "segment", "region", "posteriorly",
                   "laterally", "anteriorly", "mildly", "slightly", "structures", "structure", "silhouette",
                   "contour", "contours", "size", "margin", "margins", "angle", "angles", "space", "spaces",
                   "recess", "sulcus", "surface", "junction"};
  for (const auto& w : anatomy_words_) known_.insert(w);
  for (const auto& w : modifier_words_) known_.insert(w);
  std::sort(typo_targets_.begin(), typo_targets_.end());
  typo_targets_.erase(std::unique(typo_targets_.begin(), typo_targets_.end()), typo_targets_.end());
}

const ReportLexicon& ReportLexicon::get() {
  static const ReportLexicon lex;  // immutable after construction (thread-safe init)
  return lex;
}

// ---- typos -------------------------------------------------------------------------------

// Damerau (optimal string alignment) distance <= 1.
static bool within_one_edit(const std::string& a, const std::string& b) {
  size_t n = a.size(), m = b.size();
  if (n > m + 1 || m > n + 1) return false;
  size_t i = 0;
  while (i < n && i < m && a[i] == b[i]) ++i;
  if (i == n && i == m) return true;
  if (n == m) {
    if (a.compare(i + 1, std::string::npos, b, i + 1, std::string::npos) == 0) return true;  // substitute
    return i + 1 < n && a[i] == b[i + 1] && a[i + 1] == b[i] &&
           a.compare(i + 2, std::string::npos, b, i + 2, std::string::npos) == 0;  // swap
  }
  if (n > m) return a.compare(i + 1, std::string::npos, b, i, std::string::npos) == 0;  // delete from a
  return a.compare(i, std::string::npos, b, i + 1, std::string::npos) == 0;           // insert into a
}

// English words one edit from a lexicon word that reports use as themselves.
static bool is_common_word(const std::string& w) {
  static const std::unordered_set<std::string> k = {
      "calcifies", "enlarges", "elevates", "obscures", "collapses", "expands", "prominently", "infection",
      "frontal", "traction", "fraction", "portion", "motion", "emulsion", "effusions", "diffusion", "lesions",
      "legion", "tubular", "nodules", "modular", "partial", "massive", "expanse", "density", "destiny",
      "clearly", "linear", "lineal", "stabley", "lateral", "unilateral", "bilateral", "interval", "catheters",
      "spurring", "scarring", "shifting", "leading", "loading", "deformities", "herniated", "dilatated",
      "widely", "aerates", "obscurity", "drained", "draining", "aspirate", "pressures", "findings"};
  return k.count(w) != 0;
}

std::string ReportLexicon::typo_candidate(const std::string& norm) const {
  if (norm.size() < 7 || known_.count(norm) || is_common_word(norm)) return "";
  for (const auto& t : typo_targets_)
    if (t[0] == norm[0] && within_one_edit(norm, t)) return t;
  return "";
}

// ---- matching ----------------------------------------------------------------------------

std::vector<ObservationMention> ReportLexicon::find_observations(const std::vector<ReportToken>& tokens,
                                                                 int* typo_fixes) const {
  std::vector<ObservationMention> out;
  const int n = int(tokens.size());
  std::vector<std::string> norm(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    norm[size_t(i)] = tokens[size_t(i)].norm;
    if (!tokens[size_t(i)].punct && !tokens[size_t(i)].anon && !by_first_.count(norm[size_t(i)])) {
      std::string fix = typo_candidate(norm[size_t(i)]);
      if (!fix.empty()) {
        norm[size_t(i)] = fix;
        if (typo_fixes) ++*typo_fixes;
      }
    }
  }
  for (int i = 0; i < n;) {
    auto it = by_first_.find(norm[size_t(i)]);
    int len = 0;
    const Phrase* hit = nullptr;
    if (it != by_first_.end()) {
      for (const auto& p : it->second) {
        int L = int(p.words.size());
        if (i + L > n) continue;
        bool ok = true;
        for (int k = 1; k < L && ok; ++k) ok = norm[size_t(i + k)] == p.words[size_t(k)];
        if (ok) {
          hit = &p;
          len = L;
          break;
        }
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    const std::string& w = norm[size_t(i)];
    const std::string next = i + len < n ? norm[size_t(i + len)] : "";
    bool skip = false;
    // "free of" is a negation cue, "clear of" too; "air space" / "air-space" is anatomy.
    if ((w == "free" || w == "clear") && len == 1 && next == "of") skip = true;
    if (w == "air" && len == 1 && (next == "space" || next == "fluid" || next == "bronchogram")) skip = true;
    // "wide" is a widened mediastinum, not "wide-based" or "nationwide".
    if (w == "wide" && len == 1 && next != "mediastinum") skip = true;
    if (w == "process" && len == 1 && i + 1 < n && next == "of") skip = true;  // "process of elimination"
    if (!skip) out.push_back({hit->obs, i, i + len, hit->source});
    i += len;
  }
  return out;
}

std::vector<AnatomyMention> ReportLexicon::find_anatomies(const std::vector<ReportToken>& tokens) const {
  std::vector<AnatomyMention> out;
  const int n = int(tokens.size());
  auto is_anat = [&](int i) { return anatomy_words_.count(tokens[size_t(i)].word) != 0; };
  auto is_mod = [&](int i) { return modifier_words_.count(tokens[size_t(i)].word) != 0; };
  auto is_fill = [&](int i) { return filler_words_.count(tokens[size_t(i)].word) != 0; };
  for (int i = 0; i < n;) {
    if (!(is_anat(i) || is_mod(i))) {
      ++i;
      continue;
    }
    int j = i, last = i;
    std::vector<std::string> words;
    while (j < n && (is_anat(j) || is_mod(j) || is_fill(j))) {
      if (!is_fill(j)) {
        words.push_back(tokens[size_t(j)].word);
        last = j;
      }
      ++j;
    }
    bool has_anat = false;
    for (int k = i; k <= last; ++k) has_anat = has_anat || is_anat(k);
    if (has_anat) {
      int lm = landmark_of(words);
      if (lm < 0) lm = anatomy_index_or_throw("other");
      out.push_back({lm, i, last + 1});
    }
    i = j;
  }
  return out;
}

}  // namespace ms
