// Unit tests for runtime/model/safetensors.h: files written by write_safetensors read back exactly
// (F32, F16, BF16, mixed), sharded checkpoints via model.safetensors.index.json, slices with vocab
// padding, and every validation error on byte-wise corrupted files (each naming file and tensor):
// header length and limit, a header that is not a JSON object text, and tensors that do not tile
// the data section exactly (overlap, hole, trailing bytes, a header length off by one).
#include "runtime/model/safetensors.h"

#include <gtest/gtest.h>

#include "tests/golden/expect_error.h"
#include "tests/golden/temp_dir.h"
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

namespace gptj {
namespace {
namespace fs = std::filesystem;

// A fresh directory, removed at the end of the test.
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("gptj_safetensors_test") {}
};

std::vector<uint8_t> f32_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}
std::vector<uint8_t> u16_bytes(const std::vector<uint16_t>& values) {
  std::vector<uint8_t> bytes(values.size() * 2);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// The header JSON text of a safetensors file, and a way to put a new header in its place.
std::string header_of(const std::vector<uint8_t>& file) {
  uint64_t len = 0;
  std::memcpy(&len, file.data(), 8);
  return std::string(reinterpret_cast<const char*>(file.data() + 8), len);
}
std::vector<uint8_t> with_header(const std::vector<uint8_t>& file, std::string header) {
  uint64_t old_len = 0;
  std::memcpy(&old_len, file.data(), 8);
  while (header.size() % 8 != 0) header.push_back(' ');
  const std::size_t tail = file.size() - 8 - old_len;
  std::vector<uint8_t> out(8 + header.size() + tail);
  const uint64_t len = header.size();
  std::memcpy(out.data(), &len, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  std::memcpy(out.data() + 8 + header.size(), file.data() + 8 + old_len, tail);
  return out;
}
std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "'" << from << "' not in " << text;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// Opening `path` (as a file) must throw gptj::Error naming every needle.
template <typename F>
void expect_error(F&& open, std::initializer_list<std::string> needles) {
  testing::expect_gptj_error(open, needles);
}

// A two-tensor F32 file: "a.weight" [2, 3] = 0..5 and "b.bias" [4] = 10..13.
std::map<std::string, TensorToWrite> small_tensors() {
  return {{"a.weight", {DType::kF32, {2, 3}, f32_bytes({0, 1, 2, 3, 4, 5})}},
          {"b.bias", {DType::kF32, {4}, f32_bytes({10, 11, 12, 13})}}};
}

TEST(Safetensors, WriteThenReadF32) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), small_tensors());
  const auto bytes = read_bytes(dir.file("model.safetensors"));
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  EXPECT_EQ((8 + len) % 8, 0u) << "data must start 8-byte aligned";
  EXPECT_EQ(bytes.size(), 8 + len + 6 * 4 + 4 * 4);

  Checkpoint ckpt(dir.str());
  EXPECT_TRUE(ckpt.contains("a.weight"));
  EXPECT_TRUE(ckpt.contains("b.bias"));
  EXPECT_FALSE(ckpt.contains("__metadata__"));
  EXPECT_EQ(ckpt.read_f32("a.weight", {2, 3}), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(ckpt.read_f32("b.bias", {4}), (std::vector<float>{10, 11, 12, 13}));
  const TensorInfo& info = ckpt.tensor("a.weight", {2, 3});
  EXPECT_EQ(info.dtype, DType::kF32);
  EXPECT_EQ(info.numel(), 6);
  EXPECT_EQ(info.file, dir.file("model.safetensors"));
}

TEST(Safetensors, F16IncludingSubnormalsReadsExactly) {
  TempDir dir;
  // 1.0, -2.0, 65504 (max), smallest subnormal 2^-24, largest subnormal, smallest normal 2^-14,
  // -0, inf, 0.333251953125 (0x3555).
  const std::vector<uint16_t> bits{0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x8000, 0x7c00, 0x3555};
  const std::vector<float> want{1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), std::ldexp(1023.0f, -24),
                                std::ldexp(1.0f, -14), -0.0f, INFINITY, 0.333251953125f};
  write_safetensors(dir.file("model.safetensors"), {{"h", {DType::kF16, {3, 3}, u16_bytes(bits)}}});
  Checkpoint ckpt(dir.str());
  const auto got = ckpt.read_f32("h", {3, 3});
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << "element " << i;
    EXPECT_EQ(std::signbit(got[i]), std::signbit(want[i])) << "element " << i;
  }
}

