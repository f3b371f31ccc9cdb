#include "parallel/mpi_communicator.h"

#include <climits>
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

}  // namespace gptj
