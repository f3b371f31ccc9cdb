// pytorch_model.bin fuzz: the fixture archives (tiny-gptj-b-bin, a shard of the sharded copy, and
// evil-pickle) and the state-dict pickle inside them, cut at every offset of the regions that hold
// structure and at random ones elsewhere, and with random bytes changed (seeded, so a failure
// repeats). Every outcome must be a gptj::Error or a success, never a crash or another exception;
// a success's tensors are touched at their first and last byte. Each input sits in a heap buffer
// of exactly its size, so under ASan (scripts/sanitize.sh runs the unit label) any read past its
// end aborts the test. Every cut archive and every cut pickle must be refused.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/pytorch_bin.h"
#include "runtime/model/torch_pickle.h"
#include "runtime/model/zip_archive.h"
#include "tests/golden/expect_error.h"
#include "tests/golden/golden_data.h"

namespace gptj {
namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

using testing::clean_outcome;

// Opens `bytes` as an archive and reads one byte at each end of every tensor.
unsigned touch_archive(const std::vector<uint8_t>& bytes) {
  unsigned sum = 0;
  for (const auto& [name, info] : read_pytorch_bin(bytes.data(), bytes.size(), "fuzz.bin")) {
    const std::size_t n = static_cast<std::size_t>(info.numel()) * dtype_size(info.dtype);
    if (n > 0) sum += info.data[0] + info.data[n - 1];
  }
  return sum;
}

struct Counts {
  int opened = 0, refused = 0;
  void add(bool ok) { ok ? ++opened : ++refused; }
};

// Every cut of `file` at the offsets chosen: each must be refused.
void expect_cuts_refused(const std::vector<uint8_t>& file, const std::vector<std::size_t>& cuts,
                         const std::string& name) {
  for (std::size_t cut : cuts) {
    const std::vector<uint8_t> prefix(file.begin(), file.begin() + static_cast<long>(cut));
    const std::string what = name + " cut at " + std::to_string(cut);
    EXPECT_FALSE(clean_outcome([&] { touch_archive(prefix); }, what)) << what << " was accepted";
    if (::testing::Test::HasFailure()) return;  // one reported cut is enough to debug
  }
}

TEST(PytorchBinFuzz, ArchivesCutAnywhereAreRefused) {
  const auto single = read_file(testing::model_dir("tiny-gptj-b-bin") + "/pytorch_model.bin");
  const auto shard = read_file(testing::model_dir("tiny-gptj-b-bin-sharded") + "/pytorch_model-00005-of-00005.bin");
  ASSERT_GT(single.size(), 1'000'000u);
  ASSERT_NO_THROW(touch_archive(single));
  ASSERT_NO_THROW(touch_archive(shard));
  std::vector<std::size_t> head, tail;
  for (std::size_t cut = 0; cut < 4096; ++cut) head.push_back(cut);  // local headers + the pickle
  for (std::size_t back = 1; back <= 2048; ++back) tail.push_back(shard.size() - back);  // the directory
  std::mt19937_64 rng(16);
  for (int i = 0; i < 200; ++i) tail.push_back(rng() % shard.size());
  expect_cuts_refused(single, head, "tiny-gptj-b-bin");
  expect_cuts_refused(shard, tail, "shard 5");
}

// Random bytes of the whole archive changed (1 to 4 at a time), mostly where its structure is: the
// pickle and local headers at the start, the central directory and end records at the end.
TEST(PytorchBinFuzz, ArchivesWithChangedBytesNeverCrash) {
  for (const std::string& path : {testing::model_dir("tiny-gptj-b-bin") + "/pytorch_model.bin",
                                 testing::model_dir("tiny-gptj-b-bin-sharded") + "/pytorch_model-00005-of-00005.bin",
                                 testing::model_dir("evil-pickle") + "/pytorch_model.bin"}) {
    std::vector<uint8_t> bytes = read_file(path);
    const std::vector<uint8_t> original = bytes;
    std::vector<std::size_t> changed;
    std::mt19937_64 rng(2026);
    Counts counts;
    const std::size_t n = bytes.size(), edge = std::min<std::size_t>(n, 4096);
    for (int i = 0; i < 1500; ++i) {
      std::string what = path + ":";
      for (int k = 1 + static_cast<int>(rng() % 4); k > 0; --k) {
        const int region = static_cast<int>(rng() % 4);
        const std::size_t at = region < 2 ? rng() % edge : region == 2 ? n - 1 - rng() % edge : rng() % n;
        const uint8_t value = rng() % 3 == 0 ? static_cast<uint8_t>(rng()) : bytes[at] ^ (1u << (rng() % 8));
        bytes[at] = value;
        changed.push_back(at);
        what += " byte " + std::to_string(at) + "=" + std::to_string(value);
      }
      counts.add(clean_outcome([&] { touch_archive(bytes); }, what));
      for (std::size_t at : changed) bytes[at] = original[at];
      changed.clear();
      if (::testing::Test::HasFailure()) break;
    }
    std::printf("%s: %d changed archives opened, %d refused\n", path.c_str(), counts.opened, counts.refused);
    EXPECT_GT(counts.refused, 0) << path;
    if (path.find("evil") == std::string::npos) {
      EXPECT_GT(counts.opened, 0) << path;
    }
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/gptj-pwned"));
}

// The state-dict pickle alone: cut at every offset (always refused), and 1 to 8 bytes changed,
// inserted or deleted (a dropped or doubled opcode shifts everything after it).
TEST(PytorchBinFuzz, PicklesCutOrChangedNeverCrash) {
  const auto archive = read_file(testing::model_dir("tiny-gptj-b-bin") + "/pytorch_model.bin");
  const ZipArchive zip(archive.data(), archive.size(), "tiny-gptj-b-bin");
  const ZipEntry* entry = zip.find("pytorch_model/data.pkl");
  ASSERT_NE(entry, nullptr);
  const std::vector<uint8_t> pickle(entry->data, entry->data + entry->size);
  ASSERT_EQ(read_state_dict_pickle(pickle.data(), pickle.size(), "data.pkl").size(), 35u);
  auto parse = [](const std::vector<uint8_t>& p) { read_state_dict_pickle(p.data(), p.size(), "data.pkl"); };
  for (std::size_t cut = 0; cut < pickle.size(); ++cut) {
    const std::vector<uint8_t> prefix(pickle.begin(), pickle.begin() + static_cast<long>(cut));
    EXPECT_FALSE(clean_outcome([&] { parse(prefix); }, "pickle cut at " + std::to_string(cut)))
        << "pickle cut at " << cut << " was accepted";
    if (::testing::Test::HasFailure()) return;
  }
  std::mt19937_64 rng(1002);
  Counts counts;
  for (int i = 0; i < 6000; ++i) {
    std::vector<uint8_t> p = pickle;
    std::string what = "pickle:";
    for (int k = 1 + static_cast<int>(rng() % 8); k > 0; --k) {
      const std::size_t at = rng() % p.size();
      switch (rng() % 4) {
        case 0: p.erase(p.begin() + static_cast<long>(at)); what += " del " + std::to_string(at); break;
        case 1: p.insert(p.begin() + static_cast<long>(at), static_cast<uint8_t>(rng())); what += " ins " + std::to_string(at); break;
        default: p[at] = static_cast<uint8_t>(rng()); what += " set " + std::to_string(at); break;
      }
    }
    counts.add(clean_outcome([&] { parse(p); }, what));
    if (::testing::Test::HasFailure()) break;
  }
  std::printf("pickle: %d changed pickles parsed, %d refused\n", counts.opened, counts.refused);
  EXPECT_GT(counts.opened, 0);
  EXPECT_GT(counts.refused, 0);
}

}  // namespace
}  // namespace gptj
