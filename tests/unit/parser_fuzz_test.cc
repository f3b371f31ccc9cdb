// Parser fuzz: thousands of mutations of the tiny-gptj-a fixture's safetensors header and
// config.json (bit flips, byte edits, truncations, wrong header lengths and data sizes, JSON edits of
// tensor entries and config fields), fixed seeds and counts. Each must end in success or a clean
// gptj::Error: no crash, no other exception type, no allocation over kAllocationLimit (tracked by
// this binary's operator new). A mutated safetensors file that opens is also checked against the
// fixture config and read from; a mutated config that parses is checked against the fixture
// checkpoint. (The pickle reader this fuzz was also asked for does not exist yet.)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/expect_error.h"
#include "tests/golden/golden_data.h"

// Every allocation of this binary goes through here, so a parser that sizes something from a
// corrupt field is caught even when the allocation itself would succeed.
namespace {
constexpr std::size_t kAllocationLimit = std::size_t{256} << 20;
std::atomic<std::size_t> g_largest_allocation{0};
}  // namespace

void* operator new(std::size_t size) {
  std::size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (size > seen && !g_largest_allocation.compare_exchange_weak(seen, size)) {
  }
  if (size > kAllocationLimit) throw std::bad_alloc();  // refused: the test then reports it
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// GCC takes free() of what this operator new returned for a mismatch once it inlines both; the pair
// is malloc/free on purpose.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace gptj {
namespace {
namespace fs = std::filesystem;
namespace json = boost::json;

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

using testing::clean_outcome;

// Values a JSON edit puts in a field: every type, and the numbers at the edges.
json::value odd_value(std::mt19937_64& rng) {
  switch (rng() % 18) {
    case 0: return json::value(nullptr);
    case 1: return json::value(true);
    case 2: return json::value("F32");
    case 3: return json::value("");
    case 4: return json::value(INT64_MIN);
    case 5: return json::value(INT64_MAX);
    case 6: return json::value(UINT64_MAX);
    case 7: return json::value(0);
    case 8: return json::value(-1);
    case 9: return json::value(static_cast<int64_t>(rng() % 100000) - 50000);
    case 10: return json::value(int64_t{1} << (rng() % 63));
    case 11: return json::value(1e300);
    case 12: return json::value(-0.5);
    case 13: return json::value(1e-45 * static_cast<double>(rng() % 3));
    case 14: return json::array{static_cast<int64_t>(rng() % 64), static_cast<int64_t>(rng() % 64)};
    case 15: return json::array{-1, UINT64_MAX, 2.5};
    case 16: return json::object{{"dtype", "F32"}};
    default: return json::array{};
  }
}

// Byte-level mutations shared by both parsers: flips, byte edits, a deleted or inserted run.
void mutate_bytes(std::string& text, std::mt19937_64& rng, std::string& what) {
  if (text.empty()) return;
  static const char kBytes[] = "{}[]\":, -+.0123456789eE\\nul\x00\xff";
  switch (rng() % 4) {
    case 0:
      for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i)
        text[rng() % text.size()] ^= static_cast<char>(1u << (rng() % 8));
      what += " bit flips";
      break;
    case 1:
      for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i)
        text[rng() % text.size()] = kBytes[rng() % (sizeof(kBytes) - 1)];
      what += " byte edits";
      break;
    case 2: {
      const std::size_t at = rng() % text.size();
      text.erase(at, 1 + rng() % 32);
      what += " deleted run";
      break;
    }
    default: {
      std::string run(1 + rng() % 16, ' ');
      for (char& c : run) c = kBytes[rng() % (sizeof(kBytes) - 1)];
      text.insert(rng() % text.size(), run);
      what += " inserted run";
    }
  }
}

class ParserFuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gptj_parser_fuzz_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string fixture = testing::model_dir("tiny-gptj-a");
    config_text_ = [&] {
      const auto bytes = read_file(fixture + "/config.json");
      return std::string(bytes.begin(), bytes.end());
    }();
    const auto file = read_file(fixture + "/model.safetensors");
    ASSERT_GT(file.size(), 8u);
    uint64_t len = 0;
    std::memcpy(&len, file.data(), 8);
    header_ = std::string(reinterpret_cast<const char*>(file.data() + 8), len);
    data_size_ = file.size() - 8 - len;
    config_ = parse_config(config_text_, "fixture");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Writes model.safetensors: `length` as the header length, `header`, then `data_size` bytes of
  // tensor data, cut to `total` bytes when that is smaller. The file is rewritten in place (no
  // O_TRUNC: freeing a 13 MB file's blocks each time costs more than the parsing), so the tensor
  // bytes are zeros or an earlier mutation's header: the parsers never depend on tensor bytes.
  std::string write_model(uint64_t length, const std::string& header, uint64_t data_size, uint64_t total) {
    const std::string path = (dir_ / "model.safetensors").string();
    std::string prefix(8, '\0');
    std::memcpy(prefix.data(), &length, 8);
    prefix += header;
    const uint64_t size = std::min<uint64_t>(8 + header.size() + data_size, total);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
    EXPECT_GE(fd, 0) << path;
    EXPECT_EQ(::pwrite(fd, prefix.data(), std::min<uint64_t>(prefix.size(), size), 0),
              static_cast<ssize_t>(std::min<uint64_t>(prefix.size(), size)));
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    ::close(fd);
    return path;
  }

  fs::path dir_;
  std::string config_text_, header_;
  uint64_t data_size_ = 0;
  GptjConfig config_;
};

// A header mutation: JSON edits of tensor entries (offsets, shapes, dtypes, names, whole entries),
// byte mutations, a wrong length field, a truncated file or a data section of another size.
TEST_F(ParserFuzz, SafetensorsHeader) {
  std::mt19937_64 rng(20261201);
  const json::object entries = json::parse(header_).as_object();
  std::vector<std::string> names;
  for (const auto& [key, value] : entries) names.emplace_back(key);
  int opened = 0, refused = 0;
  constexpr int kMutations = 3000;
  for (int m = 0; m < kMutations; ++m) {
    std::string header = header_, what = "mutation " + std::to_string(m) + ":";
    uint64_t data_size = data_size_;
    bool fix_length = true;
    const int kind = static_cast<int>(rng() % 6);
    if (kind <= 1) {  // JSON edits, then the header re-serialized (and padded, or not)
      json::object edited = entries;
      for (int e = 0, n = 1 + static_cast<int>(rng() % 3); e < n; ++e) {
        const std::string& name = names[rng() % names.size()];
        json::value& entry = edited[name];
        static const char* kKeys[] = {"dtype", "shape", "data_offsets"};
        const char* key = kKeys[rng() % 3];
        switch (rng() % 6) {
          case 0: what += " " + name + "." + key + " = odd"; if (entry.is_object()) entry.as_object()[key] = odd_value(rng); break;
          case 1: what += " " + name + "." + key + " erased"; if (entry.is_object()) entry.as_object().erase(key); break;
          case 2: {  // an offset or a dimension nudged
            what += " " + name + "." + key + " nudged";
            if (entry.is_object() && entry.as_object()[key].is_array() && !entry.as_object()[key].as_array().empty()) {
              json::array& a = entry.as_object()[key].as_array();
              json::value& v = a[rng() % a.size()];
              if (v.is_int64()) v = v.as_int64() + static_cast<int64_t>(rng() % 9) - 4;
            }
            break;
          }
          case 3: what += " " + name + " duplicated"; edited["dup." + name] = entry; break;
          case 4: what += " " + name + " erased"; edited.erase(name); break;
          default: what += " " + name + " = odd"; entry = odd_value(rng);
        }
      }
      header = json::serialize(edited);
      if (rng() % 2) header.append((8 - (8 + header.size()) % 8) % 8, ' ');
    } else if (kind == 2) {
      mutate_bytes(header, rng, what);
      fix_length = rng() % 2;
    } else if (kind == 3) {  // the length field wrong by a little or a lot
      static const int64_t kDeltas[] = {-16, -8, -2, -1, 1, 2, 8, 1 << 20};
      const int64_t delta = kDeltas[rng() % 8];
      what += " header length " + std::to_string(delta);
      const uint64_t file_size = 8 + header.size() + data_size;
      const uint64_t length = rng() % 8 == 0 ? (rng() % 2 ? UINT64_MAX - rng() % 16 : file_size) : header.size() + delta;
      const std::string path = write_model(length, header, data_size, UINT64_MAX);
      if (clean_outcome([&] { SafetensorsFile f(path); }, what)) ++opened; else ++refused;
      continue;
    } else if (kind == 4) {  // a data section of another size
      static const int64_t kDeltas[] = {-4096, -4, -1, 1, 4, 4096};
      data_size += kDeltas[rng() % 6];
      what += " data size " + std::to_string(data_size);
    }
    uint64_t total = UINT64_MAX;
    if (kind == 5) {  // the file cut anywhere
      total = rng() % (8 + header.size() + data_size + 1);
      what += " cut at " + std::to_string(total);
    }
    const std::string path =
        write_model(fix_length ? header.size() : header_.size(), header, data_size, total);
    const bool ok = clean_outcome(
        [&] {
          const Checkpoint checkpoint(dir_.string());
          check_checkpoint_matches(config_, checkpoint, "fixture config.json");
          Slice rows;
          rows.row_begin = 50000;
          checkpoint.read_matrix("lm_head.weight", {config_.vocab_size, config_.n_embd}, rows);
          checkpoint.read_f32("transformer.ln_f.bias", {config_.n_embd});
        },
        what);
    if (ok) ++opened; else ++refused;
    if (::testing::Test::HasFailure()) break;  // one reported mutation is enough to debug
  }
  EXPECT_GT(opened, 0) << "no mutation kept a readable checkpoint: the fuzz only reaches the first checks";
  EXPECT_GT(refused, kMutations / 2);
  EXPECT_LE(g_largest_allocation.load(), kAllocationLimit);
  std::printf("safetensors fuzz: %d mutations opened, %d refused; largest allocation %zu bytes\n", opened,
              refused, g_largest_allocation.load());
}

