// What every checkpoint file format gives the Checkpoint (safetensors.h): named tensors whose
// bytes lie inside one memory-mapped file. A TensorFile owns its MappedFile; each TensorInfo
// points into that mapping, so it is valid while the TensorFile lives. The formats:
// SafetensorsFile (safetensors.h) and PytorchBinFile (pytorch_bin.h).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/model/mapped_file.h"

namespace gptj {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;     // row-major (C order), contiguous
  const uint8_t* data = nullptr;  // inside the mapping; valid while the file is open
  std::string file;               // for error messages

  int64_t numel() const;
};

// "[2, 3]": a shape as error messages write it.
std::string shape_text(const std::vector<int64_t>& shape);

// One mapped checkpoint file and its validated tensors; the subclass's constructor parses it.
class TensorFile {
 public:
  virtual ~TensorFile() = default;
  TensorFile(const TensorFile&) = delete;
  TensorFile& operator=(const TensorFile&) = delete;

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::string& path() const { return file_.path(); }
  void release_pages() const { file_.release_pages(); }  // see MappedFile::release_pages

 protected:
  explicit TensorFile(const std::string& path) : file_(path) {}

  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace gptj
