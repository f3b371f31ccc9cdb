#include "parallel/nccl_communicator.h"

#include <nccl.h>

#include <cstdint>

#include "runtime/core/error.h"

namespace gptj {

namespace {
ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
  }
  fail("NCCL: unsupported dtype");
}
}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host_comm)
    : rank_(host_comm.rank()), size_(host_comm.size()) {
  // Rank 0 broadcasts its ncclGetUniqueId status with the id, so when it fails every peer fails
  // too, with a clear message, instead of waiting in ncclCommInitRank on a zeroed id.
  struct {
    int32_t status = 0;  // ncclResult_t of rank 0's ncclGetUniqueId
    ncclUniqueId id{};
  } message;
  if (rank_ == 0) message.status = static_cast<int32_t>(ncclGetUniqueId(&message.id));
  host_comm.broadcast(&message, sizeof(message));
  if (message.status != ncclSuccess)
    fail("rank {}: ncclGetUniqueId failed on rank 0: {}", rank_,
         ncclGetErrorString(static_cast<ncclResult_t>(message.status)));
  const ncclUniqueId& id = message.id;
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRank(&comm, size_, id, rank_);
  if (r != ncclSuccess) {
    if (comm) ncclCommAbort(comm);
    fail("rank {}: ncclCommInitRank({} ranks) failed: {}", rank_, size_, ncclGetErrorString(r));
  }
  comm_ = comm;
}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (comm_) ncclCommDestroy(comm_);
  comm_ = nullptr;
}

void NcclCommunicator::abort() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
}

std::string NcclCommunicator::async_error() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!comm_) return {};
  ncclResult_t state = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
  if (r != ncclSuccess) return fmt::format("rank {}: ncclCommGetAsyncError failed: {}", rank_, ncclGetErrorString(r));
  if (state == ncclSuccess || state == ncclInProgress) return {};
  return fmt::format("rank {}: NCCL communicator failed asynchronously: {} ({})", rank_, ncclGetErrorString(state),
                     ncclGetLastError(comm_));
}

void NcclCommunicator::all_reduce_sum(void* data, std::size_t count, DType dtype,
                                      cudaStream_t stream) {
  GPTJ_CHECK(comm_ != nullptr, "rank {}: NCCL all-reduce on an aborted communicator", rank_);
  const ncclResult_t r = ncclAllReduce(data, data, count, nccl_type(dtype), ncclSum, comm_, stream);
  if (r != ncclSuccess) {
    const char* why = ncclGetErrorString(r);
    abort();
    fail("rank {}: ncclAllReduce of {} elements failed: {}", rank_, count, why);
  }
}

}  // namespace gptj
