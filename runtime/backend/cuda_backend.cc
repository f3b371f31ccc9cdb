// CUDA backend: one TP rank's shard of GPT-J on one GPU.
//
// Same algorithm as the CPU backend (cpu_backend.cc): per layer one fused input GEMM, one fused
// output GEMM and ONE all-reduce. Layout of the fused input projection's output per token row
// (El = E / tp, Il = I / tp, Nin = 3 El + Il):
//     [ q (El) | k (El) | v (El) | fc_in (Il) ]
// One kernel rotates q in place and writes rotated k and v into the paged cache (rotary_kv_write).
// After it, k and v live in the cache, so attention writes its output over the v columns and
// [ attn_out | gelu(fc_in) ] (columns 2 El .. Nin) is one contiguous block feeding the output GEMM.
// The residual stream x is float32; GEMM inputs/outputs are the compute type T with float32
// accumulation (CUBLAS_COMPUTE_32F, cuBLASLt: runtime/backend/cuda_gemm.h); logits come out in float32.
// With --weights int8|int4 the fused w_in / w_out (and lm_head with --quantize-lm-head) stay
// quantized on the GPU, values and scales exactly as runtime/core/quant.h made them on the host, and
// their products run through runtime/backend/cuda_quant_linear.h (dequantized in registers for
// decode, by tiles into cuBLASLt for larger batches). Without a checkpoint they are random codes
// generated on the GPU (cuda::fill_random_quantized). With --weights fp8 (sm_89+) each of those
// matrices is FP8 E4M3 with one per-tensor scale, converted on the GPU from the compute type at load;
// each product quantizes its input rows to E4M3 with a per-call scale (cuda::fp8_quantize) and runs
// on cuBLASLt's FP8 tensor cores (CudaGemm::linear_fp8).
//
// Memory: weights and KV caches are allocated once at construction; the step workspaces (device
// buffers, pinned host buffers for metadata, draw plans, summaries and fetched rows) grow only when a
// step needs more, so the steady-state step loop does no cudaMalloc. One stream; NCCL all-reduces
// run on it too. The logits [rows, vocab_rows] stay on the device after forward(): summarize_draws()
// reduces them there (kernels/cuda/sampling.cu) and only the DrawSummary values cross to the host.
#include "runtime/backend/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/backend/cuda_buffer.h"
#include "runtime/backend/cuda_gemm.h"
#include "runtime/backend/cuda_type_info.h"
#include "runtime/backend/cuda_quant_linear.h"
#ifdef GPTJ_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif
#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace {

template <typename T>
using TypeInfo = CudaTypeInfo<T>;


// One weight matrix [rows, cols] as the GPU holds it: in the compute type T (plain), or quantized
// (quant: device values and scales, layout kernels/cuda/cuda_kernels.h). Device memory owned by the
// backend's allocation list.
template <typename T>
struct CudaMatrix {
  int rows = 0, cols = 0;
  T* plain = nullptr;          // [rows, cols] when neither quantized nor fp8
  bool quantized = false;
  cuda::QuantWeights quant;    // when quantized (int8 / int4)
  uint8_t* fp8 = nullptr;      // [rows, cols] E4M3 bytes when fp8
  float* fp8_scale = nullptr;  // [2] when fp8: max|w| (scratch), the per-tensor scale
};

template <typename T>
struct CudaLayer {
  float* ln_gamma = nullptr;  // [E]
  float* ln_beta = nullptr;   // [E]
  CudaMatrix<T> w_in;         // [3 El + Il, E]: q, k, v, fc_in rows of this shard
  float* b_fc_in = nullptr;   // [Il]
  CudaMatrix<T> w_out;        // [E, El + Il]: out_proj shard cols then fc_out shard cols
  float* b_fc_out = nullptr;  // [E] (replicated; added once after the all-reduce)
  T* k_cache = nullptr;       // [num_blocks, block_size, heads_l, head_dim]
  T* v_cache = nullptr;
};

template <typename T>
class CudaBackend final : public Backend {
 public:
  CudaBackend(const GptjConfig& config, const Checkpoint* checkpoint, uint64_t seed,
              const BackendOptions& options, Communicator& host_comm, int device)
      : config_(config), options_(options), device_(device) {
    const TpPosition tp = options.tp;
    const ShardGeometry g = shard_geometry(config, tp);
    E_ = g.E;
    El_ = g.El;
    Il_ = g.Il;
    heads_l_ = g.heads_l;
    head_dim_ = g.head_dim;
    n_in_ = g.n_in;
    vocab_rows_ = g.vocab_rows;

    GPTJ_CUDA_CHECK(cudaSetDevice(device_));
    GPTJ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = std::make_unique<CudaGemm>(stream_, device_);
    quant_ = std::make_unique<CudaQuantLinear>(*gemm_, stream_, device_);
    GPTJ_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_));
#ifdef GPTJ_WITH_NCCL
    if (host_comm.size() > 1) nccl_ = std::make_unique<NcclCommunicator>(host_comm);
#else
    GPTJ_CHECK(host_comm.size() == 1, "this gptj was built without MPI/NCCL: one GPU rank only, not {}",
               host_comm.size());
