// Unit tests for pytorch_model.bin loading (runtime/model/pytorch_bin.h, zip_archive.h,
// torch_pickle.h): archives built here the way torch.save writes them (stored entries under one
// folder, a protocol-2 state-dict pickle; also protocol 4 with FRAME/STACK_GLOBAL/MEMOIZE and an
// OrderedDict with _metadata) read back exactly, views sharing a storage included; the fixture
// .bin copies of tiny-gptj-b hold exactly its safetensors weights; and every refusal names the file
// and what is wrong: a compressed entry, any global outside the five (the evil-pickle fixture's
// posix.system among them, which must not run), an unknown opcode, a missing storage, a storage
// of the wrong size, an offset past the storage's end, non-contiguous strides, misaligned data, a
// big-endian byteorder, a truncated file, missing or misshaped tensors, a stale shard index.
#include "runtime/model/pytorch_bin.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/expect_error.h"
#include "tests/golden/golden_data.h"
#include "tests/golden/temp_dir.h"

namespace gptj {
namespace {
namespace fs = std::filesystem;
using testing::expect_gptj_error;
using namespace std::string_literals;

// ---- a zip writer (stored entries, data 64-byte aligned as torch.save aligns it) ----

struct Entry {
  std::string name, data;
  uint16_t method = 0;  // 0 stored; 8 claims deflate
};

void put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// `shift` moves every entry's data that many bytes off the 64-byte alignment.
std::string zip(const std::vector<Entry>& entries, int shift = 0) {
  std::string out, central;
  for (const Entry& e : entries) {
    const uint64_t local = out.size();
    const std::size_t header = 30 + e.name.size();
    std::size_t pad = (64 - (local + header + 4) % 64) % 64 + static_cast<std::size_t>(shift);
    put(out, 0x04034b50, 4);
    put(out, 20, 2);
    put(out, 0, 2);
    put(out, e.method, 2);
    put(out, 0, 8);  // time, date, crc
    put(out, e.data.size(), 4);
    put(out, e.data.size(), 4);
    put(out, e.name.size(), 2);
    put(out, 4 + pad, 2);
    out += e.name;
    put(out, 0x4246, 2);  // "FB": torch's padding field
    put(out, pad, 2);
    out.append(pad, 'Z');
    out += e.data;
    put(central, 0x02014b50, 4);
    put(central, 20, 2);
    put(central, 20, 2);
    put(central, 0, 2);
    put(central, e.method, 2);
    put(central, 0, 8);
    put(central, e.data.size(), 4);
    put(central, e.data.size(), 4);
    put(central, e.name.size(), 2);
    put(central, 0, 2);
    put(central, 0, 2);
    put(central, 0, 4);  // disk, internal attributes
    put(central, 0, 4);
    put(central, local, 4);
    central += e.name;
  }
  const uint64_t at = out.size();
  out += central;
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  put(out, entries.size(), 2);
  put(out, entries.size(), 2);
  put(out, central.size(), 4);
  put(out, at, 4);
  put(out, 0, 2);
  return out;
}

// ---- a pickle writer: the opcodes torch.save uses for a state dict (protocol 2) ----

struct Pickled {
  std::string name, storage_class = "HalfStorage", key = "0";
  int64_t numel = 0, offset = 0;
  std::vector<int64_t> shape, stride;
};

std::string unicode(const std::string& s) {
  std::string out = "X";
  put(out, s.size(), 4);
  return out + s;
}
std::string integer(int64_t v) {
  std::string out;
  if (v >= INT32_MIN && v <= INT32_MAX) {
    out = "J";
    put(out, static_cast<uint64_t>(v), 4);
  } else {
    out = "\x8a\x08";
    put(out, static_cast<uint64_t>(v), 8);
  }
  return out;
}
std::string int_tuple(const std::vector<int64_t>& values) {
  std::string out = "(";
  for (int64_t v : values) out += integer(v);
  return out + "t";
}
std::string tensor(const Pickled& t) {
  return "ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage") + "ctorch\n" + t.storage_class + "\n" +
         unicode(t.key) + unicode("cpu") + integer(t.numel) + "tQ" + integer(t.offset) + int_tuple(t.shape) +
         int_tuple(t.stride) + "\x89" + "ccollections\nOrderedDict\n)Rt" + "R";
}
std::string state_dict(const std::vector<Pickled>& tensors) {
  std::string out = "\x80\x02}(";
  for (const Pickled& t : tensors) out += unicode(t.name) + tensor(t);
  return out + "u.";
}

template <typename T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::map<std::string, TensorInfo> read(const std::vector<uint8_t>& archive) {
  return read_pytorch_bin(archive.data(), archive.size(), "model.bin");
}

// An archive of one F16 tensor 'w' with shape [2, 4] over storage '0' (8 elements), in `prefix`.
std::string one_tensor(const Pickled& t, const std::string& prefix = "archive/", int storage_elems = 8) {
  return zip({{prefix + "data.pkl", state_dict({t})},
              {prefix + "data/0", raw(std::vector<uint16_t>(static_cast<std::size_t>(storage_elems), 0x3c00))},
              {prefix + "version", "3\n"}});
}
Pickled w() { return {"w", "HalfStorage", "0", 8, 0, {2, 4}, {4, 1}}; }

void expect_refused(const std::string& archive, std::initializer_list<std::string> needles) {
  const auto bytes = bytes_of(archive);
  expect_gptj_error([&] { read(bytes); }, needles);
}

TEST(PytorchBin, ReadsTensorsAndViewsAsTorchSaveWritesThem) {
  const std::vector<float> f32 = {1, 2, 3, 4, 5, 6};
  const std::vector<uint16_t> bf16 = {0x3f80, 0x4000, 0xc040, 0x0001};
  const std::vector<uint16_t> f16 = {0, 1, 2, 3, 4, 5, 6, 7};
  const std::string pickle = state_dict({{"a.weight", "FloatStorage", "0", 6, 0, {2, 3}, {3, 1}},
                                         {"b.bias", "BFloat16Storage", "1", 4, 0, {4}, {1}},
                                         {"view", "HalfStorage", "2", 8, 4, {2, 2}, {2, 1}},
                                         {"column", "HalfStorage", "2", 8, 1, {3, 1}, {1, 7}},
                                         {"scalar", "HalfStorage", "2", 8, 7, {}, {}}});
  // A folder named like the checkpoint, as transformers' save_pretrained writes it.
  const auto archive = bytes_of(zip({{"pytorch_model/data.pkl", pickle},
                                     {"pytorch_model/data/0", raw(f32)},
                                     {"pytorch_model/data/1", raw(bf16)},
                                     {"pytorch_model/data/2", raw(f16)},
                                     {"pytorch_model/byteorder", "little"}}));
  const auto tensors = read(archive);
  ASSERT_EQ(tensors.size(), 5u);
  const TensorInfo& a = tensors.at("a.weight");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.file, "model.bin");
  EXPECT_EQ(std::memcmp(a.data, f32.data(), 24), 0);
  EXPECT_EQ(tensors.at("b.bias").dtype, DType::kBF16);
  EXPECT_EQ(std::memcmp(tensors.at("b.bias").data, bf16.data(), 8), 0);
  const TensorInfo& view = tensors.at("view");  // elements 4..7 of storage 2
  EXPECT_EQ(view.dtype, DType::kF16);
  EXPECT_EQ(std::memcmp(view.data, f16.data() + 4, 8), 0);
  EXPECT_EQ(std::memcmp(tensors.at("column").data, f16.data() + 1, 6), 0);  // size-1 dim: any stride
  EXPECT_TRUE(tensors.at("scalar").shape.empty());
  EXPECT_EQ(std::memcmp(tensors.at("scalar").data, f16.data() + 7, 2), 0);
}

