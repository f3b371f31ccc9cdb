// CPU backend: one TP rank's shard of GPT-J on host memory. Compute is float32; weight matrices stay
// in the checkpoint's dtype (a float16/bfloat16 checkpoint takes half the memory and memory
// traffic, widened exactly in the kernels) or are quantized at load (--weights int8|int4,
// dequantized in the kernels); layernorms and biases are float32. Opt-in --dtype bfloat16: the
// matrices held in bfloat16 and the products' input rows rounded to bfloat16 (WeightOptions::
// bf16_products: vdpbf16ps where the CPU has AVX512-BF16, the same numerics by widening elsewhere).
//
// The shard's matrices and their fused order are runtime/backend/model_shard.h's (shared with the
// CUDA backend): per token row the input GEMM writes [ q | k | v | fc_in ]; k and v go to the paged
// cache, attention writes its output over the v columns, and [ attn_out | gelu(fc_in) ] feeds the
// output GEMM without a copy. One all-reduce per layer.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/aligned.h"
#include "runtime/backend/backend.h"
#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace {

// `count` floats of anonymous memory: zero, but backed by pages only where written. A KV pool sized
// for many sequences (batch, serve: --kv-memory-gb) so costs resident memory for the blocks used,
// not for all of it up front (a zero-filled std::vector wrote every page at load).
struct Unmap {
  std::size_t bytes = 0;
  void operator()(float* p) const { ::munmap(p, bytes); }
};
class LazyZeroFloats {
 public:
  LazyZeroFloats() = default;
  explicit LazyZeroFloats(std::size_t count) {
    const std::size_t bytes = std::max<std::size_t>(count, 1) * sizeof(float);
    void* mapping = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    GPTJ_CHECK(mapping != MAP_FAILED, "KV cache: cannot map {:.1f} MB ({})", bytes / 1e6, std::strerror(errno));
    data_ = std::unique_ptr<float, Unmap>(static_cast<float*>(mapping), Unmap{bytes});
  }
  float* data() { return data_.get(); }
  float& operator[](std::size_t i) { return data_.get()[i]; }

 private:
  std::unique_ptr<float, Unmap> data_;
};

struct CpuLayer {
  LayerShard weights;                    // model_shard.h: w_in [Nin, E], w_out [E, Nmid], norms, biases
  LazyZeroFloats k_cache, v_cache;       // [num_blocks, block_size, heads_l, head_dim]
};

