// pytorch_model.bin: a torch.save'd state dict, read without Python and without running code.
// The format (torch >= 1.6): a zip archive of stored (uncompressed) entries under one folder,
// whatever its name (`archive/`, `pytorch_model/`, ...):
//   <prefix>/data.pkl    the pickled {name: tensor} dict (read by torch_pickle.h's restricted
//                        unpickler; any global outside a state dict's five is refused by name)
//   <prefix>/data/<key>  the raw little-endian bytes of storage <key> (64-byte aligned by torch)
//   <prefix>/byteorder   "little" (torch >= 2.1); when present, anything else is refused
//   <prefix>/version     (ignored)
// Each tensor is _rebuild_tensor_v2(storage, offset, size, stride, ...) and must be contiguous
// (C-order strides; size-1 dims may have any stride), lie inside its storage (offset + numel <=
// the storage's elements), and the storage entry must hold exactly numel x element bytes of the
// dtype its class names (FloatStorage F32, HalfStorage F16, BFloat16Storage BF16). Tensors may
// share a storage (views). Errors name the file and the tensor or entry.
// Ownership: PytorchBinFile owns the mapping (TensorFile); TensorInfo::data points into it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "runtime/model/tensor_file.h"

namespace gptj {

// The validated tensors of a torch.save archive held in [bytes, bytes + size) (a mapping, or a
// buffer in tests); each TensorInfo points into those bytes. `path` names the file in errors.
std::map<std::string, TensorInfo> read_pytorch_bin(const uint8_t* bytes, std::size_t size, const std::string& path);

// One mapped pytorch_model.bin (or a shard of one).
class PytorchBinFile : public TensorFile {
 public:
  explicit PytorchBinFile(const std::string& path);
};

}  // namespace gptj
