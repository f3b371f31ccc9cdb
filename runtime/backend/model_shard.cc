#include "runtime/backend/model_shard.h"

#include <cmath>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace gptj {

ShardGeometry shard_geometry(const GptjConfig& config, TpPosition tp) {
  GPTJ_CHECK(tp.size >= 1 && tp.rank >= 0 && tp.rank < tp.size, "bad TP position {}/{}", tp.rank, tp.size);
  GPTJ_CHECK(config.n_head % tp.size == 0, "tensor-parallel size {} does not divide n_head {} of the model",
             tp.size, config.n_head);
  GPTJ_CHECK(config.n_inner % tp.size == 0, "tensor-parallel size {} does not divide n_inner {}", tp.size,
             config.n_inner);
  ShardGeometry g;
  g.E = config.n_embd;
  g.El = g.E / tp.size;
  g.Il = config.n_inner / tp.size;
  g.heads_l = config.n_head / tp.size;
  g.head_dim = config.head_dim();
  g.n_in = 3 * g.El + g.Il;
  g.n_mid = g.El + g.Il;
  g.vocab_rows = vocab_shard_rows(config.vocab_size, tp.size);
  g.vocab_begin = tp.rank * g.vocab_rows;
  return g;
}

namespace {

// Throws naming the tensor and the element's position in it when `m` (the slice starting at
// `slice`) holds a NaN or an infinity: quantizing one would poison its whole row or group.
void check_finite(const HostMatrix& m, const std::string& name, const Slice& slice) {
  std::vector<float> row(static_cast<std::size_t>(m.cols()));
  for (int64_t r = 0; r < m.rows(); ++r) {
    convert_to_f32(m.dtype(), m.row(r), row.data(), row.size());
    for (std::size_t c = 0; c < row.size(); ++c)
      GPTJ_CHECK(std::isfinite(row[c]), "{}: weight [{}, {}] is {}; cannot quantize a non-finite weight", name,
                 slice.row_begin + r, slice.col_begin + static_cast<int64_t>(c), row[c]);
  }
}

// This rank's slice of tensor `name`, in the stored dtype; checked finite when it will be quantized.
HostMatrix read_slice(const Checkpoint& ck, const std::string& name, const std::vector<int64_t>& shape, TpPosition tp,
                      WeightFormat format = WeightFormat::kStored) {
  const Slice slice = shard_slice(name, shape, tp).slice;
  HostMatrix m = ck.read_matrix(name, shape, slice);
  if (format != WeightFormat::kStored) check_finite(m, name, slice);
  return m;
}
std::vector<float> read_vector(const Checkpoint& ck, const std::string& name, int64_t n, TpPosition tp) {
  return ck.read_f32(name, {n}, shard_slice(name, {n}, tp).slice);
}

// WeightOptions::bf16_products: `m` in bfloat16 (already bfloat16: as it is; else rounded to nearest even).
HostMatrix held_as(HostMatrix m, const WeightOptions& weights) {
  if (!weights.bf16_products || m.dtype() == DType::kBF16) return m;
  const HostMatrix wide = m.dtype() == DType::kF32 ? std::move(m) : m.to_f32();
  HostMatrix out(DType::kBF16, wide.rows(), wide.cols());
  convert_from_f32(DType::kBF16, static_cast<const float*>(wide.data()), out.data(),
                   static_cast<std::size_t>(wide.rows() * wide.cols()));
  return out;
}

}  // namespace

LayerShard read_layer_shard(const Checkpoint& ck, const GptjConfig& config, TpPosition tp, int layer,
                            const WeightOptions& weights) {
  const int64_t E = config.n_embd, I = config.n_inner;
  const std::string p = "transformer.h." + std::to_string(layer) + ".";
  LayerShard out;
  out.ln_gamma = read_vector(ck, p + "ln_1.weight", E, tp);
  out.ln_beta = read_vector(ck, p + "ln_1.bias", E, tp);
  const WeightFormat f = weights.format;
  HostMatrix w_in = HostMatrix::stack_rows({read_slice(ck, p + "attn.q_proj.weight", {E, E}, tp, f),
                                            read_slice(ck, p + "attn.k_proj.weight", {E, E}, tp, f),
                                            read_slice(ck, p + "attn.v_proj.weight", {E, E}, tp, f),
                                            read_slice(ck, p + "mlp.fc_in.weight", {I, E}, tp, f)});
  out.w_in = WeightMatrix::make(held_as(std::move(w_in), weights), weights.format, p + "{q,k,v}_proj/fc_in (fused)");
  out.b_fc_in = read_vector(ck, p + "mlp.fc_in.bias", I, tp);
  HostMatrix w_out = HostMatrix::stack_cols({read_slice(ck, p + "attn.out_proj.weight", {E, E}, tp, f),
                                             read_slice(ck, p + "mlp.fc_out.weight", {E, I}, tp, f)});
  out.w_out = WeightMatrix::make(held_as(std::move(w_out), weights), weights.format, p + "out_proj/fc_out (fused)");
  out.b_fc_out = read_vector(ck, p + "mlp.fc_out.bias", E, tp);
  return out;
}

HeadShard read_head_shard(const Checkpoint& ck, const GptjConfig& config, TpPosition tp,
                          const WeightOptions& weights) {
  const int64_t E = config.n_embd, V = config.vocab_size;
  HeadShard out;
  out.ln_f_gamma = read_vector(ck, "transformer.ln_f.weight", E, tp);
  out.ln_f_beta = read_vector(ck, "transformer.ln_f.bias", E, tp);
  const WeightFormat format = weights.quantize_lm_head ? weights.format : WeightFormat::kStored;
  out.lm_head =
      WeightMatrix::make(held_as(read_slice(ck, "lm_head.weight", {V, E}, tp, format), weights), format, "lm_head.weight");
  out.lm_bias = read_vector(ck, "lm_head.bias", V, tp);
  return out;
}

std::string describe_weights(const LayerShard& layer, const HeadShard& head) {
  const std::string layers = layer.w_in.format_name(), lm = head.lm_head.format_name();
  return layers == lm ? layers : layers + " (lm_head " + lm + ")";
}

}  // namespace gptj