#endif

    const int64_t E = E_, V = config.vocab_size;
    wte_ = alloc<T>(static_cast<std::size_t>(V) * E, "wte", true);
    if (checkpoint)
      load_embedding(*checkpoint, V, wte_);
    else
      random(wte_, static_cast<std::size_t>(V) * E, seed, 1, 0.0f, 0.02f);

    const std::size_t cache_elems = static_cast<std::size_t>(options.kv.num_blocks) *
                                    options.kv.block_size * heads_l_ * head_dim_;
    const WeightFormat layer_format = options.weights.format;
    // fp8 is converted here, on the GPU, from matrices read as stored.
    read_weights_ = options.weights;
    if (read_weights_.format == WeightFormat::kFp8) read_weights_.format = WeightFormat::kStored;
    const WeightFormat head_format = options.weights.quantize_lm_head ? layer_format : WeightFormat::kStored;
    layers_.resize(config.n_layer);
    for (int l = 0; l < config.n_layer; ++l) {
      CudaLayer<T>& layer = layers_[l];
      layer.ln_gamma = alloc<float>(E, "ln_1.weight", true);
      layer.ln_beta = alloc<float>(E, "ln_1.bias", true);
      layer.w_in = alloc_matrix(n_in_, E_, layer_format, "fused q/k/v/fc_in");
      layer.b_fc_in = alloc<float>(Il_, "fc_in.bias", true);
      layer.w_out = alloc_matrix(E_, El_ + Il_, layer_format, "fused out_proj/fc_out");
      layer.b_fc_out = alloc<float>(E, "fc_out.bias", true);
      layer.k_cache = alloc<T>(cache_elems, "KV cache (k)", false);
      layer.v_cache = alloc<T>(cache_elems, "KV cache (v)", false);
      GPTJ_CUDA_CHECK(cudaMemset(layer.k_cache, 0, cache_elems * sizeof(T)));
      GPTJ_CUDA_CHECK(cudaMemset(layer.v_cache, 0, cache_elems * sizeof(T)));
      if (checkpoint) {
        load_layer(*checkpoint, l, layer);
      } else {
        const uint64_t id = 100 + 16 * static_cast<uint64_t>(l);
        random(layer.ln_gamma, E, seed, id + 0, 1.0f, 0.02f);
        random(layer.ln_beta, E, seed, id + 1, 0.0f, 0.02f);
        random_matrix(layer.w_in, seed, id + 2);
        random(layer.b_fc_in, Il_, seed, id + 3, 0.0f, 0.02f);
        random_matrix(layer.w_out, seed, id + 4);
        random(layer.b_fc_out, E, seed, id + 5, 0.0f, 0.02f);
      }
    }
    ln_f_gamma_ = alloc<float>(E, "ln_f.weight", true);
    ln_f_beta_ = alloc<float>(E, "ln_f.bias", true);
    lm_head_ = alloc_matrix(static_cast<int>(vocab_rows_), E_, head_format, "lm_head.weight");
    lm_bias_ = alloc<float>(vocab_rows_, "lm_head.bias", true);
    const int64_t vocab_begin = g.vocab_begin;
    if (checkpoint) {
      const HeadShard head = read_head_shard(*checkpoint, config, tp, read_weights_);
      upload_f32(head.ln_f_gamma, ln_f_gamma_);
      upload_f32(head.ln_f_beta, ln_f_beta_);
      upload_matrix(head.lm_head, lm_head_);
      upload_f32(head.lm_bias, lm_bias_);
    } else {
      random(ln_f_gamma_, E, seed, 2, 1.0f, 0.02f);
      random(ln_f_beta_, E, seed, 3, 0.0f, 0.02f);
      random_matrix(lm_head_, seed, 4 + tp.rank);
      random(lm_bias_, vocab_rows_, seed, 64 + tp.rank, 0.0f, 0.02f);
      // Padding rows past the vocabulary: zero weights and bias, as a checkpoint reads them.
      const int64_t real = std::clamp<int64_t>(V - vocab_begin, 0, vocab_rows_);
      if (real < vocab_rows_) {
        // On stream_, after the fills (stream_ does not synchronize with the legacy stream). A
        // quantized row with scale 0 is zeros whatever its codes.
        if (lm_head_.quantized) {
          const std::size_t per_row = lm_head_.quant.scale_bytes() / lm_head_.rows;
          GPTJ_CUDA_CHECK(cudaMemsetAsync(const_cast<char*>(static_cast<const char*>(lm_head_.quant.scales)) +
                                              real * per_row,
                                          0, (vocab_rows_ - real) * per_row, stream_));
        } else if (lm_head_.fp8) {  // E4M3 0x00 is +0 (the per-tensor scale came from every row)
          GPTJ_CUDA_CHECK(cudaMemsetAsync(lm_head_.fp8 + real * E, 0, (vocab_rows_ - real) * E, stream_));
        } else {
          GPTJ_CUDA_CHECK(cudaMemsetAsync(lm_head_.plain + real * E, 0, (vocab_rows_ - real) * E * sizeof(T),
                                          stream_));
        }
        GPTJ_CUDA_CHECK(cudaMemsetAsync(lm_bias_ + real, 0, (vocab_rows_ - real) * sizeof(float),
                                        stream_));
      }
    }
    GPTJ_CUDA_CHECK(cudaDeviceSynchronize());
    fp8_staging_.release();  // construction only
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
#ifdef GPTJ_WITH_NCCL
    nccl_.reset();
