// The synthetic chest X-ray phantoms. Geometry lives in a "canonical" frame: the unit
// square of a standard PA film, u to the right of the viewer (so the patient's right lung
// is on the left, u < 0.5) and v downwards. Per image, a small random similarity
// (shift, scale, a few degrees of rotation) maps it to pixels. Densities add up along
// the beam (A, "attenuation"); the film value is 1 - exp(-k A), then contrast, blur and
// noise. For a lung side s, q = |u - 0.5| measured outward from the midline.
#include "data/synth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/image.h"
#include "engine/rng.h"
#include "engine/threads.h"

// stb_easy_font (header-only, static functions) draws the preview's labels.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

namespace ms {

namespace fs = std::filesystem;

const char* synth_finding_name(SynthFinding f) {
  static const char* names[kNumSynthFindings] = {"effusion", "pneumothorax", "consolidation", "opacity",
                                                 "atelectasis", "nodule", "mass", "cardiomegaly",
                                                 "edema", "device", "emphysema"};
  int i = int(f);
  if (i < 0 || i >= kNumSynthFindings)
    throw std::invalid_argument("synth_finding_name: bad finding " + std::to_string(i));
  return names[i];
}

bool SynthImage::rsna_positive() const {
  for (const auto& f : findings)
    if (f.type == SynthFinding::kConsolidation) return true;
  return false;
}

std::vector<Box> SynthImage::rsna_boxes(int canvas) const {
  std::vector<Box> out;
  double k = double(canvas) / double(size);
  for (const auto& f : findings)
    if (f.type == SynthFinding::kConsolidation)
      out.push_back({f.x0 * k, f.y0 * k, (f.x1 - f.x0) * k, (f.y1 - f.y0) * k});
  return out;
}

namespace {

constexpr double kPi = 3.14159265358979323846;

double clampd(double x, double lo, double hi) { return std::min(std::max(x, lo), hi); }
double smoothstep(double e0, double e1, double x) {
  double t = clampd((x - e0) / (e1 - e0), 0.0, 1.0);
  return t * t * (3 - 2 * t);
}
// A normal draw clipped to [lo, hi].
double gauss(Rng& r, double mean, double sd, double lo, double hi) { return clampd(mean + sd * r.normal(), lo, hi); }
double unif(Rng& r, double lo, double hi) { return lo + (hi - lo) * r.uniform_double(); }

int AN(const char* name) { return anatomy_index_or_throw(name); }
int OB(const char* name) { return observation_index_or_throw(name); }

// The shape of one phantom, in canonical units.
struct Phantom {
  double tx = 0, ty = 0, rot = 0, scale = 1;      // placement of the canonical frame
  double body_w = 0.44, neck_w = 0.11;            // torso half-width, neck half-width
  double v_apex = 0.16, v_cp = 0.78;              // lung apex, costophrenic angle heights
  double q_ap = 0.17, lw = 0.37, mw = 0.055;      // apex, lateral wall, medial wall (q)
  double qd = 0.2;                                // q of the dome top
  double v_dome[2] = {0.64, 0.67};                // dome tops: [0] right (higher), [1] left
  double heart_cx = 0.535, heart_cy = 0.60, heart_w = 0.15, heart_h = 0.105, heart_rot = 0.35;
  double heart_cos = 1, heart_sin = 0;  // of heart_rot
  double carina_v = 0.36;
  double lung_air = 0.5, marking_gain = 1.0;
  double rib_v0 = 0.105, rib_dv = 0.066;
  double k_atten = 1.45, contrast = 1.0, brightness = 0.0, gamma = 1.0, noise = 0.02;
  // Pneumothorax: lateral shrink and apical drop of the collapsed lung, per side.
  double ptx_d[2] = {0, 0};
};

// Signed margin (> 0 inside) of lung side s at (q, v); `shrink` collapses it by d from the
// apex and the upper lateral wall (a pneumothorax's visceral pleural line).
double lung_margin(const Phantom& P, int s, double q, double v, double shrink = 0) {
  double va = P.v_apex + 1.1 * shrink;
  // Far outside the lung's bounding box: the exact margin is not needed.
  double out = std::max(std::max(P.mw - 0.03 - q, q - P.lw - 0.03), std::max(va - 0.03 - v, v - P.v_cp - 0.03));
  if (out > 0) return -0.03 - out;
  double t = clampd((v - va) / (P.v_cp - va), 0.0, 1.0);
  double q_lat = P.q_ap + (P.lw - P.q_ap) * std::sqrt(1 - (1 - t) * (1 - t));
  double tm = std::min(1.0, t / 0.3);
  double q_med = P.q_ap - (P.q_ap - P.mw) * std::sqrt(1 - (1 - tm) * (1 - tm));
  // Below the carina the mediastinum widens into the heart (pulmonary trunk, atria).
  q_med += (s == 0 ? 0.35 : 0.55) * P.heart_w * smoothstep(P.carina_v + 0.02, P.heart_cy - 0.6 * P.heart_h, v);
  if (shrink > 0) q_lat -= shrink * std::sqrt(clampd(1 - t / 0.75, 0.0, 1.0));
  double vd = P.v_dome[s], dome;
  if (q >= P.qd) {
    double x = (q - P.qd) / (P.lw - P.qd);
    dome = vd + (P.v_cp - vd) * x * x;
  } else {
    double x = (P.qd - q) / (P.qd - P.mw);
    dome = vd + 0.035 * x * x;  // down towards the cardiophrenic angle
  }
  return std::min(std::min(q - q_med, q_lat - q), std::min(dome - v, v - va));
}

double side_q(int s, double u) { return s == 0 ? 0.5 - u : u - 0.5; }
double side_u(int s, double q) { return s == 0 ? 0.5 - q : 0.5 + q; }

// Margin (> 0 inside) of the heart, a rotated ellipse.
double heart_margin(const Phantom& P, double u, double v) {
  double dx = u - P.heart_cx, dy = v - P.heart_cy;
  if (std::fabs(dx) > 1.6 * P.heart_w || std::fabs(dy) > 1.6 * P.heart_w) return -P.heart_w;  // far outside
  double c = P.heart_cos, s = P.heart_sin;
  double x = (dx * c + dy * s) / P.heart_w, y = (-dx * s + dy * c) / P.heart_h;
  return (1 - std::sqrt(x * x + y * y)) * std::min(P.heart_w, P.heart_h);
}

// Pixel grid with each pixel's canonical coordinates.
struct Canvas {
  int S = 0;
  double px = 0;  // canonical units per pixel
  double inv_ramp = 0;  // 1 / (1.2 px)
  std::vector<float> cu, cv;
  double cx = 0, cy = 0, cs = 1, sn = 0, scale = 1;

  Canvas(const Phantom& P, int size) : S(size) {
    scale = P.scale;
    px = 1.0 / (S * scale);
    inv_ramp = 1.0 / (1.2 * px);
    cx = 0.5 + P.tx;
    cy = 0.5 + P.ty;
    cs = std::cos(P.rot);
    sn = std::sin(P.rot);
    cu.resize(size_t(S) * S);
    cv.resize(size_t(S) * S);
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        double iu = (x + 0.5) / S - cx, iv = (y + 0.5) / S - cy;
        cu[size_t(y) * S + x] = float(0.5 + (cs * iu + sn * iv) / scale);
        cv[size_t(y) * S + x] = float(0.5 + (-sn * iu + cs * iv) / scale);
      }
  }
  // Canonical -> pixel coordinates (continuous, pixel centres at k + 0.5).
  void to_pixel(double u, double v, double& x, double& y) const {
    double a = (u - 0.5) * scale, b = (v - 0.5) * scale;
    x = (cx + cs * a - sn * b) * S;
    y = (cy + sn * a + cs * b) * S;
  }
  // Soft inside-ness for a margin in canonical units (about 1.2 pixels of ramp).
  float soft(double margin) const { return float(clampd(0.5 + margin * inv_ramp, 0.0, 1.0)); }
};

// A thick segment from a to b (canonical), width tapering wa -> wb, combined with max.
void draw_segment(const Canvas& C, std::vector<float>& buf, double ua, double va, double ub, double vb, double wa,
                  double wb, float value) {
  double xa, ya, xb, yb;
  C.to_pixel(ua, va, xa, ya);
  C.to_pixel(ub, vb, xb, yb);
  double pad = std::max(wa, wb) / C.px + 2;
  int x0 = std::max(0, int(std::floor(std::min(xa, xb) - pad))),
      x1 = std::min(C.S - 1, int(std::ceil(std::max(xa, xb) + pad)));
  int y0 = std::max(0, int(std::floor(std::min(ya, yb) - pad))),
      y1 = std::min(C.S - 1, int(std::ceil(std::max(ya, yb) + pad)));
  double du = ub - ua, dv = vb - va, len2 = du * du + dv * dv;
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) {
      size_t i = size_t(y) * C.S + x;
      double pu = C.cu[i] - ua, pv = C.cv[i] - va;
      double t = len2 > 0 ? clampd((pu * du + pv * dv) / len2, 0.0, 1.0) : 0.0;
      double ex = pu - t * du, ey = pv - t * dv;
      double d = std::sqrt(ex * ex + ey * ey);
      double w = 0.5 * (wa + (wb - wa) * t);
      float a = value * float(clampd(0.5 + (w - d) / C.px, 0.0, 1.0));
      if (a > buf[i]) buf[i] = a;
    }
}