// A config mutation: byte mutations and truncations of the text, or 1-3 JSON edits of its fields
// (known or not) to values of every type and at the edges.
TEST_F(ParserFuzz, ConfigJson) {
  std::mt19937_64 rng(17);
  const Checkpoint checkpoint(testing::model_dir("tiny-gptj-a"));
  const json::object fixture = json::parse(config_text_).as_object();
  static const char* kFields[] = {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim",
                                  "n_inner", "layer_norm_epsilon", "bos_token_id", "eos_token_id",
                                  "activation_function", "model_type", "torch_dtype", "unknown_field"};
  int parsed = 0, refused = 0;
  constexpr int kMutations = 4000;
  for (int m = 0; m < kMutations; ++m) {
    std::string text = config_text_, what = "mutation " + std::to_string(m) + ":";
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      mutate_bytes(text, rng, what);
    } else if (kind == 1) {
      text.resize(rng() % text.size());
      what += " cut at " + std::to_string(text.size());
    } else {
      json::object edited = fixture;
      for (int e = 0, n = 1 + static_cast<int>(rng() % 3); e < n; ++e) {
        const char* field = kFields[rng() % (sizeof(kFields) / sizeof(kFields[0]))];
        if (rng() % 5 == 0) {
          edited.erase(field);
          what += std::string(" ") + field + " erased";
        } else if (kind == 3 && edited.contains(field) && edited[field].is_int64()) {  // near the value
          const int64_t value = edited[field].as_int64(), delta = static_cast<int64_t>(rng() % 5) - 2;
          const bool overflows = (delta > 0 && value > INT64_MAX - delta) || (delta < 0 && value < INT64_MIN - delta);
          edited[field] = overflows ? value : value + delta;  // no signed overflow (UBSan)
          what += std::string(" ") + field + " nudged";
        } else {
          edited[field] = odd_value(rng);
          what += std::string(" ") + field + " = " + json::serialize(edited[field]);
        }
      }
      text = json::serialize(edited);
    }
    const bool ok = clean_outcome(
        [&] {
          const GptjConfig c = parse_config(text, "fuzzed config.json");
          check_checkpoint_matches(c, checkpoint, "fuzzed config.json");
        },
        what);
    if (ok) ++parsed; else ++refused;
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GT(parsed, 0) << "no mutation kept a usable config";
  EXPECT_GT(refused, kMutations / 4);
  EXPECT_LE(g_largest_allocation.load(), kAllocationLimit);
  std::printf("config fuzz: %d mutations parsed and matched the checkpoint, %d refused\n", parsed, refused);
}

}  // namespace
}  // namespace gptj