TEST(Safetensors, Bf16IsTheTopHalfOfFloat32) {
  TempDir dir;
  std::vector<uint16_t> bits;
  for (uint32_t b = 0; b < 65536; b += 97) bits.push_back(static_cast<uint16_t>(b));
  bits.push_back(0x3f80);  // 1.0
  write_safetensors(dir.file("model.safetensors"),
                    {{"x", {DType::kBF16, {static_cast<int64_t>(bits.size())}, u16_bytes(bits)}}});
  Checkpoint ckpt(dir.str());
  const auto got = ckpt.read_f32("x", {static_cast<int64_t>(bits.size())});
  ASSERT_EQ(got.size(), bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) {
    uint32_t word = 0;
    std::memcpy(&word, &got[i], 4);
    EXPECT_EQ(word, static_cast<uint32_t>(bits[i]) << 16) << "bits " << bits[i];
  }
  EXPECT_EQ(got.back(), 1.0f);
}

TEST(Safetensors, MixedDtypesInOneFile) {
  TempDir dir;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-3, 3);
  std::vector<float> f32(5 * 7);
  for (auto& v : f32) v = dist(rng);
  std::vector<uint16_t> f16(3 * 5), bf16(11);
  std::vector<float> f16_want, bf16_want;
  for (auto& b : f16) {
    b = f32_to_f16(dist(rng));
    f16_want.push_back(f16_to_f32(b));
  }
  for (auto& b : bf16) {
    b = f32_to_bf16(dist(rng));
    bf16_want.push_back(bf16_to_f32(b));
  }
  write_safetensors(dir.file("model.safetensors"),
                    {{"f32", {DType::kF32, {5, 7}, f32_bytes(f32)}},
                     {"f16", {DType::kF16, {3, 5}, u16_bytes(f16)}},
                     {"bf16", {DType::kBF16, {11}, u16_bytes(bf16)}}});
  Checkpoint ckpt(dir.str());
  EXPECT_EQ(ckpt.tensor("f16", {3, 5}).dtype, DType::kF16);
  EXPECT_EQ(ckpt.tensor("bf16", {11}).dtype, DType::kBF16);
  EXPECT_EQ(ckpt.read_f32("f32", {5, 7}), f32);
  EXPECT_EQ(ckpt.read_f32("f16", {3, 5}), f16_want);
  EXPECT_EQ(ckpt.read_f32("bf16", {11}), bf16_want);
}

TEST(Safetensors, ShardedCheckpointThroughTheIndex) {
  TempDir dir;
  write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                    {{"t.one", {DType::kF32, {2, 2}, f32_bytes({1, 2, 3, 4})}},
                     {"t.two", {DType::kF16, {2}, u16_bytes({0x3c00, 0x4000})}}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                    {{"t.three", {DType::kF32, {3}, f32_bytes({7, 8, 9})}}});
  std::ofstream(dir.file("model.safetensors.index.json"))
      << R"({"metadata": {"total_size": 40}, "weight_map": {
            "t.one": "model-00001-of-00002.safetensors",
            "t.two": "model-00001-of-00002.safetensors",
            "t.three": "model-00002-of-00002.safetensors"}})";
  Checkpoint ckpt(dir.str());
  EXPECT_EQ(ckpt.read_f32("t.one", {2, 2}), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(ckpt.read_f32("t.two", {2}), (std::vector<float>{1, 2}));
  EXPECT_EQ(ckpt.read_f32("t.three", {3}), (std::vector<float>{7, 8, 9}));
  EXPECT_EQ(ckpt.tensor("t.three", {3}).file, dir.file("model-00002-of-00002.safetensors"));
}

