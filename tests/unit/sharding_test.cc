// Unit tests for parallel/sharding.h: for every GPT-J tensor and TP sizes 1, 2, 4, 8, the slices of
// all ranks, read through Checkpoint::read_f32 from a written random file, reassemble the full
// tensor exactly; replicated tensors are whole everywhere; lm_head is padded with zero rows.
#include "parallel/sharding.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace {
namespace fs = std::filesystem;

constexpr int64_t E = 16, I = 64, V = 50;

enum class Kind { kReplicated, kRows, kCols, kVocab };

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  Kind kind;
};

const std::vector<Spec>& specs() {
  static const std::vector<Spec> all = {
      {"transformer.h.0.attn.q_proj.weight", {E, E}, Kind::kRows},
      {"transformer.h.0.attn.k_proj.weight", {E, E}, Kind::kRows},
      {"transformer.h.0.attn.v_proj.weight", {E, E}, Kind::kRows},
      {"transformer.h.0.attn.out_proj.weight", {E, E}, Kind::kCols},
      {"transformer.h.0.mlp.fc_in.weight", {I, E}, Kind::kRows},
      {"transformer.h.0.mlp.fc_in.bias", {I}, Kind::kRows},
      {"transformer.h.0.mlp.fc_out.weight", {E, I}, Kind::kCols},
      {"transformer.h.0.mlp.fc_out.bias", {E}, Kind::kReplicated},
      {"transformer.h.0.ln_1.weight", {E}, Kind::kReplicated},
      {"transformer.h.0.ln_1.bias", {E}, Kind::kReplicated},
      {"transformer.h.11.attn.q_proj.weight", {E, E}, Kind::kRows},
      {"transformer.h.11.mlp.fc_out.weight", {E, I}, Kind::kCols},
      {"transformer.wte.weight", {V, E}, Kind::kReplicated},
      {"transformer.ln_f.weight", {E}, Kind::kReplicated},
      {"transformer.ln_f.bias", {E}, Kind::kReplicated},
      {"lm_head.weight", {V, E}, Kind::kVocab},
      {"lm_head.bias", {V}, Kind::kVocab},
  };
  return all;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// One random checkpoint holding every tensor in specs(), shared by the tests.
class Sharding : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("gptj_sharding_test_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    std::mt19937 rng(123);
    std::uniform_real_distribution<float> dist(-1, 1);
    std::map<std::string, TensorToWrite> tensors;
    full_ = new std::map<std::string, std::vector<float>>;
    for (const auto& spec : specs()) {
      std::vector<float> values(static_cast<std::size_t>(numel(spec.shape)));
      for (auto& v : values) v = dist(rng);
      std::vector<uint8_t> bytes(values.size() * 4);
      std::memcpy(bytes.data(), values.data(), bytes.size());
      tensors[spec.name] = {DType::kF32, spec.shape, std::move(bytes)};
      (*full_)[spec.name] = std::move(values);
    }
    write_safetensors((*dir_ / "model.safetensors").string(), tensors);
    checkpoint_ = new Checkpoint(dir_->string());
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    delete full_;
    fs::remove_all(*dir_);
    delete dir_;
  }
  static fs::path* dir_;
  static std::map<std::string, std::vector<float>>* full_;
  static Checkpoint* checkpoint_;
};
fs::path* Sharding::dir_ = nullptr;
std::map<std::string, std::vector<float>>* Sharding::full_ = nullptr;
Checkpoint* Sharding::checkpoint_ = nullptr;

TEST_F(Sharding, VocabShardRows) {
  EXPECT_EQ(vocab_shard_rows(50400, 1), 50400);
  EXPECT_EQ(vocab_shard_rows(50400, 8), 6300);
  EXPECT_EQ(vocab_shard_rows(50, 4), 13);
  EXPECT_EQ(vocab_shard_rows(50, 8), 7);
  EXPECT_EQ(vocab_shard_rows(50, 3), 17);
}

