#include "runtime/cpu_model.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "kernels/cpu/gemm_invariant.h"
#include "kernels/cpu/gemm_quant.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "runtime/block_rows.h"
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
  CLLM_CHECK(max_tokens > 0 && slots > 0,
             "KV capacity and slots must be positive, got " << max_tokens << " rows x " << slots << " slots");
  // The allocation only grows (a smaller reset keeps the larger one; its layout changes with
  // either dimension, and reset forgets the old KV anyway); forwards are checked against this
  // reset's sizes, whatever is allocated.
  limit_tokens_ = max_tokens;
  limit_slots_ = slots;
  if (max_tokens > capacity_ || slots > slots_) {
    // Refused before allocating: a KV cache beyond the machine's memory would end in std::bad_alloc
    // or the OOM killer. K and V: layers x slots x rows x kvd floats each.
    const double kv_bytes = 2.0 * cfg_.num_layers * std::max(slots_, slots) * std::max(capacity_, max_tokens) *
                            static_cast<double>(kvd_) * sizeof(float);
    const double machine_bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
    CLLM_CHECK(kv_bytes <= machine_bytes,
               "the KV cache of " << slots << " sequences x " << max_tokens << " rows needs " << kv_bytes / 1e9
                                  << " GB on this rank, more than this machine's " << machine_bytes / 1e9
                                  << " GB of memory (lower --max-batch or --max-context)");
    capacity_ = std::max(capacity_, max_tokens);
    slots_ = std::max(slots_, slots);
    const size_t floats = static_cast<size_t>(slots_) * capacity_ * kvd_;
    k_.clear();  // free the old cache before allocating the new one
    v_.clear();
    for (int l = 0; l < cfg_.num_layers; ++l) {
      k_.emplace_back(new float[floats]);
      v_.emplace_back(new float[floats]);
    }
  }
}

double CpuModel::step_bytes(int context) const {
  return static_cast<double>(w_.bytes()) + 2.0 * cfg_.num_layers * context * kvd_ * sizeof(float);
}

double CpuModel::step_int8_macs() const {
  double macs = 0;
  auto add = [&](const LinearWeight& w) {
    if (w.quantized()) macs += static_cast<double>(w.q.rows) * w.q.cols;
  };
  for (const LayerWeights& l : w_.layers)
    for (const LinearWeight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*w);
  add(w_.head());
  return macs;
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
  k_new_.resize(sn * kvd_);
  v_new_.resize(sn * kvd_);
  best_.resize(sn);
  positions_.resize(sn);
}

void CpuModel::linear(const float* x, const cpu::QuantActivations* xq, const LinearWeight& w, float* y, int n, int r0,
                      int r1, int in) const {
  // Blocks: batch-invariant for every n, prefill included (there is no BLAS for them).
  if (w.quantized()) return xq ? cpu::matmul_wt_quant(*xq, w.q, y, r0, r1) : cpu::matmul_wt_quant(x, w.q, y, n, r0, r1);
  const float* rows = w.f32.data() + static_cast<size_t>(r0) * in;
  if (blas_)
    cpu::matmul_wt(x, rows, y, n, r1 - r0, in);
  else
    cpu::matmul_wt_invariant(x, rows, y, n, r1 - r0, in);
}

const cpu::QuantActivations* CpuModel::quantize_for(const float* x, int n, int in, const LinearWeight& w) {
  if (!w.quantized()) return nullptr;
  cpu::quantize_activations(x, n, in, xq_);
  return &xq_;
}

void CpuModel::all_reduce(float* x, size_t count, const CommPhase& phase) {
  if (comm_) comm_->all_reduce_sum(x, count, phase);
}

void CpuModel::embed(const int32_t* tokens, int n, float* x) {
  const int d = cfg_.hidden_size;
  if (w_.embed.quantized()) {  // one rank (native weights are not sharded)
    for (int i = 0; i < n; ++i) cpu::dequantize_quant_row(w_.embed.q, tokens[i], x + static_cast<size_t>(i) * d);
    return;
  }
  if (!comm_) {
    cpu::embedding(w_.embed.f32.data(), tokens, x, n, d);
    return;
  }
  // Exactly one rank holds each id and the others add zeros, so the sum is exact.
  for (int i = 0; i < n; ++i) {
    float* row = x + static_cast<size_t>(i) * d;
    const int local = tokens[i] - plan_.vocab_begin;
    if (local >= 0 && local < plan_.vocab)
      std::memcpy(row, w_.embed.f32.data() + static_cast<size_t>(local) * d, d * sizeof(float));
    else
      std::fill(row, row + d, 0.0f);
  }
  all_reduce(x, static_cast<size_t>(n) * d, {"embedding"});
}

