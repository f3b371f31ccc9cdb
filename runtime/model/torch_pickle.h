// A restricted unpickler for the data.pkl of a torch.save'd state dict ({name: tensor}). It reads
// pickle protocols 2 to 5 but only the opcodes a state dict uses (containers, strings, ints, bools,
// None, memo, GLOBAL/STACK_GLOBAL, REDUCE, BUILD, BINPERSID), and resolves only these globals:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.FloatStorage, torch.HalfStorage,
// torch.BFloat16Storage. Any other global is refused by name the moment it is read ("pickle global
// 'posix.system' is not allowed"), as is any other opcode: nothing is ever imported or called, the
// "calls" are interpreted here (OrderedDict() makes a dict, _rebuild_tensor_v2 a tensor record).
// Persistent ids ('storage', StorageClass, key, location, numel) name the archive entry
// data/<key>; the caller maps it and checks every tensor against it (pytorch_bin.h). Values live in
// one arena and refer to each other by index, so cycles or deep nesting cannot recurse or leak.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"

namespace gptj {

struct PickledTensor {
  std::string name;             // the state dict's key
  DType dtype;                  // from the storage class
  std::string storage_key;      // the persistent id's key: the archive entry <prefix>/data/<key>
  int64_t storage_numel = 0;    // elements the persistent id says the storage holds
  int64_t offset = 0;           // storage_offset, in elements
  std::vector<int64_t> shape, stride;  // as pickled; not yet validated
};

// The tensors of the pickled state dict, in pickle order. Throws gptj::Error "<where>: ..." (with
// the byte offset) for anything else: another global, an unknown opcode, a malformed or truncated
// stream, a top-level object that is not a dict of name -> tensor.
std::vector<PickledTensor> read_state_dict_pickle(const uint8_t* bytes, std::size_t size, const std::string& where);

}  // namespace gptj
