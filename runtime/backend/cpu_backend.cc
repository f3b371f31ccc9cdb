// CPU backend: one TP rank's shard of GPT-J on host memory. Compute is float32; weight matrices stay
// in the checkpoint's dtype (a float16/bfloat16 checkpoint takes half the memory and memory
// traffic, widened exactly in the kernels), layernorms and biases are float32.
//
// Per layer the four column-parallel projections that read ln_1's output (k, v, q, fc_in) are one
// GEMM, and the two row-parallel ones (out_proj, fc_out) are another, so a layer is two GEMMs and
// ONE all-reduce (FasterTransformer's design does two). Layout of the fused input projection's
// output, per token row (El = E / tp, Il = I / tp):
//     [ k (El) | v (El) | q (El) | fc_in (Il) ]
// Attention writes its output over the q columns, so [ attn_out | gelu(fc_in) ] is one contiguous
// [El + Il] block per row and feeds the fused output GEMM without a copy.
#include <chrono>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace {

struct CpuLayer {
  std::vector<float> ln_gamma, ln_beta;  // [E]
  HostMatrix w_in;                       // [3 El + Il, E]: k, v, q, fc_in rows of this shard
  std::vector<float> b_fc_in;            // [Il]
  HostMatrix w_out;                      // [E, El + Il]: out_proj cols then fc_out cols
  std::vector<float> b_fc_out;           // [E] (replicated; added once after the all-reduce)
  std::vector<float> k_cache, v_cache;   // [num_blocks, block_size, heads_l, head_dim]
};

cpu::WeightRef ref(const HostMatrix& m) { return {m.data(), static_cast<int>(m.dtype())}; }

class CpuBackend final : public Backend {
 public:
  CpuBackend(const GptjConfig& config, const Checkpoint& checkpoint, const BackendOptions& options,
             Communicator& comm)
      : config_(config), options_(options), comm_(comm) {
    const TpPosition tp = options.tp;
    GPTJ_CHECK(config.n_head % tp.size == 0,
               "tensor-parallel size {} does not divide n_head {} of the model", tp.size,
               config.n_head);
    GPTJ_CHECK(config.n_inner % tp.size == 0, "tensor-parallel size {} does not divide n_inner {}",
               tp.size, config.n_inner);
    E_ = config.n_embd;
    El_ = E_ / tp.size;
    Il_ = config.n_inner / tp.size;
    heads_l_ = config.n_head / tp.size;
    vocab_rows_ = gptj::vocab_shard_rows(config.vocab_size, tp.size);
    const int64_t E = E_, I = config.n_inner, V = config.vocab_size;

    wte_ = &checkpoint.tensor("transformer.wte.weight", {V, E});
    auto read = [&](const std::string& name, std::vector<int64_t> shape) {
      return checkpoint.read_f32(name, shape, shard_slice(name, shape, tp).slice);
    };
    auto read_matrix = [&](const std::string& name, std::vector<int64_t> shape) {
      return checkpoint.read_matrix(name, shape, shard_slice(name, shape, tp).slice);
    };
    const std::size_t cache_size = static_cast<std::size_t>(options.kv.num_blocks) *
                                   options.kv.block_size * heads_l_ * config.head_dim();
    layers_.resize(config.n_layer);
    for (int l = 0; l < config.n_layer; ++l) {
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      CpuLayer& layer = layers_[l];
      layer.ln_gamma = read(p + "ln_1.weight", {E});
      layer.ln_beta = read(p + "ln_1.bias", {E});
      layer.w_in = HostMatrix::stack_rows({read_matrix(p + "attn.k_proj.weight", {E, E}),
                                           read_matrix(p + "attn.v_proj.weight", {E, E}),
                                           read_matrix(p + "attn.q_proj.weight", {E, E}),
                                           read_matrix(p + "mlp.fc_in.weight", {I, E})});
      layer.b_fc_in = read(p + "mlp.fc_in.bias", {I});
      // Row r of w_out = [out_proj shard row r | fc_out shard row r].
      layer.w_out = HostMatrix::stack_cols({read_matrix(p + "attn.out_proj.weight", {E, E}),
                                            read_matrix(p + "mlp.fc_out.weight", {E, I})});
      layer.b_fc_out = read(p + "mlp.fc_out.bias", {E});
      layer.k_cache.assign(cache_size, 0.0f);
      layer.v_cache.assign(cache_size, 0.0f);
      weight_bytes_ += static_cast<int64_t>(layer.w_in.size_bytes() + layer.w_out.size_bytes()) +
                       static_cast<int64_t>(sizeof(float)) * (layer.b_fc_in.size() + 3 * E);
    }
    ln_f_gamma_ = read("transformer.ln_f.weight", {E});
    ln_f_beta_ = read("transformer.ln_f.bias", {E});
    lm_head_ = read_matrix("lm_head.weight", {V, E});
    lm_bias_ = read("lm_head.bias", {V});
    weight_bytes_ += static_cast<int64_t>(lm_head_.size_bytes()) +
                     static_cast<int64_t>(sizeof(float)) * (lm_bias_.size() + 2 * E);
  }

