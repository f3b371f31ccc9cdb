// Rank 0's book of the paged KV cache: which physical blocks are free. Every rank holds the same
// number of blocks (its own heads' slice of each), so rank 0's block ids are valid everywhere.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/core/error.h"

namespace gptj {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks) {
    for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
    total_ = num_blocks;
  }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  int total_blocks() const { return total_; }
  int used_blocks() const { return total_ - free_blocks(); }
  int32_t allocate() {
    GPTJ_CHECK(!free_.empty(), "KV cache out of blocks");
    int32_t block = free_.back();
    free_.pop_back();
    return block;
  }
  void release(std::vector<int32_t>& blocks) {
    free_.insert(free_.end(), blocks.rbegin(), blocks.rend());
    blocks.clear();
  }

 private:
  std::vector<int32_t> free_;
  int total_ = 0;
};

}  // namespace gptj
