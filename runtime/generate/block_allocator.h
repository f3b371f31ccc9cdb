// Rank 0's book of the paged KV cache: which physical blocks are free, and how many sequences
// hold each one (samples of one prompt share the prompt's full blocks). Every rank holds the same
// number of blocks (its own heads' slice of each), so rank 0's block ids are valid everywhere.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/core/error.h"

namespace gptj {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks) : refs_(static_cast<std::size_t>(num_blocks), 0) {
    for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  int total_blocks() const { return static_cast<int>(refs_.size()); }
  int used_blocks() const { return total_blocks() - free_blocks(); }
  int32_t allocate() {
    GPTJ_CHECK(!free_.empty(), "KV cache out of blocks");
    int32_t block = free_.back();
    free_.pop_back();
    refs_[block] = 1;
    return block;
  }
  // One more holder of an allocated block.
  void share(int32_t block) {
    GPTJ_CHECK(refs_.at(block) > 0, "sharing free KV block {}", block);
    ++refs_[block];
  }
  int holders(int32_t block) const { return refs_.at(block); }
  // Drops this holder's references; blocks nobody holds go back to the free list.
  void release(std::vector<int32_t>& blocks) {
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it)
      if (--refs_.at(*it) == 0) free_.push_back(*it);
    blocks.clear();
  }

 private:
  std::vector<int32_t> free_;
  std::vector<int> refs_;
};

}  // namespace gptj
