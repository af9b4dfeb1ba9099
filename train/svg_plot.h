// defines: line plots as standalone SVG text (the figures of `medslip report`): labelled axes
// with "nice" 1-2-5 ticks, a title, a legend beside the plot area, optional markers, dashed
// lines and a diagonal reference (the chance line of a ROC plot). No JavaScript, no fonts to load.
#pragma once
#include <limits>
#include <string>
#include <vector>

namespace ms {

struct PlotSeries {
  std::string name;          // legend entry; empty: not in the legend
  std::vector<double> x, y;  // same length; non-finite points break the line
  std::string colour;        // CSS colour; empty: the next of the palette
  bool dashed = false;
  bool markers = false;      // a dot on every point (few-point series: epoch means)
  double width = 1.8;        // stroke width in px
  double opacity = 1.0;
};

struct PlotOptions {
  std::string id = "plot";  // unique within an HTML page (the clip path's id derives from it)
  std::string title, xlabel, ylabel;
  int width = 620, height = 360;  // the whole SVG, legend included
  bool legend = true;
  bool diagonal = false;          // dotted y = x (ROC chance line)
  bool x_from_zero = false, y_from_zero = false;
  bool integer_x = false;         // x counts things (steps, epochs): ticks at whole numbers
  // Fixed axis ranges (both NaN: from the data, padded to nice ticks).
  double xmin = std::numeric_limits<double>::quiet_NaN(), xmax = std::numeric_limits<double>::quiet_NaN();
  double ymin = std::numeric_limits<double>::quiet_NaN(), ymax = std::numeric_limits<double>::quiet_NaN();
};

// Matplotlib's tab10, in order.
const std::vector<std::string>& plot_palette();

// Ticks at 1, 2 or 5 x 10^k covering [lo, hi], about `target` of them; lo/hi are widened to the outer ticks.
// integer: steps of 1, 2 or 5 x 10^k only, at least 1 (for counts).
std::vector<double> nice_ticks(double& lo, double& hi, int target = 6, bool integer = false);
// A tick label: integers plain, small/large values in short scientific form (5e-4), else <= 4 significant digits.
std::string tick_label(double v, double step);

std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& opt);

// XML/HTML text escaping (& < > " ').
std::string xml_escape(const std::string& s);

}  // namespace ms