// Protocol 4 as torch.save(..., pickle_protocol=4) writes it: FRAME, SHORT_BINUNICODE, MEMOIZE,
// STACK_GLOBAL, LONG1; the state dict an OrderedDict whose _metadata BUILD sets.
TEST(PytorchBin, ReadsProtocol4AndAnOrderedDictWithMetadata) {
  auto short_text = [](const std::string& s) { return std::string("\x8c") + static_cast<char>(s.size()) + s + "\x94"; };
  std::string p = "\x80\x04\x95";
  put(p, 0, 8);  // the frame's length is not checked against anything
  p += short_text("collections") + short_text("OrderedDict") + "\x93\x94)R\x94(";
  p += short_text("w") + short_text("torch._utils") + short_text("_rebuild_tensor_v2") + "\x93\x94((";
  p += short_text("storage") + short_text("torch") + short_text("HalfStorage") + "\x93\x94" + short_text("0") +
       short_text("cpu") + "\x8a\x01\x08" + "t\x94Q" + "K\x00"s + "K\x02K\x04\x86\x94" + "K\x04K\x01\x86\x94" +
       "\x89" + "h\x02)R\x94" + "t\x94R\x94" + "u";
  // BUILD: state (None, {'_metadata': OrderedDict({'': {'version': 1}})}) on the OrderedDict.
  p += "N}" + short_text("_metadata") + "h\x02)R\x94" + short_text("") + "}" + short_text("version") +
       "K\x01ss" + "s\x86" + "b.";
  const auto archive = bytes_of(zip({{"archive/data.pkl", p}, {"archive/data/0", raw(std::vector<uint16_t>(8, 1))}}));
  const auto tensors = read(archive);
  ASSERT_EQ(tensors.size(), 1u);
  EXPECT_EQ(tensors.at("w").shape, (std::vector<int64_t>{2, 4}));
}

