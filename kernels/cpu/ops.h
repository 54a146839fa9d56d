// CPU compute primitives (fp32). No model knowledge: shapes and strides only.
// Every function here has a naive twin in kernels/cpu/reference.h with the same signature;
// tests/unit/test_kernels.cpp compares the two on random inputs.
// Threading: functions parallelise internally (std::thread pool / OpenBLAS); callers pass plain pointers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cllm::cpu {

// y[M,N] = x[M,K] · w[N,K]^T. w is row-major [out, in], the layout HF checkpoints store.
void matmul_wt(const float* x, const float* w, float* y, int M, int N, int K);

// y[r,:] = x[r,:] / sqrt(mean(x[r,:]^2) + eps) * weight[:], for r in [0, rows). x may alias y.
void rmsnorm(const float* x, const float* weight, float* y, int rows, int dim, float eps);

// Rotary embedding, HF "rotate_half" layout: pairs are (d, d + head_dim/2).
// x: [n_tok, n_heads, head_dim], rotated in place; positions: [n_tok]; inv_freq: [head_dim/2] (rad/position).
void rope(float* x, const int32_t* positions, int n_tok, int n_heads, int head_dim, const float* inv_freq);

// Block attention with GQA over a KV cache.
// q:   [n, n_heads, head_dim]   queries for positions p0 .. p0+n-1
// k,v: [T, n_kv, head_dim]      cache rows 0 .. p0+n-1 already hold this block's keys/values
// out: [n, n_heads, head_dim]
// Query i attends cache rows 0 .. p0+i (causal inside the block). Scale = 1/sqrt(head_dim).
// window > 0 (sliding-window attention, Mistral's sliding_window): only the last `window` rows,
// p0+i-window+1 .. p0+i; 0 = no window.
void block_attention(const float* q, const float* k, const float* v, float* out, int n, int p0,
                     int n_heads, int n_kv, int head_dim, int window = 0);

// One sequence's block in a batched attention call (continuous batching): n query rows at
// positions p0 .. p0+n-1 over that sequence's own cache k, v ([T, n_kv, head_dim], rows
// 0 .. p0+n-1 already written). The blocks' rows sit back to back in q and out.
struct AttentionBlock {
  const float* k;
  const float* v;
  int n;
  int p0;
  int window = 0;  // as block_attention's: keys within `window` positions of the query; 0 = all
  // Branch layout (lookahead verification), or nullptr: every query causal at p0+i. Else [n][2]:
  // query i (whose own key is cache row c = p0+i) sits at logical position q = layout[2i] and sees
  // logical keys 0..q: key t < base = layout[2i+1] is cache row t, key t >= base is cache row
  // c - q + t (its own lineage, ending at itself). 0 <= base <= q <= c. Tiles follow the logical
  // keys, so a query's result is bit-identical to block_attention over its logical keys laid out
  // contiguously (what AR computes for the same tokens).
  const int32_t* layout = nullptr;
};

// block_attention for several sequences in one call: the work of every block is spread over the
// pool together (a decode step of many one-row blocks has too little work per block to split).
// Every row's result is bit-identical to block_attention over its block alone.
// q, out: [sum of n, n_heads, head_dim].
void batch_attention(const float* q, float* out, const AttentionBlock* blocks, int count, int n_heads, int n_kv,
                     int head_dim);

// out[i] = silu(gate[i]) * up[i]
void silu_mul(const float* gate, const float* up, float* out, size_t n);

// x[i] += y[i]
void add_inplace(float* x, const float* y, size_t n);

// out[i, :] = table[ids[i], :]; table: [vocab, dim]
void embedding(const float* table, const int32_t* ids, float* out, int n, int dim);

// index of the largest x[i] (lowest index on ties)
int32_t argmax(const float* x, int n);

// Number of worker threads used by the threaded kernels (defaults to hardware concurrency).
void set_num_threads(int n);
int num_threads();

}  // namespace cllm::cpu
