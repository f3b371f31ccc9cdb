// NCCL all-reduce between the TP ranks' GPUs, on device memory, enqueued on the caller's stream.
// Built on the host Communicator: rank 0 makes the ncclUniqueId and broadcasts it to every rank
// (a collective: every rank of host_comm constructs its NcclCommunicator at the same point).
// Any NCCL failure aborts the communicator (ncclCommAbort, so peers do not hang on it) and throws
// gptj::Error naming the call. Owned by the CUDA backend; one per TP group; main thread only, except
// async_error(), which the step watchdog's thread polls.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>
#include <string>

#include "parallel/communicator.h"
#include "runtime/core/dtype.h"

struct ncclComm;

namespace gptj {

class NcclCommunicator {
 public:
  // The rank's CUDA device must already be current on this thread.
  explicit NcclCommunicator(Communicator& host_comm);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // In-place sum over ranks of data[count] (device memory of `dtype`), enqueued on `stream`.
  void all_reduce_sum(void* data, std::size_t count, DType dtype, cudaStream_t stream);
  // Aborts the communicator (idempotent); later calls fail.
  void abort();
  // Any thread: "" while the communicator is healthy (or still has work in flight); otherwise what
  // ncclCommGetAsyncError reports (a peer died, a network error), naming this rank. A failed
  // collective never returns on its own, so the step watchdog polls this.
  std::string async_error();

 private:
  ncclComm* comm_ = nullptr;  // written by the main thread under mutex_; read there without it
  std::mutex mutex_;          // abort/destroy vs async_error()
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace gptj
