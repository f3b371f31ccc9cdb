// Communicator over an MPI communicator, on host float32 buffers (CPU ranks).
#pragma once
#include <mpi.h>

#include "parallel/communicator.h"

namespace gptj {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, std::size_t count) override;
  void gather_to_root(const float* send, std::size_t count, float* recv) override;
  void broadcast(void* data, std::size_t bytes) override;
  void broadcast_idle_wait(void* data, std::size_t bytes) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace gptj
