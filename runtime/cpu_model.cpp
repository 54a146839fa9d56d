#include "runtime/cpu_model.h"

#include <algorithm>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/gemm_invariant.h"
#include "kernels/cpu/ops.h"
#include "runtime/rope.h"

namespace cllm {

CpuModel::CpuModel(const ModelConfig& cfg, ModelWeights weights)
    : CpuModel(cfg, std::move(weights), ShardPlan::whole(cfg), nullptr) {}

CpuModel::CpuModel(const ModelConfig& cfg, ModelWeights weights, const ShardPlan& plan, Comm& comm)
    : CpuModel(cfg, std::move(weights), plan, &comm) {
  CLLM_CHECK(comm.size() == plan.size && comm.rank() == plan.rank,
             "shard plan of rank " << plan.rank << "/" << plan.size << " given to rank " << comm.rank() << "/"
                                   << comm.size());
}

CpuModel::CpuModel(const ModelConfig& cfg, ModelWeights weights, const ShardPlan& plan, Comm* comm)
    : cfg_(cfg),
      w_(std::move(weights)),
      plan_(plan),
      comm_(comm),
      qd_(plan.heads * cfg.head_dim),
      kvd_(plan.kv_heads * cfg.head_dim),
      ffn_(plan.ffn),
      inv_freq_(rope_inv_freq(cfg)) {}

void CpuModel::reset(int max_tokens, int slots) {
  CLLM_CHECK(slots == 1, "CpuModel: one KV slot only for now");
  CLLM_CHECK(max_tokens > 0, "KV capacity must be positive, got " << max_tokens);
  if (max_tokens > capacity_) {
    k_.assign(cfg_.num_layers, std::vector<float>(static_cast<size_t>(kvd_) * max_tokens));
    v_.assign(cfg_.num_layers, std::vector<float>(static_cast<size_t>(kvd_) * max_tokens));
    capacity_ = max_tokens;
  }
}

double CpuModel::step_bytes(int context) const {
  return static_cast<double>(w_.bytes()) + 2.0 * cfg_.num_layers * context * kvd_ * sizeof(float);
}

void CpuModel::grow_scratch(int n) {
  const size_t sn = static_cast<size_t>(n);
  if (x_.size() >= sn * cfg_.hidden_size) return;
  x_.resize(sn * cfg_.hidden_size);
  h_.resize(sn * cfg_.hidden_size);
  q_.resize(sn * qd_);
  att_.resize(sn * qd_);
  gate_.resize(sn * ffn_);
  up_.resize(sn * ffn_);
  logits_.resize(sn * plan_.vocab);
  best_.resize(sn);
  positions_.resize(sn);
}

void CpuModel::linear(const float* x, const float* w, float* y, int n, int out, int in) const {
  if (n <= kInvariantMaxTokens)
    cpu::matmul_wt_invariant(x, w, y, n, out, in);
  else
    cpu::matmul_wt(x, w, y, n, out, in);
}

void CpuModel::all_reduce(float* x, size_t count, const CommPhase& phase) {
  if (comm_) comm_->all_reduce_sum(x, count, phase);
}

void CpuModel::embed(const int32_t* tokens, int n, float* x) {
  const int d = cfg_.hidden_size;
  if (!comm_) {
    cpu::embedding(w_.embed.data(), tokens, x, n, d);
    return;
  }
  // Exactly one rank holds each id and the others add zeros, so the sum is exact.
  for (int i = 0; i < n; ++i) {
    float* row = x + static_cast<size_t>(i) * d;
    const int local = tokens[i] - plan_.vocab_begin;
    if (local >= 0 && local < plan_.vocab)
      std::memcpy(row, w_.embed.data() + static_cast<size_t>(local) * d, d * sizeof(float));
    else
      std::fill(row, row + d, 0.0f);
  }
  all_reduce(x, static_cast<size_t>(n) * d, {"embedding"});
}

void CpuModel::lm_head(const float* h, int n, int32_t* out_ids, float* logits) {
  const int d = cfg_.hidden_size, vs = plan_.vocab;
  float* local = !comm_ && logits ? logits : logits_.data();  // [n, vs]
  linear(h, w_.head(), local, n, vs, d);
  if (!comm_) {
    for (int i = 0; i < n; ++i) out_ids[i] = cpu::argmax(local + static_cast<size_t>(i) * vs, vs);
    return;
  }
  // Local argmax over the shard, then the global (max, lowest id) pair: the same choice as an
  // argmax over the whole row, which takes the lowest index on ties.
  for (int i = 0; i < n; ++i) {
    const float* row = local + static_cast<size_t>(i) * vs;
    const int32_t j = cpu::argmax(row, vs);
    best_[i] = {row[j], plan_.vocab_begin + j};
  }
  comm_->all_reduce_max_loc(best_.data(), n, {"LM-head argmax"});
  for (int i = 0; i < n; ++i) out_ids[i] = best_[i].index;
  if (!logits) return;
  const size_t shard = static_cast<size_t>(n) * vs;
  gathered_.resize(shard * plan_.size);
  comm_->all_gather(local, shard * sizeof(float), gathered_.data(), {"logits gather"});
  for (int r = 0; r < plan_.size; ++r)
    for (int i = 0; i < n; ++i)
      std::memcpy(logits + static_cast<size_t>(i) * cfg_.vocab_size + static_cast<size_t>(r) * vs,
                  gathered_.data() + r * shard + static_cast<size_t>(i) * vs, vs * sizeof(float));
}

void CpuModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  check_forward_args(cfg_, tokens, n, pos, capacity_);
  grow_scratch(n);
  const int d = cfg_.hidden_size, hd = cfg_.head_dim;
  const size_t kv_off = static_cast<size_t>(pos) * kvd_;  // this block's first cache row
  for (int i = 0; i < n; ++i) positions_[i] = pos + i;

