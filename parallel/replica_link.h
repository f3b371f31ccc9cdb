// Point-to-point messages between world rank 0 (the front-end) and the replica leaders
// (launcher/replicas.h), on their own duplicate of MPI_COMM_WORLD so they never mix with a
// replica's collectives. Main thread only (MPI_THREAD_FUNNELED). Sends never block: each message is
// an MPI_Isend whose buffer the link keeps until it completes; receives are polled (MPI_Iprobe), so
// a rank keeps stepping its own replica between looking for messages.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

namespace gptj {

struct LinkMessage {
  int from = -1;      // world rank
  int kind = 0;       // the sender's tag (launcher/replicas.cc: MessageKind)
  std::vector<uint8_t> bytes;
};

class ReplicaLink {
 public:
  // `comm` is an MPI_Comm (a duplicate of the world made by World::split_replicas), passed opaque so
  // that this header needs no mpi.h.
  explicit ReplicaLink(const void* comm);
  ~ReplicaLink();
  ReplicaLink(const ReplicaLink&) = delete;
  ReplicaLink& operator=(const ReplicaLink&) = delete;

  void send(int to, int kind, std::vector<uint8_t> bytes);
  // A message that has arrived, or nullopt at once.
  std::optional<LinkMessage> poll();
  // The same, waiting up to `limit` for one (sleeping in short slices, not spinning).
  std::optional<LinkMessage> wait(std::chrono::microseconds limit);
  // Blocks until every send completed or `limit` passed; false when some did not complete.
  bool flush(std::chrono::milliseconds limit);
  // Messages sent and bytes moved (both ways), for the front-end's cost figures.
  uint64_t messages() const { return messages_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void reap();  // frees the buffers of completed sends
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t messages_ = 0, bytes_ = 0;
};

}  // namespace gptj