TEST(Safetensors, CorruptIndex) {
  TempDir dir;
  std::ofstream(dir.file("model.safetensors.index.json")) << "{\"weight_map\": ";
  expect_error([&] { Checkpoint c(dir.str()); }, {"model.safetensors.index.json", "JSON"});
  std::ofstream(dir.file("model.safetensors.index.json"), std::ios::trunc) << "{\"metadata\": {}}";
  expect_error([&] { Checkpoint c(dir.str()); }, {"model.safetensors.index.json", "weight_map"});
  std::ofstream(dir.file("model.safetensors.index.json"), std::ios::trunc)
      << R"({"weight_map": {"x": "absent.safetensors"}})";
  expect_error([&] { Checkpoint c(dir.str()); }, {"absent.safetensors"});
}

TEST(Safetensors, EmptyDirectory) {
  TempDir dir;
  expect_error([&] { Checkpoint c(dir.str()); }, {dir.str(), "model.safetensors"});
}

TEST(Safetensors, SliceRowsColsAndPadding) {
  TempDir dir;
  std::vector<float> m(4 * 5);
  for (int i = 0; i < 20; ++i) m[i] = static_cast<float>(i);
  write_safetensors(dir.file("model.safetensors"),
                    {{"m", {DType::kF32, {4, 5}, f32_bytes(m)}},
                     {"v", {DType::kF16, {3}, u16_bytes({0x3c00, 0x4000, 0x4200})}}});
  Checkpoint ckpt(dir.str());
  Slice rows;
  rows.row_begin = 1;
  rows.row_end = 3;
  EXPECT_EQ(ckpt.read_f32("m", {4, 5}, rows), (std::vector<float>{5, 6, 7, 8, 9, 10, 11, 12, 13, 14}));
  Slice cols;
  cols.col_begin = 2;
  cols.col_end = 4;
  EXPECT_EQ(ckpt.read_f32("m", {4, 5}, cols), (std::vector<float>{2, 3, 7, 8, 12, 13, 17, 18}));
  Slice both;
  both.row_begin = 2;
  both.row_end = 6;  // two rows past the end: zeros
  both.col_begin = 3;
  EXPECT_EQ(ckpt.read_f32("m", {4, 5}, both), (std::vector<float>{13, 14, 18, 19, 0, 0, 0, 0}));
  Slice beyond;
  beyond.row_begin = 5;
  beyond.row_end = 7;  // entirely past the end
  EXPECT_EQ(ckpt.read_f32("m", {4, 5}, beyond), std::vector<float>(10, 0.0f));
  Slice vec;
  vec.row_begin = 1;
  vec.row_end = 5;  // 1-D with padding
  EXPECT_EQ(ckpt.read_f32("v", {3}, vec), (std::vector<float>{2, 3, 0, 0}));
  Slice bad;
  bad.col_end = 6;  // past the columns
  expect_error([&] { ckpt.read_f32("m", {4, 5}, bad); }, {"'m'"});
}

TEST(Safetensors, MissingAndMisshapedTensor) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), small_tensors());
  Checkpoint ckpt(dir.str());
  expect_error([&] { ckpt.tensor("c.weight", {2, 3}); }, {dir.str(), "'c.weight'", "missing"});
  expect_error([&] { ckpt.read_f32("c.weight", {2, 3}); }, {dir.str(), "'c.weight'"});
  expect_error([&] { ckpt.tensor("a.weight", {3, 2}); },
               {dir.file("model.safetensors"), "'a.weight'", "[2, 3]", "[3, 2]"});
  expect_error([&] { ckpt.read_f32("b.bias", {4, 1}); }, {dir.file("model.safetensors"), "'b.bias'"});
}

