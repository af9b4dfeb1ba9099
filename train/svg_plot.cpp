// SVG line plots for the run report (train/svg_plot.h).
#include "train/svg_plot.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

namespace ms {

const std::vector<std::string>& plot_palette() {
  static const std::vector<std::string> p = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                             "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return p;
}

std::string xml_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::vector<double> nice_ticks(double& lo, double& hi, int target, bool integer) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {  // a flat series: a unit-sized window around it
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double raw = integer ? std::max(1.0, (hi - lo) / std::max(1, target - 1)) : (hi - lo) / std::max(1, target - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (integer && m == 2.5 && mag < 10) continue;  // 2.5, 25: not whole steps for small counts
    if (m * mag >= raw) { step = m * mag; break; }
  }
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (int k = 0;; ++k) {
    const double v = lo + k * step;
    if (v > hi + step * 1e-6) break;
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

std::string tick_label(double v, double step) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) {  // 5e-4, 2.5e-5, 1.2e6
    const int e = int(std::floor(std::log10(a) + 1e-9));
    std::string mant = fmt::format("{:.2g}", v / std::pow(10.0, e));
    if (mant == "10" || mant == "-10") return fmt::format("{}1e{}", v < 0 ? "-" : "", e + 1);
    return mant + "e" + std::to_string(e);
  }
  if (std::fabs(v - std::round(v)) < step * 1e-6 && step >= 1) return fmt::format("{:.0f}", v);
  int dec = 0;  // as many decimals as the step needs (0.025 -> 3), so neighbouring ticks never read alike
  while (dec < 6 && std::fabs(step * std::pow(10.0, dec) - std::round(step * std::pow(10.0, dec))) > 1e-6 * step * std::pow(10.0, dec)) ++dec;
  return fmt::format("{:.{}f}", v, dec);
}

std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  // Data ranges.
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      }
  if (o.x_from_zero) x0 = std::min(x0, 0.0);
  if (o.y_from_zero) y0 = std::min(y0, 0.0);
  if (!std::isnan(o.xmin)) x0 = o.xmin;
  if (!std::isnan(o.xmax)) x1 = o.xmax;
  if (!std::isnan(o.ymin)) y0 = o.ymin;
  if (!std::isnan(o.ymax)) y1 = o.ymax;
  const bool fixed_x = !std::isnan(o.xmin) && !std::isnan(o.xmax), fixed_y = !std::isnan(o.ymin) && !std::isnan(o.ymax);
  double tx0 = x0, tx1 = x1, ty0 = y0, ty1 = y1;
  std::vector<double> xt = nice_ticks(tx0, tx1, 7, o.integer_x), yt = nice_ticks(ty0, ty1, 6);
  if (fixed_x) tx0 = x0, tx1 = x1;
  if (fixed_y) ty0 = y0, ty1 = y1;
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;

  // Layout: title on top, y label + tick labels left, x ticks + label below, legend right.
  size_t legend_chars = 0;
  int legend_rows = 0;
  for (const auto& s : series)
    if (!s.name.empty()) legend_chars = std::max(legend_chars, s.name.size()), ++legend_rows;
  const bool legend = o.legend && legend_rows > 0;
  const int legend_w = legend ? int(std::min<size_t>(34, legend_chars)) * 7 + 36 : 0;
  const int L = 72, T = o.title.empty() ? 14 : 36, B = 50, R = 14 + legend_w;
  const int pw = std::max(60, o.width - L - R), ph = std::max(60, o.height - T - B);
  auto X = [&](double v) { return L + (v - tx0) / (tx1 - tx0) * pw; };
  auto Y = [&](double v) { return T + ph - (v - ty0) / (ty1 - ty0) * ph; };

  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"{}\">\n",
      o.width, o.height, o.width, o.height, xml_escape(o.title));
  s += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", o.width, o.height);
  if (!o.title.empty())
    s += fmt::format("<text x=\"{}\" y=\"22\" font-size=\"14\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>\n",
                     L + pw / 2, xml_escape(o.title));
  // Grid and ticks.
  for (double v : xt) {
    if (v < tx0 - 1e-12 || v > tx1 + 1e-12) continue;
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e4e4e4\"/>"
                     "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#333\">{4}</text>\n",
                     X(v), T, T + ph, T + ph + 16, xml_escape(tick_label(v, xstep)));
  }
  for (double v : yt) {
    if (v < ty0 - 1e-12 || v > ty1 + 1e-12) continue;
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#e4e4e4\"/>"
                     "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" fill=\"#333\">{5}</text>\n",
                     L, Y(v), L + pw, L - 6, Y(v) + 4, xml_escape(tick_label(v, ystep)));
  }
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#555\"/>\n", L, T, pw, ph);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n", L + pw / 2,
                   T + ph + 38, xml_escape(o.xlabel));
  s += fmt::format("<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n",
                   T + ph / 2, xml_escape(o.ylabel));
  if (o.diagonal)
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#999\" stroke-dasharray=\"2,4\"/>\n",
                     X(std::max(tx0, ty0)), Y(std::max(tx0, ty0)), X(std::min(tx1, ty1)), Y(std::min(tx1, ty1)));

  // Series, clipped to the plot area.
  s += fmt::format("<clipPath id=\"{0}-clip\"><rect x=\"{1}\" y=\"{2}\" width=\"{3}\" height=\"{4}\"/></clipPath>\n"
                   "<g clip-path=\"url(#{0}-clip)\">\n",
                   xml_escape(o.id), L, T, pw, ph);
  size_t next_colour = 0;
  std::vector<std::string> colours;
  for (const auto& ser : series) {
    const std::string col = ser.colour.empty() ? plot_palette()[next_colour++ % plot_palette().size()] : ser.colour;
    colours.push_back(col);
    std::string pts;
    auto flush = [&] {
      if (!pts.empty())
        s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-opacity=\"{}\"{} "
                         "stroke-linejoin=\"round\" points=\"{}\"/>\n",
                         col, ser.width, ser.opacity, ser.dashed ? " stroke-dasharray=\"6,4\"" : "", pts);
      pts.clear();
    };
    for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i) {
      if (!std::isfinite(ser.x[i]) || !std::isfinite(ser.y[i])) { flush(); continue; }
      pts += fmt::format("{}{:.2f},{:.2f}", pts.empty() ? "" : " ", X(ser.x[i]), Y(ser.y[i]));
    }
    flush();
    if (ser.markers)
      for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i)
        if (std::isfinite(ser.x[i]) && std::isfinite(ser.y[i]))
          s += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>", X(ser.x[i]), Y(ser.y[i]), col);
  }
  s += "</g>\n";

  if (legend) {
    const int lx = L + pw + 12;
    int ly = T + 4;
    for (size_t k = 0; k < series.size(); ++k) {
      const auto& ser = series[k];
      if (ser.name.empty()) continue;
      s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>", lx, ly + 6,
                       lx + 22, ly + 6, colours[k], std::max(2.0, ser.width),
                       ser.dashed ? " stroke-dasharray=\"6,4\"" : "");
      if (ser.markers) s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>", lx + 11, ly + 6, colours[k]);
      std::string name = ser.name.size() > 34 ? ser.name.substr(0, 33) + "…" : ser.name;
      s += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#222\">{}</text>\n", lx + 28, ly + 10, xml_escape(name));
      ly += 17;
    }
  }
  s += "</svg>\n";
  return s;
}

}  // namespace ms
