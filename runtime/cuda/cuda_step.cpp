// One device forward's kernels, in order (CudaModel::enqueue_step), and the GEMM each linear layer
// runs at a given row count (CudaModel::Linear): the skinny batch-invariant kernel, its fused forms,
// or a cuBLASLt plan. The rest of the model (buffers, KV slots, graphs, tensor parallel argmax) is in
// cuda_model.cpp.
//
// A layer, separate kernels (10): add_rmsnorm, qkv GEMM, rope_kv_write, attention (+ its split-K
// combine), o GEMM, [all-reduce], add_rmsnorm, gate|up GEMM, silu_mul, down GEMM, [all-reduce].
// Fused (CudaModelOptions::fused_layer_rows and fuse_swiglu, one rank, forwards of up to
// fused_layer_rows rows: 5, or 6 with the combine): qkv GEMM (normalises the residual as it loads it;
// RoPE and the KV write in its epilogue), attention (+ combine), o GEMM (adds into the residual),
// gate|up GEMM (normalises; silu(gate) * up in its epilogue), down GEMM (adds into the residual).
// fuse_swiglu alone applies to every forward that runs the skinny kernel, TP shards included (a
// rank's gate|up rows are its own): 9 kernels a layer.
#include <algorithm>

#include "runtime/cuda/cuda_model.h"

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/skinny_gemm.cuh"