  float* x = x_.data();  // residual stream [n, d], replicated on every rank
  float* h = h_.data();
  embed(tokens, n, x);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LayerWeights& L = w_.layers[l];
    float* kc = k_[l].data();
    float* vc = v_[l].data();
    // Attention over this rank's heads: q, k, v projections; k and v go straight into the cache
    // rows of this block. o is row-parallel: h holds a partial sum until the all-reduce.
    cpu::rmsnorm(x, L.attn_norm.data(), h, n, d, cfg_.rms_norm_eps);
    linear(h, L.wq.data(), q_.data(), n, qd_, d);
    linear(h, L.wk.data(), kc + kv_off, n, kvd_, d);
    linear(h, L.wv.data(), vc + kv_off, n, kvd_, d);
    cpu::rope(q_.data(), positions_.data(), n, plan_.heads, hd, inv_freq_.data());
    cpu::rope(kc + kv_off, positions_.data(), n, plan_.kv_heads, hd, inv_freq_.data());
    cpu::block_attention(q_.data(), kc, vc, att_.data(), n, pos, plan_.heads, plan_.kv_heads, hd);
    linear(att_.data(), L.wo.data(), h, n, d, qd_);
    all_reduce(h, static_cast<size_t>(n) * d, {"attention", l});
    cpu::add_inplace(x, h, static_cast<size_t>(n) * d);
    // SwiGLU MLP over this rank's FFN units; down is row-parallel like o.
    cpu::rmsnorm(x, L.ffn_norm.data(), h, n, d, cfg_.rms_norm_eps);
    linear(h, L.w_gate.data(), gate_.data(), n, ffn_, d);
    linear(h, L.w_up.data(), up_.data(), n, ffn_, d);
    cpu::silu_mul(gate_.data(), up_.data(), gate_.data(), static_cast<size_t>(n) * ffn_);
    linear(gate_.data(), L.w_down.data(), h, n, d, ffn_);
    all_reduce(h, static_cast<size_t>(n) * d, {"mlp", l});
    cpu::add_inplace(x, h, static_cast<size_t>(n) * d);
  }
  cpu::rmsnorm(x, w_.final_norm.data(), h, n, d, cfg_.rms_norm_eps);
  lm_head(h, n, out_ids, logits);
}


// Placeholder until the batched forward lands: one block on slot 0 only.
void CpuModel::forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids, float* logits) {
  CLLM_CHECK(count == 1 && blocks[0].slot == 0, "CpuModel: batched forward not implemented yet");
  forward(tokens, blocks[0].n, blocks[0].pos, out_ids, logits);
}

}  // namespace cllm
