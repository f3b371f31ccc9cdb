// The seam between the model and the transport: collectives on host float32 buffers.
// Implementations: SingleCommunicator (one process), MpiCommunicator (parallel/mpi_communicator.h).
// The CUDA backend uses its own NCCL communicator on device memory (parallel/nccl_communicator.h).
// Only the thread that owns MPI (rank's main thread) calls these.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gptj {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum over all ranks of data[count].
  virtual void all_reduce_sum(float* data, std::size_t count) = 0;
  // Rank r's send[count] lands at recv[r * count .. ) on rank 0; recv may be null elsewhere.
  virtual void gather_to_root(const float* send, std::size_t count, float* recv) = 0;
  // Broadcasts bytes from rank 0 to all ranks.
  virtual void broadcast(void* data, std::size_t bytes) = 0;
  // The same, for a broadcast that may be long in coming (a worker waiting for the next step while
  // the server is idle): ranks > 0 wait without keeping a core busy. Every rank calls this variant.
  virtual void broadcast_idle_wait(void* data, std::size_t bytes) { broadcast(data, bytes); }

  // How many all-reduces ran (benchmarks print all-reduces per layer from this).
  uint64_t all_reduce_calls() const { return all_reduce_calls_; }
  double all_reduce_seconds() const { return all_reduce_seconds_; }

 protected:
  uint64_t all_reduce_calls_ = 0;
  double all_reduce_seconds_ = 0;
};

// The TP = 1 communicator: every collective is the identity.
class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, std::size_t) override { ++all_reduce_calls_; }
  void gather_to_root(const float* send, std::size_t count, float* recv) override;
  void broadcast(void*, std::size_t) override {}
};

}  // namespace gptj
