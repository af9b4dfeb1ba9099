// medslip synth: writes the synthetic chest X-ray set (data/synth.h), the embedded default
// dataset of the demo, in the real MeDSLIP / CXR14 / RSNA file formats.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "data/synth.h"
#include "train/commands.h"
#include "train/common.h"

namespace ms {

int cmd_synth(int argc, char** argv) {
  CLI::App app{"Write the synthetic chest X-ray dataset (PNG phantoms, [N,51,75] matrix, train/valid/test json, "
               "CXR14- and RSNA-style test csvs)",
               "medslip synth"};
  SynthOptions o;
  app.add_option("--out", o.out_dir, "output folder (created)")->required();
  app.add_option("--n", o.n, "number of images")->check(CLI::Range(int64_t(1), int64_t(100000000)));
  app.add_option("--size", o.size, "image side in pixels")->check(CLI::Range(32, 2048));
  app.add_option("--seed", o.seed, "random seed: the output depends only on (seed, n, size, fractions)");
  app.add_option("--valid-frac", o.valid_frac, "share of images in valid.json")->check(CLI::Range(0.0, 0.9));
  app.add_option("--test-frac", o.test_frac, "share of held-out test images (csvs, test.json)")
      ->check(CLI::Range(0.0, 0.9));
  app.add_option("--threads", o.threads, "worker threads (default: OMP_NUM_THREADS or all cores)");
  app.add_option("--finding-gain", o.finding_gain,
                 "multiply every finding's attenuation (1 = the default phantoms; make demo uses a higher value "
                 "so that a small model learns them in minutes)")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 10.0));
  app.add_option("--finding-scale", o.finding_scale,
                 "multiply the size of the thinnest findings (nodule radius, plate atelectasis width, "
                 "pneumothorax rim; 1 = the default phantoms)")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 3.0));
  app.add_flag("--preview", o.preview, "also write preview.png, a 4x4 contact sheet with finding boxes");
  MS_PARSE_ARGS(app, argc, argv);
  SynthReport r = write_synth_dataset(o);
  std::printf("wrote %lld images (%dx%d) to %s in %.2f s: train %lld, valid %lld, test %lld (held out)\n",
              static_cast<long long>(o.n), o.size, o.size, o.out_dir.c_str(), r.seconds,
              static_cast<long long>(r.n_train), static_cast<long long>(r.n_valid), static_cast<long long>(r.n_test));
  std::printf("normal images: %lld; RSNA-positive test images (consolidation): %lld of %lld\n",
              static_cast<long long>(r.n_normal), static_cast<long long>(r.n_rsna_positive),
              static_cast<long long>(r.n_test));
  std::printf("images with each finding:");
  for (int k = 0; k < kNumSynthFindings; ++k)
    std::printf(" %s %lld", synth_finding_name(SynthFinding(k)), static_cast<long long>(r.finding_counts[size_t(k)]));
  std::printf("\n");
  if (o.preview) std::printf("preview: %s/preview.png\n", o.out_dir.c_str());
  return 0;
}

}  // namespace ms
