// One TP rank's shard of GPT-J, described once for every backend (CPU keeps these host matrices,
// CUDA uploads them): the shard's sizes, the order of the fused matrices, and reading them from a
// checkpoint in the format a run asks for (--weights).
//
// Per layer the four column-parallel projections that read ln_1's output are ONE matrix and the two
// row-parallel ones another, so a layer is two GEMMs and one all-reduce. Sizes (El = E / tp,
// Il = I / tp, Nin = 3 El + Il, Nmid = El + Il):
//   w_in  [Nin, E]   rows  [ q (El) | k (El) | v (El) | fc_in (Il) ]: its output row per token has
//                    those columns at q_col, k_col, v_col, fc_col
//   w_out [E, Nmid]  each row = [ out_proj shard row | fc_out shard row ]
// Once k and v are in the KV cache, attention writes its output over the v columns, so
// [ attn_out | gelu(fc_in) ] (columns v_col .. Nin) is one contiguous Nmid block feeding w_out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/sharding.h"
#include "runtime/core/quant.h"
#include "runtime/model/config.h"

namespace gptj {

class Checkpoint;

struct ShardGeometry {
  int E = 0, El = 0, Il = 0, heads_l = 0, head_dim = 0;
  int n_in = 0;   // 3 El + Il: width of w_in's output
  int n_mid = 0;  // El + Il: width of w_out's input
  int64_t vocab_rows = 0;   // ceil(V / tp), padding rows included
  int64_t vocab_begin = 0;  // first vocabulary id of this rank's lm_head rows
  int q_col() const { return 0; }
  int k_col() const { return El; }
  int v_col() const { return 2 * El; }
  int fc_col() const { return 3 * El; }
};

// Throws when tp does not divide n_head or n_inner.
ShardGeometry shard_geometry(const GptjConfig& config, TpPosition tp);

// How a run holds its weights: --weights (the layers' fused matrices) and whether lm_head is
// quantized too (off by default, as TensorRT-LLM's weight-only modes do).
struct WeightOptions {
  WeightFormat format = WeightFormat::kStored;
  bool quantize_lm_head = false;
  // int8 only, CPU only, opt-in: the products quantize their input rows to int8 too (per-row
  // scale) and run exact int8 x int8 sums (kernels/cpu/linear_w8a8.cc).
  bool int8_activations = false;
  // CPU only, opt-in (--dtype bfloat16 on the CPU backend, which sets it; with kStored only): every
  // matrix is held in bfloat16 (a float32 or float16 checkpoint's matrices are rounded to nearest even
  // at load — float16's 10 significand bits become bfloat16's 7), and the products round their input
  // rows to bfloat16 too (cpu::WeightRef::bf16_products). Layernorms, biases, the KV cache: float32.
  bool bf16_products = false;
};

// Host copies of one layer's shard. Matrices in the checkpoint's dtype or quantized; vectors float32.
struct LayerShard {
  std::vector<float> ln_gamma, ln_beta;  // [E]
  WeightMatrix w_in;                     // [Nin, E]
  std::vector<float> b_fc_in;            // [Il]
  WeightMatrix w_out;                    // [E, Nmid]
  std::vector<float> b_fc_out;           // [E] (replicated; added once after the all-reduce)
};
LayerShard read_layer_shard(const Checkpoint& checkpoint, const GptjConfig& config, TpPosition tp, int layer,
                            const WeightOptions& weights);

struct HeadShard {
  std::vector<float> ln_f_gamma, ln_f_beta;  // [E]
  WeightMatrix lm_head;                      // [vocab_rows, E]; rows past V are zeros
  std::vector<float> lm_bias;                // [vocab_rows]
};
HeadShard read_head_shard(const Checkpoint& checkpoint, const GptjConfig& config, TpPosition tp,
                          const WeightOptions& weights);

// "int8 (lm_head float16)", "float16", ...: what the reports print for a shard's formats.
std::string describe_weights(const LayerShard& layer, const HeadShard& head);

}  // namespace gptj
