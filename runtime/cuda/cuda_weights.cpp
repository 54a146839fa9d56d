#include "runtime/cuda/cuda_weights.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/check.h"
#include "core/tensor_manifest.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/bf16_host.h"

namespace cllm::cuda {
namespace {

constexpr size_t kBf16 = 2;                     // bytes per bf16 element
constexpr size_t kStageFloats = size_t{16} << 20;  // 64 MiB of fp32 staged per slice

// Streams tensors from the checkpoint to the device through one fp32 host slice and one pinned
// bf16 slice, both kStageFloats elements: host memory stays bounded whatever the tensor size.
class DeviceLoader {
 public:
  DeviceLoader(const CheckpointReader& ckpt, const LoadProgress& progress, double total_bytes)
      : ckpt_(ckpt), progress_(progress), total_(total_bytes), f32_(kStageFloats), bf16_(kStageFloats * kBf16) {}

  // Writes this rank's slice of t (full shape [rows] or [rows, cols]) as contiguous bf16 rows at
  // dst: rows [row_begin, row_end) x columns [col_begin, col_end) of a 2-D tensor.
  void load(const TensorSpec& t, __nv_bfloat16* dst) {
    check_shape(ckpt_, t);
    const std::string& name = t.name;
    const std::vector<int64_t>& expected = t.shape;
    const TensorRange range = slice_range(t);
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
}

DeviceWeights load_device_weights(const CheckpointReader& ckpt, const LoadProgress& progress) {
  return load_device_weights(ckpt, ShardPlan::whole(ckpt.config()), progress);
}

DeviceWeights load_device_weights(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress) {
  const ModelConfig& c = ckpt.config();
  check_cuda_supported(c, plan, ckpt.source());
  const TensorManifest m = make_tensor_manifest(c, plan);
  DeviceLoader load(ckpt, progress, static_cast<double>(m.bytes(kBf16)));
  auto bf16 = [](DeviceBuffer& b) { return b.as<__nv_bfloat16>(); };

  DeviceWeights w;
  w.embed = alloc_bf16(m.embed.local_elements());
  load.load(m.embed, bf16(w.embed));
  w.layers.resize(m.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerTensors& t = m.layers[i];
    DeviceLayer& l = w.layers[i];
    const int64_t q = t.wq.local_elements(), kv = t.wk.local_elements(), f = t.w_gate.local_elements();
    l.attn_norm = alloc_bf16(t.attn_norm.local_elements());
    load.load(t.attn_norm, bf16(l.attn_norm));
    l.wqkv = alloc_bf16(q + 2 * kv);
    load.load(t.wq, bf16(l.wqkv));
    load.load(t.wk, bf16(l.wqkv) + q);
    load.load(t.wv, bf16(l.wqkv) + q + kv);
    l.wo = alloc_bf16(t.wo.local_elements());
    load.load(t.wo, bf16(l.wo));
    l.ffn_norm = alloc_bf16(t.ffn_norm.local_elements());
    load.load(t.ffn_norm, bf16(l.ffn_norm));
    l.wgu = alloc_bf16(2 * f);
    load.load(t.w_gate, bf16(l.wgu));
    load.load(t.w_up, bf16(l.wgu) + f);
    l.wdown = alloc_bf16(t.w_down.local_elements());
    load.load(t.w_down, bf16(l.wdown));
  }
  w.final_norm = alloc_bf16(m.final_norm.local_elements());
  load.load(m.final_norm, bf16(w.final_norm));
  if (m.has_lm_head()) {
    w.lm_head = alloc_bf16(m.lm_head.local_elements());
    load.load(m.lm_head, bf16(w.lm_head));
  }
  return w;
}

}  // namespace cllm::cuda
