#include "runtime/cpu_model.h"

#include <algorithm>

#include "kernels/check.h"
#include "kernels/cpu/gemm_invariant.h"
#include "kernels/cpu/ops.h"
#include "runtime/rope.h"

namespace cllm {

CpuModel::CpuModel(const ModelConfig& cfg, ModelWeights weights)
    : cfg_(cfg), w_(std::move(weights)), inv_freq_(rope_inv_freq(cfg)) {}

void CpuModel::reset(int max_tokens) {
  CLLM_CHECK(max_tokens > 0, "KV capacity must be positive, got " << max_tokens);
  const size_t row = static_cast<size_t>(cfg_.kv_dim());
  if (max_tokens > capacity_) {
    k_.assign(cfg_.num_layers, std::vector<float>(row * max_tokens));
    v_.assign(cfg_.num_layers, std::vector<float>(row * max_tokens));
    capacity_ = max_tokens;
  }
}

double CpuModel::step_bytes(int context) const {
  return static_cast<double>(w_.bytes()) + 2.0 * cfg_.num_layers * context * cfg_.kv_dim() * sizeof(float);
}

void CpuModel::grow_scratch(int n) {
  const size_t sn = static_cast<size_t>(n);
  if (x_.size() >= sn * cfg_.hidden_size) return;
  x_.resize(sn * cfg_.hidden_size);
  h_.resize(sn * cfg_.hidden_size);
  q_.resize(sn * std::max(cfg_.q_dim(), cfg_.hidden_size));
  att_.resize(sn * cfg_.q_dim());
  gate_.resize(sn * cfg_.intermediate_size);
  up_.resize(sn * cfg_.intermediate_size);
  logits_.resize(sn * cfg_.vocab_size);
  positions_.resize(sn);
}

void CpuModel::linear(const float* x, const float* w, float* y, int n, int out, int in) const {
  if (n <= kInvariantMaxTokens)
    cpu::matmul_wt_invariant(x, w, y, n, out, in);
  else
    cpu::matmul_wt(x, w, y, n, out, in);
}

void CpuModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  CLLM_CHECK(n > 0 && pos >= 0, "forward needs n > 0 and pos >= 0, got n=" << n << " pos=" << pos);
  CLLM_CHECK(pos + n <= capacity_, "forward of " << n << " tokens at position " << pos
                                                 << " exceeds the KV capacity " << capacity_);
  for (int i = 0; i < n; ++i)
    CLLM_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.vocab_size,
               "token id " << tokens[i] << " outside the vocabulary [0, " << cfg_.vocab_size << ")");
  grow_scratch(n);
  const int d = cfg_.hidden_size, qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), f = cfg_.intermediate_size;
  const size_t kv_off = static_cast<size_t>(pos) * kvd;  // this block's first cache row
  for (int i = 0; i < n; ++i) positions_[i] = pos + i;

  float* x = x_.data();  // residual stream [n, d]
  float* h = h_.data();
  cpu::embedding(w_.embed.data(), tokens, x, n, d);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LayerWeights& L = w_.layers[l];
    float* kc = k_[l].data();
    float* vc = v_[l].data();
    // Attention: q, k, v projections; k and v go straight into the cache rows of this block.
    cpu::rmsnorm(x, L.attn_norm.data(), h, n, d, cfg_.rms_norm_eps);
    linear(h, L.wq.data(), q_.data(), n, qd, d);
    linear(h, L.wk.data(), kc + kv_off, n, kvd, d);
    linear(h, L.wv.data(), vc + kv_off, n, kvd, d);
    cpu::rope(q_.data(), positions_.data(), n, cfg_.num_heads, cfg_.head_dim, inv_freq_.data());
    cpu::rope(kc + kv_off, positions_.data(), n, cfg_.num_kv_heads, cfg_.head_dim, inv_freq_.data());
    cpu::block_attention(q_.data(), kc, vc, att_.data(), n, pos, cfg_.num_heads, cfg_.num_kv_heads, cfg_.head_dim);
    linear(att_.data(), L.wo.data(), h, n, d, qd);
    cpu::add_inplace(x, h, static_cast<size_t>(n) * d);
    // SwiGLU MLP.
    cpu::rmsnorm(x, L.ffn_norm.data(), h, n, d, cfg_.rms_norm_eps);
    linear(h, L.w_gate.data(), gate_.data(), n, f, d);
    linear(h, L.w_up.data(), up_.data(), n, f, d);
    cpu::silu_mul(gate_.data(), up_.data(), gate_.data(), static_cast<size_t>(n) * f);
    linear(gate_.data(), L.w_down.data(), h, n, d, f);
    cpu::add_inplace(x, h, static_cast<size_t>(n) * d);
  }
  cpu::rmsnorm(x, w_.final_norm.data(), h, n, d, cfg_.rms_norm_eps);
  float* out = logits ? logits : logits_.data();
  const int V = cfg_.vocab_size;
  linear(h, w_.head(), out, n, V, d);
  for (int i = 0; i < n; ++i) out_ids[i] = cpu::argmax(out + static_cast<size_t>(i) * V, V);
}

}  // namespace cllm
