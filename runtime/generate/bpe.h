// Rank-ordered BPE merging over symbol ids: the core of GPT-2's encoder, without pre-tokenization
// or byte mapping (owned by the generate library; the Tokenizer runs it on each pre-token).
//
// Rule (GPT-2's encoder.py, Hugging Face's GPT2Tokenizer): while some adjacent pair has a merge,
// take the pair with the lowest rank and merge its non-overlapping occurrences left to right (of
// "x x x" with merge "x x", the left two); symbols a merge creates join in only from the next
// round on. bpe_merge() does exactly that in O(n log n) time for n symbols — a doubly linked list
// of symbols and a min-heap of (rank, position) candidates invalidated lazily — where the
// textbook loop (rescan every pair per merge) is O(n^2): seconds for one 300 kB word.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace gptj {

struct BpeMerge {
  int32_t rank;    // lower merges first; one rank per pair
  int32_t result;  // id of the merged symbol
};

// (left id, right id) -> merge. Immutable once built, so safe to share between threads.
class BpeMergeTable {
 public:
  // The first merge added for a pair wins (a later duplicate line of merges.txt is ignored).
  void add(int32_t left, int32_t right, BpeMerge merge);
  const BpeMerge* find(int32_t left, int32_t right) const {
    const auto it = merges_.find(key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }
  std::size_t size() const { return merges_.size(); }

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, BpeMerge> merges_;
};

// What one bpe_merge() call did: `candidates` (pairs with a merge that entered the heap, each
// popped at most once) is at most 3n for n symbols — n - 1 at the start, 2 per merge — which is
// what bounds the cost to O(n log n); the tests check it.
struct BpeMergeCounts {
  std::size_t merges = 0;
  std::size_t candidates = 0;
};

// Merges `symbols` in place by the rule above. Any thread; allocates O(n) scratch per call.
BpeMergeCounts bpe_merge(std::vector<int32_t>& symbols, const BpeMergeTable& merges);

}  // namespace gptj
