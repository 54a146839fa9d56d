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

  // Writes tensor `name` (shape `expected`, [rows] or [rows, cols]) as bf16 rows at dst.
  void load(const std::string& name, const std::vector<int64_t>& expected, __nv_bfloat16* dst) {
    const std::vector<int64_t> actual = ckpt_.shape(name);
    CLLM_CHECK(actual == expected, ckpt_.source() << ": tensor " << name << " has shape " << shape_str(actual)
                                                  << ", config implies " << shape_str(expected));
    const int64_t rows = expected[0], cols = expected.size() > 1 ? expected[1] : 1;
    CLLM_CHECK(static_cast<size_t>(cols) <= kStageFloats,
               ckpt_.source() << ": tensor " << name << " has rows of " << cols << " values, more than the "
                              << kStageFloats << "-value load slice");
    // A 1-D tensor is one row of `rows` elements for read_f32's range; it fits one slice.
    const int64_t slice_rows = expected.size() > 1 ? std::max<int64_t>(1, kStageFloats / cols) : rows;
    uint16_t* staged = bf16_.as<uint16_t>();
    for (int64_t r0 = 0; r0 < rows; r0 += slice_rows) {
      const int64_t r1 = std::min(rows, r0 + slice_rows);
      const size_t count = static_cast<size_t>(r1 - r0) * cols;
      ckpt_.read_f32(name, TensorRange{r0, r1, 0, -1}, f32_.data());
      cpu::parallel_for_range(count, size_t{1} << 16, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) staged[i] = float_to_bf16_bits(f32_[i]);
      });
      CLLM_CUDA_CHECK(cudaMemcpy(dst + static_cast<size_t>(r0) * cols, staged, count * kBf16, cudaMemcpyHostToDevice));
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

// bf16 bytes of all weights, for load progress.
double total_bf16_bytes(const ModelConfig& c) {
  const double d = c.hidden_size;
  const double per_layer = 2 * d + d * c.q_dim() * 2 + 2.0 * d * c.kv_dim() + 3.0 * d * c.intermediate_size;
  const double emb = static_cast<double>(c.vocab_size) * d * (c.tie_word_embeddings ? 1 : 2);
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

void check_cuda_supported(const ModelConfig& c, const std::string& source) {
  CLLM_CHECK(c.head_dim == 64 || c.head_dim == 128,
             source << ": head_dim " << c.head_dim << " is not supported by the CUDA attention (64 or 128)");
  CLLM_CHECK(c.hidden_size % 8 == 0,
             source << ": hidden_size " << c.hidden_size << " must be a multiple of 8 for the CUDA kernels");
  CLLM_CHECK(c.intermediate_size % 8 == 0,
             source << ": intermediate_size " << c.intermediate_size << " must be a multiple of 8 for the CUDA kernels");
}

DeviceWeights load_device_weights(const CheckpointReader& ckpt, const LoadProgress& progress) {
  const ModelConfig& c = ckpt.config();
  check_cuda_supported(c, ckpt.source());
  const int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size, V = c.vocab_size;
  DeviceLoader load(ckpt, progress, total_bf16_bytes(c));
  auto bf16 = [](DeviceBuffer& b) { return b.as<__nv_bfloat16>(); };

  DeviceWeights w;
  w.embed = alloc_bf16(V * d);
  load.load("model.embed_tokens.weight", {V, d}, bf16(w.embed));
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    DeviceLayer& l = w.layers[i];
    l.attn_norm = alloc_bf16(d);
    load.load(p + "input_layernorm.weight", {d}, bf16(l.attn_norm));
    l.wqkv = alloc_bf16((q + 2 * kv) * d);
    load.load(p + "self_attn.q_proj.weight", {q, d}, bf16(l.wqkv));
    load.load(p + "self_attn.k_proj.weight", {kv, d}, bf16(l.wqkv) + q * d);
    load.load(p + "self_attn.v_proj.weight", {kv, d}, bf16(l.wqkv) + (q + kv) * d);
    l.wo = alloc_bf16(d * q);
    load.load(p + "self_attn.o_proj.weight", {d, q}, bf16(l.wo));
    l.ffn_norm = alloc_bf16(d);
    load.load(p + "post_attention_layernorm.weight", {d}, bf16(l.ffn_norm));
    l.wgu = alloc_bf16(2 * f * d);
    load.load(p + "mlp.gate_proj.weight", {f, d}, bf16(l.wgu));
    load.load(p + "mlp.up_proj.weight", {f, d}, bf16(l.wgu) + f * d);
    l.wdown = alloc_bf16(d * f);
    load.load(p + "mlp.down_proj.weight", {d, f}, bf16(l.wdown));
  }
  w.final_norm = alloc_bf16(d);
  load.load("model.norm.weight", {d}, bf16(w.final_norm));
  if (!c.tie_word_embeddings) {
    w.lm_head = alloc_bf16(V * d);
    load.load("lm_head.weight", {V, d}, bf16(w.lm_head));
  }
  return w;
}

}  // namespace cllm::cuda
