// Which replica a new request goes to (rank 0's data-parallel front-end, launcher/replicas.h).
// Pure functions and a small table, tested without a model (tests/unit/dispatch_test.cc).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace gptj {

struct ReplicaLoad {
  bool ready = false;   // may take requests (a remote replica: it reported after loading)
  int outstanding = 0;  // sequences given to it and not finished (running + queued anywhere)
  int kv_free = 0;      // free KV blocks it last reported
};

// The least-loaded ready replica: fewest outstanding sequences, then most free KV blocks, then the
// lowest index. `preferred` (-1: none; e.g. the replica that holds the prompt's prefix) wins when it
// is ready and has at most `slack` more outstanding sequences than the least loaded. -1 when no
// replica is ready.
int choose_replica(const std::vector<ReplicaLoad>& loads, int preferred, int slack);

// Which replica computed which prompt prefixes lately: keys of a prompt's full blocks (each key
// covers the block and everything before it, as the prefix cache's do), mapped to the replica that
// was given the prompt. Bounded: forgets everything past max_entries (then fills again).
class PrefixDirectory {
 public:
  PrefixDirectory(int block_size, std::size_t max_entries = 1 << 16)
      : block_size_(block_size), max_entries_(max_entries) {}
  // The replica that was given the longest full-block prefix of `prompt`, or -1.
  int lookup(const std::vector<int32_t>& prompt) const;
  void remember(const std::vector<int32_t>& prompt, int replica);

 private:
  std::vector<uint64_t> block_keys(const std::vector<int32_t>& prompt) const;
  int block_size_;
  std::size_t max_entries_;
  std::unordered_map<uint64_t, int> owner_;
};

}  // namespace gptj
