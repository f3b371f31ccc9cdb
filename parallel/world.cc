#include "parallel/world.h"

#ifdef GPTJ_WITH_MPI
#include <mpi.h>

#include "parallel/mpi_communicator.h"
#endif
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"

namespace gptj {

namespace {

// What a launcher that starts MPI ranks puts in their environment: mpirun (OpenMPI's
// OMPI_COMM_WORLD_*, PMIx's PMIX_RANK), srun --mpi=pmix (PMIX_RANK), srun --mpi=pmi2 and MPICH's
// hydra (PMI_RANK, PMI_SIZE, PMI_FD).
bool started_by_mpi_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"})
    if (std::getenv(name)) return true;
  return false;
}

std::string detect_launcher() {
  if (!started_by_mpi_launcher()) return "single";
  return std::getenv("OMPI_COMM_WORLD_SIZE") ? "mpirun" : "srun";
}

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::atoi(value) : fallback;
}

#ifdef GPTJ_WITH_MPI
// Ranks that all run on one host talk through shared memory; without the TCP transport they open
// no listening socket (OpenMPI's tcp BTL listens on every interface). Set before MPI_Init; an
// OMPI_MCA_btl the user set wins.
void prefer_shared_memory_on_one_host() {
  const int size = env_int("OMPI_COMM_WORLD_SIZE", 0);
  const bool one_host = (size > 0 && env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 0) == size) ||
                        env_int("SLURM_STEP_NUM_NODES", 0) == 1;
  if (one_host) ::setenv("OMPI_MCA_btl", "self,vader", /*overwrite=*/0);
}
#endif

}  // namespace

World::World(int* argc, char*** argv) {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  host_ = name;
  launcher_ = detect_launcher();
  // srun without a PMI would start N unrelated single-rank copies of the job.
  const int slurm_tasks = env_int("SLURM_STEP_NUM_TASKS", 1);
  GPTJ_CHECK(launcher_ != "single" || !std::getenv("SLURM_STEP_ID") || slurm_tasks <= 1,
             "srun started {} tasks without a PMI, so they cannot form one job: use srun --mpi=pmix", slurm_tasks);
  // A rank dies with its launcher (mpirun/orted/slurmstepd): a killed job leaves no orphan rank
  // running on, still writing output.
  if (launcher_ != "single") ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // A process no launcher started is the whole job (TP 1): it does not start MPI, whose singleton
  // start-up would spawn an orted and open listening sockets on every interface.
  comm_ = std::make_unique<SingleCommunicator>();
#ifndef GPTJ_WITH_MPI
  // Built without MPI: one process, TP = 1.
  GPTJ_CHECK(launcher_ == "single", "this gptj was built without MPI (GPTJ_MPI=OFF): run it without mpirun/srun");
  (void)argc;
  (void)argv;
#else
  if (launcher_ == "single") return;
  prefer_shared_memory_on_one_host();
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    fail("MPI_Init_thread failed on {}", host_);
  mpi_ = true;
  // Errors come back as codes and become gptj::Error, so a failing rank reports what happened.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_size(local, &local_size_);
  MPI_Comm_free(&local);
  if (size_ > 1) comm_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
#endif
}

#ifdef GPTJ_WITH_MPI
struct World::MpiComms {
  MPI_Comm replica = MPI_COMM_NULL, link = MPI_COMM_NULL;
};
#else
struct World::MpiComms {};
#endif

World::~World() {
  link_.reset();
  replica_comm_.reset();
#ifdef GPTJ_WITH_MPI
  if (mpi_) MPI_Finalize();
#endif
}

