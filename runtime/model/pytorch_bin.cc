#include "runtime/model/pytorch_bin.h"

#include <algorithm>
#include <string_view>

#include "runtime/core/error.h"
#include "runtime/model/torch_pickle.h"
#include "runtime/model/zip_archive.h"

namespace gptj {
namespace {

// Elements of `shape`, or -1 when a dimension is negative or the product exceeds `limit`.
int64_t bounded_numel(const std::vector<int64_t>& shape, int64_t limit) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d == 0) return 0;
  }
  for (int64_t d : shape) {
    if (n > limit / d) return -1;
    n *= d;
  }
  return n;
}

bool contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 0) return true;  // no elements: any strides
    if (shape[i] != 1 && stride[i] != expected) return false;
    expected *= shape[i];  // cannot overflow: numel was bounded first
  }
  return true;
}

struct Storage {
  const ZipEntry* entry;
  DType dtype;
  int64_t numel;
};

}  // namespace

std::map<std::string, TensorInfo> read_pytorch_bin(const uint8_t* bytes, std::size_t size, const std::string& path) {
  // torch.save before torch 1.6 (or with _use_new_zipfile_serialization=False) wrote bare pickles.
  GPTJ_CHECK(size < 2 || bytes[0] != 0x80 || bytes[1] > 5,
             "{}: a legacy torch.save file (a bare pickle, no zip archive; written before torch 1.6 or with "
             "_use_new_zipfile_serialization=False) is not supported: save it again with a current torch.save", path);
  const ZipArchive zip(bytes, size, path);
  GPTJ_CHECK(!zip.entries().empty(), "{}: the zip archive is empty (not a torch.save checkpoint)", path);
  const std::string& first = zip.entries().front().name;
  const std::size_t slash = first.find('/');
  GPTJ_CHECK(slash != std::string::npos && slash > 0,
             "{}: entry '{}' is not inside a folder; torch.save writes <folder>/data.pkl", path, first);
  const std::string prefix = first.substr(0, slash + 1);
  const ZipEntry* pickle = zip.find(prefix + "data.pkl");
  GPTJ_CHECK(pickle, "{}: no '{}data.pkl' in the archive (not a torch.save checkpoint?)", path, prefix);
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    const std::string_view text(reinterpret_cast<const char*>(order->data), std::min<uint64_t>(order->size, 16));
    std::string shown(text);  // one line, whatever the entry holds
    for (char& c : shown) c = c >= ' ' && c <= '~' ? c : '?';
    GPTJ_CHECK(text == "little" && order->size == 6, "{}: '{}' says '{}': only little-endian checkpoints are read",
               path, order->name, shown);
  }
  const auto pickled = read_state_dict_pickle(pickle->data, pickle->size, path + ": " + pickle->name);

  std::map<std::string, Storage> storages;  // by key: every use must agree on dtype and size
  std::map<std::string, TensorInfo> out;
  for (const PickledTensor& t : pickled) {
    const std::string where = fmt::format("{}: tensor '{}'", path, t.name);
    const std::string entry_name = prefix + "data/" + t.storage_key;
    const std::size_t elem = dtype_size(t.dtype);
    auto found = storages.find(t.storage_key);
    if (found == storages.end()) {
      const ZipEntry* entry = zip.find(entry_name);
      GPTJ_CHECK(entry, "{}: its storage '{}' is not in the archive (truncated or corrupt file)", where, entry_name);
      GPTJ_CHECK(t.storage_numel >= 0 && static_cast<uint64_t>(t.storage_numel) <= entry->size / elem &&
                     static_cast<uint64_t>(t.storage_numel) * elem == entry->size,
                 "{}: storage '{}' holds {} bytes but the pickle says {} elements of {}", where, entry_name,
                 entry->size, t.storage_numel, dtype_name(t.dtype));
      found = storages.emplace(t.storage_key, Storage{entry, t.dtype, t.storage_numel}).first;
    }
    const Storage& s = found->second;
    GPTJ_CHECK(s.dtype == t.dtype && s.numel == t.storage_numel,
               "{}: storage '{}' is pickled as {} elements of {} here but as {} of {} for another tensor", where,
               entry_name, t.storage_numel, dtype_name(t.dtype), s.numel, dtype_name(s.dtype));
    const int64_t numel = bounded_numel(t.shape, s.numel);
    GPTJ_CHECK(numel >= 0, "{}: shape {} does not fit in its storage '{}' of {} elements", where,
               shape_text(t.shape), entry_name, s.numel);
    GPTJ_CHECK(contiguous(t.shape, t.stride),
               "{}: strides {} are not contiguous for shape {}; only contiguous tensors are read (save "
               "tensor.contiguous())", where, shape_text(t.stride), shape_text(t.shape));
    GPTJ_CHECK(t.offset >= 0 && t.offset <= s.numel && numel <= s.numel - t.offset,
               "{}: storage offset {} + {} elements runs past the end of its storage '{}' ({} elements)", where,
               t.offset, numel, entry_name, s.numel);
    const uint8_t* data = s.entry->data + static_cast<std::size_t>(t.offset) * elem;
    GPTJ_CHECK(reinterpret_cast<uintptr_t>(data) % elem == 0,
               "{}: its data (byte {} of the file) is not aligned to its {}-byte elements", where, data - bytes, elem);
    TensorInfo info;
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.data = data;
    info.file = path;
    out.emplace(t.name, std::move(info));
  }
  return out;
}

PytorchBinFile::PytorchBinFile(const std::string& path) : TensorFile(path) {
  tensors_ = read_pytorch_bin(file_.data(), file_.size(), path);
}

}  // namespace gptj