// The .bin copies hold tiny-gptj-b's weights bit for bit, and are what the Checkpoint reads.
TEST(PytorchBin, FixtureCopiesHoldTheSafetensorsWeights) {
  const Checkpoint reference(testing::model_dir("tiny-gptj-b"));
  for (const std::string model : {"tiny-gptj-b-bin", "tiny-gptj-b-bin-sharded"}) {
    const std::string dir = testing::model_dir(model);
    for (const auto& file : fs::directory_iterator(dir))
      EXPECT_NE(file.path().extension(), ".safetensors") << file.path();
    const Checkpoint bin(dir);
    ASSERT_EQ(bin.tensors().size(), reference.tensors().size()) << model;
    for (const auto& [name, info] : reference.tensors()) {
      const TensorInfo& got = bin.tensor(name, info->shape);
      EXPECT_EQ(got.dtype, info->dtype) << name;
      EXPECT_EQ(fs::path(got.file).extension(), ".bin") << name;
      EXPECT_EQ(std::memcmp(got.data, info->data, static_cast<std::size_t>(info->numel()) * dtype_size(info->dtype)), 0)
          << model << ": " << name;
    }
  }
}

TEST(PytorchBin, EvilPickleIsRefusedAndRunsNothing) {
  fs::remove("/tmp/gptj-pwned");
  const std::string dir = testing::model_dir("evil-pickle");
  expect_gptj_error([&] { Checkpoint c(dir); },
                    {dir + "/pytorch_model.bin", "archive/data.pkl", "pickle global 'posix.system' is not allowed"});
  EXPECT_FALSE(fs::exists("/tmp/gptj-pwned"));
}

TEST(PytorchBin, RefusesEveryGlobalOutsideAStateDict) {
  for (const std::string global : {"builtins\neval", "os\nsystem", "torch\nload", "collections\ndefaultdict",
                                   "torch._utils\n_rebuild_parameter"}) {
    const std::string dotted = global.substr(0, global.find('\n')) + "." + global.substr(global.find('\n') + 1);
    expect_refused(zip({{"archive/data.pkl", "\x80\x02" "c" + global + "\n)R."}}),
                   {"model.bin", "pickle global '" + dotted + "' is not allowed"});
  }
  // By STACK_GLOBAL too, and an unsupported storage type says so.
  expect_refused(zip({{"archive/data.pkl", "\x80\x04\x8c\x05posix\x8c\x06system\x93."}}),
                 {"pickle global 'posix.system' is not allowed"});
  Pickled doubles = w();
  doubles.storage_class = "DoubleStorage";
  expect_refused(one_tensor(doubles), {"pickle global 'torch.DoubleStorage' is not allowed", "storage type"});
}