TEST(Safetensors, TruncatedFiles) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, small_tensors());
  const auto good = read_bytes(path);

  write_bytes(path, {});
  expect_error([&] { SafetensorsFile f(path); }, {path, "truncated"});
  write_bytes(path, std::vector<uint8_t>(good.begin(), good.begin() + 5));
  expect_error([&] { SafetensorsFile f(path); }, {path, "truncated"});
  expect_error([&] { Checkpoint c(dir.str()); }, {path});

  // Cut in the data: the last tensor ("b.bias", sorted after "a.weight") now runs past the end.
  write_bytes(path, std::vector<uint8_t>(good.begin(), good.end() - 3));
  expect_error([&] { SafetensorsFile f(path); }, {path, "'b.bias'", "data_offsets"});

  // Cut inside the header.
  write_bytes(path, std::vector<uint8_t>(good.begin(), good.begin() + 20));
  expect_error([&] { SafetensorsFile f(path); }, {path, "header"});
}

void set_header_len(std::vector<uint8_t>& file, uint64_t len) { std::memcpy(file.data(), &len, 8); }

TEST(Safetensors, HeaderLengthPastTheEnd) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, small_tensors());
  auto bytes = read_bytes(path);
  set_header_len(bytes, bytes.size());  // 8 + length > size
  write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile f(path); }, {path, "header length"});
  set_header_len(bytes, ~uint64_t{0});
  write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile f(path); }, {path, "header length"});
}

// The issue's case: the fixture's header is 2432 bytes (its JSON ends in a padding space), so a
// length of 2431 still parses, and the data section then starts one byte early. It must be refused.
TEST(Safetensors, HeaderLengthOffByOneOnTheFixture) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  auto bytes = read_bytes(std::string(GPTJ_TEST_DATA_DIR) + "/tiny-gptj-a/model/model.safetensors");
  ASSERT_GT(bytes.size(), 8u);
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  ASSERT_EQ(bytes[8 + len - 1], ' ') << "the fixture's header should end in a padding space";
  write_bytes(path, bytes);
  EXPECT_NO_THROW(SafetensorsFile f(path));
  set_header_len(bytes, len - 1);
  write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile f(path); },
               {path, "cover", std::to_string(len - 1) + "-byte header"});
  set_header_len(bytes, len + 1);  // the header would swallow the first data byte
  write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile f(path); }, {path, "header"});
}

TEST(Safetensors, DataSectionLongerThanTheTensors) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, small_tensors());
  auto bytes = read_bytes(path);
  bytes.insert(bytes.end(), 4, 0);  // 4 bytes after the last tensor: no tensor owns them
  write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile f(path); }, {path, "cover 40 bytes", "holds 44"});
}

TEST(Safetensors, HeaderMustBeAJsonObjectText) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, small_tensors());
  const auto good = read_bytes(path);
  // Leading whitespace is valid JSON but not what the format allows: the header starts with '{'.
  write_bytes(path, with_header(good, "  " + header_of(good)));
  expect_error([&] { SafetensorsFile f(path); }, {path, "start with '{'"});
  auto empty = good;  // a zero-length header
  set_header_len(empty, 0);
  write_bytes(path, empty);
  expect_error([&] { SafetensorsFile f(path); }, {path, "header"});
}

TEST(Safetensors, HeaderLargerThanTheFormatsLimit) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const uint64_t len = 100'000'001;
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.put('{');
  }
  fs::resize_file(path, 8 + len + 8);  // sparse: costs no disk
  expect_error([&] { SafetensorsFile f(path); }, {path, "100000001", "limit"});
}

TEST(Safetensors, CorruptHeaderJson) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, small_tensors());
  auto bytes = read_bytes(path);
  bytes[8] = 'X';  // '{' -> 'X'
  write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile f(path); }, {path, "JSON"});

  const auto good = with_header(bytes, "[1, 2]");
  write_bytes(path, good);
  expect_error([&] { SafetensorsFile f(path); }, {path, "header"});
}

