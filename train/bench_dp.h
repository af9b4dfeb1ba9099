// defines: the data-parallel rows of `medslip bench` (docs/performance.md): training steps of
// one model on 1 rank x T threads and on N ranks x 1 thread (mpirun of the MPI build), with
// the gradient all-reduce timed apart. run_dp_bench drives; run_dp_worker is one run (under
// mpirun, rank 0 reports one "@dp {json}" line).
#pragma once
#include <string>

namespace ms {

struct DpBenchArgs {
  std::string backbone = "resnet18";
  int res = 64, batch = 4, warmup = 1, steps = 4;
};

int run_dp_worker(const DpBenchArgs& a);
// ranks: N for the multi-rank row; mpi_bin: the MPI build (empty: those rows are skipped
// with the reason); threads: the single-rank thread count (= the cores the N ranks share).
int run_dp_bench(const DpBenchArgs& a, int ranks, int threads, const std::string& mpi_bin, const std::string& self_exe);

}  // namespace ms