  std::string name() const override { return "cpu"; }
  int64_t vocab_shard_rows() const override { return vocab_rows_; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  uint64_t all_reduce_calls() const override { return comm_.all_reduce_calls(); }

  void forward(const StepBatch& batch) override {
    validate_step(batch, config_.n_positions, config_.vocab_size, options_.kv);
    const int T = batch.total_tokens();
    const int n_in = 3 * El_ + Il_, n_mid = El_ + Il_;
    x_.resize(static_cast<std::size_t>(T) * E_);
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

    const int hd = config_.head_dim();
    for (auto& layer : layers_) {
      cpu::layernorm(x_.data(), layer.ln_gamma.data(), layer.ln_beta.data(), h_.data(), T, E_,
                     config_.layer_norm_epsilon);
      cpu::linear(h_.data(), E_, T, E_, ref(layer.w_in), n_in, nullptr, in_.data(), n_in);
      float* k = in_.data();
      float* v = in_.data() + El_;
      float* q = in_.data() + 2 * El_;
      float* fc = in_.data() + 3 * El_;
      cpu::rotary_gptj(k, T, n_in, heads_l_, hd, config_.rotary_dim, positions_.data());
      cpu::rotary_gptj(q, T, n_in, heads_l_, hd, config_.rotary_dim, positions_.data());
      cpu::bias_gelu_new(fc, layer.b_fc_in.data(), T, Il_, n_in);
      attention_seqs_.clear();
      int row = 0;
      for (const auto& seq : batch.seqs) {
        const int n = static_cast<int>(seq.tokens.size());
        const std::size_t at = static_cast<std::size_t>(row) * n_in;
        cpu::kv_write(k + at, v + at, n_in, n, seq.start_pos, seq.block_table.data(),
                      options_.kv.block_size, heads_l_, hd, layer.k_cache.data(),
                      layer.v_cache.data());
        attention_seqs_.push_back({row, n, seq.start_pos, seq.block_table.data()});
        row += n;
      }
      // Output overwrites q in place: each (token, head) reads its q before writing.
      cpu::attention_paged_batch(q, n_in, attention_seqs_.data(), static_cast<int>(attention_seqs_.size()),
                                 options_.kv.block_size, heads_l_, hd, layer.k_cache.data(),
                                 layer.v_cache.data(), q, n_in);
      cpu::linear(q, n_in, T, n_mid, ref(layer.w_out), E_, nullptr, partial_.data(), E_);
      comm_.all_reduce_sum(partial_.data(), partial_.size());
      cpu::add_inplace(x_.data(), partial_.data(), x_.size());
      cpu::add_bias(x_.data(), layer.b_fc_out.data(), T, E_);
    }
    logits_.resize(static_cast<std::size_t>(batch.logit_rows()) * vocab_rows_);
    project_logits(batch, logits_.data());
  }

  void read_logit_rows(const std::vector<int32_t>& rows, float* out) override {
    const std::size_t n = static_cast<std::size_t>(vocab_rows_);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      GPTJ_CHECK(rows[i] >= 0 && static_cast<std::size_t>(rows[i]) * n < logits_.size(),
                 "logit row {} not produced by the last step", rows[i]);
      std::memcpy(out + i * n, &logits_[rows[i] * n], n * sizeof(float));
    }
  }