TEST(PytorchBin, RefusesCompressedEntries) {
  expect_refused(zip({{"archive/data.pkl", state_dict({w()})},
                      {"archive/data/0", raw(std::vector<uint16_t>(8, 0)), 8}}),
                 {"model.bin", "'archive/data/0' is compressed", "deflate"});
}

TEST(PytorchBin, RefusesTensorsOutsideTheirStorage) {
  Pickled t = w();
  t.offset = 6;  // elements 6..13 of 8
  expect_refused(one_tensor(t), {"model.bin", "tensor 'w'", "runs past the end of its storage 'archive/data/0'"});
  t.offset = -1;
  expect_refused(one_tensor(t), {"tensor 'w'", "runs past the end"});
  t = w();
  t.shape = {3, 4};  // 12 elements in a storage of 8
  t.stride = {4, 1};
  expect_refused(one_tensor(t), {"tensor 'w'", "does not fit in its storage"});
  t.shape = {1 << 30, 1 << 30, 1 << 30};  // a product that overflows int64
  t.stride = {1, 1, 1};
  expect_refused(one_tensor(t), {"tensor 'w'", "does not fit"});
  t = w();
  t.numel = 10;  // the entry holds 8 elements
  expect_refused(one_tensor(t), {"tensor 'w'", "storage 'archive/data/0' holds 16 bytes", "10 elements"});
}

TEST(PytorchBin, RefusesNonContiguousStrides) {
  Pickled t = w();
  t.stride = {1, 2};  // a transpose
  expect_refused(one_tensor(t), {"model.bin", "tensor 'w'", "strides [1, 2] are not contiguous for shape [2, 4]"});
  t.stride = {8, 1};  // rows with gaps
  t.numel = 16;
  expect_refused(one_tensor(t, "archive/", 16), {"tensor 'w'", "not contiguous"});
}

TEST(PytorchBin, RefusesMissingStoragesAndEntries) {
  Pickled t = w();
  t.key = "7";
  expect_refused(one_tensor(t), {"model.bin", "tensor 'w'", "storage 'archive/data/7' is not in the archive"});
  expect_refused(zip({{"archive/version", "3\n"}}), {"no 'archive/data.pkl' in the archive"});
  expect_refused(zip({{"data.pkl", state_dict({w()})}}), {"entry 'data.pkl' is not inside a folder"});
  expect_refused(zip({}), {"zip archive is empty"});
  expect_refused("not a zip archive at all, just some text that is long enough", {"model.bin", "not a zip archive"});
  expect_refused(state_dict({w()}), {"model.bin", "legacy torch.save file"});
}

TEST(PytorchBin, RefusesMisalignedDataAndBigEndianCheckpoints) {
  const std::string pickle = state_dict({w()});
  expect_refused(zip({{"archive/data.pkl", pickle}, {"archive/data/0", raw(std::vector<uint16_t>(8, 0))}}, 1),
                 {"tensor 'w'", "not aligned to its 2-byte elements"});
  expect_refused(zip({{"archive/data.pkl", pickle},
                      {"archive/data/0", raw(std::vector<uint16_t>(8, 0))},
                      {"archive/byteorder", "big"}}),
                 {"'archive/byteorder' says 'big'", "only little-endian"});
  expect_refused(zip({{"archive/data.pkl", pickle},
                      {"archive/data/0", raw(std::vector<uint16_t>(8, 0))},
                      {"archive/byteorder", "little\n"}}),
                 {"'archive/byteorder' says 'little?'"});
}

