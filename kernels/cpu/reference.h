// Naive reference kernels: the obviously-correct versions that ops.h is tested against.
// Single-threaded, no BLAS, double accumulation where it matters. Same signatures as ops.h.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cllm::ref {

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
// window > 0: only rows p0+i-window+1 .. p0+i (sliding-window attention).
void block_attention(const float* q, const float* k, const float* v, float* out, int n, int p0,
                     int n_heads, int n_kv, int head_dim, int window = 0);

// out[i] = silu(gate[i]) * up[i]
void silu_mul(const float* gate, const float* up, float* out, size_t n);

// x[i] += y[i]
void add_inplace(float* x, const float* y, size_t n);

// out[i, :] = table[ids[i], :]; table: [vocab, dim]
void embedding(const float* table, const int32_t* ids, float* out, int n, int dim);

// index of the largest x[i] (lowest index on ties)
int32_t argmax(const float* x, int n);


}  // namespace cllm::ref
