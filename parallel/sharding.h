// Tensor-parallel sharding rules as pure functions (docs/DESIGN.md §3): which rows/columns of each GPT-J
// tensor a TP rank holds. No I/O, no MPI: unit-tested by reassembling every tensor from its slices.
//   q/k/v_proj.weight [E, E]      rows  (column-parallel: n_head / tp heads each)
//   out_proj.weight   [E, E]      cols  (row-parallel)
//   fc_in.weight [I, E], bias [I] rows  (column-parallel)
//   fc_out.weight     [E, I]      cols  (row-parallel); fc_out.bias replicated, added after the reduction
//   lm_head.weight [V, E], bias [V] rows, ceil(V / tp) each; rows past V are zero padding
//   wte, ln_1, ln_f               replicated
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/safetensors.h"

namespace gptj {

struct TpPosition {
  int rank = 0;
  int size = 1;
};

struct ShardSlice {
  Slice slice;                       // what to read from the full tensor
  std::vector<int64_t> local_shape;  // shape of this rank's piece (padding included)
};

// Rows of the vocabulary each rank holds: ceil(vocab / tp).
int64_t vocab_shard_rows(int64_t vocab_size, int tp_size);

// The slice of tensor `name` (full shape `full_shape`) that `tp` holds. Throws when the split does not
// divide evenly (other than the vocabulary, which is padded).
ShardSlice shard_slice(const std::string& name, const std::vector<int64_t>& full_shape, TpPosition tp);

}  // namespace gptj
