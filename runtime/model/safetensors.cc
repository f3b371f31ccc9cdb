#include "runtime/model/safetensors.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "runtime/core/error.h"
#include "runtime/model/pytorch_bin.h"

namespace gptj {
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

DType parse_file_dtype(const std::string& text, const std::string& where) {
  if (text == "F32") return DType::kF32;
  if (text == "F16") return DType::kF16;
  if (text == "BF16") return DType::kBF16;
  fail("{}: dtype '{}' is not supported (F32, F16, BF16)", where, text);
}

// The reference implementation's limit: a larger header is refused before it is parsed.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : TensorFile(path) {
  const std::size_t file_size = file_.size();
  GPTJ_CHECK(file_size >= 8, "{}: truncated file ({} bytes, no header length)", path, file_size);
  const uint8_t* bytes = file_.data();

  uint64_t header_len = 0;  // little-endian on disk; every supported host is little-endian
  std::memcpy(&header_len, bytes, 8);
  GPTJ_CHECK(header_len <= file_size - 8, "{}: header length {} runs past the end of the file ({} bytes)",
             path, header_len, file_size);
  GPTJ_CHECK(header_len <= kMaxHeaderBytes, "{}: header length {} exceeds the format's limit of {} bytes",
             path, header_len, kMaxHeaderBytes);
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_len);
  GPTJ_CHECK(!header_text.empty() && header_text.front() == '{',
             "{}: corrupt header, the {}-byte JSON header does not start with '{{'", path, header_len);
  json::value header;
  try {
    header = json::parse(header_text);
  } catch (const std::exception& e) {
    fail("{}: corrupt header, not valid JSON ({}); is the header length {} right?", path, e.what(),
         header_len);
  }
  GPTJ_CHECK(header.is_object(), "{}: corrupt header, not a JSON object", path);
  const uint8_t* data_start = bytes + 8 + header_len;
  const std::size_t data_size = file_size - 8 - header_len;

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [key, value] : header.as_object()) {
    if (key == "__metadata__") continue;
    std::string name(key);
    std::string where = fmt::format("{}: tensor '{}'", path, name);
    GPTJ_CHECK(value.is_object(), "{}: entry is not an object", where);
    const auto& entry = value.as_object();
    auto* dtype = entry.if_contains("dtype");
    auto* shape = entry.if_contains("shape");
    auto* offsets = entry.if_contains("data_offsets");
    GPTJ_CHECK(dtype && dtype->is_string() && shape && shape->is_array() && offsets &&
                   offsets->is_array() && offsets->as_array().size() == 2,
               "{}: entry needs dtype, shape and data_offsets [begin, end]", where);
    TensorInfo info;
    info.name = name;
    info.file = path;
    info.dtype = parse_file_dtype(std::string(dtype->as_string()), where);
    // The byte count is computed without overflow: a dimension no larger than the data section
    // and a running product that stays within it (else the entry cannot fit anyway).
    uint64_t expected = dtype_size(info.dtype);
    bool fits = true;
    for (const auto& d : shape->as_array()) {
      GPTJ_CHECK(d.is_int64() && d.as_int64() >= 0, "{}: shape has a non-integer entry", where);
      info.shape.push_back(d.as_int64());
      const auto dim = static_cast<uint64_t>(d.as_int64());
      if (dim != 0 && expected > data_size / dim) fits = false;
      expected = fits ? expected * dim : 0;
    }
    GPTJ_CHECK(fits, "{}: shape {} x {} needs more bytes than the file's {}-byte data section", where,
               shape_text(info.shape), dtype_name(info.dtype), data_size);
    const auto& off = offsets->as_array();
    auto non_negative_int = [](const json::value& v) {
      return v.is_uint64() || (v.is_int64() && v.as_int64() >= 0);
    };
    GPTJ_CHECK(non_negative_int(off[0]) && non_negative_int(off[1]),
               "{}: data_offsets must be non-negative integers", where);
    uint64_t begin = off[0].to_number<uint64_t>(), end = off[1].to_number<uint64_t>();
    GPTJ_CHECK(begin <= end && end <= data_size,
               "{}: data_offsets [{}, {}] run past the end of the data ({} bytes)", where, begin, end,
               data_size);
    GPTJ_CHECK(end - begin == expected, "{}: shape {} x {} needs {} bytes but data_offsets span {}",
               where, shape_text(info.shape), dtype_name(info.dtype), expected, end - begin);
    info.data = data_start + begin;
    auto placed = tensors_.emplace(name, std::move(info));
    GPTJ_CHECK(placed.second, "{}: the header lists this tensor twice", where);
    spans.push_back({begin, end, &placed.first->first});
  }
  // As the format requires: the tensors tile the data section from its first byte to the file's
  // end, in offset order, with no overlap and no hole. A header length off by some bytes moves the
  // data section's start, so the tensors no longer cover it exactly and the file is refused here.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const Span& s : spans) {
    GPTJ_CHECK(s.begin >= covered, "{}: tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}', which ends at {}",
               path, *s.name, s.begin, s.end, previous ? *previous : std::string(), covered);
    GPTJ_CHECK(s.begin == covered,
               "{}: bytes [{}, {}) of the data section belong to no tensor (a hole before tensor '{}')",
               path, covered, s.begin, *s.name);
    covered = s.end;
    previous = s.name;
  }
  GPTJ_CHECK(covered == data_size,
             "{}: the tensors cover {} bytes but the data section after the {}-byte header holds {} "
             "(header length or file size is wrong)",
             path, covered, header_len, data_size);
}

