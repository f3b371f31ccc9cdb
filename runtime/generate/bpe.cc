// bpe_merge(): GPT-2's merge rule in rounds over a linked list and a lazily invalidated min-heap.
//
// A round takes the lowest rank r in the heap and pops every candidate of rank r in position order,
// merging each one that is still valid; that is the textbook pass "merge every occurrence of the
// best pair, left to right" (one rank names one pair). Candidates a merge creates wait in
// `pending` until the round ends, as the textbook pass never merges a symbol it just made — this
// keeps the result identical even for merge tables where a merged symbol's pair ranks lower than
// (or equal to) the pair that made it. A candidate is valid while both of its symbols are alive,
// adjacent and unchanged since it was made (generation counters), so stale ones are skipped in O(1).
#include "runtime/generate/bpe.h"

#include <algorithm>
#include <climits>

#include "runtime/core/error.h"

namespace gptj {

void BpeMergeTable::add(int32_t left, int32_t right, BpeMerge merge) {
  merges_.emplace(key(left, right), merge);
}

namespace {

struct Node {
  int32_t id;     // symbol id; -1 once merged into the node on its left
  int32_t prev;   // -1 at the start
  int32_t next;   // -1 at the end
  uint32_t gen;   // bumped whenever `id` changes
};

struct Candidate {
  int32_t rank, result;
  int32_t left, right;  // node indices (positions in the original sequence)
  uint32_t left_gen, right_gen;
};

// std heap functions build a max-heap; this order puts the lowest (rank, left) on top.
bool comes_later(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

}  // namespace

BpeMergeCounts bpe_merge(std::vector<int32_t>& symbols, const BpeMergeTable& merges) {
  BpeMergeCounts counts;
  const std::size_t n = symbols.size();
  if (n < 2) return counts;
  GPTJ_CHECK(n < static_cast<std::size_t>(INT32_MAX), "bpe_merge: {} symbols is more than it indexes", n);

  std::vector<Node> nodes(n);
  for (std::size_t i = 0; i < n; ++i)
    nodes[i] = Node{symbols[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i) + 1 : -1, 0};

  std::vector<Candidate> heap, pending;
  heap.reserve(n);
  auto consider = [&](int32_t left, std::vector<Candidate>& into) {
    const int32_t right = nodes[left].next;
    if (right < 0) return;
    if (const BpeMerge* m = merges.find(nodes[left].id, nodes[right].id)) {
      into.push_back(Candidate{m->rank, m->result, left, right, nodes[left].gen, nodes[right].gen});
      ++counts.candidates;
    }
  };
  auto valid = [&](const Candidate& c) {
    const Node& l = nodes[c.left];
    return l.id >= 0 && l.gen == c.left_gen && l.next == c.right && nodes[c.right].gen == c.right_gen;
  };

  for (int32_t i = 0; i + 1 < static_cast<int32_t>(n); ++i) consider(i, heap);
  std::make_heap(heap.begin(), heap.end(), comes_later);
  auto pop = [&] {
    std::pop_heap(heap.begin(), heap.end(), comes_later);
    const Candidate c = heap.back();
    heap.pop_back();
    return c;
  };

  while (!heap.empty()) {
    const int32_t rank = heap.front().rank;
    while (!heap.empty() && heap.front().rank == rank) {
      const Candidate c = pop();
      if (!valid(c)) continue;
      Node& left = nodes[c.left];
      Node& right = nodes[c.right];
      left.id = c.result;
      ++left.gen;
      left.next = right.next;
      if (right.next >= 0) nodes[right.next].prev = c.left;
      right.id = -1;
      ++right.gen;
      ++counts.merges;
      if (left.prev >= 0) consider(left.prev, pending);
      consider(c.left, pending);
    }
    for (const Candidate& c : pending) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end(), comes_later);
    }
    pending.clear();
  }

  // Node 0 is never merged away (only a node's right neighbour is), so the list starts there.
  symbols.clear();
  for (int32_t i = 0; i >= 0; i = nodes[i].next) symbols.push_back(nodes[i].id);
  return counts;
}

}  // namespace gptj
