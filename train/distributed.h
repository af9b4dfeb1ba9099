// defines: the communicator data-parallel training talks to (docs/distributed.md).
// Open MPI launches, bootstraps and (on the CPU, or for CUDA tensors over the host)
// all-reduces; NCCL all-reduces CUDA tensors when built with CUDA=1 MPI=1. Built without
// MPI=1, or started without an MPI launcher, the communicator is one process (world 1)
// whose every collective is the identity.
//
// Determinism: allreduce_sum never uses the library's reduction. Rank r owns chunk r of
// the buffer; every rank sends chunk c to rank c (point-to-point), rank c adds the W
// copies in rank order (((x0 + x1) + x2) ...), then every rank gathers every chunk. So
// the result has the same bits on every rank, on every run, whatever algorithm MPI or
// NCCL would have picked, and equals a one-process sum of the same W buffers in the
// same order (the accumulation path in train/data_parallel.h).
//
// Faults: every collective is posted non-blocking and polled against a deadline
// (DistOptions::timeout_s). A peer that does not answer in time, an MPI error, or the
// launcher's SIGTERM (mpirun sends it when another rank died) ends this process with a
// one-line error that names the silent ranks and their hosts, exit status 1. Never a hang.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ms {

struct DistOptions {
  double timeout_s = 300;       // longest wait for a peer in one collective
  std::string backend = "auto";  // CUDA tensors: auto (nccl when built with it) | mpi (host staging) | nccl
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  int world() const { return world_; }
  int rank() const { return rank_; }
  int local_rank() const { return local_rank_; }  // rank among the processes on this host
  bool is_root() const { return rank_ == 0; }
  const std::string& host(int r) const { return hosts_.at(size_t(r)); }
  const std::vector<std::string>& hosts() const { return hosts_; }
  const std::string& launcher() const { return launcher_; }  // none | mpirun | srun | mpi
  virtual std::string backend(Device d) const = 0;         // what all-reduces tensors on d
  // "rank 1 of 2 on nodeB (local rank 0)"
  std::string describe() const;

  // Rank 0's values overwrite every other rank's (tensor on any device; same shape everywhere).
  virtual void broadcast(Tensor& t, const std::string& what) = 0;
  virtual void broadcast(std::string& s, const std::string& what) = 0;
  // Elementwise sum over ranks in rank order, the same bits on every rank (see above).
  virtual void allreduce_sum(Tensor& t, const std::string& what) = 0;
  // Every rank's `v` (same length everywhere), concatenated in rank order.
  virtual std::vector<double> allgather(const std::vector<double>& v, const std::string& what) = 0;
  // The same for `v` of any length on each rank (an allgather of the lengths, then of `v`
  // padded to the longest).
  std::vector<double> allgatherv(const std::vector<double>& v, const std::string& what);
  virtual void barrier(const std::string& what) = 0;

 protected:
  int world_ = 1, rank_ = 0, local_rank_ = 0;
  std::vector<std::string> hosts_;
  std::string launcher_ = "none";
};

// World 1, no MPI: every collective is the identity.
std::unique_ptr<Communicator> single_process_communicator();
// MPI when this build has it (make MPI=1) and an MPI launcher started the process
// (mpirun/mpiexec, srun, any launcher that sets Open MPI's or PMIx's environment);
// otherwise single_process_communicator(). `device` picks the GPU from the local rank.
std::unique_ptr<Communicator> make_communicator(const DistOptions& opt, Device device);
bool built_with_mpi();
bool built_with_nccl();
// True when the environment shows an MPI launcher (whether or not this build has MPI).
bool launched_by_mpi_launcher();

}  // namespace ms