void Checkpoint::release_pages() const {
  for (const auto& file : files_) file->release_pages();
}

namespace {

// The shard file names of an index's weight_map, by tensor name.
std::map<std::string, std::string> read_weight_map(const fs::path& index) {
  std::ifstream in(index);
  GPTJ_CHECK(in.good(), "{}: cannot open", index.string());
  std::stringstream text;
  text << in.rdbuf();
  json::value root;
  try {
    root = json::parse(text.str());
  } catch (const std::exception& e) {
    fail("{}: not valid JSON ({})", index.string(), e.what());
  }
  auto* weight_map = root.is_object() ? root.as_object().if_contains("weight_map") : nullptr;
  GPTJ_CHECK(weight_map && weight_map->is_object(), "{}: missing object 'weight_map'", index.string());
  std::map<std::string, std::string> out;
  for (const auto& [name, file] : weight_map->as_object()) {
    GPTJ_CHECK(file.is_string(), "{}: weight_map['{}'] must be a file name", index.string(), std::string(name));
    out[std::string(name)] = std::string(file.as_string());
  }
  return out;
}

}  // namespace

Checkpoint::Checkpoint(const std::string& model_dir) : dir_(model_dir) {
  const fs::path dir(model_dir);
  // The first of these that exists is read (Hugging Face's own order of preference).
  struct Layout {
    const char* name;
    bool index, pytorch;
  };
  const Layout layouts[] = {{"model.safetensors", false, false},
                            {"model.safetensors.index.json", true, false},
                            {"pytorch_model.bin", false, true},
                            {"pytorch_model.bin.index.json", true, true}};
  const Layout* layout = nullptr;
  for (const Layout& l : layouts)
    if (!layout && fs::exists(dir / l.name)) layout = &l;
  GPTJ_CHECK(layout, "{}: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
             "pytorch_model.bin.index.json", model_dir);
  const std::string index = (dir / layout->name).string();
  std::map<std::string, std::string> weight_map;
  std::set<std::string> shard_names;
  if (layout->index) {
    weight_map = read_weight_map(index);
    for (const auto& [tensor, file] : weight_map) shard_names.insert(file);
  } else {
    shard_names.insert(layout->name);
  }
  for (const auto& name : shard_names) {
    const std::string path = (dir / name).string();
    if (layout->pytorch) files_.push_back(std::make_unique<PytorchBinFile>(path));
    else files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const auto& [tensor_name, info] : files_.back()->tensors()) {
      auto placed = index_.emplace(tensor_name, &info);
      GPTJ_CHECK(placed.second, "{}: tensor '{}' is in both {} and {}", index, tensor_name,
                 placed.first->second->file, path);
    }
  }
  // An index that puts a tensor in a shard that does not hold it is refused (a stale index, or a
  // shard that was replaced), rather than reading the tensor from wherever it happens to be.
  for (const auto& [tensor, file] : weight_map) {
    auto it = index_.find(tensor);
    GPTJ_CHECK(it != index_.end() && it->second->file == (dir / file).string(),
               "{}: weight_map puts tensor '{}' in {}, which does not hold it", index, tensor, file);
  }
}

