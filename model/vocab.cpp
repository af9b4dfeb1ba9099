#include "model/vocab.h"

#include <stdexcept>

namespace ms {

const std::array<const char*, kNumPathologies> kObservations = {
    "normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free",        // 0-7
    "effusion", "opacity", "pneumothorax", "edema", "atelectasis", "tube", "consolidation",   // 8-14
    "process", "abnormality", "enlarge", "tip", "low", "pneumonia", "line", "congestion",     // 15-22
    "catheter", "cardiomegaly", "fracture", "air", "tortuous", "lead", "disease",             // 23-29
    "calcification", "prominence", "device", "engorgement", "picc", "clip", "elevation",      // 30-36
    "expand", "nodule", "wire", "fluid", "degenerative", "pacemaker", "thicken", "marking",   // 37-44
    "scar", "hyperinflate", "blunt", "loss", "widen", "collapse", "density", "emphysema",     // 45-52
    "aerate", "mass", "crowd", "infiltrate", "obscure", "deformity", "hernia", "drainage",    // 53-60
    "distention", "shift", "stent", "pressure", "lesion", "finding", "borderline",            // 61-67
    "hardware", "dilation", "chf", "redistribution", "aspiration", "tail_abnorm_obs",         // 68-73
    "excluded_obs"};                                                                          // 74

const std::array<const char*, kNumAnatomies> kAnatomies = {
    "trachea", "left_hilar", "right_hilar", "hilar_unspec", "left_pleural", "right_pleural",       // 0-5
    "pleural_unspec", "heart_size", "heart_border", "left_diaphragm", "right_diaphragm",           // 6-10
    "diaphragm_unspec", "retrocardiac", "lower_left_lobe", "upper_left_lobe", "lower_right_lobe",  // 11-15
    "middle_right_lobe", "upper_right_lobe", "left_lower_lung", "left_mid_lung", "left_upper_lung",  // 16-20
    "left_apical_lung", "left_lung_unspec", "right_lower_lung", "right_mid_lung",                  // 21-24
    "right_upper_lung", "right_apical_lung", "right_lung_unspec", "lung_apices", "lung_bases",     // 25-29
    "left_costophrenic", "right_costophrenic", "costophrenic_unspec", "cardiophrenic_sulcus",      // 30-33
    "mediastinal", "spine", "clavicle", "rib", "stomach", "right_atrium", "right_ventricle",       // 34-40
    "aorta", "svc", "interstitium", "parenchymal", "cavoatrial_junction", "cardiopulmonary",       // 41-46
    "pulmonary", "lung_volumes", "unspecified", "other"};                                         // 47-50

const std::array<const char*, kNumCxr14Classes> kCxr14Classes = {
    "atelectasis", "cardiomegaly", "pleural effusion", "infiltration", "lung mass", "lung nodule", "pneumonia",
    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural thicken", "hernia"};

// test.py l.26-41, l.121-129. Fibrosis is not an observation of its own: it lands in
// tail_abnorm_obs (73); pleural thickening reads "thicken" (43).
const std::array<int, kNumCxr14Classes> kCxr14QueryIndex = {12, 24, 8, 56, 54, 38, 20, 10, 14, 11, 52, 73, 43, 59};

int observation_index(const std::string& name) {
  for (int i = 0; i < kNumPathologies; ++i)
    if (name == kObservations[size_t(i)]) return i;
  return -1;
}

int anatomy_index(const std::string& name) {
  for (int i = 0; i < kNumAnatomies; ++i)
    if (name == kAnatomies[size_t(i)]) return i;
  return -1;
}

int observation_index_or_throw(const std::string& name) {
  int i = observation_index(name);
  if (i < 0)
    throw std::invalid_argument("unknown observation '" + name + "' (expected one of the 75 names of spec §C.1)");
  return i;
}

int anatomy_index_or_throw(const std::string& name) {
  int i = anatomy_index(name);
  if (i < 0) throw std::invalid_argument("unknown anatomy '" + name + "' (expected one of the 51 names of spec §C.1)");
  return i;
}

std::string anatomy_prompt(const std::string& name) { return "It is located at " + name + ". "; }

}  // namespace ms
