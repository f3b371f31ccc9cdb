// Checkpoint directories, and the safetensors format. A Checkpoint reads, in this order of
// preference, `model.safetensors`, `model.safetensors.index.json` with its shards,
// `pytorch_model.bin` or `pytorch_model.bin.index.json` with its shards (torch.save archives:
// pytorch_bin.h), all memory-mapped; an index's weight_map must match what its shards hold.
// Safetensors files: every header is validated on open as the format
// requires: length (at most 100 MB, inside the file), a JSON object text starting with '{' (trailing
// spaces allowed), supported dtype, shape x dtype = bytes (no overflow), and tensors that tile the
// data section exactly (offsets from its start, no overlap, no hole, ending at the end of the file),
// so a header length off by a byte is refused. Errors name the file and the tensor.
// Tensors are read as float32 slices, so each rank copies only its own rows/columns.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/matrix.h"
#include "runtime/model/tensor_file.h"

namespace gptj {

// One mapped .safetensors file, validated on open (see above).
class SafetensorsFile : public TensorFile {
 public:
  explicit SafetensorsFile(const std::string& path);
};

// A slice of a 1-D or 2-D tensor: rows [row_begin, row_end) and columns [col_begin, col_end).
// A 1-D tensor uses rows only. Rows past the tensor's end (vocab padding) read as zeros.
struct Slice {
  int64_t row_begin = 0, row_end = -1;  // -1: to the end
  int64_t col_begin = 0, col_end = -1;
};

// All tensors of a checkpoint directory (single file or index + shards, safetensors or pytorch_model.bin).
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& model_dir);

  bool contains(const std::string& name) const;
  // Throws "<file>: tensor '<name>' ..." when missing or shaped otherwise than `expected_shape`.
  const TensorInfo& tensor(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // Copies `slice` of tensor `name` (shape checked) into float32, row-major [rows, cols].
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& expected_shape,
                              const Slice& slice = {}) const;
  // The same slice in the tensor's stored dtype, as a [rows, cols] matrix (1-D: [rows, 1]).
  HostMatrix read_matrix(const std::string& name, const std::vector<int64_t>& expected_shape,
                         const Slice& slice = {}) const;
  const std::string& dir() const { return dir_; }
  // Every tensor of every file, by name.
  const std::map<std::string, const TensorInfo*>& tensors() const { return index_; }
  void release_pages() const;  // see MappedFile::release_pages

 private:
  std::string dir_;
  std::vector<std::unique_ptr<TensorFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

// Writes tensors (name -> dtype, shape, raw little-endian bytes) as one safetensors file, keys
// sorted, data 8-byte aligned. Used by make-random and tests.
struct TensorToWrite {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::string& path, const std::map<std::string, TensorToWrite>& tensors);

}  // namespace gptj