void CpuModel::lm_head(const float* h, int n, int32_t* out_ids, float* logits) {
  const int d = cfg_.hidden_size, vs = plan_.vocab;
  // Per row: (max logit, lowest id holding it) over this rank's vocab shard.
  auto best_of = [&](const float* y, int cols, int first_id) {
    cpu::parallel_for_range(n, 4, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        const float* row = y + i * cols;
        const int32_t j = cpu::argmax(row, cols);
        // Chunks come in id order, so keeping the earlier one on ties keeps the lowest id.
        if (first_id == plan_.vocab_begin || row[j] > best_[i].value) best_[i] = {row[j], first_id + j};
      }
    });
  };
  if (logits) {
    if (comm_) logits_.resize(static_cast<size_t>(n) * vs);
    float* local = comm_ ? logits_.data() : logits;  // [n, vs]: this rank's shard
    linear(h, nullptr, w_.head(), local, n, 0, vs, d);
    best_of(local, vs, plan_.vocab_begin);
  } else {
    // Only the argmax is wanted: the head in vocab chunks with a running max, so the scratch stays
    // near 8 MB however many rows the batch has (512 rows x 49152 ids would be 100 MB). Every
    // logit is the same number either way (each output of the GEMM is computed on its own).
    const int chunk = std::min(vs, std::max((2 << 20) / n, 256));  // 256..vs ids (vs may be < 256)
    logits_.resize(static_cast<size_t>(n) * chunk);
    const cpu::QuantActivations* hq = quantize_for(h, n, d, w_.head());  // once for every chunk
    for (int v0 = 0; v0 < vs; v0 += chunk) {
      const int cols = std::min(chunk, vs - v0);
      linear(h, hq, w_.head(), logits_.data(), n, v0, v0 + cols, d);
      best_of(logits_.data(), cols, plan_.vocab_begin + v0);
    }
  }
  // The global (max, lowest id) pair over the shards: the same choice as an argmax over the whole
  // row, which takes the lowest index on ties.
  if (comm_) comm_->all_reduce_max_loc(best_.data(), n, {"LM-head argmax"});
  // A non-finite maximum means the row's logits are NaN (every comparison with NaN fails, so the
  // argmax would be an arbitrary id: token 0 for ever) or overflowed. Checked every forward, at n
  // comparisons; after the reduction every rank sees the same values and throws alike.
  for (int i = 0; i < n; ++i)
    CLLM_CHECK(std::isfinite(best_[i].value),
               "the logits of row " << i << " of this forward are not finite (max " << best_[i].value
                                    << "): the activations overflowed; the weights are finite (checked at load) but "
                                       "out of range for this model");
  for (int i = 0; i < n; ++i) out_ids[i] = best_[i].index;
  if (!logits || !comm_) return;
  const size_t shard = static_cast<size_t>(n) * vs;
  gathered_.resize(shard * plan_.size);
  comm_->all_gather(logits_.data(), shard * sizeof(float), gathered_.data(), {"logits gather"});
  for (int r = 0; r < plan_.size; ++r)
    for (int i = 0; i < n; ++i)
      std::memcpy(logits + static_cast<size_t>(i) * cfg_.vocab_size + static_cast<size_t>(r) * vs,
                  gathered_.data() + r * shard + static_cast<size_t>(i) * vs, vs * sizeof(float));
}

void CpuModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  const SeqBlock block{0, pos, n};
  forward_batch(tokens, &block, 1, out_ids, logits);
}

void CpuModel::forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                             float* logits) {
  forward_rows(tokens, blocks, count, nullptr, nullptr, out_ids, logits);
}

