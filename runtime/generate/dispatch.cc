#include "runtime/generate/dispatch.h"

#include <algorithm>
#include <climits>

#include "kernels/sampling_math.h"

namespace gptj {

int choose_replica(const std::vector<ReplicaLoad>& loads, int preferred, int slack) {
  int best = -1;
  for (int r = 0; r < static_cast<int>(loads.size()); ++r) {
    if (!loads[r].ready) continue;
    if (best < 0 || loads[r].outstanding < loads[best].outstanding ||
        (loads[r].outstanding == loads[best].outstanding && loads[r].kv_free > loads[best].kv_free))
      best = r;
  }
  if (best >= 0 && preferred >= 0 && preferred < static_cast<int>(loads.size()) && loads[preferred].ready &&
      loads[preferred].outstanding <= loads[best].outstanding + slack)
    return preferred;
  return best;
}

std::vector<uint64_t> PrefixDirectory::block_keys(const std::vector<int32_t>& prompt) const {
  std::vector<uint64_t> keys;
  uint64_t key = 0x243F6A8885A308D3ull;
  // A prompt's last token is always computed (its logits are needed), so only blocks before it count.
  const std::size_t full = prompt.empty() ? 0 : (prompt.size() - 1) / static_cast<std::size_t>(block_size_);
  for (std::size_t b = 0; b < full; ++b) {
    for (int i = 0; i < block_size_; ++i) key = mix64(key ^ static_cast<uint32_t>(prompt[b * block_size_ + i]));
    keys.push_back(key);
  }
  return keys;
}

int PrefixDirectory::lookup(const std::vector<int32_t>& prompt) const {
  const std::vector<uint64_t> keys = block_keys(prompt);
  for (auto it = keys.rbegin(); it != keys.rend(); ++it)
    if (auto found = owner_.find(*it); found != owner_.end()) return found->second;
  return -1;
}

void PrefixDirectory::remember(const std::vector<int32_t>& prompt, int replica) {
  const std::vector<uint64_t> keys = block_keys(prompt);
  if (owner_.size() + keys.size() > max_entries_) owner_.clear();
  for (uint64_t key : keys) owner_[key] = replica;
}

}  // namespace gptj