class CorruptEntry : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("model.safetensors");
    write_safetensors(path_, small_tensors());
    good_ = read_bytes(path_);
    header_ = header_of(good_);
  }
  // Replaces `from` by `to` in the header and expects opening to fail naming file, tensor, needles.
  void expect(const std::string& from, const std::string& to, std::initializer_list<std::string> needles) {
    write_bytes(path_, with_header(good_, replace_once(header_, from, to)));
    std::vector<std::string> all{path_};
    all.insert(all.end(), needles.begin(), needles.end());
    try {
      SafetensorsFile f(path_);
      ADD_FAILURE() << "no error for header " << replace_once(header_, from, to);
    } catch (const Error& e) {
      for (const auto& needle : all)
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
            << "message '" << e.what() << "' does not name '" << needle << "'";
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw a non-gptj::Error: " << e.what();
    }
  }
  TempDir dir_;
  std::string path_, header_;
  std::vector<uint8_t> good_;
};

TEST_F(CorruptEntry, HeaderIsAsWritten) {
  // The tests below edit these exact substrings.
  EXPECT_NE(header_.find(R"("a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})"),
            std::string::npos)
      << header_;
  EXPECT_NE(header_.find(R"("b.bias":{"dtype":"F32","shape":[4],"data_offsets":[24,40]})"),
            std::string::npos)
      << header_;
}

TEST_F(CorruptEntry, DataOffsetsPastTheEnd) {
  expect("[24,40]", "[24,4000]", {"'b.bias'", "data_offsets", "4000"});
  expect("[24,40]", "[40,24]", {"'b.bias'", "data_offsets"});
}

TEST_F(CorruptEntry, NegativeOrFractionalOffsets) {
  expect("[24,40]", "[-8,8]", {"'b.bias'", "data_offsets"});
  expect("[24,40]", "[24.5,40]", {"'b.bias'", "data_offsets"});
}

TEST_F(CorruptEntry, ShapeTimesDtypeIsNotTheByteCount) {
  expect(R"("shape":[2,3])", R"("shape":[2,4])", {"'a.weight'", "[2, 4]", "32", "24"});
  expect(R"("dtype":"F32","shape":[4])", R"("dtype":"F16","shape":[4])", {"'b.bias'", "8", "16"});
}

TEST_F(CorruptEntry, UnsupportedDtype) {
  expect(R"("dtype":"F32","shape":[4])", R"("dtype":"I64","shape":[2])", {"'b.bias'", "I64"});
}

TEST_F(CorruptEntry, MalformedEntries) {
  expect(R"("shape":[4],)", "", {"'b.bias'", "shape"});
  expect(R"("shape":[4])", R"("shape":[-4])", {"'b.bias'", "shape"});
  expect(R"("shape":[4])", R"("shape":["4"])", {"'b.bias'", "shape"});
  expect(R"("data_offsets":[24,40])", R"("data_offsets":[24])", {"'b.bias'", "data_offsets"});
}

TEST_F(CorruptEntry, OverlappingTensors) {
  // b.bias moved 4 bytes back: it overlaps a.weight (and leaves 4 bytes at the end unowned).
  expect("[24,40]", "[20,36]", {"'b.bias'", "overlaps", "'a.weight'"});
}

TEST_F(CorruptEntry, HoleBetweenTensors) {
  // a.weight moved 4 bytes on: bytes [0, 4) belong to no tensor, and it overlaps b.bias.
  expect("[0,24]", "[4,28]", {"[0, 4)", "no tensor"});
}

TEST_F(CorruptEntry, TensorListedTwice) {
  // Whatever the JSON parser keeps of a duplicated key, the file is refused naming the tensor.
  expect(R"("b.bias":{"dtype":"F32","shape":[4],"data_offsets":[24,40]})",
         R"("a.weight":{"dtype":"F32","shape":[4],"data_offsets":[24,40]})", {"'a.weight'"});
}

TEST_F(CorruptEntry, ShapeWhoseByteCountOverflows) {
  // 2^62 x 4 elements x 4 bytes overflows 64 bits: refused, not wrapped into a small count.
  expect(R"("shape":[4])", R"("shape":[4611686018427387904,4])", {"'b.bias'", "more bytes"});
  expect(R"("shape":[4])", R"("shape":[4,4611686018427387904])", {"'b.bias'", "more bytes"});
}

}  // namespace
}  // namespace gptj