namespace cllm::cuda {

using bf16 = __nv_bfloat16;

CudaModel::Linear::Linear(cublasLtHandle_t lt, int M, int N, int K, int skinny_max_m, void* gemm_ws, size_t ws_bytes)
    : m_(M), n_(N), k_(K) {
  // The scratch and weight buffers are whole cudaMalloc allocations (256-byte aligned), so the
  // skinny kernel's pointer requirements hold; its shape ones are checked here.
  const bool skinny = M <= std::min(skinny_max_m, kSkinnyGemmMaxM) && K % 8 == 0;  // K checked for invariance
  if (!skinny) plan_.emplace(lt, M, N, K, ws_bytes, 256, gemm_ws);
}

void CudaModel::Linear::run(const bf16* x, const bf16* w, bf16* y, cudaStream_t stream) const {
  if (plan_)
    plan_->run(x, w, y, stream);
  else
    invoke_skinny_gemm(x, w, y, m_, n_, k_, stream);
}

void CudaModel::Linear::run_swiglu(const SkinnyInput& in, const bf16* w, bf16* gate_up, bf16* act, bool fuse,
                                   cudaStream_t stream) const {
  // fuse (CudaModelOptions::fuse_swiglu): the activation in the GEMM's epilogue, one kernel fewer.
  SkinnyOutput out{act};
  out.swiglu = true;
  if (fuse && fusable() && skinny_gemm_fused_supported(m_, n_, k_, in, out, w)) {
    run_fused(in, w, out, stream);
    return;
  }
  if (in.residual == nullptr)
    run(in.x, w, gate_up, stream);  // any M: the skinny kernel or cuBLASLt
  else
    run_fused(in, w, SkinnyOutput{gate_up}, stream);
  invoke_silu_mul(gate_up, act, m_, n_ / 2, stream);
}

bool CudaModel::Linear::fusable() const { return !plan_ && m_ <= kSkinnyFusedMaxM; }

void CudaModel::Linear::run_fused(const SkinnyInput& in, const bf16* w, const SkinnyOutput& out,
                                  cudaStream_t stream) const {
  invoke_skinny_gemm_fused(in, w, out, m_, n_, k_, stream);
}

CudaModel::BlockPlans::BlockPlans(cublasLtHandle_t lt, const Dims& c, int n, int skinny_max_m, void* gemm_ws,
                                  size_t ws_bytes)
    : qkv(lt, n, c.q + 2 * c.kv, c.d, skinny_max_m, gemm_ws, ws_bytes),
      o(lt, n, c.d, c.q, skinny_max_m, gemm_ws, ws_bytes),
      gate_up(lt, n, 2 * c.ffn, c.d, skinny_max_m, gemm_ws, ws_bytes),
      down(lt, n, c.d, c.ffn, skinny_max_m, gemm_ws, ws_bytes),
      head(lt, n, c.vocab, c.d, skinny_max_m, gemm_ws, ws_bytes) {}

void CudaModel::enqueue_step(const BlockPlans& p) {
  cudaStream_t s = h_.stream;
  const int n = step_.rows;
  const int d = dims_.d, qd = dims_.q, kvd = dims_.kv, ld_qkv = qd + 2 * kvd;
  const int heads = plan_.heads, kv_heads = plan_.kv_heads, hd = cfg_.head_dim;
  const float eps = cfg_.rms_norm_eps;
  // Tensor parallel: the row-parallel outputs (and the vocab-parallel embedding) summed over ranks.
  auto all_reduce = [&](bf16* x, const CommPhase& phase) {
    if (all_reduce_ != nullptr) all_reduce_->sum_bf16(x, static_cast<size_t>(n) * d, s, phase);
  };

  // Tokens, positions, cache rows (and the block table) from pinned memory: a memcpy node reading
  // io_host_ at replay time.
  CLLM_CUDA_CHECK(cudaMemcpyAsync(io_dev_.as<void>(), io_host_.as<void>(), step_.upload_bytes, cudaMemcpyHostToDevice, s));
  const int32_t* tokens_dev = io_dev_.as<int32_t>();
  const int32_t* pos_dev = tokens_dev + n;
  const int32_t* rows_dev = tokens_dev + 2 * n;
  const void* table_dev = io_dev_.as<char>() + step_.table_offset;

  float* residual = residual_.as<float>();
  bf16* sub = sub_.as<bf16>();
  bf16* normed = normed_.as<bf16>();
  bf16* qkv = qkv_.as<bf16>();
  bf16* att = att_.as<bf16>();
  bf16* gate_up = gate_up_.as<bf16>();
  bf16* act = act_.as<bf16>();
  bf16* logits = logits_.as<bf16>();
  const size_t slot_stride = static_cast<size_t>(capacity_) * kvd;  // elements of one slot's K (or V)
  const size_t layer_cache = slot_stride * slots_;                    // elements of one layer's K (or V)

  // The residual starts at 0; the first add_rmsnorm adds the embedding into it. A vocab shard writes
  // zero rows for ids it does not hold, so the sum over ranks is exact.
  invoke_embedding(w_.embed.as<bf16>(), tokens_dev, sub, n, d, plan_.vocab_begin, plan_.vocab, s);
  all_reduce(sub, {"embedding"});
  CLLM_CUDA_CHECK(cudaMemsetAsync(residual, 0, static_cast<size_t>(n) * d * sizeof(float), s));
  // The fused layer (CudaModelOptions::fused_layer_rows, one rank, few rows): the o and down projections
  // add into the residual and leave its RMS partials, the qkv and gate|up projections normalise it
  // as they load it, and the qkv projection's epilogue does RoPE and the KV write: the same bits as
  // the add_rmsnorm and rope_kv_write kernels they replace.
  const bool fuse_layer = n <= opts_.fused_layer_rows && all_reduce_ == nullptr &&
                          hd % 16 == 0 && p.qkv.fusable() && p.o.fusable() && p.gate_up.fusable() && p.down.fusable();
  float* rms_parts = rms_parts_.as<float>();
  const SkinnyOutput to_residual{nullptr, residual, rms_parts};
  auto normed_input = [&](const DeviceBuffer& gamma) {
    SkinnyInput in;
    in.residual = residual;
    in.gamma = gamma.as<bf16>();
    in.rms_parts = rms_parts;
    in.eps = eps;
    return in;
  };
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const DeviceLayer& L = w_.layers[l];
    bf16* k_cache = kv_.as<bf16>() + 2 * l * layer_cache;
    bf16* v_cache = k_cache + layer_cache;
    // Attention: fused q|k|v GEMM; RoPE on q in place, k rotated and v copied into each row's cache
    // row (fused: in the GEMM's epilogue). The first layer adds the embedding (sub) into the residual.
    if (fuse_layer) {
      SkinnyInput in;
      if (l == 0) {
        invoke_add_rmsnorm(residual, sub, L.attn_norm.as<bf16>(), normed, n, d, eps, s);
        in.x = normed;
      } else {
        in = normed_input(L.attn_norm);
      }
      SkinnyOutput out{qkv};
      out.rope = SkinnyRopeKv{pos_dev, rows_dev, inv_freq_.as<float>(), k_cache, v_cache, qd, kvd, hd};
      p.qkv.run_fused(in, L.wqkv.as<bf16>(), out, s);
    } else {
      invoke_add_rmsnorm(residual, sub, L.attn_norm.as<bf16>(), normed, n, d, eps, s);
      p.qkv.run(normed, L.wqkv.as<bf16>(), qkv, s);
      invoke_rope_kv_write(qkv, ld_qkv, qkv + qd, ld_qkv, qkv + qd + kvd, ld_qkv, k_cache, v_cache, pos_dev, rows_dev,
                           inv_freq_.as<float>(), n, heads, kv_heads, hd, s);
    }
    invoke_batched_attention(qkv, ld_qkv, k_cache, v_cache, slot_stride, att, attn_ws_.as<void>(), attn_ws_.bytes(),
                             attn_plan_, table_dev, heads, kv_heads, hd, s);
    // Output projection, then the SwiGLU MLP: fused gate|up GEMM, silu(gate) * up, down projection.
    if (fuse_layer) {
      SkinnyInput att_in;
      att_in.x = att;
      p.o.run_fused(att_in, L.wo.as<bf16>(), to_residual, s);
      p.gate_up.run_swiglu(normed_input(L.ffn_norm), L.wgu.as<bf16>(), gate_up, act, opts_.fuse_swiglu, s);
      SkinnyInput act_in;
      act_in.x = act;
      p.down.run_fused(act_in, L.wdown.as<bf16>(), to_residual, s);
    } else {
      p.o.run(att, L.wo.as<bf16>(), sub, s);
      all_reduce(sub, {"attention", l});
      invoke_add_rmsnorm(residual, sub, L.ffn_norm.as<bf16>(), normed, n, d, eps, s);
      SkinnyInput normed_in;
      normed_in.x = normed;
      p.gate_up.run_swiglu(normed_in, L.wgu.as<bf16>(), gate_up, act, opts_.fuse_swiglu, s);
      p.down.run(act, L.wdown.as<bf16>(), sub, s);
      all_reduce(sub, {"mlp", l});
    }
  }
  // The residual holds the last down projection's output already on the fused path.
  invoke_add_rmsnorm(residual, fuse_layer ? nullptr : sub, w_.final_norm.as<bf16>(), normed, n, d, eps, s);
  p.head.run(normed, w_.head(), logits, s);
  // This rank's argmax over its vocab rows, as global ids; with several ranks also the values.
  float* values = comm_ != nullptr ? values_dev_.as<float>() : nullptr;
  invoke_argmax(logits, n, dims_.vocab, ids_dev_.as<int32_t>(), values, plan_.vocab_begin, argmax_ws_.as<void>(),
                argmax_ws_.bytes(), s);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(ids_host_.as<int32_t>(), ids_dev_.as<int32_t>(), n * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, s));
  if (values != nullptr)
    CLLM_CUDA_CHECK(cudaMemcpyAsync(values_host_.as<float>(), values, n * sizeof(float), cudaMemcpyDeviceToHost, s));
}

}  // namespace cllm::cuda
