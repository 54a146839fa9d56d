#include "runtime/cuda/cuda_weights.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/check.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/bf16_host.h"

namespace cllm::cuda {
namespace {

constexpr size_t kBf16 = 2;                     // bytes per bf16 element
constexpr size_t kStageFloats = size_t{16} << 20;  // 64 MiB of fp32 staged per slice

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Streams tensors from the checkpoint to the device through one fp32 host slice and one pinned
// bf16 slice, both kStageFloats elements: host memory stays bounded whatever the tensor size.
class DeviceLoader {
 public:
  DeviceLoader(const CheckpointReader& ckpt, const LoadProgress& progress, double total_bytes)
      : ckpt_(ckpt), progress_(progress), total_(total_bytes), f32_(kStageFloats), bf16_(kStageFloats * kBf16) {}

  // Writes `range` of tensor `name` (full shape `expected`, [rows] or [rows, cols]) as contiguous
  // bf16 rows at dst: rows [row_begin, row_end) x columns [col_begin, col_end) of a 2-D tensor
  // (a tensor-parallel slice; the default range is all of it).
  void load(const std::string& name, const std::vector<int64_t>& expected, __nv_bfloat16* dst,
            const TensorRange& range = {}) {
    const std::vector<int64_t> actual = ckpt_.shape(name);
    CLLM_CHECK(actual == expected, ckpt_.source() << ": tensor " << name << " has shape " << shape_str(actual)
                                                  << ", config implies " << shape_str(expected));
    const bool matrix = expected.size() > 1;
    const int64_t row_begin = matrix ? range.row_begin : 0;
    const int64_t row_end = matrix && range.row_end >= 0 ? range.row_end : expected[0];
    const int64_t col_begin = matrix ? range.col_begin : 0;
    const int64_t col_end = matrix ? (range.col_end >= 0 ? range.col_end : expected[1]) : 1;
    const int64_t cols = col_end - col_begin;
    CLLM_CHECK(static_cast<size_t>(cols) <= kStageFloats,
               ckpt_.source() << ": tensor " << name << " has rows of " << cols << " values, more than the "
                              << kStageFloats << "-value load slice");
    // A 1-D tensor is one row of `rows` elements for read_f32's range; it fits one slice.
    const int64_t slice_rows = matrix ? std::max<int64_t>(1, kStageFloats / cols) : row_end;
    uint16_t* staged = bf16_.as<uint16_t>();
    for (int64_t r0 = row_begin; r0 < row_end; r0 += slice_rows) {
      const int64_t r1 = std::min(row_end, r0 + slice_rows);
      const size_t count = static_cast<size_t>(r1 - r0) * cols;
      // Whole rows keep col_end = -1 (the reader's "to the end"), as before slices existed.
      const bool whole_rows = col_begin == 0 && col_end == (matrix ? expected[1] : 1);
      const TensorRange slice{r0, r1, whole_rows ? 0 : col_begin, whole_rows ? -1 : col_end};
      ckpt_.read_f32(name, slice, f32_.data());
      cpu::parallel_for_range(count, size_t{1} << 16, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) staged[i] = float_to_bf16_bits(f32_[i]);
      });
      CLLM_CUDA_CHECK(cudaMemcpy(dst + static_cast<size_t>(r0 - row_begin) * cols, staged, count * kBf16,
                                 cudaMemcpyHostToDevice));
      done_ += static_cast<double>(count * kBf16);
    }
    if (progress_) progress_(done_, total_, name);
  }

 private:
  const CheckpointReader& ckpt_;
  const LoadProgress& progress_;
  double total_;
  double done_ = 0;
  std::vector<float> f32_;
  PinnedBuffer bf16_;
};

DeviceBuffer alloc_bf16(int64_t elements) { return DeviceBuffer(static_cast<size_t>(elements) * kBf16); }

// bf16 bytes of the slices of plan p, for load progress.
double total_bf16_bytes(const ModelConfig& c, const ShardPlan& p) {
  const double d = c.hidden_size, hd = c.head_dim;
  const double per_layer = 2 * d + 2 * d * p.heads * hd + 2.0 * d * p.kv_heads * hd + 3.0 * d * p.ffn;
  const double emb = static_cast<double>(p.vocab) * d * (c.tie_word_embeddings ? 1 : 2);
  return kBf16 * (per_layer * c.num_layers + emb + d);
}

}  // namespace

double DeviceWeights::step_weight_bytes() const {
  double b = static_cast<double>(final_norm.bytes()) + (lm_head.empty() ? embed.bytes() : lm_head.bytes());
  for (const DeviceLayer& l : layers)
    b += static_cast<double>(l.attn_norm.bytes() + l.wqkv.bytes() + l.wo.bytes() + l.ffn_norm.bytes() +
                             l.wgu.bytes() + l.wdown.bytes());
  return b;
}