namespace {
// Every rank's `mine` (at most 127 bytes are kept), by world rank (collective over the world).
std::vector<std::string> allgather_strings(const std::string& mine, int size) {
  std::vector<std::string> all(static_cast<std::size_t>(size), mine);
#ifdef GPTJ_WITH_MPI
  if (size > 1) {
    constexpr int kWidth = 128;
    std::vector<char> send(kWidth, '\0'), recv(static_cast<std::size_t>(kWidth) * size);
    std::copy_n(mine.begin(), std::min<std::size_t>(mine.size(), kWidth - 1), send.begin());
    MPI_Allgather(send.data(), kWidth, MPI_CHAR, recv.data(), kWidth, MPI_CHAR, MPI_COMM_WORLD);
    for (int r = 0; r < size; ++r) all[r] = std::string(recv.data() + static_cast<std::size_t>(r) * kWidth);
  }
#endif
  return all;
}

// A replica spans hosts although it need not: every host has at least tp ranks (so a layout with
// each replica on one host exists). Names the first such replica, or returns "".
std::string straddling_replica(const std::vector<std::string>& hosts, int tp) {
  std::map<std::string, int> per_host;
  for (const auto& h : hosts) ++per_host[h];
  for (const auto& [host, n] : per_host)
    if (n < tp) return "";
  for (std::size_t first = 0; first < hosts.size(); first += tp)
    for (std::size_t r = first + 1; r < first + tp; ++r)
      if (hosts[r] != hosts[first])
        return fmt::format("replica {} (ranks {}..{}) spans {} and {}", first / tp, first, first + tp - 1,
                           hosts[first], hosts[r]);
  return "";
}
}  // namespace

void World::split_replicas(int tp) {
  if (tp <= 0) tp = size_;
  GPTJ_CHECK(size_ % tp == 0, "--tp {} does not divide the {} ranks of the job into replicas", tp, size_);
  layout_ = {tp, size_ / tp, rank_ / tp, rank_ % tp};
  hosts_ = allgather_strings(host_, size_);
  if (layout_.count == 1) return;
#ifdef GPTJ_WITH_MPI
  mpi_comms_ = std::make_unique<MpiComms>();
  MPI_Comm_split(MPI_COMM_WORLD, layout_.index, rank_, &mpi_comms_->replica);
  MPI_Comm_set_errhandler(mpi_comms_->replica, MPI_ERRORS_RETURN);
  MPI_Comm_dup(MPI_COMM_WORLD, &mpi_comms_->link);
  MPI_Comm_set_errhandler(mpi_comms_->link, MPI_ERRORS_RETURN);
  if (tp > 1)
    replica_comm_ = std::make_unique<MpiCommunicator>(mpi_comms_->replica);
  else
    replica_comm_ = std::make_unique<SingleCommunicator>();
  if (rank_ == 0 || layout_.leader()) link_ = std::make_unique<ReplicaLink>(&mpi_comms_->link);
#endif
  if (rank_ == 0)
    if (const std::string why = straddling_replica(hosts_, tp); !why.empty())
      spdlog::warn("{}, although every host has at least {} ranks: its all-reduces cross the network. Start "
                   "the ranks of a host consecutively (mpirun --map-by slot, srun --distribution=block)",
                   why, tp);
}

void World::check_same_arguments(const std::string& description) {
  if (size_ == 1) return;
#ifdef GPTJ_WITH_MPI
  uint64_t length = description.size();
  comm_->broadcast(&length, sizeof(length));
  std::string from_root = description;
  from_root.resize(length);
  comm_->broadcast(from_root.data(), length);
  int mismatch = from_root != description ? 1 : 0, any = 0;
  MPI_Allreduce(&mismatch, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  GPTJ_CHECK(!mismatch, "ranks were started with different arguments: rank 0 has '{}', rank {} has '{}'",
             from_root, rank_, description);
  GPTJ_CHECK(!any, "ranks were started with different arguments (another rank differs from rank 0)");
#endif
}

std::string World::describe_layout() {
  std::string all;
  for (const std::string& part : allgather_strings(fmt::format("r{}={}/local{}", rank_, host_, local_rank_), size_)) {
    if (!all.empty()) all += ' ';
    all += part;
  }
  return fmt::format("launcher {}, {} rank(s) = {} replica(s) x TP {}: {}", launcher_, size_, layout_.count,
                     layout_.tp, all);
}

void World::abort(int code) {
#ifdef GPTJ_WITH_MPI
  if (mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  if (mpi_) MPI_Finalize();
#endif
  std::exit(code);
}

}  // namespace gptj
