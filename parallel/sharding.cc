#include "parallel/sharding.h"

#include "runtime/core/error.h"

namespace gptj {

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

enum class Split { kReplicated, kRows, kCols, kVocabRows };

Split split_of(const std::string& name) {
  if (ends_with(name, "attn.q_proj.weight") || ends_with(name, "attn.k_proj.weight") ||
      ends_with(name, "attn.v_proj.weight") || ends_with(name, "mlp.fc_in.weight") ||
      ends_with(name, "mlp.fc_in.bias"))
    return Split::kRows;
  if (ends_with(name, "attn.out_proj.weight") || ends_with(name, "mlp.fc_out.weight"))
    return Split::kCols;
  if (name == "lm_head.weight" || name == "lm_head.bias") return Split::kVocabRows;
  return Split::kReplicated;
}

}  // namespace

int64_t vocab_shard_rows(int64_t vocab_size, int tp_size) {
  return (vocab_size + tp_size - 1) / tp_size;
}

ShardSlice shard_slice(const std::string& name, const std::vector<int64_t>& full_shape,
                       TpPosition tp) {
  GPTJ_CHECK(tp.size >= 1 && tp.rank >= 0 && tp.rank < tp.size, "bad TP position {}/{}", tp.rank,
             tp.size);
  ShardSlice out;
  out.local_shape = full_shape;
  switch (split_of(name)) {
    case Split::kReplicated:
      return out;
    case Split::kRows: {
      int64_t rows = full_shape.at(0);
      GPTJ_CHECK(rows % tp.size == 0, "tensor '{}': {} rows do not split {} ways", name, rows, tp.size);
      int64_t part = rows / tp.size;
      out.slice.row_begin = tp.rank * part;
      out.slice.row_end = out.slice.row_begin + part;
      out.local_shape[0] = part;
      return out;
    }
    case Split::kCols: {
      int64_t cols = full_shape.at(1);
      GPTJ_CHECK(cols % tp.size == 0, "tensor '{}': {} columns do not split {} ways", name, cols,
                 tp.size);
      int64_t part = cols / tp.size;
      out.slice.col_begin = tp.rank * part;
      out.slice.col_end = out.slice.col_begin + part;
      out.local_shape[1] = part;
      return out;
    }
    case Split::kVocabRows: {
      int64_t part = vocab_shard_rows(full_shape.at(0), tp.size);
      out.slice.row_begin = tp.rank * part;
      out.slice.row_end = out.slice.row_begin + part;  // may run past V: read as zero padding
      out.local_shape[0] = part;
      return out;
    }
  }
  return out;
}

}  // namespace gptj