void check_cuda_supported(const ModelConfig& c, const ShardPlan& plan, const std::string& source) {
  check_cuda_supported(c, source);
  CLLM_CHECK(plan.ffn % 8 == 0, source << ": the FFN slice of " << plan.ffn << " units (intermediate_size "
                                       << c.intermediate_size << " over " << plan.size
                                       << " ranks) must be a multiple of 8 for the CUDA kernels");
}

void check_cuda_supported(const ModelConfig& c, const std::string& source) {
  CLLM_CHECK(c.head_dim == 64 || c.head_dim == 128,
             source << ": head_dim " << c.head_dim << " is not supported by the CUDA attention (64 or 128)");
  CLLM_CHECK(c.hidden_size % 8 == 0,
             source << ": hidden_size " << c.hidden_size << " must be a multiple of 8 for the CUDA kernels");
  CLLM_CHECK(c.intermediate_size % 8 == 0,
             source << ": intermediate_size " << c.intermediate_size << " must be a multiple of 8 for the CUDA kernels");
  // The CUDA attention has no window yet: it would attend to every position, which differs from
  // the model once a sequence is longer than the window. Refuse unless the window covers every
  // position the model can be used at (max_position_embeddings bounds the context).
  CLLM_CHECK(c.sliding_window == 0 || c.sliding_window >= c.max_position_embeddings,
             source << ": config field 'sliding_window' = " << c.sliding_window << " is smaller than the context it "
                    << "would be used at (max_position_embeddings " << c.max_position_embeddings
                    << "), and the CUDA attention has no sliding window; use --device cpu");
}

DeviceWeights load_device_weights(const CheckpointReader& ckpt, const LoadProgress& progress) {
  return load_device_weights(ckpt, ShardPlan::whole(ckpt.config()), progress);
}

DeviceWeights load_device_weights(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress) {
  const ModelConfig& c = ckpt.config();
  check_cuda_supported(c, plan, ckpt.source());
  const int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size, V = c.vocab_size;
  const int64_t hd = c.head_dim;
  // Column-parallel weights take rows, row-parallel ones take columns (see shard_plan.h).
  const int64_t q0 = plan.head_begin * hd, ql = plan.heads * hd;
  const int64_t kv0 = plan.kv_head_begin * hd, kvl = plan.kv_heads * hd;
  const int64_t f0 = plan.ffn_begin, fl = plan.ffn;
  const int64_t v0 = plan.vocab_begin, vl = plan.vocab;
  const TensorRange q_rows{q0, q0 + ql}, kv_rows{kv0, kv0 + kvl}, ffn_rows{f0, f0 + fl}, vocab_rows{v0, v0 + vl};
  const TensorRange q_cols{0, -1, q0, q0 + ql}, ffn_cols{0, -1, f0, f0 + fl};
  DeviceLoader load(ckpt, progress, total_bf16_bytes(c, plan));
  auto bf16 = [](DeviceBuffer& b) { return b.as<__nv_bfloat16>(); };

  DeviceWeights w;
  w.embed = alloc_bf16(vl * d);
  load.load("model.embed_tokens.weight", {V, d}, bf16(w.embed), vocab_rows);
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    DeviceLayer& l = w.layers[i];
    l.attn_norm = alloc_bf16(d);
    load.load(p + "input_layernorm.weight", {d}, bf16(l.attn_norm));
    l.wqkv = alloc_bf16((ql + 2 * kvl) * d);
    load.load(p + "self_attn.q_proj.weight", {q, d}, bf16(l.wqkv), q_rows);
    load.load(p + "self_attn.k_proj.weight", {kv, d}, bf16(l.wqkv) + ql * d, kv_rows);
    load.load(p + "self_attn.v_proj.weight", {kv, d}, bf16(l.wqkv) + (ql + kvl) * d, kv_rows);
    l.wo = alloc_bf16(d * ql);
    load.load(p + "self_attn.o_proj.weight", {d, q}, bf16(l.wo), q_cols);
    l.ffn_norm = alloc_bf16(d);
    load.load(p + "post_attention_layernorm.weight", {d}, bf16(l.ffn_norm));
    l.wgu = alloc_bf16(2 * fl * d);
    load.load(p + "mlp.gate_proj.weight", {f, d}, bf16(l.wgu), ffn_rows);
    load.load(p + "mlp.up_proj.weight", {f, d}, bf16(l.wgu) + fl * d, ffn_rows);
    l.wdown = alloc_bf16(d * fl);
    load.load(p + "mlp.down_proj.weight", {d, f}, bf16(l.wdown), ffn_cols);
  }
  w.final_norm = alloc_bf16(d);
  load.load("model.norm.weight", {d}, bf16(w.final_norm));
  if (!c.tie_word_embeddings) {
    w.lm_head = alloc_bf16(vl * d);
    load.load("lm_head.weight", {V, d}, bf16(w.lm_head), vocab_rows);
  }
  return w;
}

}  // namespace cllm::cuda
