// Rank 0's book of the paged KV cache: which physical blocks are free, how many sequences hold
// each one (samples of one prompt share the prompt's full blocks), and the prefix cache: a full
// block whose keys/values are known is published under a hash of its tokens and of everything before
// it, so a later sequence with the same prefix takes it instead of recomputing it. A published block
// nobody holds stays cached (evictable, least recently released first) until its room is needed.
// Every rank holds the same number of blocks (its own heads' slice of each), so rank 0's block ids
// are valid everywhere.
#pragma once
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

#include "runtime/core/error.h"

namespace gptj {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks)
      : refs_(static_cast<std::size_t>(num_blocks), 0), keys_(static_cast<std::size_t>(num_blocks), 0),
        in_lru_(static_cast<std::size_t>(num_blocks), lru_.end()) {
    for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  }
  // Blocks a new allocation can take: never used, or cached but held by nobody.
  int free_blocks() const { return static_cast<int>(free_.size() + lru_.size()); }
  int total_blocks() const { return static_cast<int>(refs_.size()); }
  int used_blocks() const { return total_blocks() - free_blocks(); }
  int cached_blocks() const { return static_cast<int>(by_key_.size()); }

  int32_t allocate() {
    int32_t block;
    if (!free_.empty()) {
      block = free_.back();
      free_.pop_back();
    } else {
      GPTJ_CHECK(!lru_.empty(), "KV cache out of blocks");
      block = lru_.front();  // evict the least recently released cached block
      lru_.pop_front();
      in_lru_[block] = lru_.end();
      by_key_.erase(keys_[block]);
      keys_[block] = 0;
    }
    refs_[block] = 1;
    return block;
  }
  // One more holder of an allocated block.
  void share(int32_t block) {
    GPTJ_CHECK(refs_.at(block) > 0, "sharing free KV block {}", block);
    ++refs_[block];
  }
  int holders(int32_t block) const { return refs_.at(block); }
  // Drops this holder's references; a block nobody holds goes back to the free list, or, when it is
  // published, to the end of the evictable list.
  void release(std::vector<int32_t>& blocks) {
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
      if (--refs_.at(*it) > 0) continue;
      if (keys_[*it] != 0) in_lru_[*it] = lru_.insert(lru_.end(), *it);
      else free_.push_back(*it);
    }
    blocks.clear();
  }

  // Prefix cache. `key` (non-zero) names a block's content: its tokens and everything before them.
  // Takes a hold on the block published under `key`, or returns -1.
  int32_t take_cached(uint64_t key) {
    const auto found = by_key_.find(key);
    if (found == by_key_.end()) return -1;
    const int32_t block = found->second;
    if (refs_[block] == 0) {
      lru_.erase(in_lru_[block]);
      in_lru_[block] = lru_.end();
    }
    ++refs_[block];
    return block;
  }
  // `block` (held, full, its keys/values computed) holds the content named `key`. A key already
  // published keeps its first block; a block is published once.
  void publish(int32_t block, uint64_t key) {
    GPTJ_CHECK(key != 0 && refs_.at(block) > 0, "publishing KV block {} (key {}, {} holders)", block, key, refs_.at(block));
    if (keys_[block] != 0 || by_key_.count(key)) return;
    keys_[block] = key;
    by_key_.emplace(key, block);
  }

 private:
  std::vector<int32_t> free_;   // never-published free blocks
  std::vector<int> refs_;       // holders per block
  std::vector<uint64_t> keys_;  // published key per block (0: none)
  std::unordered_map<uint64_t, int32_t> by_key_;
  std::list<int32_t> lru_;      // published blocks nobody holds, least recently released first
  std::vector<std::list<int32_t>::iterator> in_lru_;
};

}  // namespace gptj
