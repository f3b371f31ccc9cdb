// The MPI world of this process: one rank per device. split_replicas(tp) cuts it into data-parallel
// replicas of tp consecutive ranks, each one tensor-parallel group (by default one replica: the
// whole world). Created first thing in main() on every rank; only the main thread calls MPI (FUNNELED).
// MPI is started only in a process that mpirun or srun launched (their variables in the
// environment); any other process is a world of one rank that never calls MPI, so a plain
// `gptj serve` opens no socket but its HTTP port.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/replica_link.h"

namespace gptj {

// The world as data-parallel replicas (docs/DESIGN.md §15): replica i is world ranks
// i*tp .. i*tp + tp - 1; its first rank is its leader (runs its scheduler); world rank 0 leads
// replica 0 and is also the front-end of all of them.
struct ReplicaLayout {
  int tp = 1;       // ranks per replica (tensor-parallel width)
  int count = 1;    // replicas
  int index = 0;    // this rank's replica
  int tp_rank = 0;  // this rank's rank inside it
  bool leader() const { return tp_rank == 0; }
  int leader_rank(int replica) const { return replica * tp; }  // world rank of that replica's leader
};

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

  // Collective (every rank, once, before any model traffic): splits the world into replicas of
  // `tp` ranks (0: one replica of every rank). Throws on every rank when tp does not divide the
  // world. Rank 0 warns once when a replica spans hosts although every host has >= tp ranks.
  void split_replicas(int tp);
  const ReplicaLayout& replicas() const { return layout_; }
  // This rank's replica's communicator (the world's when there is one replica): the model's
  // all-reduces and the control channel use it.
  Communicator& replica_communicator() { return replica_comm_ ? *replica_comm_ : *comm_; }
  // Rank 0 <-> replica leaders (only when there are several replicas; null elsewhere).
  ReplicaLink* replica_link() { return link_.get(); }
  // Every rank's host, by world rank (filled by split_replicas).
  const std::vector<std::string>& hosts() const { return hosts_; }

  // Every rank passes its own description of what it was asked to do (subcommand, model, dtype...);
  // throws on any rank whose description differs from rank 0's, naming both.
  void check_same_arguments(const std::string& description);

  // One line describing the job: launcher, size, and every rank's host and local rank (collective:
  // every rank calls it and gets the whole picture).
  std::string describe_layout();

  // Ends every rank of the job now with `code` (MPI_Abort when size > 1).
  [[noreturn]] void abort(int code);

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_, launcher_;
  std::unique_ptr<Communicator> comm_;
  bool mpi_ = false;
  ReplicaLayout layout_;
  std::unique_ptr<Communicator> replica_comm_;
  std::unique_ptr<ReplicaLink> link_;
  std::vector<std::string> hosts_;
  struct MpiComms;  // the MPI communicators behind replica_comm_ and link_ (world.cc)
  std::unique_ptr<MpiComms> mpi_comms_;
};

}  // namespace gptj