#endif
    for (void* p : allocations_) cudaFree(p);
    quant_.reset();
    gemm_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  int64_t vocab_shard_rows() const override { return vocab_rows_; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  // What the GPU holds: the compute type T, or the quantized format of the layers (and of lm_head):
  // "float16", "int8 (lm_head float16)", ...
  std::string weight_format() const override {
    const std::string layers = format_of(layers_.at(0).w_in), head = format_of(lm_head_);
    return layers == head ? layers : layers + " (lm_head " + head + ")";
  }
  uint64_t all_reduce_calls() const override { return all_reduce_calls_; }
  std::string async_error() override {
#ifdef GPTJ_WITH_NCCL
    if (nccl_) return nccl_->async_error();
#endif
    return {};
  }

  void forward(const StepBatch& batch) override {
    summarized_draws_ = 0;  // the keys of the last step's draws are gone with its logits
    GPTJ_CUDA_CHECK(cudaSetDevice(device_));
    validate_step(batch, config_.n_positions, config_.vocab_size, options_.kv);
    build_metadata(batch);
    decode_split_ = cuda::plan_decode_split(n_decode_, heads_l_, max_decode_pos_ + 1, sm_count_);
    const int n_tok = n_tok_, rows = n_rows_;
    ensure_workspace(n_tok, rows);

    // Metadata: one pinned staging buffer, one async copy. The previous step's copies out of the
    // pinned buffer may still be pending (a step that threw midway), so wait (free when idle).
    GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(pinned_meta_.at<int32_t>(0), meta_.data(), meta_.size() * sizeof(int32_t));
    GPTJ_CUDA_CHECK(cudaMemcpyAsync(d_meta_, pinned_meta_.at<int32_t>(0), meta_.size() * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, stream_));
    const int32_t* d_tokens = d_meta_ + off_tokens_;
    const int32_t* d_pos = d_meta_ + off_pos_;
    const int32_t* d_bt_off = d_meta_ + off_bt_off_;
    const int32_t* d_rows = d_meta_ + off_rows_;
    const int32_t* d_tile_begin = d_meta_ + off_tile_begin_;
    const int32_t* d_tile_count = d_meta_ + off_tile_count_;
    const int32_t* d_decode = d_meta_ + off_decode_;
    const int32_t* d_tables = d_meta_ + off_tables_;

    cuda::embedding<T>(wte_, d_tokens, n_tok, E_, d_x_, stream_);
    const int bs = options_.kv.block_size;
    // Forked samples get their own copy of a shared prompt's last block before writing into it.
    const std::size_t block_elems = static_cast<std::size_t>(bs) * heads_l_ * head_dim_;
    for (const BlockCopy& copy : batch.block_copies) {
      for (CudaLayer<T>& layer : layers_) {
        for (T* cache : {layer.k_cache, layer.v_cache})
          GPTJ_CUDA_CHECK(cudaMemcpyAsync(cache + copy.dst * block_elems, cache + copy.src * block_elems,
                                          block_elems * sizeof(T), cudaMemcpyDeviceToDevice, stream_));
      }
    }
    for (CudaLayer<T>& layer : layers_) {
      cuda::layernorm<T>(d_x_, nullptr, layer.ln_gamma, layer.ln_beta, d_h_, n_tok, E_,
                         config_.layer_norm_epsilon, stream_);
      linear(d_h_, E_, n_tok, layer.w_in, d_qkvf_, n_in_, TypeInfo<T>::kCuda);
      T* q = d_qkvf_;
      T* k = d_qkvf_ + El_;
      T* v = d_qkvf_ + 2 * El_;
      T* fc = d_qkvf_ + 3 * El_;
      cuda::bias_gelu_new<T>(fc, layer.b_fc_in, n_tok, Il_, n_in_, stream_);
      cuda::rotary_kv_write<T>(q, k, v, n_in_, n_tok, d_pos, d_bt_off, d_tables, bs, heads_l_, head_dim_,
                               config_.rotary_dim, layer.k_cache, layer.v_cache, stream_);
      T* attn_out = v;  // over the v columns (v is in the cache now)
      cuda::attention_prefill<T>(q, n_in_, d_tile_begin, d_tile_count, n_tiles_, d_pos, d_bt_off,
                                 d_tables, bs, heads_l_, head_dim_, layer.k_cache, layer.v_cache,
                                 attn_out, n_in_, stream_);
      cuda::attention_decode<T>(q, n_in_, d_decode, n_decode_, d_pos, d_bt_off, d_tables, bs,
                                heads_l_, head_dim_, layer.k_cache, layer.v_cache, attn_out,
                                n_in_, decode_split_, stream_);
      linear(attn_out, n_in_, n_tok, layer.w_out, d_partial_, E_, TypeInfo<T>::kCuda);
      ++all_reduce_calls_;  // the one reduction point of the layer (a no-op at TP 1)
#ifdef GPTJ_WITH_NCCL
      if (nccl_)
        nccl_->all_reduce_sum(d_partial_, static_cast<std::size_t>(n_tok) * E_, TypeInfo<T>::kDType,
                              stream_);
#endif
      cuda::residual_add<T>(d_x_, d_partial_, layer.b_fc_out, n_tok, E_, stream_);
    }
    cuda::layernorm<T>(d_x_, d_rows, ln_f_gamma_, ln_f_beta_, d_hf_, rows, E_,
                       config_.layer_norm_epsilon, stream_);
    linear(d_hf_, E_, rows, lm_head_, d_logits_, static_cast<int>(vocab_rows_), CUDA_R_32F);
    cuda::add_bias_f32(d_logits_, lm_bias_, rows, static_cast<int>(vocab_rows_), stream_);
    logit_rows_ = rows;
  }

  void read_logit_rows(const std::vector<int32_t>& rows, float* out) override {
    GPTJ_CUDA_CHECK(cudaSetDevice(device_));
    const std::size_t row_bytes = static_cast<std::size_t>(vocab_rows_) * sizeof(float);
    pinned_rows_.reserve(std::max<std::size_t>(rows.size(), 1) * row_bytes, stream_, device_);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      GPTJ_CHECK(rows[i] >= 0 && rows[i] < logit_rows_, "logit row {} not produced by the last step", rows[i]);
      GPTJ_CUDA_CHECK(cudaMemcpyAsync(pinned_rows_.at<char>(i * row_bytes), d_logits_ + rows[i] * vocab_rows_,
                                      row_bytes, cudaMemcpyDeviceToHost, stream_));
    }
    GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(out, pinned_rows_.at<char>(0), rows.size() * row_bytes);
  }

  void summarize_draws(const std::vector<DrawPlan>& draws, DrawSummary* out) override {
    GPTJ_CUDA_CHECK(cudaSetDevice(device_));
    const int n = static_cast<int>(draws.size());
    if (n == 0) return;
    draw_params_.clear();
    draw_edits_.clear();
    bool any_sort = false;
    for (const DrawPlan& draw : draws) {
      GPTJ_CHECK(draw.logit_row >= 0 && draw.logit_row < logit_rows_,
                 "draw from logit row {} not produced by the last step", draw.logit_row);
      cuda::DeviceDrawParams p;
      p.logit_row = draw.logit_row;
      p.allowed_vocab = draw.allowed_vocab;
      p.temperature = draw.temperature;
      p.top_p = draw.top_p;
      p.noise_key = draw.noise_key;
      p.want_log_norm = draw.want_log_norm;
      p.score_token = draw.score_token;
      p.candidates = draw.candidates;
      any_sort = any_sort || draw.candidates > 1;
      p.edit_begin = static_cast<int32_t>(draw_edits_.size());
      draw_edits_.insert(draw_edits_.end(), draw.edits.begin(), draw.edits.end());
      p.edit_end = static_cast<int32_t>(draw_edits_.size());
      draw_params_.push_back(p);
    }
    const int vs = static_cast<int>(vocab_rows_);
    const std::size_t cells = static_cast<std::size_t>(n) * vs;
    // Host side: [params | edits] up, summaries down.
    Carve host;
    const std::size_t h_params = host.take(n * sizeof(cuda::DeviceDrawParams));
    const std::size_t h_edits = host.take(draw_edits_.size() * sizeof(LogitEdit));
    const std::size_t h_out = host.take(n * sizeof(DrawSummary));
    const std::size_t upload = h_out;  // params and edits are one contiguous copy
    // Device side: the same [params | edits], then the sort scratch and the summaries.
    cuda::DrawScratch scratch;
    scratch.sort_bytes = any_sort ? cuda::summarize_draws_sort_bytes(n, vs) : 0;
    Carve dev;
    dev.take(upload);
    const std::size_t d_keys = dev.take(cells * sizeof(float)), d_ids = dev.take(cells * sizeof(int32_t));
    const std::size_t d_sorted_keys = dev.take(cells * sizeof(float));
    const std::size_t d_sorted_ids = dev.take(cells * sizeof(int32_t));
    const std::size_t d_offsets = dev.take((n + 1) * sizeof(int32_t));
    const std::size_t d_sort = dev.take(scratch.sort_bytes);
    const std::size_t d_out = dev.take(n * sizeof(DrawSummary));
    pinned_draws_.reserve(host.total(), stream_, device_);
    draw_workspace_.reserve(dev.total(), stream_, device_);
    std::memcpy(pinned_draws_.at<char>(h_params), draw_params_.data(), n * sizeof(cuda::DeviceDrawParams));
    if (!draw_edits_.empty())
      std::memcpy(pinned_draws_.at<char>(h_edits), draw_edits_.data(), draw_edits_.size() * sizeof(LogitEdit));
    GPTJ_CUDA_CHECK(cudaMemcpyAsync(draw_workspace_.at<char>(0), pinned_draws_.at<char>(0), upload,
                                    cudaMemcpyHostToDevice, stream_));
    scratch.keys = draw_workspace_.at<float>(d_keys);
    keys_offset_ = d_keys;  // the processed keys stay for the step's threshold-search rounds
    params_offset_ = h_params;
    summarized_draws_ = n;
    scratch.ids = draw_workspace_.at<int32_t>(d_ids);
    scratch.sorted_keys = draw_workspace_.at<float>(d_sorted_keys);
    scratch.sorted_ids = draw_workspace_.at<int32_t>(d_sorted_ids);
    scratch.offsets = draw_workspace_.at<int32_t>(d_offsets);
    scratch.sort_temp = draw_workspace_.at<void>(d_sort);
    DrawSummary* summaries = draw_workspace_.at<DrawSummary>(d_out);
    cuda::summarize_draws(d_logits_, vs, options_.tp.rank * vocab_rows_,
                          draw_workspace_.at<cuda::DeviceDrawParams>(h_params), n,
                          draw_workspace_.at<LogitEdit>(h_edits), scratch, any_sort, summaries, stream_);
    GPTJ_CUDA_CHECK(cudaMemcpyAsync(pinned_draws_.at<char>(h_out), summaries, n * sizeof(DrawSummary),
                                    cudaMemcpyDeviceToHost, stream_));
    GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(out, pinned_draws_.at<char>(h_out), n * sizeof(DrawSummary));
  }

  void answer_search(const std::vector<DrawPlan>& draws, const std::vector<SearchQuery>& queries,
                     SearchReply* out) override {
    GPTJ_CUDA_CHECK(cudaSetDevice(device_));
    const int n = static_cast<int>(queries.size());
    if (n == 0) return;
    GPTJ_CHECK(static_cast<int>(draws.size()) == summarized_draws_, "threshold search before the step's summaries");
    for (const SearchQuery& q : queries)
      GPTJ_CHECK(q.draw >= 0 && q.draw < summarized_draws_, "search query for draw {} of {}", q.draw, summarized_draws_);
    const std::size_t q_bytes = n * sizeof(SearchQuery), r_bytes = n * sizeof(SearchReply);
    // Device and pinned: [queries | replies]; the keys and params stay in draw_workspace_.
    pinned_search_.reserve(q_bytes + r_bytes, stream_, device_);
    search_workspace_.reserve(q_bytes + r_bytes, stream_, device_);
    std::memcpy(pinned_search_.at<char>(0), queries.data(), q_bytes);
    GPTJ_CUDA_CHECK(cudaMemcpyAsync(search_workspace_.at<char>(0), pinned_search_.at<char>(0), q_bytes,
                                    cudaMemcpyHostToDevice, stream_));
    cuda::answer_search(draw_workspace_.at<float>(keys_offset_), static_cast<int>(vocab_rows_),
                        options_.tp.rank * vocab_rows_, options_.tp.rank,
                        draw_workspace_.at<cuda::DeviceDrawParams>(params_offset_),
                        search_workspace_.at<SearchQuery>(0), n, search_workspace_.at<SearchReply>(q_bytes), stream_);
    GPTJ_CUDA_CHECK(cudaMemcpyAsync(pinned_search_.at<char>(q_bytes), search_workspace_.at<char>(q_bytes), r_bytes,
                                    cudaMemcpyDeviceToHost, stream_));
    GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(static_cast<void*>(out), pinned_search_.at<char>(q_bytes), r_bytes);
  }

 private:
  template <typename U>
  U* alloc(std::size_t count, const char* what, bool weight) {
    void* p = nullptr;
    const std::size_t bytes = std::max<std::size_t>(count, 1) * sizeof(U);
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail("GPU {}: cannot allocate {} MiB for {} ({}; {} MiB of weights and cache allocated so far)",
           device_, bytes >> 20, what, cudaGetErrorString(err), allocated_bytes_ >> 20);
    }
    allocations_.push_back(p);
    allocated_bytes_ += bytes;
    if (weight) weight_bytes_ += static_cast<int64_t>(bytes);
    return static_cast<U*>(p);
  }

  template <typename U>
  void random(U* p, std::size_t n, uint64_t seed, uint64_t id, float mean, float stddev) {
    cuda::fill_random<U>(p, n, seed, id, mean, stddev, stream_);
  }

  void upload_f32(const std::vector<float>& host, float* dst) {
    GPTJ_CUDA_CHECK(cudaMemcpy(dst, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  // Converts float32 to T on the host, then copies (synchronous; construction only).
  void upload_t(const float* host, std::size_t n, T* dst) {
    staging_.resize(n * sizeof(T));
    convert_from_f32(TypeInfo<T>::kDType, host, staging_.data(), n);
    GPTJ_CUDA_CHECK(cudaMemcpy(dst, staging_.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }

  // Device memory for a [rows, cols] weight matrix held as `format` (kStored: the compute type T).
  CudaMatrix<T> alloc_matrix(int rows, int cols, WeightFormat format, const char* what) {
    CudaMatrix<T> m;
    m.rows = rows;
    m.cols = cols;
    if (format == WeightFormat::kStored) {
      m.plain = alloc<T>(static_cast<std::size_t>(rows) * cols, what, true);
      return m;
    }
    if (format == WeightFormat::kFp8) {
      m.fp8 = alloc<uint8_t>(static_cast<std::size_t>(rows) * cols, what, true);
      m.fp8_scale = alloc<float>(2, what, true);
      return m;
    }
    GPTJ_CHECK(format == WeightFormat::kInt8 || format == WeightFormat::kInt4, "cuda backend: no {} weights",
               weight_format_name(format));
    m.quantized = true;
    m.quant.kind = format == WeightFormat::kInt8 ? cuda::QuantKind::kInt8 : cuda::QuantKind::kInt4;
    m.quant.rows = rows;
    m.quant.cols = cols;
    m.quant.values = alloc<uint8_t>(rows * m.quant.row_bytes(), what, true);
    m.quant.scales = alloc<uint8_t>(m.quant.scale_bytes(), what, true);
    return m;
  }

  // "float16" (the compute type) or "int8" / "int4" / "fp8".
  static std::string format_of(const CudaMatrix<T>& m) {
    if (m.fp8) return "fp8";
    if (!m.quantized) return std::string(dtype_name(TypeInfo<T>::kDType));
    return m.quant.kind == cuda::QuantKind::kInt8 ? "int8" : "int4";
  }

  // Random weights ~ normal(0, 0.02) on the GPU, plain or quantized codes.
  void random_matrix(CudaMatrix<T>& m, uint64_t seed, uint64_t id) {
    if (m.fp8) {  // the plain random matrix, converted
      T* plain = fp8_staging(m);
      random(plain, static_cast<std::size_t>(m.rows) * m.cols, seed, id, 0.0f, 0.02f);
      cuda::fp8_quantize<T>(plain, m.rows, m.cols, m.cols, m.fp8_scale, m.fp8, stream_);
      return;
    }
    if (!m.quantized) {
      random(m.plain, static_cast<std::size_t>(m.rows) * m.cols, seed, id, 0.0f, 0.02f);
      return;
    }
    cuda::fill_random_quantized(m.quant.kind, m.rows, m.cols, seed, id, 0.02f, const_cast<uint8_t*>(m.quant.values),
                                const_cast<void*>(m.quant.scales), stream_);
  }

  // A host matrix of the shard (model_shard.h) into dst: quantized values and scales copied as they
  // are; a plain matrix converted to T in chunks of ~64 MiB of float32 so host memory stays small.
  void upload_matrix(const WeightMatrix& m, CudaMatrix<T>& dst_matrix) {
    if (dst_matrix.fp8) {  // through T on the GPU, then converted
      GPTJ_CHECK(!m.is_quantized() && m.rows() == dst_matrix.rows && m.cols() == dst_matrix.cols,
                 "cuda backend: a {} [{}, {}] matrix for an fp8 [{}, {}] slot", m.format_name(), m.rows(), m.cols(),
                 dst_matrix.rows, dst_matrix.cols);
      T* plain = fp8_staging(dst_matrix);
      upload_plain(m.plain(), plain);
      cuda::fp8_quantize<T>(plain, dst_matrix.rows, dst_matrix.cols, dst_matrix.cols, dst_matrix.fp8_scale,
                            dst_matrix.fp8, stream_);
      GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before the staging is reused
      return;
    }
    GPTJ_CHECK(m.rows() == dst_matrix.rows && m.cols() == dst_matrix.cols && m.is_quantized() == dst_matrix.quantized,
               "cuda backend: a {} [{}, {}] matrix for a {} [{}, {}] slot", m.format_name(), m.rows(), m.cols(),
               format_of(dst_matrix), dst_matrix.rows, dst_matrix.cols);
    if (m.is_quantized()) {
      const QuantizedMatrix& q = m.quantized();
      const cuda::QuantWeights& d = dst_matrix.quant;
      GPTJ_CHECK((q.format == WeightFormat::kInt8) == (d.kind == cuda::QuantKind::kInt8) &&
                     q.values.size() == d.rows * d.row_bytes(),
                 "cuda backend: quantized matrix layout mismatch ({})", m.format_name());
      GPTJ_CUDA_CHECK(cudaMemcpy(const_cast<uint8_t*>(d.values), q.values.data(), q.values.size(), cudaMemcpyHostToDevice));
      const void* scales = q.format == WeightFormat::kInt8 ? static_cast<const void*>(q.scales.data())
                                                           : static_cast<const void*>(q.scales16.data());
      const std::size_t scale_bytes = q.size_bytes() - q.values.size();
      GPTJ_CHECK(scale_bytes == d.scale_bytes(), "cuda backend: {} scales of {} bytes, expected {}", m.format_name(),
                 scale_bytes, d.scale_bytes());
      GPTJ_CUDA_CHECK(cudaMemcpy(const_cast<void*>(d.scales), scales, scale_bytes, cudaMemcpyHostToDevice));
      return;
    }
    upload_plain(m.plain(), dst_matrix.plain);
  }

  // A plain host matrix into dst [rows, cols] of T, converted in chunks of ~64 MiB of float32.
  void upload_plain(const HostMatrix& host, T* dst) {
    const int64_t cols = host.cols();
    const int64_t chunk = std::max<int64_t>(1, (int64_t{64} << 20) / (cols * 4));
    std::vector<float> part;
    for (int64_t r = 0; r < host.rows(); r += chunk) {
      const int64_t n = std::min(chunk, host.rows() - r);
      part.resize(static_cast<std::size_t>(n * cols));
      convert_to_f32(host.dtype(), host.row(r), part.data(), part.size());
      upload_t(part.data(), part.size(), dst + r * cols);
    }
  }

  // Embedding rows [0, V) (replicated on every rank) in chunks.
  void load_embedding(const Checkpoint& ck, int64_t V, T* dst) {
    const int64_t E = E_;
    const int64_t chunk = std::max<int64_t>(1, (int64_t{64} << 20) / (E * 4));
    for (int64_t r = 0; r < V; r += chunk) {
      Slice s;
      s.row_begin = r;
      s.row_end = r + std::min(chunk, V - r);
      const std::vector<float> part = ck.read_f32("transformer.wte.weight", {V, E}, s);
      upload_t(part.data(), part.size(), dst + r * E);
    }
  }

  void load_layer(const Checkpoint& ck, int l, CudaLayer<T>& layer) {
    const LayerShard shard = read_layer_shard(ck, config_, options_.tp, l, read_weights_);
    upload_f32(shard.ln_gamma, layer.ln_gamma);
    upload_f32(shard.ln_beta, layer.ln_beta);
    upload_matrix(shard.w_in, layer.w_in);
    upload_f32(shard.b_fc_in, layer.b_fc_in);
    upload_matrix(shard.w_out, layer.w_out);
    upload_f32(shard.b_fc_out, layer.b_fc_out);
  }

  // The device staging of one matrix in T before its fp8 conversion (construction only; stream_
  // synchronized before each reuse: reserve() does when it grows, upload_matrix after each use).
  T* fp8_staging(const CudaMatrix<T>& m) {
    GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    fp8_staging_.reserve(static_cast<std::size_t>(m.rows) * m.cols * sizeof(T), stream_, device_);
    return fp8_staging_.at<T>(0);
  }

  // y [rows, w.rows] (row stride ldy) = x [rows, w.cols] (row stride ldx) · W^T, W [out, in] row-major
  // in T (cuBLASLt), quantized (CudaQuantLinear) or fp8 (x converted to E4M3 first, then cuBLASLt).
  void linear(const T* x, int ldx, int rows, const CudaMatrix<T>& w, void* y, int ldy, cudaDataType_t y_type) {
    if (w.fp8) {
      Carve carve;
      const std::size_t scale_at = carve.take(2 * sizeof(float));
      const std::size_t x8_at = carve.take(static_cast<std::size_t>(rows) * w.cols);
      fp8_inputs_.reserve(carve.total(), stream_, device_);
      float* x_scale = fp8_inputs_.at<float>(scale_at);
      uint8_t* x8 = fp8_inputs_.at<uint8_t>(x8_at);
      cuda::fp8_quantize<T>(x, rows, w.cols, ldx, x_scale, x8, stream_);
      gemm_->linear_fp8(x8, rows, w.cols, w.fp8, w.rows, x_scale + 1, w.fp8_scale + 1, y, ldy, y_type);
    } else if (w.quantized)
      quant_->linear(x, ldx, rows, w.quant, y, ldy, TypeInfo<T>::kCuda, y_type);
    else
      gemm_->linear(x, ldx, rows, w.cols, w.plain, w.rows, y, ldy, TypeInfo<T>::kCuda, y_type);
  }

  // Packs the step's int32 metadata into meta_: tokens, positions, per-token block-table offsets
  // [n_tok each]; logit rows [n_rows]; prefill tiles (begin, count) [n_tiles each]; decode tokens
  // [n_decode]; the concatenated block tables.
  void build_metadata(const StepBatch& batch) {
    tokens_.clear(); pos_.clear(); bt_off_.clear(); rows_.clear();
    tile_begin_.clear(); tile_count_.clear(); decode_.clear(); tables_.clear();
    max_decode_pos_ = 0;
    for (const auto& seq : batch.seqs) {
      const int first = static_cast<int>(tokens_.size());
      const int n = static_cast<int>(seq.tokens.size());
      const int table_at = static_cast<int>(tables_.size());
      tables_.insert(tables_.end(), seq.block_table.begin(), seq.block_table.end());
      for (int i = 0; i < n; ++i) {
        tokens_.push_back(seq.tokens[i]);
        pos_.push_back(seq.start_pos + i);
        bt_off_.push_back(table_at);
      }
      for (int i = seq.all_logits ? 0 : n - 1; i < n; ++i) rows_.push_back(first + i);
      if (n == 1) {
        decode_.push_back(first);
        max_decode_pos_ = std::max(max_decode_pos_, seq.start_pos);
      } else {
        for (int i = 0; i < n; i += cuda::kPrefillTileQ) {
          tile_begin_.push_back(first + i);
          tile_count_.push_back(std::min(cuda::kPrefillTileQ, n - i));
        }
      }
    }
    n_tok_ = static_cast<int>(tokens_.size());
    n_rows_ = static_cast<int>(rows_.size());
    n_tiles_ = static_cast<int>(tile_begin_.size());
    n_decode_ = static_cast<int>(decode_.size());
    meta_.clear();
    auto append = [&](const std::vector<int32_t>& part) {
      const std::size_t at = meta_.size();
      meta_.insert(meta_.end(), part.begin(), part.end());
      return at;
    };
    off_tokens_ = append(tokens_);
    off_pos_ = append(pos_);
    off_bt_off_ = append(bt_off_);
    off_rows_ = append(rows_);
    off_tile_begin_ = append(tile_begin_);
    off_tile_count_ = append(tile_count_);
    off_decode_ = append(decode_);
    off_tables_ = append(tables_);
  }

  // Carves the device workspace (grown, never shrunk) and the pinned metadata buffer for this step.
  void ensure_workspace(int n_tok, int rows) {
    const std::size_t tok = static_cast<std::size_t>(n_tok), r = static_cast<std::size_t>(rows);
    Carve carve;
    const std::size_t x_at = carve.take(tok * E_ * sizeof(float));
    const std::size_t h_at = carve.take(tok * E_ * sizeof(T));
    const std::size_t qkvf_at = carve.take(tok * n_in_ * sizeof(T));
    const std::size_t partial_at = carve.take(tok * E_ * sizeof(T));
    const std::size_t hf_at = carve.take(r * E_ * sizeof(T));
    const std::size_t logits_at = carve.take(r * vocab_rows_ * sizeof(float));
    const std::size_t meta_at = carve.take(meta_.size() * sizeof(int32_t));
    const std::size_t partials_at =
        carve.take(decode_split_.splits > 1 ? static_cast<std::size_t>(n_decode_) * heads_l_ * decode_split_.splits *
                                                  (head_dim_ + 2) * sizeof(float)
                                            : 0);
    workspace_.reserve(carve.total(), stream_, device_);
    pinned_meta_.reserve(meta_.size() * sizeof(int32_t), stream_, device_);
    d_x_ = workspace_.at<float>(x_at);
    d_h_ = workspace_.at<T>(h_at);
    d_qkvf_ = workspace_.at<T>(qkvf_at);
    d_partial_ = workspace_.at<T>(partial_at);
    d_hf_ = workspace_.at<T>(hf_at);
    d_logits_ = workspace_.at<float>(logits_at);
    d_meta_ = workspace_.at<int32_t>(meta_at);
    decode_split_.partials = decode_split_.splits > 1 ? workspace_.at<float>(partials_at) : nullptr;
  }

  GptjConfig config_;
  BackendOptions options_;
  int device_ = 0;
  int E_ = 0, El_ = 0, Il_ = 0, heads_l_ = 0, head_dim_ = 0, n_in_ = 0;
  int64_t vocab_rows_ = 0;
  int64_t weight_bytes_ = 0;
  std::size_t allocated_bytes_ = 0;

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CudaGemm> gemm_;
  std::unique_ptr<CudaQuantLinear> quant_;  // uses gemm_: declared after it, destroyed before it
#ifdef GPTJ_WITH_NCCL
  std::unique_ptr<NcclCommunicator> nccl_;
#endif
  uint64_t all_reduce_calls_ = 0;

  std::vector<void*> allocations_;  // weights and KV caches, freed in the destructor
  T* wte_ = nullptr;                // [V, E]
  std::vector<CudaLayer<T>> layers_;
  float* ln_f_gamma_ = nullptr;     // [E]
  float* ln_f_beta_ = nullptr;      // [E]
  CudaMatrix<T> lm_head_;           // [vocab_rows, E]
  float* lm_bias_ = nullptr;        // [vocab_rows]
  std::vector<uint8_t> staging_;    // host conversion buffer (construction only)
  WeightOptions read_weights_;      // what the shard is read as (fp8: as stored, converted on the GPU)
  CudaGrowBuffer fp8_staging_{CudaGrowBuffer::Kind::kDevice, "fp8 conversion staging"};  // construction only
  CudaGrowBuffer fp8_inputs_{CudaGrowBuffer::Kind::kDevice, "fp8 inputs"};  // a product's E4M3 x and scale

  // Step workspace (device), carved by ensure_workspace.
  CudaGrowBuffer workspace_{CudaGrowBuffer::Kind::kDevice, "step workspace"};
  float* d_x_ = nullptr;      // [n_tok, E] residual stream, float32
  T* d_h_ = nullptr;          // [n_tok, E] ln_1 output
  T* d_qkvf_ = nullptr;       // [n_tok, 3 El + Il]
  T* d_partial_ = nullptr;    // [n_tok, E] this rank's partial sum, all-reduced in place
  T* d_hf_ = nullptr;         // [rows, E] ln_f output of the logit rows
  float* d_logits_ = nullptr; // [rows, vocab_rows], valid until the next forward()
  int logit_rows_ = 0;
  int32_t* d_meta_ = nullptr;
  CudaGrowBuffer pinned_meta_{CudaGrowBuffer::Kind::kPinnedHost, "step metadata"};
  CudaGrowBuffer pinned_rows_{CudaGrowBuffer::Kind::kPinnedHost, "fetched logit rows"};
  // Draw summaries: device [params | edits | sort scratch | summaries], pinned [params | edits | summaries].
  CudaGrowBuffer draw_workspace_{CudaGrowBuffer::Kind::kDevice, "draw summaries"};
  CudaGrowBuffer pinned_draws_{CudaGrowBuffer::Kind::kPinnedHost, "draw summaries"};
  std::vector<cuda::DeviceDrawParams> draw_params_;
  // Threshold search: where the last summarize_draws() left its keys and params, for how many draws.
  std::size_t keys_offset_ = 0, params_offset_ = 0;
  int summarized_draws_ = 0;
  CudaGrowBuffer search_workspace_{CudaGrowBuffer::Kind::kDevice, "threshold search"};
  CudaGrowBuffer pinned_search_{CudaGrowBuffer::Kind::kPinnedHost, "threshold search"};
  std::vector<LogitEdit> draw_edits_;

  // Step metadata (host).
  std::vector<int32_t> tokens_, pos_, bt_off_, rows_, tile_begin_, tile_count_, decode_, tables_, meta_;
  int n_tok_ = 0, n_rows_ = 0, n_tiles_ = 0, n_decode_ = 0, max_decode_pos_ = 0;
  int sm_count_ = 1;
  cuda::DecodeSplit decode_split_;  // this step's flash-decoding split (partials in the workspace)
  std::size_t off_tokens_ = 0, off_pos_ = 0, off_bt_off_ = 0, off_rows_ = 0, off_tile_begin_ = 0,
              off_tile_count_ = 0, off_decode_ = 0, off_tables_ = 0;
};

}  // namespace

bool cuda_device_available(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    if (why)
      *why = fmt::format("no CUDA device (cudaGetDeviceCount: error {} {}: {})", static_cast<int>(err),
                         cudaGetErrorName(err), cudaGetErrorString(err));
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device (cudaGetDeviceCount: 0 devices)";
    return false;
  }
  return true;
}

std::unique_ptr<Backend> make_cuda_backend(const GptjConfig& config, const Checkpoint* checkpoint,
                                           uint64_t seed, const BackendOptions& options,
                                           Communicator& host_comm, int local_rank) {
  const TpPosition tp = options.tp;
  GPTJ_CHECK(tp.size >= 1 && tp.rank >= 0 && tp.rank < tp.size, "bad TP position {}/{}", tp.rank,
             tp.size);
  GPTJ_CHECK(host_comm.size() == tp.size, "CUDA backend: TP size {} but the communicator has {} ranks",
             tp.size, host_comm.size());
  shard_geometry(config, tp);  // the TP checks every backend shares
  if (options.weights.format == WeightFormat::kFp8) {
    const ShardGeometry g = shard_geometry(config, tp);
    GPTJ_CHECK(g.E % 16 == 0 && g.n_mid % 16 == 0,
               "--weights fp8 needs n_embd and the shard's n_embd / tp + n_inner / tp to be multiples of 16 "
               "(cuBLASLt FP8); got {} and {}",
               g.E, g.n_mid);
  }
  GPTJ_CHECK(config.head_dim() <= cuda::kMaxHeadDim,
             "CUDA backend: head_dim {} above the supported {}", config.head_dim(), cuda::kMaxHeadDim);
  GPTJ_CHECK(config.rotary_dim % 2 == 0 && config.rotary_dim <= config.head_dim(),
             "rotary_dim {} must be even and at most head_dim {}", config.rotary_dim, config.head_dim());
  GPTJ_CHECK(options.kv.num_blocks > 0 && options.kv.block_size > 0, "bad KV cache shape {} x {}",
             options.kv.num_blocks, options.kv.block_size);
  std::string why;
  GPTJ_CHECK(cuda_device_available(&why), "rank {}: CUDA backend requested but {}", tp.rank, why);
  int count = 0;
  GPTJ_CUDA_CHECK(cudaGetDeviceCount(&count));
  GPTJ_CHECK(local_rank >= 0 && local_rank < count,
             "rank {}: local rank {} needs GPU {}, but this node has only {} visible GPU(s): run at "
             "most {} ranks per node",
             tp.rank, local_rank, local_rank, count, count);
  if (options.weights.format == WeightFormat::kFp8) {
    int major = 0, minor = 0;
    GPTJ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, local_rank));
    GPTJ_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, local_rank));
    GPTJ_CHECK(major * 10 + minor >= 89,
               "--weights fp8 needs a GPU of compute capability 8.9 or newer (FP8 tensor cores); GPU {} is {}.{}: "
               "use --weights int8 or int4",
               local_rank, major, minor);
  }
  const std::string& dtype = options.compute_dtype;
  if (dtype == "float16" || dtype == "fp16")
    return std::make_unique<CudaBackend<__half>>(config, checkpoint, seed, options, host_comm,
                                                 local_rank);
  if (dtype == "bfloat16" || dtype == "bf16")
    return std::make_unique<CudaBackend<__nv_bfloat16>>(config, checkpoint, seed, options, host_comm,
                                                        local_rank);
  if (dtype == "float32" || dtype == "fp32")
    return std::make_unique<CudaBackend<float>>(config, checkpoint, seed, options, host_comm,
                                                local_rank);
  fail("CUDA backend: unknown --dtype '{}' (float16, bfloat16 or float32)", dtype);
}

}  // namespace gptj