cpu::WeightRef ref(const WeightMatrix& m, const WeightOptions& options) {
  if (!m.is_quantized()) {
    cpu::WeightRef plain{m.plain().data(), static_cast<int>(m.plain().dtype())};
    plain.bf16_products = options.bf16_products && m.plain().dtype() == DType::kBF16;
    return plain;
  }
  const QuantizedMatrix& q = m.quantized();
  if (q.format == WeightFormat::kInt8)
    return {q.values.data(), cpu::WeightRef::kInt8, q.scales.data(), options.int8_activations};
  return {q.values.data(), cpu::WeightRef::kInt4, q.scales16.data()};
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(const GptjConfig& config, const Checkpoint& checkpoint, const BackendOptions& options,
             Communicator& comm)
      : config_(config), options_(options), comm_(comm), g_(shard_geometry(config, options.tp)) {
    const TpPosition tp = options.tp;
    wte_ = &checkpoint.tensor("transformer.wte.weight", {config.vocab_size, g_.E});
    const std::size_t cache_size = static_cast<std::size_t>(options.kv.num_blocks) *
                                   options.kv.block_size * g_.heads_l * g_.head_dim;
    layers_.resize(config.n_layer);
    for (int l = 0; l < config.n_layer; ++l) {
      CpuLayer& layer = layers_[l];
      layer.weights = read_layer_shard(checkpoint, config, tp, l, options.weights);
      layer.k_cache = LazyZeroFloats(cache_size);
      layer.v_cache = LazyZeroFloats(cache_size);
      const LayerShard& w = layer.weights;
      weight_bytes_ += static_cast<int64_t>(w.w_in.size_bytes() + w.w_out.size_bytes()) +
                       static_cast<int64_t>(sizeof(float)) * (w.b_fc_in.size() + 3 * g_.E);
    }
    head_ = read_head_shard(checkpoint, config, tp, options.weights);
    weight_bytes_ += static_cast<int64_t>(head_.lm_head.size_bytes()) +
                     static_cast<int64_t>(sizeof(float)) * (head_.lm_bias.size() + 2 * g_.E);
    weight_format_ = describe_weights(layers_.at(0).weights, head_);
  }

  std::string name() const override { return "cpu"; }
  int64_t vocab_shard_rows() const override { return g_.vocab_rows; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  std::string weight_format() const override {
    if (options_.weights.int8_activations) return weight_format_ + ", int8 activations";
    if (options_.weights.bf16_products) return weight_format_ + ", bfloat16 products";
    return weight_format_;
  }
  uint64_t all_reduce_calls() const override { return comm_.all_reduce_calls(); }

  void forward(const StepBatch& batch) override {
    validate_step(batch, config_.n_positions, config_.vocab_size, options_.kv);
    const int T = batch.total_tokens();
    const int E = g_.E, n_in = g_.n_in;
    x_.resize(static_cast<std::size_t>(T) * E);
    h_.resize(x_.size());
    partial_.resize(x_.size());
    in_.resize(static_cast<std::size_t>(T) * n_in);
    positions_.clear();
    tokens_.clear();
    for (const auto& seq : batch.seqs) {
      for (std::size_t i = 0; i < seq.tokens.size(); ++i) {
        tokens_.push_back(seq.tokens[i]);
        positions_.push_back(seq.start_pos + static_cast<int32_t>(i));
      }
    }
    embed(tokens_, x_.data());
    copy_blocks(batch.block_copies);
    for (auto& layer : layers_) run_layer(batch, layer, T);
    logits_.resize(static_cast<std::size_t>(batch.logit_rows()) * g_.vocab_rows);
    project_logits(batch, logits_.data());
  }

  void read_logit_rows(const std::vector<int32_t>& rows, float* out) override {
    const std::size_t n = static_cast<std::size_t>(g_.vocab_rows);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      GPTJ_CHECK(rows[i] >= 0 && static_cast<std::size_t>(rows[i]) * n < logits_.size(),
                 "logit row {} not produced by the last step", rows[i]);
      std::memcpy(out + i * n, &logits_[rows[i] * n], n * sizeof(float));
    }
  }

  void summarize_draws(const std::vector<DrawPlan>& draws, DrawSummary* out) override {
    const std::size_t n = static_cast<std::size_t>(g_.vocab_rows);
    const int64_t vocab_begin = g_.vocab_begin;
    for (std::size_t d = 0; d < draws.size(); ++d) {
      const std::size_t row = static_cast<std::size_t>(draws[d].logit_row);
      GPTJ_CHECK(row * n < logits_.size(), "draw from logit row {} not produced by the last step", row);
      summarize_draw(&logits_[row * n], vocab_begin, g_.vocab_rows, draws[d], out[d], draw_scratch_);
    }
  }

  void answer_search(const std::vector<DrawPlan>& draws, const std::vector<SearchQuery>& queries,
                     SearchReply* out) override {
    const std::size_t n = static_cast<std::size_t>(g_.vocab_rows);
    const int64_t vocab_begin = g_.vocab_begin;
    for (std::size_t i = 0; i < queries.size(); ++i) {
      const DrawPlan& draw = draws[static_cast<std::size_t>(queries[i].draw)];
      const std::size_t row = static_cast<std::size_t>(draw.logit_row);
      GPTJ_CHECK(row * n < logits_.size(), "draw from logit row {} not produced by the last step", row);
      answer_search_query(&logits_[row * n], vocab_begin, g_.vocab_rows, draw, queries[i], options_.tp.rank, out[i],
                          draw_scratch_);
    }
  }

 private:
  // One layer on the step's T token rows: x_ += out(attn, mlp), one all-reduce.
  void run_layer(const StepBatch& batch, CpuLayer& layer, int T) {
    const LayerShard& w = layer.weights;
    const int E = g_.E, n_in = g_.n_in, hd = g_.head_dim, heads = g_.heads_l;
    cpu::layernorm(x_.data(), w.ln_gamma.data(), w.ln_beta.data(), h_.data(), T, E, config_.layer_norm_epsilon);
    cpu::linear(h_.data(), E, T, E, ref(w.w_in, options_.weights), n_in, nullptr, in_.data(), n_in);
    float* q = in_.data() + g_.q_col();
    float* k = in_.data() + g_.k_col();
    float* v = in_.data() + g_.v_col();
    float* fc = in_.data() + g_.fc_col();
    cpu::rotary_gptj(k, T, n_in, heads, hd, config_.rotary_dim, positions_.data());
    cpu::rotary_gptj(q, T, n_in, heads, hd, config_.rotary_dim, positions_.data());
    cpu::bias_gelu_new(fc, w.b_fc_in.data(), T, g_.Il, n_in);
    attention_seqs_.clear();
    int row = 0;
    for (const auto& seq : batch.seqs) {
      const int n = static_cast<int>(seq.tokens.size());
      const std::size_t at = static_cast<std::size_t>(row) * n_in;
      cpu::kv_write(k + at, v + at, n_in, n, seq.start_pos, seq.block_table.data(), options_.kv.block_size, heads,
                    hd, layer.k_cache.data(), layer.v_cache.data());
      attention_seqs_.push_back({row, n, seq.start_pos, seq.block_table.data()});
      row += n;
    }
    // k and v are in the cache now: the output goes over the v columns, next to gelu(fc_in).
    cpu::attention_paged_batch(q, n_in, attention_seqs_.data(), static_cast<int>(attention_seqs_.size()),
                               options_.kv.block_size, heads, hd, layer.k_cache.data(), layer.v_cache.data(), v,
                               n_in);
    cpu::linear(v, n_in, T, g_.n_mid, ref(w.w_out, options_.weights), E, nullptr, partial_.data(), E);
    comm_.all_reduce_sum(partial_.data(), partial_.size());
    cpu::add_inplace(x_.data(), partial_.data(), x_.size());
    cpu::add_bias(x_.data(), w.b_fc_out.data(), T, E);
  }

  void copy_blocks(const std::vector<BlockCopy>& copies) {
    const std::size_t block = static_cast<std::size_t>(options_.kv.block_size) * g_.heads_l * g_.head_dim;
    for (const auto& copy : copies) {
      for (auto& layer : layers_) {
        std::memcpy(&layer.k_cache[copy.dst * block], &layer.k_cache[copy.src * block], block * sizeof(float));
        std::memcpy(&layer.v_cache[copy.dst * block], &layer.v_cache[copy.src * block], block * sizeof(float));
      }
    }
  }

  // Rows of the wte table, widened from the mapped checkpoint (the table is not copied into RAM).
  void embed(const std::vector<int32_t>& ids, float* out) const {
    const std::size_t elem = dtype_size(wte_->dtype);
    for (std::size_t t = 0; t < ids.size(); ++t)
      convert_to_f32(wte_->dtype, wte_->data + static_cast<std::size_t>(ids[t]) * g_.E * elem,
                     out + t * g_.E, static_cast<std::size_t>(g_.E));
  }

  void project_logits(const StepBatch& batch, float* logits_shard) {
    const int rows = batch.logit_rows(), E = g_.E;
    h_.resize(static_cast<std::size_t>(rows) * E);
    int src = 0, dst = 0;
    for (const auto& seq : batch.seqs) {
      const int n = static_cast<int>(seq.tokens.size());
      const int first = seq.all_logits ? 0 : n - 1;
      for (int t = first; t < n; ++t, ++dst)
        std::memcpy(&h_[static_cast<std::size_t>(dst) * E], &x_[static_cast<std::size_t>(src + t) * E],
                    sizeof(float) * E);
      src += n;
    }
    cpu::layernorm(h_.data(), head_.ln_f_gamma.data(), head_.ln_f_beta.data(), h_.data(), rows, E,
                   config_.layer_norm_epsilon);
    const int vocab_rows = static_cast<int>(g_.vocab_rows);
    cpu::linear(h_.data(), E, rows, E, ref(head_.lm_head, options_.weights), vocab_rows, head_.lm_bias.data(), logits_shard, vocab_rows);
  }

  GptjConfig config_;
  BackendOptions options_;
  Communicator& comm_;
  ShardGeometry g_;
  int64_t weight_bytes_ = 0;
  std::string weight_format_;
  const TensorInfo* wte_ = nullptr;  // points into the checkpoint's mapping
  std::vector<CpuLayer> layers_;
  HeadShard head_;                   // ln_f, lm_head [vocab_rows, E], lm_bias
  // Step workspaces, reused across steps.
  AlignedVector<float> x_, h_, partial_, in_;  // 64-byte aligned: the kernels' 512-bit row loads
  AlignedVector<float> logits_;      // [logit rows, vocab_rows] of the last step
  std::vector<float> draw_scratch_;  // one processed logits row
  std::vector<int32_t> positions_, tokens_;
  std::vector<cpu::AttentionSequence> attention_seqs_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const GptjConfig& config, const Checkpoint& checkpoint,
                                          const BackendOptions& options, Communicator& comm) {
  GPTJ_CHECK(options.compute_dtype == "float32" || options.compute_dtype == "bfloat16",
             "the CPU backend computes in float32 (the default) or, opt-in, bfloat16 (got --dtype {})",
             options.compute_dtype);
  GPTJ_CHECK(options.weights.format != WeightFormat::kFp8,
             "--weights fp8 needs a CUDA GPU of compute capability 8.9 or newer; the CPU backend takes --weights "
             "auto, int8 or int4");
  if (options.compute_dtype != "bfloat16") return std::make_unique<CpuBackend>(config, checkpoint, options, comm);
  GPTJ_CHECK(options.weights.format == WeightFormat::kStored,
             "--dtype bfloat16 on the CPU backend holds the weights in bfloat16: it takes --weights auto, not {}",
             weight_format_name(options.weights.format));
  BackendOptions bf16 = options;
  bf16.weights.bf16_products = true;
  return std::make_unique<CpuBackend>(config, checkpoint, bf16, comm);
}

}  // namespace gptj