  void summarize_draws(const std::vector<DrawPlan>& draws, DrawSummary* out) override {
    const std::size_t n = static_cast<std::size_t>(vocab_rows_);
    const int64_t vocab_begin = options_.tp.rank * vocab_rows_;
    for (std::size_t d = 0; d < draws.size(); ++d) {
      const std::size_t row = static_cast<std::size_t>(draws[d].logit_row);
      GPTJ_CHECK(row * n < logits_.size(), "draw from logit row {} not produced by the last step", row);
      summarize_draw(&logits_[row * n], vocab_begin, vocab_rows_, draws[d], out[d], draw_scratch_);
    }
  }

  void answer_search(const std::vector<DrawPlan>& draws, const std::vector<SearchQuery>& queries,
                     SearchReply* out) override {
    const std::size_t n = static_cast<std::size_t>(vocab_rows_);
    const int64_t vocab_begin = options_.tp.rank * vocab_rows_;
    for (std::size_t i = 0; i < queries.size(); ++i) {
      const DrawPlan& draw = draws[static_cast<std::size_t>(queries[i].draw)];
      const std::size_t row = static_cast<std::size_t>(draw.logit_row);
      GPTJ_CHECK(row * n < logits_.size(), "draw from logit row {} not produced by the last step", row);
      answer_search_query(&logits_[row * n], vocab_begin, vocab_rows_, draw, queries[i], options_.tp.rank, out[i],
                          draw_scratch_);
    }
  }

 private:
  void copy_blocks(const std::vector<BlockCopy>& copies) {
    const std::size_t block = static_cast<std::size_t>(options_.kv.block_size) * heads_l_ * config_.head_dim();
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
      convert_to_f32(wte_->dtype, wte_->data + static_cast<std::size_t>(ids[t]) * E_ * elem,
                     out + t * E_, static_cast<std::size_t>(E_));
  }

  void project_logits(const StepBatch& batch, float* logits_shard) {
    const int rows = batch.logit_rows();
    h_.resize(static_cast<std::size_t>(rows) * E_);
    int src = 0, dst = 0;
    for (const auto& seq : batch.seqs) {
      const int n = static_cast<int>(seq.tokens.size());
      const int first = seq.all_logits ? 0 : n - 1;
      for (int t = first; t < n; ++t, ++dst)
        std::memcpy(&h_[static_cast<std::size_t>(dst) * E_], &x_[static_cast<std::size_t>(src + t) * E_],
                    sizeof(float) * E_);
      src += n;
    }
    cpu::layernorm(h_.data(), ln_f_gamma_.data(), ln_f_beta_.data(), h_.data(), rows, E_,
                   config_.layer_norm_epsilon);
    cpu::linear(h_.data(), E_, rows, E_, ref(lm_head_), static_cast<int>(vocab_rows_),
                lm_bias_.data(), logits_shard, static_cast<int>(vocab_rows_));
  }


  GptjConfig config_;
  BackendOptions options_;
  Communicator& comm_;
  int E_ = 0, El_ = 0, Il_ = 0, heads_l_ = 0;
  int64_t vocab_rows_ = 0;
  int64_t weight_bytes_ = 0;
  const TensorInfo* wte_ = nullptr;  // points into the checkpoint's mapping
  std::vector<CpuLayer> layers_;
  std::vector<float> ln_f_gamma_, ln_f_beta_, lm_bias_;
  HostMatrix lm_head_;  // [vocab_shard_rows, E], checkpoint dtype
  // Step workspaces, reused across steps.
  std::vector<float> x_, h_, partial_, in_;
  std::vector<float> logits_;        // [logit rows, vocab_rows_] of the last step
  std::vector<float> draw_scratch_;  // one processed logits row
  std::vector<int32_t> positions_, tokens_;
  std::vector<cpu::AttentionSequence> attention_seqs_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const GptjConfig& config, const Checkpoint& checkpoint,
                                          const BackendOptions& options, Communicator& comm) {
  GPTJ_CHECK(options.compute_dtype == "float32",
             "the CPU backend computes in float32 only (got --dtype {})", options.compute_dtype);
  return std::make_unique<CpuBackend>(config, checkpoint, options, comm);
}

}  // namespace gptj