TEST(PytorchBin, RefusesPicklesThatAreNotStateDicts) {
  auto only_pickle = [](const std::string& p) { return zip({{"archive/data.pkl", p}}); };
  expect_refused(only_pickle("\x80\x02]."), {"archive/data.pkl", "holds a list, not a state dict"});
  expect_refused(only_pickle("\x80\x02}(X\x01\x00\x00\x00xK\x01u."s), {"entry 'x' is an int, not a tensor"});
  expect_refused(only_pickle("\x80\x02}(K\x01K\x01u."), {"key is an int, not a string"});
  expect_refused(only_pickle("\x80\x02G\x3f\xf0\x00\x00\x00\x00\x00\x00."s), {"pickle byte 2", "opcode 0x47"});
  expect_refused(only_pickle("\x80\x02}"), {"truncated pickle"});
  expect_refused(only_pickle("\x80\x02X\xff\x00\x00\x00" "ab."s), {"truncated pickle"});
  expect_refused(only_pickle("\x80\x02h\x05."), {"memo entry 5 was never stored"});
  expect_refused(only_pickle("\x80\x02t."), {"no MARK"});
  expect_refused(only_pickle("\x80\x02R."), {"stack underflow"});
  expect_refused(only_pickle("\x80\x01}."), {"pickle protocol 1"});
  expect_refused(only_pickle("\x80\x02}(X\x01\x00\x00\x00w"s + tensor(w()) + "X\x01\x00\x00\x00w"s + tensor(w()) + "u."),
                 {"lists tensor 'w' twice"});
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(PytorchBin, CheckpointRefusesTruncatedFilesAndMissingOrMisshapedTensors) {
  testing::TempDir dir("gptj_pytorch_bin_test");
  const std::string archive = one_tensor(w());
  const std::string path = dir.file("pytorch_model.bin");
  for (std::size_t cut : {std::size_t{0}, std::size_t{10}, archive.size() / 2, archive.size() - 1}) {
    write(path, archive.substr(0, cut));
    expect_gptj_error([&] { Checkpoint c(dir.str()); }, {path});
  }
  write(path, archive);
  const Checkpoint checkpoint(dir.str());
  EXPECT_EQ(checkpoint.read_f32("w", {2, 4}), std::vector<float>(8, 1.0f));  // 0x3c00 = 1.0 in F16
  expect_gptj_error([&] { checkpoint.tensor("lm_head.weight", {2, 4}); }, {"missing tensor 'lm_head.weight'"});
  expect_gptj_error([&] { checkpoint.tensor("w", {4, 2}); }, {path, "tensor 'w' has shape [2, 4]", "[4, 2]"});
  // model.safetensors comes first when both are there.
  write_safetensors(dir.file("model.safetensors"), {{"s", {DType::kF32, {1}, {0, 0, 0, 0}}}});
  EXPECT_TRUE(Checkpoint(dir.str()).contains("s"));
}

TEST(PytorchBin, ShardIndexMustMatchItsShards) {
  testing::TempDir dir("gptj_pytorch_bin_test");
  Pickled v = w();
  v.name = "v";
  write(dir.file("a.bin"), one_tensor(w(), "a/"));
  write(dir.file("b.bin"), one_tensor(v, "b/"));
  const std::string index = dir.file("pytorch_model.bin.index.json");
  write(index, R"({"metadata": {}, "weight_map": {"w": "a.bin", "v": "b.bin"}})");
  const Checkpoint checkpoint(dir.str());
  EXPECT_TRUE(checkpoint.contains("w") && checkpoint.contains("v"));
  write(index, R"({"weight_map": {"w": "b.bin", "v": "b.bin"}})");
  expect_gptj_error([&] { Checkpoint c(dir.str()); }, {index, "puts tensor 'w' in b.bin, which does not hold it"});
  write(dir.file("c.bin"), one_tensor(w(), "c/"));
  write(index, R"({"weight_map": {"w": "a.bin", "v": "b.bin", "x": "c.bin"}})");
  expect_gptj_error([&] { Checkpoint c(dir.str()); }, {"tensor 'w' is in both"});
}

}  // namespace
}  // namespace gptj