TEST_F(Sharding, SlicesReassembleEveryTensorAtEveryTpSize) {
  for (int tp : {1, 2, 4, 8}) {
    for (const auto& spec : specs()) {
      SCOPED_TRACE(spec.name + " tp=" + std::to_string(tp));
      const auto& full = full_->at(spec.name);
      const int64_t rows = spec.shape[0];
      const int64_t cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
      std::vector<float> assembled;  // kRows / kVocab: rows appended; kCols: filled by column
      std::vector<float> by_cols(full.size(), NAN);
      for (int rank = 0; rank < tp; ++rank) {
        const ShardSlice s = shard_slice(spec.name, spec.shape, {rank, tp});
        const auto piece = checkpoint_->read_f32(spec.name, spec.shape, s.slice);
        ASSERT_EQ(static_cast<int64_t>(piece.size()), numel(s.local_shape)) << "rank " << rank;
        ASSERT_EQ(s.local_shape.size(), spec.shape.size());
        switch (spec.kind) {
          case Kind::kReplicated:
            EXPECT_EQ(s.local_shape, spec.shape) << "rank " << rank;
            EXPECT_EQ(piece, full) << "rank " << rank;
            break;
          case Kind::kRows: {
            std::vector<int64_t> want = spec.shape;
            want[0] = rows / tp;
            EXPECT_EQ(s.local_shape, want) << "rank " << rank;
            EXPECT_EQ(s.slice.row_begin, rank * (rows / tp));
            assembled.insert(assembled.end(), piece.begin(), piece.end());
            break;
          }
          case Kind::kCols: {
            const int64_t part = cols / tp;
            EXPECT_EQ(s.local_shape, (std::vector<int64_t>{rows, part})) << "rank " << rank;
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = 0; c < part; ++c)
                by_cols[r * cols + rank * part + c] = piece[r * part + c];
            break;
          }
          case Kind::kVocab: {
            const int64_t part = (V + tp - 1) / tp;
            std::vector<int64_t> want = spec.shape;
            want[0] = part;
            EXPECT_EQ(s.local_shape, want) << "rank " << rank;
            // Rows at or past V are zero padding.
            for (int64_t r = 0; r < part; ++r) {
              const int64_t global = rank * part + r;
              for (int64_t c = 0; c < cols; ++c) {
                const float got = piece[r * cols + c];
                if (global < V) {
                  EXPECT_EQ(got, full[global * cols + c]) << "row " << global;
                } else {
                  EXPECT_EQ(got, 0.0f) << "padding row " << global;
                }
              }
            }
            assembled.insert(assembled.end(), piece.begin(), piece.end());
            break;
          }
        }
      }
      if (spec.kind == Kind::kRows) {
        EXPECT_EQ(assembled, full);
      }
      if (spec.kind == Kind::kCols) {
        EXPECT_EQ(by_cols, full);
      }
      if (spec.kind == Kind::kVocab) {
        ASSERT_EQ(static_cast<int64_t>(assembled.size()), vocab_shard_rows(V, tp) * tp * cols);
        EXPECT_EQ(std::vector<float>(assembled.begin(), assembled.begin() + V * cols), full);
        for (std::size_t i = static_cast<std::size_t>(V * cols); i < assembled.size(); ++i) {
          EXPECT_EQ(assembled[i], 0.0f);
        }
      }
    }
  }
}

// A tiny vocabulary where the last rank's rows lie entirely past V (V=5, tp=4: 2 rows each).
TEST_F(Sharding, LastRankEntirelyPadding) {
  const ShardSlice last = shard_slice("lm_head.weight", {5, E}, {3, 4});
  EXPECT_EQ(last.slice.row_begin, 6);
  EXPECT_EQ(last.slice.row_end, 8);
  EXPECT_EQ(last.local_shape, (std::vector<int64_t>{2, E}));
  const ShardSlice bias = shard_slice("lm_head.bias", {5}, {2, 4});
  EXPECT_EQ(bias.slice.row_begin, 4);
  EXPECT_EQ(bias.slice.row_end, 6);
  EXPECT_EQ(bias.local_shape, (std::vector<int64_t>{2}));
}

void expect_split_error(const std::string& name, const std::vector<int64_t>& shape, TpPosition tp) {
  try {
    shard_slice(name, shape, tp);
    ADD_FAILURE() << name << " over tp " << tp.size << ": no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(tp.size)), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "non-gptj::Error: " << e.what();
  }
}

TEST_F(Sharding, SplitThatDoesNotDivideNamesTheTensor) {
  expect_split_error("transformer.h.0.mlp.fc_in.weight", {I, E}, {0, 3});
  expect_split_error("transformer.h.0.mlp.fc_in.bias", {I}, {1, 3});
  expect_split_error("transformer.h.0.mlp.fc_out.weight", {E, I}, {2, 3});
  expect_split_error("transformer.h.0.attn.q_proj.weight", {E, E}, {0, 3});
  expect_split_error("transformer.h.0.attn.out_proj.weight", {E, E}, {0, 5});
  // Replicated and vocab tensors never fail on the split.
  EXPECT_NO_THROW(shard_slice("transformer.wte.weight", {V, E}, {0, 3}));
  EXPECT_NO_THROW(shard_slice("lm_head.weight", {V, E}, {2, 3}));
  EXPECT_NO_THROW(shard_slice("transformer.h.0.mlp.fc_out.bias", {E}, {2, 3}));
}

TEST_F(Sharding, BadTpPosition) {
  EXPECT_THROW(shard_slice("lm_head.weight", {V, E}, {4, 4}), Error);
  EXPECT_THROW(shard_slice("lm_head.weight", {V, E}, {-1, 4}), Error);
  EXPECT_THROW(shard_slice("lm_head.weight", {V, E}, {0, 0}), Error);
}

}  // namespace
}  // namespace gptj
