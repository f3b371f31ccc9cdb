#include "parallel/replica_link.h"

#include <thread>

#include "runtime/core/error.h"

#ifdef GPTJ_WITH_MPI
#include <mpi.h>
#endif

namespace gptj {

#ifdef GPTJ_WITH_MPI
struct ReplicaLink::Impl {
  MPI_Comm comm;
  struct Pending {
    MPI_Request request;
    std::vector<uint8_t> bytes;
  };
  std::deque<Pending> sends;
};

ReplicaLink::ReplicaLink(const void* comm) : impl_(std::make_unique<Impl>()) {
  impl_->comm = *static_cast<const MPI_Comm*>(comm);
}

ReplicaLink::~ReplicaLink() { flush(std::chrono::milliseconds(2000)); }

void ReplicaLink::send(int to, int kind, std::vector<uint8_t> bytes) {
  reap();
  GPTJ_CHECK(bytes.size() < (1ull << 31), "replica message of {} bytes is too large", bytes.size());
  impl_->sends.push_back({MPI_REQUEST_NULL, std::move(bytes)});
  Impl::Pending& p = impl_->sends.back();
  const int rc = MPI_Isend(p.bytes.data(), static_cast<int>(p.bytes.size()), MPI_BYTE, to, kind, impl_->comm,
                           &p.request);
  GPTJ_CHECK(rc == MPI_SUCCESS, "MPI_Isend of a replica message to rank {} failed (code {})", to, rc);
  ++messages_;
  bytes_ += p.bytes.size();
}

void ReplicaLink::reap() {
  auto& sends = impl_->sends;
  for (auto it = sends.begin(); it != sends.end();) {
    int done = 0;
    MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    it = done ? sends.erase(it) : std::next(it);
  }
}

std::optional<LinkMessage> ReplicaLink::poll() {
  reap();
  int flag = 0;
  MPI_Status status;
  const int rc = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, impl_->comm, &flag, &status);
  GPTJ_CHECK(rc == MPI_SUCCESS, "MPI_Iprobe for replica messages failed (code {})", rc);
  if (!flag) return std::nullopt;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  LinkMessage message{status.MPI_SOURCE, status.MPI_TAG, std::vector<uint8_t>(static_cast<std::size_t>(count))};
  const int recv = MPI_Recv(message.bytes.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, impl_->comm,
                            MPI_STATUS_IGNORE);
  GPTJ_CHECK(recv == MPI_SUCCESS, "MPI_Recv of a replica message from rank {} failed (code {})", status.MPI_SOURCE,
             recv);
  ++messages_;
  bytes_ += message.bytes.size();
  return message;
}

bool ReplicaLink::flush(std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    reap();
    if (impl_->sends.empty()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}
#else
struct ReplicaLink::Impl {};
ReplicaLink::ReplicaLink(const void*) { fail("data-parallel replicas need MPI; this gptj was built without it"); }
ReplicaLink::~ReplicaLink() = default;
void ReplicaLink::send(int, int, std::vector<uint8_t>) {}
void ReplicaLink::reap() {}
std::optional<LinkMessage> ReplicaLink::poll() { return std::nullopt; }
bool ReplicaLink::flush(std::chrono::milliseconds) { return true; }
#endif

std::optional<LinkMessage> ReplicaLink::wait(std::chrono::microseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (auto message = poll()) return message;
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace gptj