// A polyline through canonical points, constant width.
void draw_polyline(const Canvas& C, std::vector<float>& buf, const std::vector<std::pair<double, double>>& pts,
                   double w, float value) {
  for (size_t k = 0; k + 1 < pts.size(); ++k)
    draw_segment(C, buf, pts[k].first, pts[k].second, pts[k + 1].first, pts[k + 1].second, w, w, value);
}

// Branching vessels from a hilum outwards (lung markings), in (q, v) of side s.
void draw_vessels(const Canvas& C, std::vector<float>& buf, Rng& r, int s, double q, double v, double ang, double len,
                  double w, int depth, float value) {
  double q2 = q + len * std::cos(ang), v2 = v + len * std::sin(ang);
  draw_segment(C, buf, side_u(s, q), v, side_u(s, q2), v2, w, w * 0.75, value);
  if (depth <= 0) return;
  double spread = unif(r, 0.25, 0.55);
  double bias = unif(r, -0.12, 0.12);
  draw_vessels(C, buf, r, s, q2, v2, ang - spread + bias, len * unif(r, 0.62, 0.8), w * 0.72, depth - 1, value * 0.9f);
  draw_vessels(C, buf, r, s, q2, v2, ang + spread + bias, len * unif(r, 0.62, 0.8), w * 0.72, depth - 1, value * 0.9f);
}

// Smooth value noise in [0,1] on a g x g lattice over the canonical square.
struct ValueNoise {
  int g = 8;
  std::vector<float> lat;
  ValueNoise(Rng& r, int grid) : g(grid), lat(size_t(grid + 1) * (grid + 1)) {
    for (auto& x : lat) x = r.uniform();
  }
  float at(double u, double v) const {
    double x = clampd(u, 0.0, 0.9999) * g, y = clampd(v, 0.0, 0.9999) * g;
    int i = int(x), j = int(y);
    double fx = x - i, fy = y - j;
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    auto L = [&](int a, int b) { return double(lat[size_t(b) * (g + 1) + a]); };
    return float((L(i, j) * (1 - fx) + L(i + 1, j) * fx) * (1 - fy) +
                 (L(i, j + 1) * (1 - fx) + L(i + 1, j + 1) * fx) * fy);
  }
};

const char* kSideShort[2] = {"R", "L"};

// Lung-zone and lobe anatomies of side s, zone z (0 upper, 1 mid, 2 lower).
int zone_lung(int s, int z) {
  static const char* names[2][3] = {{"right_upper_lung", "right_mid_lung", "right_lower_lung"},
                                    {"left_upper_lung", "left_mid_lung", "left_lower_lung"}};
  return AN(names[s][z]);
}
int zone_lobe(int s, int z) {
  // The lingula (left mid zone) belongs to the left upper lobe.
  static const char* names[2][3] = {{"upper_right_lobe", "middle_right_lobe", "lower_right_lobe"},
                                    {"upper_left_lobe", "upper_left_lobe", "lower_left_lobe"}};
  return AN(names[s][z]);
}

// Zone of a point of side s by its height between apex and dome.
int zone_of(const Phantom& P, int s, double v) {
  double t = (v - P.v_apex) / (P.v_dome[s] - P.v_apex);
  return t < 1.0 / 3 ? 0 : (t < 2.0 / 3 ? 1 : 2);
}

// A point of lung side s inside zone z (or any zone for z < 0), at least `margin` inside the
// lung and clear of the heart. Returns false when none was found.
bool pick_point(const Phantom& P, Rng& r, int s, int z, double margin, double& u, double& v) {
  for (int tries = 0; tries < 400; ++tries) {
    double vlo = P.v_apex, vhi = P.v_dome[s];
    if (z >= 0) {
      double h = (vhi - vlo) / 3;
      vlo = P.v_apex + z * h;
      vhi = vlo + h;
    }
    double q = unif(r, P.mw, P.lw), vv = unif(r, vlo, vhi);
    double uu = side_u(s, q);
    if (lung_margin(P, s, q, vv) > margin && heart_margin(P, uu, vv) < -margin) {
      u = uu;
      v = vv;
      return true;
    }
  }
  return false;
}

// One finding as planned before drawing.
struct Plan {
  SynthFinding type;
  int side = 0;
  int zone = 0;
  int variant = 0;
  double a = 0, b = 0, c = 0;  // type-specific sizes
};

void set_cell(std::vector<float>& M, int a, int o, float v) {
  float& m = M[size_t(a) * kNumPathologies + size_t(o)];
  if (v == 1.f) m = 1.f;
  else if (m == -1.f) m = v;  // a statement of absence never overrides a finding (§C.1)
}

}  // namespace

