#include "parallel/mpi_communicator.h"

#include <chrono>
#include <climits>
#include <thread>
#include <cstdint>

#include "runtime/core/error.h"

namespace gptj {

namespace {
void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  fail("{} failed: {}", what, std::string(text, static_cast<std::size_t>(len)));
}
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

void MpiCommunicator::all_reduce_sum(float* data, std::size_t count) {
  const double start = MPI_Wtime();
  GPTJ_CHECK(count <= INT_MAX, "all_reduce of {} floats is too large", count);
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_),
            "MPI_Allreduce");
  ++all_reduce_calls_;
  all_reduce_seconds_ += MPI_Wtime() - start;
}

void MpiCommunicator::gather_to_root(const float* send, std::size_t count, float* recv) {
  GPTJ_CHECK(count <= INT_MAX, "gather of {} floats is too large", count);
  check_mpi(MPI_Gather(send, static_cast<int>(count), MPI_FLOAT, recv, static_cast<int>(count),
                       MPI_FLOAT, 0, comm_),
            "MPI_Gather");
}

void MpiCommunicator::broadcast(void* data, std::size_t bytes) {
  auto* at = static_cast<uint8_t*>(data);
  while (bytes > 0) {  // MPI counts are int: send large buffers in pieces
    const int piece = static_cast<int>(std::min<std::size_t>(bytes, 1u << 30));
    check_mpi(MPI_Bcast(at, piece, MPI_BYTE, 0, comm_), "MPI_Bcast");
    at += piece;
    bytes -= static_cast<std::size_t>(piece);
  }
}

void MpiCommunicator::broadcast_idle_wait(void* data, std::size_t bytes) {
  GPTJ_CHECK(bytes <= INT_MAX, "broadcast of {} bytes is too large", bytes);
  MPI_Request request;
  check_mpi(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, 0, comm_, &request), "MPI_Ibcast");
  if (rank_ == 0) {
    check_mpi(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait");
    return;
  }
  // Poll tightly for a moment (steps come back to back while busy), then sleep between polls,
  // backing off to 1 ms, so an idle worker uses next to no CPU.
  const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  auto pause = std::chrono::microseconds(20);
  for (int done = 0;;) {
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    if (std::chrono::steady_clock::now() < spin_until) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

}  // namespace gptj