bool Checkpoint::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& Checkpoint::tensor(const std::string& name,
                                     const std::vector<int64_t>& expected_shape) const {
  auto it = index_.find(name);
  GPTJ_CHECK(it != index_.end(), "{}: missing tensor '{}'", dir_, name);
  const TensorInfo& info = *it->second;
  GPTJ_CHECK(info.shape == expected_shape, "{}: tensor '{}' has shape {} but the config needs {}",
             info.file, name, shape_text(info.shape), shape_text(expected_shape));
  return info;
}

std::vector<float> Checkpoint::read_f32(const std::string& name,
                                        const std::vector<int64_t>& expected_shape,
                                        const Slice& slice) const {
  const HostMatrix m = read_matrix(name, expected_shape, slice);
  std::vector<float> out(static_cast<std::size_t>(m.rows() * m.cols()));
  convert_to_f32(m.dtype(), m.data(), out.data(), out.size());
  return out;
}

HostMatrix Checkpoint::read_matrix(const std::string& name, const std::vector<int64_t>& expected_shape,
                                   const Slice& slice) const {
  const TensorInfo& info = tensor(name, expected_shape);
  const int64_t rows = info.shape.empty() ? 1 : info.shape[0];
  const int64_t cols = info.shape.size() >= 2 ? info.shape[1] : 1;
  const int64_t row_end = slice.row_end < 0 ? rows : slice.row_end;
  const int64_t col_end = slice.col_end < 0 ? cols : slice.col_end;
  GPTJ_CHECK(slice.row_begin >= 0 && slice.row_begin <= row_end && slice.col_begin >= 0 &&
                 slice.col_begin <= col_end && col_end <= cols,
             "{}: bad slice of tensor '{}'", info.file, name);
  const int64_t out_cols = col_end - slice.col_begin;
  HostMatrix out(info.dtype, row_end - slice.row_begin, out_cols);  // zero-filled: padding rows stay 0
  const std::size_t elem = dtype_size(info.dtype);
  for (int64_t r = slice.row_begin; r < std::min(row_end, rows); ++r) {
    const uint8_t* src = info.data + (static_cast<std::size_t>(r * cols + slice.col_begin)) * elem;
    std::memcpy(out.row(r - slice.row_begin), src, static_cast<std::size_t>(out_cols) * elem);
  }
  // The copy is made: drop the tensor's file pages so a rank's peak memory is its shard, not the file.
  release_mapped_range(info.data, static_cast<std::size_t>(info.numel()) * elem);
  return out;
}

void write_safetensors(const std::string& path,
                       const std::map<std::string, TensorToWrite>& tensors) {
  json::object header;
  header["__metadata__"] = json::object{{"format", "pt"}};
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    json::array shape;
    for (auto d : t.shape) shape.push_back(d);
    const char* dtype = t.dtype == DType::kF32 ? "F32" : t.dtype == DType::kF16 ? "F16" : "BF16";
    header[name] = json::object{{"dtype", dtype},
                                {"shape", shape},
                                {"data_offsets", json::array{offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = json::serialize(header);
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::ofstream out(path, std::ios::binary);
  GPTJ_CHECK(out.good(), "cannot write {}", path);
  uint64_t len = text.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors)
    out.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
  GPTJ_CHECK(out.good(), "write to {} failed", path);
}

}  // namespace gptj