namespace {

void check_render_args(int S, int64_t index, double finding_gain, double finding_scale) {
  if (S < 32 || S > 2048)
    throw std::invalid_argument("synth: image size must be in [32, 2048], got " + std::to_string(S));
  if (index < 0) throw std::invalid_argument("synth: negative image index");
  if (!(finding_gain > 0 && finding_gain <= 10))
    throw std::invalid_argument("synth: finding gain must be in (0, 10], got " + std::to_string(finding_gain));
  if (!(finding_scale >= 0.5 && finding_scale <= 3))
    throw std::invalid_argument("synth: finding scale must be in [0.5, 3], got " + std::to_string(finding_scale));
}

// The anatomy of one patient: placement of the film, torso, lungs, heart, ribs and the film
// curve, each drawn within a plausible range.
Phantom draw_patient(Rng& r) {
  Phantom P;
  P.tx = gauss(r, 0, 0.012, -0.03, 0.03);
  P.ty = gauss(r, 0.01, 0.012, -0.02, 0.04);
  P.rot = gauss(r, 0, 1.6, -4, 4) * kPi / 180;
  P.scale = gauss(r, 1.0, 0.04, 0.9, 1.1);
  P.body_w = gauss(r, 0.445, 0.015, 0.41, 0.48);
  P.v_apex = gauss(r, 0.165, 0.012, 0.13, 0.2);
  P.v_cp = gauss(r, 0.775, 0.02, 0.72, 0.83);
  P.lw = gauss(r, 0.37, 0.012, 0.34, 0.4);
  P.q_ap = P.lw * gauss(r, 0.46, 0.02, 0.42, 0.5);
  P.mw = gauss(r, 0.055, 0.006, 0.04, 0.07);
  P.qd = P.lw * gauss(r, 0.5, 0.04, 0.4, 0.6);
  P.v_dome[0] = P.v_cp - gauss(r, 0.13, 0.015, 0.09, 0.17);
  P.v_dome[1] = P.v_dome[0] + gauss(r, 0.025, 0.01, 0.0, 0.05);
  P.heart_w = gauss(r, 0.148, 0.008, 0.13, 0.165);
  P.heart_h = P.heart_w * gauss(r, 0.72, 0.04, 0.62, 0.82);
  P.heart_cx = 0.5 + gauss(r, 0.035, 0.008, 0.015, 0.055);
  P.heart_cy = P.v_dome[0] - gauss(r, 0.035, 0.01, 0.01, 0.06);
  P.heart_rot = gauss(r, 0.35, 0.06, 0.2, 0.5);
  P.heart_cos = std::cos(P.heart_rot);
  P.heart_sin = std::sin(P.heart_rot);
  P.carina_v = gauss(r, 0.36, 0.015, 0.32, 0.4);
  P.lung_air = gauss(r, 0.5, 0.03, 0.42, 0.58);
  P.rib_v0 = P.v_apex - gauss(r, 0.055, 0.008, 0.04, 0.07);
  P.rib_dv = (P.v_cp - P.rib_v0) / gauss(r, 9.6, 0.3, 9.0, 10.2);
  P.k_atten = gauss(r, 1.45, 0.08, 1.25, 1.65);
  P.contrast = gauss(r, 1.0, 0.07, 0.85, 1.15);
  P.brightness = gauss(r, 0.0, 0.03, -0.07, 0.07);
  P.gamma = gauss(r, 1.0, 0.08, 0.85, 1.2);
  P.noise = gauss(r, 0.018, 0.005, 0.008, 0.03);
  return P;
}

// Which findings an abnormal image has (1-3 types, loosely at archive frequencies) and their
// sizes. Some reshape the patient before the anatomy is drawn: pneumothorax, atelectasis
// (raised dome), cardiomegaly, emphysema.
std::vector<Plan> plan_findings(Rng& r, Phantom& P, double finding_scale) {
  std::vector<Plan> plans;
  double k = r.uniform();
  int count = k < 0.5 ? 1 : (k < 0.85 ? 2 : 3);
  // Relative frequencies, loosely like a chest X-ray archive.
  std::vector<double> w = {0.16, 0.07, 0.15, 0.09, 0.12, 0.09, 0.06, 0.12, 0.07, 0.12, 0.04};
  std::vector<int> types;
  for (int c = 0; c < count; ++c) {
    double tot = 0;
    for (double x : w) tot += x;
    double pick = unif(r, 0, tot);
    int t = 0;
    while (t < kNumSynthFindings - 1 && pick >= w[size_t(t)]) pick -= w[size_t(t++)];
    types.push_back(t);
    w[size_t(t)] = 0;
  }
  std::sort(types.begin(), types.end());
  for (int t : types) {
    Plan p;
    p.type = SynthFinding(t);
    p.side = r.uniform() < 0.5 ? 0 : 1;
    switch (p.type) {
      case SynthFinding::kEffusion:
        p.a = unif(r, 0.0, 1.0);  // size: 0 blunted angle .. 1 large
        plans.push_back(p);
        if (r.uniform() < 0.2) {  // bilateral
          Plan q = p;
          q.side = 1 - p.side;
          q.a = unif(r, 0.0, 0.6);
          plans.push_back(q);
        }
        continue;
      case SynthFinding::kPneumothorax:
        p.a = unif(r, 0.025, 0.075) * finding_scale;  // rim of the collapsed lung
        P.ptx_d[p.side] = p.a;
        break;
      case SynthFinding::kConsolidation:
        p.zone = int(r.randint(10) < 5 ? 2 : r.randint(2));  // lower zone most often
        p.a = unif(r, 0.36, 0.48);                          // density
        p.b = unif(r, 0.045, 0.075);                        // blob spread
        break;
      case SynthFinding::kOpacity:
        p.zone = int(r.randint(3));
        p.a = unif(r, 0.14, 0.24);
        p.b = unif(r, 0.055, 0.09);
        break;
      case SynthFinding::kAtelectasis:
        p.zone = r.uniform() < 0.8 ? 2 : 1;
        p.variant = r.uniform() < 0.6 ? 0 : 1;  // 0 plate-like (linear), 1 wedge
        P.v_dome[p.side] -= unif(r, 0.0, 0.02);  // volume loss lifts the dome a little
        break;
      case SynthFinding::kNodule:
        p.a = unif(r, 0.011, 0.02) * finding_scale;  // radius
        break;
      case SynthFinding::kMass:
        p.a = unif(r, 0.045, 0.07);
        break;
      case SynthFinding::kCardiomegaly:
        p.side = -1;
        p.a = unif(r, 1.3, 1.5);
        P.heart_w *= p.a;
        P.heart_h *= unif(r, 1.08, 1.2);
        P.heart_cx += unif(r, 0.01, 0.025);
        break;
      case SynthFinding::kEdema:
        p.side = -1;
        p.a = unif(r, 0.16, 0.26);
        p.b = unif(r, 0.075, 0.1);
        break;
      case SynthFinding::kDevice:
        p.side = -1;
        p.variant = int(r.randint(3));  // 0 endotracheal tube, 1 central line, 2 pacemaker
        break;
      case SynthFinding::kEmphysema:
        p.side = -1;
        P.v_cp += unif(r, 0.03, 0.05);
        P.v_dome[0] = P.v_cp - unif(r, 0.03, 0.05);
        P.v_dome[1] = P.v_dome[0] + unif(r, 0.0, 0.015);
        P.lw += 0.01;
        P.lung_air *= 1.12;
        P.marking_gain = 0.55;
        break;
      default:
        break;
    }
    plans.push_back(p);
  }
  return plans;
}

// The attenuation layers of one film ([S*S] each, summed along the beam when developed) and
// the drawing steps that fill them. Member names are the ones the drawing code reads.
struct Film {
  Canvas C;
  int S;
  size_t N;
  std::vector<float> A, lung[2], lung_raw[2], heart, markings, air, bone, ribs;
  ValueNoise tex, tex2;  // lung texture (coarse, fine): drawn from r right after the plans

  Film(const Phantom& P, int size, Rng& r)
      : C(P, size), S(size), N(size_t(size) * size), A(N, 0.f), lung{std::vector<float>(N), std::vector<float>(N)},
        lung_raw{std::vector<float>(N), std::vector<float>(N)}, heart(N), markings(N, 0.f), air(N, 0.f),
        bone(N, 0.f), ribs(N, 0.f), tex(r, 10), tex2(r, 24) {}

  void draw_torso(const Phantom& P);
  void draw_bones(const Phantom& P);
  void draw_hila(const Phantom& P, Rng& r);

