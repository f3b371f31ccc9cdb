// The MPI world of this process: one rank per device, all ranks one tensor-parallel group.
// Created first thing in main() on every rank; only the main thread calls MPI (FUNNELED).
// MPI is started only in a process that mpirun or srun launched (their variables in the
// environment); any other process is a world of one rank that never calls MPI, so a plain
// `gptj serve` opens no socket but its HTTP port.
#pragma once
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace gptj {

class World {
 public:
  World(int* argc, char*** argv);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // rank among the ranks on this host
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  // How the ranks were launched: "mpirun", "srun" (or another PMI launcher) or "single" (no MPI).
  const std::string& launcher() const { return launcher_; }

  // Host-memory communicator over all ranks (MPI when size > 1).
  Communicator& communicator() { return *comm_; }

  // Every rank passes its own description of what it was asked to do (subcommand, model, dtype...);
  // throws on any rank whose description differs from rank 0's, naming both.
  void check_same_arguments(const std::string& description);

  // One line describing the job: launcher, size, and every rank's host and local rank (collective:
  // every rank calls it; rank 0 gets the whole picture, the others their own part).
  std::string describe_layout();

  // Ends every rank of the job now with `code` (MPI_Abort when size > 1).
  [[noreturn]] void abort(int code);

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_, launcher_;
  std::unique_ptr<Communicator> comm_;
  bool mpi_ = false;
};

}  // namespace gptj