void CpuModel::forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                            const KvMove* moves, int32_t* out_ids, float* logits) {
  const int n = check_batch_args(cfg_, tokens, blocks, count, limit_tokens_, limit_slots_);  // rows of the batch
  const bool plain = check_row_layout(blocks, count, rows, moves, limit_tokens_);
  grow_scratch(n);
  // A batch whose blocks all have at most kMaxBlockRows tokens uses the batch-invariant GEMM
  // (gemm_invariant.h), whatever its total rows, so Jacobi blocks reproduce AR bit for bit and a
  // block's result does not depend on its batch. Only a lone longer block (a whole-prompt
  // prefill) uses OpenBLAS.
  blas_ = count == 1 && n > kMaxBlockRows;
  const int d = cfg_.hidden_size, hd = cfg_.head_dim;
  attn_blocks_.resize(count);
  for (int b = 0, row = 0; b < count; row += blocks[b++].n)
    for (int i = 0; i < blocks[b].n; ++i) positions_[row + i] = rows ? rows[row + i].pos : blocks[b].pos + i;
  if (!plain) {
    layout_.resize(2 * static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      layout_[2 * r] = positions_[r];
      layout_[2 * r + 1] = rows ? rows[r].base : positions_[r];
    }
    // A verified branch's KV goes to the positions its tokens were accepted at, in every layer.
    for (int b = 0; moves && b < count; ++b) {
      const KvMove& m = moves[b];
      if (m.n == 0) continue;
      const size_t len = static_cast<size_t>(m.n) * kvd_ * sizeof(float);
      for (int l = 0; l < cfg_.num_layers; ++l) {
        std::memmove(k_[l].get() + kv_offset(blocks[b].slot, blocks[b].pos - m.n),
                     k_[l].get() + kv_offset(blocks[b].slot, m.src), len);
        std::memmove(v_[l].get() + kv_offset(blocks[b].slot, blocks[b].pos - m.n),
                     v_[l].get() + kv_offset(blocks[b].slot, m.src), len);
      }
    }
  }

  float* x = x_.data();  // residual stream [n, d], replicated on every rank
  float* h = h_.data();
  embed(tokens, n, x);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LayerWeights& L = w_.layers[l];
    // Attention over this rank's heads: q, k, v projections over all rows; each block's k and v
    // rows then go to its slot's cache rows [pos, pos + n), and each block attends over its
    // slot. o is row-parallel: h holds a partial sum until the all-reduce.
    cpu::rmsnorm(x, L.attn_norm.data(), h, n, d, cfg_.rms_norm_eps);
    const cpu::QuantActivations* hq = quantize_for(h, n, d, L.wq);
    linear(h, hq, L.wq, q_.data(), n, 0, qd_, d);
    linear(h, hq, L.wk, k_new_.data(), n, 0, kvd_, d);
    linear(h, hq, L.wv, v_new_.data(), n, 0, kvd_, d);
    cpu::rope(q_.data(), positions_.data(), n, plan_.heads, hd, inv_freq_.data());
    cpu::rope(k_new_.data(), positions_.data(), n, plan_.kv_heads, hd, inv_freq_.data());
    for (int b = 0, row = 0; b < count; row += blocks[b++].n) {
      const SeqBlock& s = blocks[b];
      float* kc = k_[l].get() + kv_offset(s.slot, 0);
      float* vc = v_[l].get() + kv_offset(s.slot, 0);
      const size_t off = static_cast<size_t>(row) * kvd_, len = static_cast<size_t>(s.n) * kvd_;
      std::memcpy(kc + static_cast<size_t>(s.pos) * kvd_, k_new_.data() + off, len * sizeof(float));
      std::memcpy(vc + static_cast<size_t>(s.pos) * kvd_, v_new_.data() + off, len * sizeof(float));
      attn_blocks_[b] = {kc, vc, s.n, s.pos, cfg_.sliding_window, plain ? nullptr : layout_.data() + 2 * row};
    }
    cpu::batch_attention(q_.data(), att_.data(), attn_blocks_.data(), count, plan_.heads, plan_.kv_heads, hd);
    linear(att_.data(), nullptr, L.wo, h, n, 0, d, qd_);
    all_reduce(h, static_cast<size_t>(n) * d, {"attention", l});
    cpu::add_inplace(x, h, static_cast<size_t>(n) * d);
    // SwiGLU MLP over this rank's FFN units; down is row-parallel like o.
    cpu::rmsnorm(x, L.ffn_norm.data(), h, n, d, cfg_.rms_norm_eps);
    const cpu::QuantActivations* mq = quantize_for(h, n, d, L.w_gate);
    linear(h, mq, L.w_gate, gate_.data(), n, 0, ffn_, d);
    linear(h, mq, L.w_up, up_.data(), n, 0, ffn_, d);
    cpu::silu_mul(gate_.data(), up_.data(), gate_.data(), static_cast<size_t>(n) * ffn_);
    linear(gate_.data(), nullptr, L.w_down, h, n, 0, d, ffn_);
    all_reduce(h, static_cast<size_t>(n) * d, {"mlp", l});
    cpu::add_inplace(x, h, static_cast<size_t>(n) * d);
  }
  cpu::rmsnorm(x, w_.final_norm.data(), h, n, d, cfg_.rms_norm_eps);
  lm_head(h, n, out_ids, logits);
}

}  // namespace cllm