  // One finding into `mask` (its extent, 0..1), `dens` (attenuation per unit of mask) and the
  // label cells of `d`; false when it found no place (e.g. no room for a nodule).
  bool effusion(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool pneumothorax(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool opacity(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool atelectasis(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool nodule_or_mass(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool cardiomegaly(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool edema(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool device(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool emphysema(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  bool draw_finding(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d);
  // Attenuation -> grey: film curve, contrast, [1 2 1] blur, noise; 8-bit pixels.
  void develop(const Phantom& P, Rng& r, std::vector<uint8_t>& pixels) const;
};

// Torso, heart, lungs (with the aortic knob), spine, trachea and gastric bubble.
void Film::draw_torso(const Phantom& P) {
  double v_dome_mid = 0.5 * (P.v_dome[0] + P.v_dome[1]);
  for (size_t i = 0; i < N; ++i) {
    double u = C.cu[i], v = C.cv[i];
    double dx = std::fabs(u - 0.5);
    // Torso: shoulders round off towards the neck; thicker (denser) in the middle and
    // a little denser below the domes (liver, abdomen).
    double bw = P.neck_w + (P.body_w - P.neck_w) * std::sqrt(clampd((v + 0.02) / 0.2, 0.0, 1.0));
    double prof = std::sqrt(clampd(1 - (dx / bw) * (dx / bw), 0.0, 1.0));
    double body = C.soft(bw - dx) * (0.72 * (0.72 + 0.28 * prof) + 0.05 * smoothstep(v_dome_mid, v_dome_mid + 0.1, v));
    double a = body;
    heart[i] = C.soft(heart_margin(P, u, v)) * float(1 - smoothstep(v_dome_mid - 0.02, v_dome_mid + 0.06, v));
    // Aortic knob: a small bulge of the mediastinum into the left lung.
    double ku = u - (0.5 + P.mw - 0.002), kv = v - (P.carina_v - 0.025);
    double knob = ku * ku + kv * kv < 0.0015 ? C.soft(0.019 - std::sqrt(ku * ku + kv * kv)) : 0.0;
    for (int s = 0; s < 2; ++s) {
      double q = side_q(s, u);
      lung_raw[s][i] = C.soft(lung_margin(P, s, q, v));
      lung[s][i] = lung_raw[s][i] * (1 - heart[i]) * float(1 - (s == 1 ? knob : 0.0));
    }
    double lungs = lung[0][i] + lung[1][i];
    a -= P.lung_air * lungs * (0.9 + 0.2 * tex.at(u, v));
    a += 0.02 * heart[i] + 0.05 * C.soft(P.mw + 0.01 - dx) * (v < v_dome_mid ? 1 : 0);
    // Spine: vertebral bodies with darker disc spaces and pedicle rims.
    if (dx < 0.04) {
      double spine = C.soft(0.036 - dx);
      double ph = (v - P.rib_v0) / (P.rib_dv * 0.75) + 100.0, phase = ph - std::floor(ph);
      a += spine * (0.09 - 0.04 * smoothstep(0.8, 0.92, phase) + 0.03 * C.soft(0.01 - std::fabs(dx - 0.026)));
    }
    // Trachea down to the carina.
    air[i] = float(0.2 * C.soft(0.016 - dx) * C.soft(P.carina_v - v));
    // Gastric bubble under the left dome.
    double gu = side_u(1, P.qd + 0.02), gv = P.v_dome[1] + 0.06;
    double eu = (u - gu) / 0.05, ev = (v - gv) / 0.03;
    if (eu * eu + ev * ev < 2) air[i] += float(0.25 * C.soft(0.035 * (1 - std::sqrt(eu * eu + ev * ev))));
    A[i] = float(a);
  }
}

// Main bronchi, clavicles and ribs.
void Film::draw_bones(const Phantom& P) {
  // Main bronchi below the carina.
  for (int s = 0; s < 2; ++s) {
    double sx = s == 0 ? -1 : 1;
    draw_segment(C, air, 0.5, P.carina_v - 0.01, 0.5 + sx * 0.07, P.carina_v + 0.055, 0.026, 0.018, 0.12f);
  }
  // Clavicles: from the sternal end out and up to the shoulder, slightly S-shaped.
  for (int s = 0; s < 2; ++s) {
    double y0 = P.v_apex + 0.045;
    std::vector<std::pair<double, double>> pts = {{side_u(s, 0.04), y0 + 0.012}, {side_u(s, 0.13), y0 - 0.015},
                                                  {side_u(s, 0.25), y0 - 0.04}, {side_u(s, 0.35), y0 - 0.07}};
    draw_polyline(C, bone, pts, 0.022, 0.17f);
  }
  // Ribs: posterior arcs (up and out from the spine, then down along the chest wall) with
  // brighter cortical rims, and fainter anterior ends running down and in.
  for (size_t i = 0; i < N; ++i) {
    double u = C.cu[i], v = C.cv[i];
    for (int s = 0; s < 2; ++s) {
      double q = side_q(s, u);
      if (q < 0.03 || q > P.lw + 0.05) continue;
      double reach = C.soft(P.lw + 0.035 - q) * C.soft(q - 0.035) * (1 - smoothstep(P.v_cp, P.v_cp + 0.08, v));
      double f = 1.5 * (q - 0.09) * (q - 0.09) - 0.012;
      double k = std::round((v - P.rib_v0 - f) / P.rib_dv);
      float post = 0.f, ant = 0.f;
      if (k >= 0 && k <= 10) {
        double d = std::fabs(v - (P.rib_v0 + f + k * P.rib_dv));
        double half = 0.0085 + 0.0005 * k;
        double band = C.soft(half - d), cortex = C.soft(0.0035 - std::fabs(d - half + 0.0025));
        post = float(reach * (0.065 * band + 0.035 * cortex));
      }
      double g = -0.3 * (P.lw - q);
      double ka = std::round((v - P.rib_v0 - 0.03 - g) / (P.rib_dv * 1.2));
      if (ka >= 1 && ka <= 6 && q > 0.12) {
        double da = std::fabs(v - (P.rib_v0 + 0.03 + g + ka * P.rib_dv * 1.2));
        ant = float(reach * 0.03 * C.soft(0.008 - da));
      }
      ribs[i] = std::max(ribs[i], post + ant);
    }
  }
}

// Vessels branching from the hila (lung markings) and the hilar shadows.
void Film::draw_hila(const Phantom& P, Rng& r) {
  // Vessels from the hila.
  for (int s = 0; s < 2; ++s) {
    double hq = 0.095 + 0.01 * s, hv = P.carina_v + 0.075 + (s == 0 ? 0.01 : 0.0);
    int nb = 6;
    for (int b = 0; b < nb; ++b) {
      double ang = -1.35 + 2.5 * (b + unif(r, 0.2, 0.8)) / nb;  // up (-) .. down (+), outward at 0
      draw_vessels(C, markings, r, s, hq, hv, ang, unif(r, 0.06, 0.09), 0.011, 3, float(0.1 * P.marking_gain));
    }
  }
  // Hilar shadows.
  for (size_t i = 0; i < N; ++i) {
    double u = C.cu[i], v = C.cv[i];
    for (int s = 0; s < 2; ++s) {
      double dq = side_q(s, u) - (0.085 + 0.01 * s), dv = v - (P.carina_v + 0.07);
      if (std::fabs(dq) > 0.09 || std::fabs(dv) > 0.16) continue;
      A[i] += float(0.09 * std::exp(-(dq * dq) / (2 * 0.022 * 0.022) - (dv * dv) / (2 * 0.04 * 0.04)));
    }
  }
}

bool Film::effusion(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    // Fluid layers at the base with a meniscus rising along the lateral wall: it
    // blunts the costophrenic angle and, when large, hides the dome.
    double level = P.v_cp - 0.02 - p.a * (P.v_cp - P.v_dome[s] + 0.16);
    for (size_t i = 0; i < N; ++i) {
      double q = side_q(s, C.cu[i]);
      double x = clampd((q - P.mw) / (P.lw - P.mw), 0.0, 1.0);
      double men = level - (0.04 + 0.08 * p.a) * x * x * x;  // climbs the lateral wall
      mask[i] = float(lung[s][i] * smoothstep(-0.01, 0.045, C.cv[i] - men));
    }
    dens = float(P.lung_air * 0.95);
    d.label = std::string("eff ") + kSideShort[s];
    d.cells = {{AN(s == 0 ? "right_pleural" : "left_pleural"), OB("effusion")},
               {AN(s == 0 ? "right_costophrenic" : "left_costophrenic"), OB("effusion")},
               {AN(s == 0 ? "right_costophrenic" : "left_costophrenic"), OB("blunt")}};
    return true;
}

bool Film::pneumothorax(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    // Air between the collapsed lung and the chest wall: darker, no vessels, and a
    // thin bright visceral pleural line at the lung's edge.
    for (size_t i = 0; i < N; ++i) {
      double q = side_q(s, C.cu[i]), v = C.cv[i];
      double m_in = lung_margin(P, s, q, v, P.ptx_d[s]);
      float region = lung[s][i] * (1 - C.soft(m_in));
      mask[i] = region;
      markings[i] *= 1 - region;
      A[i] += float(0.15 * std::exp(-m_in * m_in / (2 * 0.7 * C.px * 0.7 * C.px)) * lung_raw[s][i]);
    }
    dens = -0.12f;
    d.label = std::string("PTX ") + kSideShort[s];
    d.cells = {{AN(s == 0 ? "right_pleural" : "left_pleural"), OB("pneumothorax")},
               {AN(s == 0 ? "right_apical_lung" : "left_apical_lung"), OB("pneumothorax")}};
    return true;
}

bool Film::opacity(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    bool cons = p.type == SynthFinding::kConsolidation;
    double u0, v0;
    if (!pick_point(P, r, s, p.zone, 0.03, u0, v0)) return false;
    int nb = 3 + int(r.randint(3));
    std::vector<double> bu, bv, bs;
    for (int k = 0; k < nb; ++k) {
      bu.push_back(u0 + gauss(r, 0, p.b * 0.6, -p.b, p.b));
      bv.push_back(v0 + gauss(r, 0, p.b * 0.5, -p.b, p.b));
      bs.push_back(p.b * unif(r, 0.5, 0.9));
    }
    ValueNoise blot(r, cons ? 28 : 14);
    for (size_t i = 0; i < N; ++i) {
      if (lung[s][i] <= 0) continue;
      double f = 0;
      for (int k = 0; k < nb; ++k) {
        double du = C.cu[i] - bu[size_t(k)], dv = C.cv[i] - bv[size_t(k)];
        f += std::exp(-(du * du + dv * dv) / (2 * bs[size_t(k)] * bs[size_t(k)]));
      }
      f += (cons ? 0.45 : 0.25) * (blot.at(C.cu[i], C.cv[i]) - 0.5);
      mask[i] = float(lung[s][i] * (cons ? smoothstep(0.45, 0.6, f) : smoothstep(0.3, 0.75, f)));
    }
    // Air bronchograms: dark branching lines inside a consolidation.
    if (cons) {
      std::vector<float> br(N, 0.f);
      double ang = std::atan2(v0 - (P.carina_v + 0.07), side_q(s, u0) - 0.09);
      draw_vessels(C, br, r, s, side_q(s, u0) - 0.04 * std::cos(ang), v0 - 0.04 * std::sin(ang), ang, 0.04,
                   0.008, 2, 1.f);
      for (size_t i = 0; i < N; ++i) mask[i] *= 1 - 0.5f * br[i];
    }
    dens = float(p.a);
    int z = zone_of(P, s, v0);
    if (cons) {
      d.label = std::string("cons ") + kSideShort[s];
      d.cells = {{zone_lung(s, z), OB("consolidation")}, {zone_lobe(s, z), OB("consolidation")},
                 {zone_lung(s, z), OB("pneumonia")}, {zone_lobe(s, z), OB("pneumonia")}};
    } else {
      d.label = std::string("opac ") + kSideShort[s];
      d.cells = {{zone_lung(s, z), OB("opacity")}};
    }
    return true;
}

bool Film::atelectasis(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    double u0, v0;
    if (!pick_point(P, r, s, p.zone, 0.035, u0, v0)) return false;
    std::vector<float> buf(N, 0.f);
    if (p.variant == 0) {  // plate-like: a thin, nearly horizontal band
      double len = unif(r, 0.07, 0.13), tilt = unif(r, -0.25, 0.25), w = unif(r, 0.008, 0.014) * finding_scale;
      double du = 0.5 * len * std::cos(tilt), dv = 0.5 * len * std::sin(tilt);
      draw_segment(C, buf, u0 - du, v0 - dv, u0 + du, v0 + dv, w, w * 0.8, 1.f);
      d.label = std::string("atel ") + kSideShort[s];
    } else {  // wedge pointing at the hilum
      double hu = side_u(s, 0.09), hv = P.carina_v + 0.07;
      double ang = std::atan2(v0 - hv, u0 - hu);
      double len = unif(r, 0.08, 0.13);
      draw_segment(C, buf, u0 - len * std::cos(ang), v0 - len * std::sin(ang), u0, v0, 0.008, unif(r, 0.04, 0.06),
                   1.f);
      d.label = std::string("atel ") + kSideShort[s];
    }
    for (size_t i = 0; i < N; ++i) mask[i] = buf[i] * lung[s][i];
    dens = float(unif(r, 0.25, 0.35));
    int z = zone_of(P, s, v0);
    d.cells = {{zone_lung(s, z), OB("atelectasis")}, {zone_lobe(s, z), OB("atelectasis")}};
    return true;
}

bool Film::nodule_or_mass(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    bool mass = p.type == SynthFinding::kMass;
    double u0, v0;
    if (!pick_point(P, r, s, -1, p.a * (mass ? 0.7 : 1.5) + 0.01, u0, v0)) return false;
    double ph1 = unif(r, 0, 2 * kPi), ph2 = unif(r, 0, 2 * kPi);
    for (size_t i = 0; i < N; ++i) {
      double du = C.cu[i] - u0, dv = C.cv[i] - v0;
      double rad = std::sqrt(du * du + dv * dv);
      if (rad > 1.5 * p.a) continue;
      double th = std::atan2(dv, du);
      double R = p.a * (mass ? 1 + 0.12 * std::sin(3 * th + ph1) + 0.07 * std::sin(5 * th + ph2) : 1.0);
      // Slightly domed profile: denser in the middle, like a sphere seen through.
      double m = C.soft(R - rad) * (0.75 + 0.25 * std::sqrt(clampd(1 - (rad / R) * (rad / R), 0.0, 1.0)));
      mask[i] = float(m * lung_raw[s][i]);
    }
    dens = float(mass ? unif(r, 0.4, 0.5) : unif(r, 0.35, 0.45));
    int z = zone_of(P, s, v0);
    d.label = std::string(mass ? "mass " : "nod ") + kSideShort[s];
    d.cells = {{zone_lung(s, z), OB(mass ? "mass" : "nodule")}};
    return true;
}

bool Film::cardiomegaly(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    // Already drawn (the heart was enlarged before the anatomy); the box is the heart.
    for (size_t i = 0; i < N; ++i) mask[i] = heart[i];
    dens = 0.f;
    d.label = "CMG";
    d.cells = {{AN("heart_size"), OB("cardiomegaly")}, {AN("heart_size"), OB("enlarge")}};
    return true;
}

bool Film::edema(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    // Bilateral perihilar ("bat-wing") haze plus a few septal (Kerley B) lines.
    ValueNoise haze(r, 20);
    std::vector<float> kerley(N, 0.f);
    for (int side = 0; side < 2; ++side)
      for (int k = 0; k < 5; ++k) {
        double v0 = P.v_dome[side] - unif(r, 0.01, 0.08), q0 = P.lw - unif(r, 0.0, 0.03);
        draw_segment(C, kerley, side_u(side, q0), v0, side_u(side, q0 - unif(r, 0.025, 0.04)), v0, 0.005, 0.005,
                     0.5f);
      }
    for (size_t i = 0; i < N; ++i) {
      double f = 0;
      for (int side = 0; side < 2; ++side) {
        double dq = side_q(side, C.cu[i]) - 0.1, dv = C.cv[i] - (P.carina_v + 0.09);
        f += std::exp(-(dq * dq) / (2 * p.b * p.b * 1.3) - (dv * dv) / (2 * p.b * p.b * 2.2));
      }
      f *= 0.75 + 0.5 * haze.at(C.cu[i], C.cv[i]);
      float lungs = lung[0][i] + lung[1][i];
      mask[i] = float(std::min(1.0, f) * lungs) + kerley[i] * lungs;
    }
    dens = float(p.a);
    d.label = "edema";
    d.cells = {{AN("pulmonary"), OB("edema")}, {AN("left_hilar"), OB("edema")}, {AN("right_hilar"), OB("edema")}};
    return true;
}

bool Film::device(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    std::vector<float> buf(N, 0.f);
    if (p.variant == 0) {  // endotracheal tube: radiopaque stripe ending above the carina
      double tip = P.carina_v - unif(r, 0.04, 0.08);
      draw_segment(C, buf, 0.5 + 0.004, -0.05, 0.5 + 0.002, tip, 0.007, 0.007, 1.f);
      draw_segment(C, buf, 0.5 - 0.012, -0.05, 0.5 - 0.012, tip, 0.003, 0.003, 0.6f);
      draw_segment(C, buf, 0.5 + 0.016, -0.05, 0.5 + 0.016, tip, 0.003, 0.003, 0.6f);
      d.label = "ETT";
      d.cells = {{AN("trachea"), OB("tube")}};
    } else if (p.variant == 1) {  // central venous line from the subclavian into the SVC
      int cs = r.uniform() < 0.7 ? 0 : 1;
      double tip = P.carina_v + unif(r, 0.03, 0.08);
      std::vector<std::pair<double, double>> pts = {{side_u(cs, 0.36), P.v_apex + 0.0},
                                                    {side_u(cs, 0.2), P.v_apex + 0.05},
                                                    {side_u(cs, 0.07), P.v_apex + 0.1},
                                                    {side_u(0, 0.035), P.carina_v - 0.04},
                                                    {side_u(0, 0.035), tip}};
      draw_polyline(C, buf, pts, 0.006, 1.f);
      d.label = "line";
      d.cells = {{AN("svc"), OB("line")}, {AN("svc"), OB("catheter")}};
    } else {  // pacemaker: generator in the left upper chest, lead into the right ventricle
      double gu = side_u(1, 0.26), gv = P.v_apex + 0.06;
      for (size_t i = 0; i < N; ++i) {
        double du = std::fabs(C.cu[i] - gu) - 0.03, dv = std::fabs(C.cv[i] - gv) - 0.018;
        double m = -(std::hypot(std::max(du, 0.0), std::max(dv, 0.0)) + std::min(std::max(du, dv), 0.0)) + 0.008;
        buf[i] = C.soft(m);
      }
      std::vector<std::pair<double, double>> pts = {{gu - 0.03, gv + 0.005},
                                                    {side_u(1, 0.12), P.v_apex + 0.09},
                                                    {side_u(0, 0.03), P.carina_v - 0.02},
                                                    {side_u(0, 0.04), P.heart_cy - 0.03},
                                                    {P.heart_cx + 0.03, P.heart_cy + 0.05}};
      draw_polyline(C, buf, pts, 0.005, 1.f);
      d.label = "PM";
      d.cells = {{AN("other"), OB("pacemaker")}, {AN("other"), OB("device")}, {AN("right_ventricle"), OB("lead")}};
    }
    for (size_t i = 0; i < N; ++i) mask[i] = buf[i];
    dens = 0.9f;
    return true;
}

bool Film::emphysema(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
    // Already drawn (large, lucent, flat-domed lungs); the box covers both lungs.
    for (size_t i = 0; i < N; ++i) mask[i] = lung[0][i] + lung[1][i];
    dens = 0.f;
    d.label = "emph";
    d.cells = {{AN("pulmonary"), OB("emphysema")}, {AN("lung_volumes"), OB("hyperinflate")}};
    return true;
}

bool Film::draw_finding(const Plan& p, const Phantom& P, Rng& r, double finding_scale, int s, std::vector<float>& mask, float& dens, SynthDrawn& d) {
  switch (p.type) {
    case SynthFinding::kEffusion: return effusion(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kPneumothorax: return pneumothorax(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kConsolidation: return opacity(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kOpacity: return opacity(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kAtelectasis: return atelectasis(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kNodule: return nodule_or_mass(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kMass: return nodule_or_mass(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kCardiomegaly: return cardiomegaly(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kEdema: return edema(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kDevice: return device(p, P, r, finding_scale, s, mask, dens, d);
    case SynthFinding::kEmphysema: return emphysema(p, P, r, finding_scale, s, mask, dens, d);
    default: return false;
  }
}

void Film::develop(const Phantom& P, Rng& r, std::vector<uint8_t>& pixels) const {
  // The film curve as a table over A in [0, kAmax) (linear interpolation between entries).
  constexpr int kLut = 2048;
  constexpr double kAmax = 4.0;
  std::vector<float> lut(kLut + 1);
  for (int k = 0; k <= kLut; ++k) {
    double g = std::pow(1 - std::exp(-P.k_atten * kAmax * k / kLut), P.gamma);
    lut[size_t(k)] = float(0.5 + P.contrast * (g - 0.5) + P.brightness);
  }
  std::vector<float> img(N);
  for (size_t i = 0; i < N; ++i) {
    float lungs = lung[0][i] + lung[1][i];
    float a = A[i] + bone[i] - air[i] + ribs[i] * (0.45f + 0.55f * std::min(lungs, 1.f));
    if (lungs > 0) a += lungs * (0.06f * (tex2.at(C.cu[i], C.cv[i]) - 0.5f) + markings[i]);
    float x = std::min(std::max(a, 0.f), float(kAmax) * 0.9999f) * float(kLut / kAmax);
    int k = int(x);
    img[i] = lut[size_t(k)] + (x - float(k)) * (lut[size_t(k) + 1] - lut[size_t(k)]);
  }
  // [1 2 1]/4 separable blur: the soft focus of a real film.
  std::vector<float> tmp(N);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      size_t i = size_t(y) * S + x;
      tmp[i] = 0.25f * img[i - (x > 0)] + 0.5f * img[i] + 0.25f * img[i + (x < S - 1)];
    }
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      size_t i = size_t(y) * S + x;
      img[i] = 0.25f * tmp[i - (y > 0 ? S : 0)] + 0.5f * tmp[i] + 0.25f * tmp[i + (y < S - 1 ? S : 0)];
    }
  std::vector<float> noise(N);
  r.fill_normal(noise.data(), int64_t(N), 0.f, float(P.noise));
  pixels.resize(N);
  for (size_t i = 0; i < N; ++i)
    pixels[i] = uint8_t(clampd(img[i] + noise[i], 0.0, 1.0) * 255.0 + 0.5);
}

// Report-style statements: normals stated present, 3-8 absent findings stated absent.
void state_normals_and_absences(const SynthImage& out, Rng& r, std::vector<float>& M) {
  auto has = [&](SynthFinding f) {
    for (const auto& d : out.findings)
      if (d.type == f) return true;
    return false;
  };
  bool lungs_clear = true;
  for (SynthFinding f : {SynthFinding::kConsolidation, SynthFinding::kOpacity, SynthFinding::kAtelectasis,
                         SynthFinding::kNodule, SynthFinding::kMass, SynthFinding::kEdema, SynthFinding::kEmphysema})
    lungs_clear = lungs_clear && !has(f);
  if (lungs_clear && (out.normal || r.uniform() < 0.6)) {
    set_cell(M, AN("right_lung_unspec"), OB("clear"), 1.f);
    set_cell(M, AN("left_lung_unspec"), OB("clear"), 1.f);
  }
  if (!has(SynthFinding::kCardiomegaly) && (out.normal || r.uniform() < 0.5))
    set_cell(M, AN("heart_size"), OB("normal"), 1.f);
  if (out.normal || r.uniform() < 0.3) set_cell(M, AN("mediastinal"), OB("normal"), 1.f);
  if (out.normal && r.uniform() < 0.5) set_cell(M, AN("unspecified"), OB("unremarkable"), 1.f);
  // "No pleural effusion, no pneumothorax, no focal consolidation or pneumonia...": 3-8 absent
  // findings, so that every finding type with a zero-shot class is also stated absent.
  struct Absent { SynthFinding f; const char* anatomy; const char* obs; };
  static const Absent absent[] = {{SynthFinding::kEffusion, "pleural_unspec", "effusion"},
                                  {SynthFinding::kPneumothorax, "pleural_unspec", "pneumothorax"},
                                  {SynthFinding::kConsolidation, "unspecified", "consolidation"},
                                  {SynthFinding::kConsolidation, "unspecified", "pneumonia"},
                                  {SynthFinding::kOpacity, "unspecified", "opacity"},
                                  {SynthFinding::kAtelectasis, "lung_bases", "atelectasis"},
                                  {SynthFinding::kNodule, "unspecified", "nodule"},
                                  {SynthFinding::kMass, "unspecified", "mass"},
                                  {SynthFinding::kCardiomegaly, "heart_size", "cardiomegaly"},
                                  {SynthFinding::kEdema, "pulmonary", "edema"},
                                  {SynthFinding::kEmphysema, "pulmonary", "emphysema"}};
  std::vector<int> cand;
  for (int k = 0; k < int(sizeof(absent) / sizeof(absent[0])); ++k)
    if (!has(absent[k].f)) cand.push_back(k);
  int n_abs = int(std::min<int64_t>(int64_t(cand.size()), 3 + r.randint(6)));
  for (int k : r.sample(cand, n_abs)) set_cell(M, AN(absent[k].anatomy), OB(absent[k].obs), 0.f);
}

}  // namespace

SynthImage render_synth_image(uint64_t seed, int64_t index, int S, double finding_gain, double finding_scale) {
  check_render_args(S, index, finding_gain, finding_scale);
  Rng r(seed, kStreamData);
  r.set_offset((uint64_t(index) + 1) << 24);  // image i owns counters [(i+1) 2^24, (i+2) 2^24)

  Phantom P = draw_patient(r);
  SynthImage out;
  out.size = S;
  out.normal = r.uniform() < 0.25;
  std::vector<Plan> plans;
  if (!out.normal) plans = plan_findings(r, P, finding_scale);

  Film film(P, S, r);
  film.draw_torso(P);
  film.draw_bones(P);
  film.draw_hila(P, r);

  // Findings: drawn into the film, boxed where the mask exceeds 1/2, their cells set in M.
  const size_t N = film.N;
  std::vector<float>& A = film.A;
  std::vector<float> M(size_t(kMatrixSize), -1.f);
  std::vector<float> mask(N);
  for (const Plan& p : plans) {
    SynthDrawn d;
    d.type = p.type;
    d.side = p.side;
    std::fill(mask.begin(), mask.end(), 0.f);
    float dens = 0.f;
    int s = p.side < 0 ? 0 : p.side;
    if (!film.draw_finding(p, P, r, finding_scale, s, mask, dens, d)) continue;
    int x0 = S, y0 = S, x1 = -1, y1 = -1;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        size_t i = size_t(y) * S + x;
        A[i] += float(finding_gain) * dens * mask[i];
        if (mask[i] > 0.5f) {
          x0 = std::min(x0, x); x1 = std::max(x1, x);
          y0 = std::min(y0, y); y1 = std::max(y1, y);
        }
      }
    if (x1 < 0) continue;  // nothing visible (e.g. clipped away): no label either
    d.x0 = x0; d.y0 = y0; d.x1 = x1 + 1; d.y1 = y1 + 1;
    for (auto [a, o] : d.cells) set_cell(M, a, o, 1.f);
    out.findings.push_back(std::move(d));
  }
  out.normal = out.findings.empty();

  state_normals_and_absences(out, r, M);
  out.matrix = std::move(M);
  film.develop(P, r, out.pixels);
  return out;
}

// ---- the dataset on disk ---------------------------------------------------------------------

const char* const kSynthObservationText[kNumPathologies] = {
    "normal: the structure looks as it should, with nothing abnormal about it",             // normal
    "clear: the lung fields are clear, dark and evenly aerated, with no added shadow",      // clear
    "sharp: an edge or angle is crisp and well defined",                                    // sharp
    "sharply: outlined crisply, with a well defined margin",                                // sharply
    "unremarkable: nothing worth reporting is seen here",                                   // unremarkable
    "intact: the bone or structure is whole and unbroken",                                  // intact
    "stable: unchanged in appearance compared with an earlier film",                        // stable
    "free: no air or fluid collection is present in the space",                             // free
    "effusion: fluid in the pleural space, a dense base with a meniscus blunting the angle",   // effusion
    "opacity: an area whiter than aerated lung, hazy or dense, of any cause",               // opacity
    "pneumothorax: air around a collapsed lung, a dark rim without vessels and a thin pleural line",  // pneumothorax
    "edema: fluid in the lungs, a hazy bilateral whiteness spreading from the hila",        // edema
    "atelectasis: a collapsed part of the lung, a linear band or wedge of density",         // atelectasis
    "tube: a radiopaque tube such as an endotracheal or feeding tube",                      // tube
    "consolidation: airspace filled with fluid or pus, a dense white lobe or zone",         // consolidation
    "process: an active abnormal process in the lung, such as infection",                   // process
    "abnormality: something that departs from normal appearance",                           // abnormality
    "enlarge: bigger than normal, for example an enlarged heart",                           // enlarge
    "tip: the end of a tube or line and where it lies",                                     // tip
    "low: reduced, as in low lung volumes from a shallow breath",                           // low
    "pneumonia: lung infection, seen as consolidation or patchy airspace density",          // pneumonia
    "line: a thin radiopaque catheter line, such as a central venous line",                 // line
    "congestion: engorged pulmonary vessels from raised venous pressure",                   // congestion
    "catheter: a thin tube placed in a vessel or cavity",                                   // catheter
    "cardiomegaly: the heart is wider than half of the chest",                              // cardiomegaly
    "fracture: a break in a bone such as a rib or clavicle",                                // fracture
    "air: gas where it is not expected, or the air content of a space",                     // air
    "tortuous: a vessel such as the aorta runs a winding course",                           // tortuous
    "lead: a wire from a pacemaker or defibrillator running into the heart",                // lead
    "disease: a pathological condition of the lung or heart",                               // disease
    "calcification: calcium deposits, very white spots or rims",                            // calcification
    "prominence: a structure that stands out more than usual, such as the hila",            // prominence
    "device: an implanted or external medical device",                                      // device
    "engorgement: distended vessels filled with blood",                                     // engorgement
    "picc: a peripherally inserted central catheter from the arm",                          // picc
    "clip: a small metallic surgical clip",                                                 // clip
    "elevation: a structure sits higher than usual, such as a raised diaphragm",            // elevation
    "expand: a lung that is fully or well expanded",                                        // expand
    "nodule: a small round density in the lung, under three centimetres",                   // nodule
    "wire: a metallic wire, for example sternal wires after surgery",                       // wire
    "fluid: liquid collecting in a space or the lung",                                      // fluid
    "degenerative: wear-related changes of the spine or joints",                            // degenerative
    "pacemaker: a cardiac pacing generator in the chest wall with leads",                   // pacemaker
    "thicken: a wall or the pleura is thicker than normal",                                 // thicken
    "marking: the branching vascular lines of the lungs",                                   // marking
    "scar: fibrous tissue left after injury or infection",                                  // scar
    "hyperinflate: overexpanded lungs with flat domes, as in emphysema",                    // hyperinflate
    "blunt: a costophrenic angle that has lost its sharp point",                            // blunt
    "loss: lost volume or a lost outline of a structure",                                   // loss
    "widen: wider than normal, such as a widened mediastinum",                              // widen
    "collapse: a lung or lobe that has lost its air",                                       // collapse
    "density: a region that absorbs more X-rays and looks whiter",                          // density
    "emphysema: destroyed air spaces, dark overinflated lungs with few vessels",            // emphysema
    "aerate: filled with air as a lung should be",                                          // aerate
    "mass: a large round density in the lung, over three centimetres",                      // mass
    "crowd: vessels or ribs pressed closer together, often from low volume",                // crowd
    "infiltrate: ill-defined density spreading through the lung tissue",                    // infiltrate
    "obscure: an outline hidden by an adjacent density",                                    // obscure
    "deformity: an abnormal shape of a bone or structure",                                  // deformity
    "hernia: an organ pushing through an opening, such as a hiatal hernia",                 // hernia
    "drainage: a drain placed to remove fluid or air",                                      // drainage
    "distention: a hollow organ stretched by gas or fluid",                                 // distention
    "shift: structures pushed or pulled from their usual place",                            // shift
    "stent: a tubular mesh holding a vessel or airway open",                                // stent
    "pressure: raised pressure, for example in the pulmonary veins",                        // pressure
    "lesion: a region of abnormal tissue",                                                  // lesion
    "finding: an observation on the film",                                                  // finding
    "borderline: at the upper edge of normal, such as heart size",                          // borderline
    "hardware: orthopaedic or surgical metal",                                              // hardware
    "dilation: a widened vessel or chamber",                                                // dilation
    "chf: congestive heart failure with vascular congestion and edema",                     // chf
    "redistribution: upper-zone vessels as large as the lower ones, from raised pressure",  // redistribution
    "aspiration: inhaled material, usually in the dependent lower lung",                    // aspiration
    "other abnormal finding: any abnormal observation without its own column",             // tail_abnorm_obs
    "other finding: an observation left out of the abnormality classes",                   // excluded_obs
};

namespace {

// A tiny RGB canvas for the preview sheet.
struct Rgb {
  int w, h;
  std::vector<uint8_t> px;
  Rgb(int w_, int h_) : w(w_), h(h_), px(size_t(w_) * h_ * 3, 0) {}
  void set(int x, int y, const uint8_t c[3]) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    for (int k = 0; k < 3; ++k) px[(size_t(y) * w + x) * 3 + k] = c[k];
  }
  void rect(int x0, int y0, int x1, int y1, const uint8_t c[3]) {
    for (int x = x0; x < x1; ++x) { set(x, y0, c); set(x, y1 - 1, c); }
    for (int y = y0; y < y1; ++y) { set(x0, y, c); set(x1 - 1, y, c); }
  }
  void text(int x, int y, const std::string& s, const uint8_t c[3]) {
    static thread_local std::vector<char> vb(64 * 1024);
    std::string t = s;
    int quads = stb_easy_font_print(float(x), float(y), &t[0], nullptr, vb.data(), int(vb.size()));
    for (int q = 0; q < quads; ++q) {
      const float* v0 = reinterpret_cast<const float*>(vb.data() + size_t(q) * 64);
      const float* v2 = reinterpret_cast<const float*>(vb.data() + size_t(q) * 64 + 32);
      for (int yy = int(v0[1]); yy < int(v2[1]); ++yy)
        for (int xx = int(v0[0]); xx < int(v2[0]); ++xx) set(xx, yy, c);
    }
  }
};

const uint8_t kColors[kNumSynthFindings][3] = {
    {60, 140, 255}, {255, 60, 60}, {255, 200, 0}, {255, 140, 40}, {180, 80, 255}, {0, 230, 120},
    {0, 200, 200}, {255, 80, 200}, {120, 220, 255}, {200, 200, 200}, {160, 255, 60}};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot create file");
  f << text;
  if (!f) throw std::runtime_error(path + ": write error");
}

Image as_image(int w, int h, int c, std::vector<uint8_t> px) {
  Image im;
  im.w = w;
  im.h = h;
  im.c = c;
  im.px = std::move(px);
  return im;
}

std::string image_name(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "images/%06lld.png", static_cast<long long>(i));
  return buf;
}


// What the render pass keeps of every image for the files written after it.
struct Rendered {
  std::vector<int8_t> matrices;                  // [n,51,75]
  std::vector<std::vector<SynthDrawn>> findings;  // n
  std::vector<uint8_t> normal;                   // n
  std::vector<std::vector<uint8_t>> preview_px;  // the first (up to) 16 images' pixels, with --preview
};

void check_synth_options(const SynthOptions& o) {
  if (o.out_dir.empty()) throw std::invalid_argument("synth: --out is required");
  if (o.n < 1) throw std::invalid_argument("synth: --n must be at least 1, got " + std::to_string(o.n));
  if (o.size < 32 || o.size > 2048) throw std::invalid_argument("synth: --size must be in [32, 2048], got " +
                                                                std::to_string(o.size));
  if (!(o.valid_frac >= 0 && o.test_frac >= 0 && o.valid_frac + o.test_frac < 1))
    throw std::invalid_argument("synth: valid and test fractions must be >= 0 with a sum below 1");
}

// Renders image i = 0..n-1 with `threads` workers, each writing its PNG; the first error stops all.
Rendered render_all(const SynthOptions& o, const std::string& dir) {
  Rendered out;
  out.matrices.resize(size_t(o.n) * size_t(kMatrixSize));
  out.findings.resize(size_t(o.n));
  out.normal.resize(size_t(o.n));
  int preview_n = o.preview ? int(std::min<int64_t>(16, o.n)) : 0;
  out.preview_px.resize(static_cast<size_t>(preview_n));
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex error_mu;
  int threads = o.threads > 0 ? o.threads : std::max(1, num_threads());
  auto work = [&] {
    for (;;) {
      int64_t i = next++;
      if (i >= o.n || failed) return;
      try {
        SynthImage im = render_synth_image(o.seed, i, o.size, o.finding_gain, o.finding_scale);
        std::string path = (fs::path(dir) / image_name(i)).string();
        write_png(path, as_image(o.size, o.size, 1, im.pixels));
        for (int64_t k = 0; k < kMatrixSize; ++k)
          out.matrices[size_t(i) * kMatrixSize + size_t(k)] = int8_t(im.matrix[size_t(k)]);
        out.findings[size_t(i)] = im.findings;
        out.normal[size_t(i)] = im.normal;
        if (i < preview_n) out.preview_px[size_t(i)] = std::move(im.pixels);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(error_mu);
        if (!failed) error = e.what();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  if (failed) throw std::runtime_error(error);
  return out;
}

// Label matrix [N,51,75] float64, one row per image.
void write_label_matrix(const std::string& dir, const std::vector<int8_t>& matrices, int64_t n) {
  NpyWriter w((fs::path(dir) / "landmark_observation_adj_mtx.npy").string(), {n, kNumAnatomies, kNumPathologies});
  std::vector<double> row(static_cast<size_t>(kMatrixSize));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < kMatrixSize; ++k) row[size_t(k)] = matrices[size_t(i) * kMatrixSize + size_t(k)];
    w.write(row.data(), kMatrixSize);
  }
  w.close();
}

// Pretraining jsons: train, valid, and test (held out from both).
void write_splits(const std::string& dir, const SynthReport& rep, int64_t n) {
  auto write_split = [&](const std::string& name, int64_t lo, int64_t hi) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (int64_t i = lo; i < hi; ++i) j[image_name(i)] = {{"labels_id", i}};
    write_text((fs::path(dir) / name).string(), j.dump(1) + "\n");
  };
  int64_t test_lo = rep.n_train + rep.n_valid;
  write_split("train.json", 0, rep.n_train);
  write_split("valid.json", rep.n_train, test_lo);
  write_split("test.json", test_lo, n);
}

// CXR14-style csv over the test split; labels read off the matrices (§C.6 query map).
void write_cxr14_csv(const std::string& dir, const std::vector<int8_t>& matrices, int64_t test_lo, int64_t n) {
  std::string csv = "img_path,Image Index,Finding Label";
  for (const char* c : kCxr14Classes) csv += std::string(",") + c;
  csv += "\n";
  static const char* nih[kNumCxr14Classes] = {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
                                              "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
                                              "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"};
  for (int64_t i = test_lo; i < n; ++i) {
    std::string name = image_name(i), labels, finding;
    for (int c = 0; c < kNumCxr14Classes; ++c) {
      bool pos = false;
      for (int a = 0; a < kNumAnatomies; ++a)
        pos =
            pos || matrices[size_t(i) * kMatrixSize + size_t(a) * kNumPathologies + size_t(kCxr14QueryIndex[c])] == 1;
      labels += pos ? ",1" : ",0";
      if (pos) finding += (finding.empty() ? "" : "|") + std::string(nih[c]);
    }
    csv += name + "," + fs::path(name).filename().string() + "," +
           csv_field(finding.empty() ? "No Finding" : finding) + labels + "\n";
  }
  write_text((fs::path(dir) / "cxr14_test.csv").string(), csv);
}

// RSNA-style csv over the test split: consolidation = pneumonia-positive.
void write_rsna_csv(const std::string& dir, const Rendered& im_all, int size, int64_t test_lo, int64_t n, SynthReport& rep) {
  std::string csv = "ID,img_path,boxes,classes\n";
  for (int64_t i = test_lo; i < n; ++i) {
    SynthImage im;
    im.size = size;
    im.findings = im_all.findings[size_t(i)];
    std::vector<Box> boxes = im.rsna_boxes(1024);
    char id[32];
    std::snprintf(id, sizeof id, "synth_%06lld", static_cast<long long>(i));
    csv +=
        std::string(id) + "," + image_name(i) + "," + format_boxes(boxes) + "," + (boxes.empty() ? "0" : "1") + "\n";
    rep.n_rsna_positive += !boxes.empty();
  }
  write_text((fs::path(dir) / "rsna_test.csv").string(), csv);
}

// Observation descriptions (for the demo's pathology book), in §C.1 order.
void write_observations(const std::string& dir) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (int p = 0; p < kNumPathologies; ++p) j[kObservations[size_t(p)]] = kSynthObservationText[p];
  write_text((fs::path(dir) / "observations.json").string(), j.dump(1) + "\n");
}

void count_findings(const Rendered& im, int64_t n, SynthReport& rep) {
  rep.finding_counts.assign(kNumSynthFindings, 0);
  for (int64_t i = 0; i < n; ++i) {
    rep.n_normal += im.normal[size_t(i)];
    bool seen[kNumSynthFindings] = {};
    for (const auto& f : im.findings[size_t(i)]) seen[int(f.type)] = true;
    for (int k = 0; k < kNumSynthFindings; ++k) rep.finding_counts[size_t(k)] += seen[k];
  }
}

// synth.json: seed, sizes, splits, files, what the labels mean and the counts.
void write_manifest(const std::string& dir, const SynthOptions& o, const SynthReport& rep) {
  nlohmann::ordered_json j;
  j["generator"] = "medslip synth";
  j["seed"] = o.seed;
  j["n"] = o.n;
  j["size"] = o.size;
  j["finding_gain"] = o.finding_gain;
  j["finding_scale"] = o.finding_scale;
  j["splits"] = {{"train", rep.n_train}, {"valid", rep.n_valid}, {"test", rep.n_test}};
  j["files"] = {{"matrix", "landmark_observation_adj_mtx.npy"}, {"train", "train.json"}, {"valid", "valid.json"},
                {"test", "test.json"}, {"cxr14", "cxr14_test.csv"}, {"rsna", "rsna_test.csv"},
                {"observations", "observations.json"}};
  j["rsna_positive"] = "images with a consolidation (observations consolidation + pneumonia at a lung zone); "
                       "boxes are the consolidations' bounding boxes on a 1024x1024 canvas";
  j["cxr14_labels"] = "class c is 1 iff the matrix has a 1 in pathology column kCxr14QueryIndex[c]";
  j["normal_images"] = rep.n_normal;
  j["rsna_test_positive"] = rep.n_rsna_positive;
  nlohmann::ordered_json counts;
  for (int k = 0; k < kNumSynthFindings; ++k)
    counts[synth_finding_name(SynthFinding(k))] = rep.finding_counts[size_t(k)];
  j["images_with_finding"] = counts;
  write_text((fs::path(dir) / "synth.json").string(), j.dump(1) + "\n");
}

// Contact sheet: the first 16 images with their finding boxes and labels.
void write_preview(const std::string& dir, int size, const Rendered& im) {
  const std::vector<std::vector<uint8_t>>& preview_px = im.preview_px;
  const std::vector<std::vector<SynthDrawn>>& findings = im.findings;
  const int preview_n = int(preview_px.size());
  int cols = 4, rows = (preview_n + cols - 1) / cols, S = size;
  Rgb sheet(cols * S, rows * S);
  for (int k = 0; k < preview_n; ++k) {
    int ox = (k % cols) * S, oy = (k / cols) * S;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        uint8_t g = preview_px[size_t(k)][size_t(y) * S + x];
        uint8_t c[3] = {g, g, g};
        sheet.set(ox + x, oy + y, c);
      }
    int line = 0;
    for (const auto& f : findings[size_t(k)]) {
      const uint8_t* c = kColors[int(f.type)];
      sheet.rect(ox + f.x0, oy + f.y0, ox + f.x1, oy + f.y1, c);
      sheet.text(ox + 3, oy + 3 + 9 * line++, f.label, c);
    }
    if (findings[size_t(k)].empty()) {
      const uint8_t c[3] = {150, 255, 150};
      sheet.text(ox + 3, oy + 3, "normal", c);
    }
  }
  std::string path = (fs::path(dir) / "preview.png").string();
  write_png(path, as_image(sheet.w, sheet.h, 3, std::move(sheet.px)));
}

}  // namespace

SynthReport write_synth_dataset(const SynthOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  check_synth_options(o);
  SynthReport rep;
  rep.n_test = std::min<int64_t>(o.n - 1, int64_t(std::llround(o.n * o.test_frac)));
  rep.n_valid = std::min<int64_t>(o.n - 1 - rep.n_test, int64_t(std::llround(o.n * o.valid_frac)));
  rep.n_train = o.n - rep.n_test - rep.n_valid;
  fs::create_directories(fs::path(o.out_dir) / "images");
  std::string dir = o.out_dir;

  Rendered im = render_all(o, dir);  // images are rendered and written in parallel
  write_label_matrix(dir, im.matrices, o.n);
  write_splits(dir, rep, o.n);
  const int64_t test_lo = rep.n_train + rep.n_valid;
  write_cxr14_csv(dir, im.matrices, test_lo, o.n);
  write_rsna_csv(dir, im, o.size, test_lo, o.n, rep);
  write_observations(dir);
  count_findings(im, o.n, rep);
  write_manifest(dir, o, rep);
  if (o.preview) write_preview(dir, o.size, im);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace ms
