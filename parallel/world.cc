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
#include <vector>

#include "runtime/core/error.h"

namespace gptj {

namespace {
std::string detect_launcher() {
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) return "mpirun";
  if (std::getenv("SLURM_PROCID") || std::getenv("PMIX_RANK")) return "srun";
  return "single";
}
}  // namespace

World::World(int* argc, char*** argv) {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  host_ = name;
  launcher_ = detect_launcher();
  // A rank dies with its launcher (mpirun/orted/slurmstepd): a killed job leaves no orphan rank
  // running on, still writing output.
  if (launcher_ != "single") ::prctl(PR_SET_PDEATHSIG, SIGKILL);
#ifndef GPTJ_WITH_MPI
  // Built without MPI: one process, TP = 1.
  GPTJ_CHECK(launcher_ == "single", "this gptj was built without MPI (GPTJ_MPI=OFF): run it without mpirun/srun");
  (void)argc;
  (void)argv;
  comm_ = std::make_unique<SingleCommunicator>();
#else
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
  if (size_ > 1)
    comm_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
  else
    comm_ = std::make_unique<SingleCommunicator>();
#endif
}

World::~World() {
#ifdef GPTJ_WITH_MPI
  if (mpi_) MPI_Finalize();
#endif
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
  std::string mine = fmt::format("r{}={}/local{}", rank_, host_, local_rank_);
  std::string all = mine;
#ifdef GPTJ_WITH_MPI
  if (size_ > 1) {
    constexpr int kWidth = 128;
    std::vector<char> send(kWidth, '\0'), recv(static_cast<std::size_t>(kWidth) * size_);
    std::copy_n(mine.begin(), std::min<std::size_t>(mine.size(), kWidth - 1), send.begin());
    MPI_Gather(send.data(), kWidth, MPI_CHAR, recv.data(), kWidth, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank_ == 0) {
      all.clear();
      for (int r = 0; r < size_; ++r) all += (r ? " " : "") + std::string(recv.data() + r * kWidth);
    }
  }
#endif
  return fmt::format("launcher {}, {} rank(s) = TP {}: {}", launcher_, size_, size_, all);
}

void World::abort(int code) {
#ifdef GPTJ_WITH_MPI
  if (mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  if (mpi_) MPI_Finalize();
#endif
  std::exit(code);
}

}  // namespace gptj
