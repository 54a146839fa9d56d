// Every CUDA kernel against its naive CPU reference (kernels/cpu/reference.h), on fresh random
// inputs (the batched attention against the single-block reference run on each block's KV slot). One harness: an Op is a name, an error bound, a list of shapes and a function that builds
// inputs for one shape, runs the CUDA kernel and the reference, and returns the tensors to compare.
// Adding an op is one entry in ops().
//
// Inputs are drawn in fp32, rounded to bf16 where the kernel takes bf16, and the reference gets the
// rounded values, so the comparison measures only the kernel's own arithmetic (fp32 accumulation,
// one bf16 rounding of the output) against the reference's.
// Error: max |gpu - ref| / max |ref| over each compared tensor, any non-finite gpu value fails.
// Bounds: 1e-2 for reductions over long dot products (GEMM, attention), 8e-3 for element-wise maths
// (norm, rope, silu; bf16 output rounding alone is up to 2^-9 = 2e-3 relative), 0 for copies and
// argmax (exact).
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/reference.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/bf16_host.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/kv_move.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/skinny_gemm.cuh"

namespace {

using bf16 = __nv_bfloat16;
namespace cu = cllm::cuda;

constexpr double kTolDot = 1e-2;
constexpr double kTolElementwise = 8e-3;
constexpr double kExact = 0.0;

// ---- device memory -------------------------------------------------------------------------------

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { CLLM_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(o.n_) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// cudaMemcpy from pageable host memory may return before its DMA to the device has landed (it
// runs on the legacy default stream), and the ops run on a cudaStreamNonBlocking stream, which does
// not wait for the legacy stream: without this synchronisation a kernel can read the tail of a large
// input before it arrives (seen: silu_mul n16 dim14336 read zeros in its last rows).
void finish_upload() { CLLM_CUDA_CHECK(cudaDeviceSynchronize()); }

template <typename T>
DeviceBuffer<T> upload(const std::vector<T>& x) {
  DeviceBuffer<T> d(x.size());
  CLLM_CUDA_CHECK(cudaMemcpy(d.get(), x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  finish_upload();
  return d;
}

// x holds bf16-representable floats (from rand_bf16); uploaded as bf16.
DeviceBuffer<bf16> upload_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> bits(x.size());
  std::transform(x.begin(), x.end(), bits.begin(), cllm::float_to_bf16_bits);
  DeviceBuffer<bf16> d(x.size());
  CLLM_CUDA_CHECK(cudaMemcpy(d.get(), bits.data(), bits.size() * sizeof(uint16_t), cudaMemcpyHostToDevice));
  finish_upload();
  return d;
}

template <typename T>
std::vector<T> download(const DeviceBuffer<T>& d) {
  std::vector<T> x(d.size());
  CLLM_CUDA_CHECK(cudaMemcpy(x.data(), d.get(), x.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return x;
}

std::vector<float> download_bf16(const DeviceBuffer<bf16>& d) {
  std::vector<uint16_t> bits(d.size());
  CLLM_CUDA_CHECK(cudaMemcpy(bits.data(), d.get(), bits.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  std::vector<float> x(bits.size());
  std::transform(bits.begin(), bits.end(), x.begin(), cllm::bf16_bits_to_float);
  return x;
}

// ---- inputs --------------------------------------------------------------------------------------

std::vector<float> rand_f32(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<float> rand_bf16(std::mt19937& rng, size_t n, float lo, float hi) {
  std::vector<float> x = rand_f32(rng, n, lo, hi);
  for (float& v : x) v = cllm::round_to_bf16(v);
  return x;
}

// Columns [col, col + width) of each row of a row-major [rows, stride] matrix.
std::vector<float> columns(const std::vector<float>& x, int rows, int stride, int col, int width) {
  std::vector<float> out(static_cast<size_t>(rows) * width);
  for (int r = 0; r < rows; ++r)
    std::copy_n(x.begin() + static_cast<size_t>(r) * stride + col, width, out.begin() + static_cast<size_t>(r) * width);
  return out;
}

// HF LLaMA inv_freq with rope_theta 10000: theta^(-2d/head_dim).
std::vector<float> inv_freq_for(int head_dim) {
  std::vector<float> f(head_dim / 2);
  for (int d = 0; d < head_dim / 2; ++d) f[d] = static_cast<float>(std::pow(10000.0, -2.0 * d / head_dim));
  return f;
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
  void sync() const { CLLM_CUDA_CHECK(cudaStreamSynchronize(s)); }
};

// ---- the harness ---------------------------------------------------------------------------------

// Shape of one case; each op reads the fields it needs, unused ones stay 0 and are left out of the name.
struct Shape {
  int n = 0, dim = 0, ctx = 0, heads = 0, kv = 0, hd = 0, vocab = 0, M = 0, N = 0, K = 0, count = 0;

  std::string name() const {
    std::ostringstream os;
    const std::pair<const char*, int> fields[] = {{"n", n},   {"dim", dim},     {"ctx", ctx}, {"heads", heads},
                                                  {"kv", kv}, {"hd", hd},       {"vocab", vocab}, {"M", M},
                                                  {"N", N},   {"K", K},         {"count", count}};
    for (const auto& [key, value] : fields)
      if (value != 0) os << (os.tellp() > 0 ? "_" : "") << key << value;
    return os.str();
  }
};

struct Compared {
  std::string tensor;
  std::vector<float> gpu, ref;
};

struct Op {
  std::string name;
  double tol;  // bound on max |gpu - ref| / max |ref|, for each compared tensor
  std::vector<Shape> shapes;
  std::function<std::vector<Compared>(const Shape&, std::mt19937&)> run;
};

// ---- ops -----------------------------------------------------------------------------------------

std::vector<Compared> run_embedding(const Shape& s, std::mt19937& rng) {
  // A vocab shard: table rows are ids [row_begin, row_begin + rows); other ids must give zero rows.
  const int rows = s.vocab / 2, row_begin = s.vocab / 4;
  const std::vector<float> table = rand_bf16(rng, static_cast<size_t>(rows) * s.dim, -1.f, 1.f);
  std::uniform_int_distribution<int32_t> id_dist(0, s.vocab - 1);
  std::vector<int32_t> ids(s.n);
  for (auto& id : ids) id = id_dist(rng);
  const int32_t edges[] = {row_begin, row_begin + rows - 1, row_begin - 1, row_begin + rows};
  for (int i = 0; i < s.n && i < 4; ++i) ids[i] = edges[i];

  Stream st;
  auto d_table = upload_bf16(table);
  auto d_ids = upload(ids);
  DeviceBuffer<bf16> d_out(static_cast<size_t>(s.n) * s.dim);
  cu::invoke_embedding(d_table.get(), d_ids.get(), d_out.get(), s.n, s.dim, row_begin, rows, st.s);
  st.sync();

  std::vector<float> ref(static_cast<size_t>(s.n) * s.dim, 0.f);
  for (int i = 0; i < s.n; ++i) {
    const int32_t local = ids[i] - row_begin;
    if (local >= 0 && local < rows) cllm::ref::embedding(table.data(), &local, ref.data() + static_cast<size_t>(i) * s.dim, 1, s.dim);
  }
  return {{"out", download_bf16(d_out), ref}};
}

std::vector<Compared> run_add_rmsnorm(const Shape& s, std::mt19937& rng, bool with_x) {
  const size_t count = static_cast<size_t>(s.n) * s.dim;
  const float eps = 1e-5f;
  std::vector<float> residual = rand_f32(rng, count, -2.f, 2.f);
  const std::vector<float> x = rand_bf16(rng, count, -2.f, 2.f);
  const std::vector<float> w = rand_bf16(rng, s.dim, 0.5f, 1.5f);

  Stream st;
  auto d_res = upload(residual);
  auto d_x = upload_bf16(x);
  auto d_w = upload_bf16(w);
  DeviceBuffer<bf16> d_out(count);
  cu::invoke_add_rmsnorm(d_res.get(), with_x ? d_x.get() : nullptr, d_w.get(), d_out.get(), s.n, s.dim, eps, st.s);
  st.sync();

  if (with_x) cllm::ref::add_inplace(residual.data(), x.data(), count);
  std::vector<float> ref_out(count);
  cllm::ref::rmsnorm(residual.data(), w.data(), ref_out.data(), s.n, s.dim, eps);
  return {{"residual", download(d_res), residual}, {"out", download_bf16(d_out), ref_out}};
}

// slotted: the cache holds 3 KV slots of max_ctx rows and token i goes to slot (i % 3), row
// slot * max_ctx + position (the batched model's cache_rows), at positions that differ per slot.
std::vector<Compared> run_rope_kv_write(const Shape& s, std::mt19937& rng, bool slotted) {
  // q, k, v are slices of one fused qkv row, as the qkv GEMM writes them; the block sits at
  // positions ctx .. ctx+n-1 of a cache with spare rows, pre-filled so stray writes show up.
  const int q_w = s.heads * s.hd, kv_w = s.kv * s.hd, stride = q_w + 2 * kv_w;
  const int max_ctx = s.ctx + s.n + 16;
  const int slots = slotted ? 3 : 1;
  const std::vector<float> qkv = rand_bf16(rng, static_cast<size_t>(s.n) * stride, -2.f, 2.f);
  std::vector<float> k_cache = rand_bf16(rng, static_cast<size_t>(slots) * max_ctx * kv_w, -1.f, 1.f);
  std::vector<float> v_cache = rand_bf16(rng, static_cast<size_t>(slots) * max_ctx * kv_w, -1.f, 1.f);
  std::vector<int32_t> pos(s.n), rows(s.n);
  for (int i = 0; i < s.n; ++i) {
    pos[i] = slotted ? s.ctx + i / 3 + 5 * (i % 3) : s.ctx + i;
    rows[i] = slotted ? (i % 3) * max_ctx + pos[i] : pos[i];
  }
  const std::vector<float> inv_freq = inv_freq_for(s.hd);

  Stream st;
  auto d_qkv = upload_bf16(qkv);
  auto d_k_cache = upload_bf16(k_cache);
  auto d_v_cache = upload_bf16(v_cache);
  auto d_pos = upload(pos);
  auto d_rows = upload(rows);
  auto d_inv_freq = upload(inv_freq);
  bf16* q = d_qkv.get();
  if (slotted)
    cu::invoke_rope_kv_write(q, stride, q + q_w, stride, q + q_w + kv_w, stride, d_k_cache.get(), d_v_cache.get(),
                             d_pos.get(), d_rows.get(), d_inv_freq.get(), s.n, s.heads, s.kv, s.hd, st.s);
  else
    cu::invoke_rope_kv_write(q, stride, q + q_w, stride, q + q_w + kv_w, stride, d_k_cache.get(), d_v_cache.get(),
                             d_pos.get(), d_inv_freq.get(), s.n, s.heads, s.kv, s.hd, st.s);
  st.sync();

  std::vector<float> ref_q = columns(qkv, s.n, stride, 0, q_w);
  std::vector<float> k = columns(qkv, s.n, stride, q_w, kv_w);
  const std::vector<float> v = columns(qkv, s.n, stride, q_w + kv_w, kv_w);
  cllm::ref::rope(ref_q.data(), pos.data(), s.n, s.heads, s.hd, inv_freq.data());
  cllm::ref::rope(k.data(), pos.data(), s.n, s.kv, s.hd, inv_freq.data());
  for (int i = 0; i < s.n; ++i) {
    std::copy_n(k.begin() + static_cast<size_t>(i) * kv_w, kv_w, k_cache.begin() + static_cast<size_t>(rows[i]) * kv_w);
    std::copy_n(v.begin() + static_cast<size_t>(i) * kv_w, kv_w, v_cache.begin() + static_cast<size_t>(rows[i]) * kv_w);
  }
  return {{"q", columns(download_bf16(d_qkv), s.n, stride, 0, q_w), ref_q},
          {"k_cache", download_bf16(d_k_cache), k_cache},
          {"v_cache", download_bf16(d_v_cache), v_cache}};
}

std::vector<Compared> run_block_attention(const Shape& s, std::mt19937& rng) {
  // ctx = total cache rows the last query sees (at least n); the block starts at p0 = ctx - n.
  const int total = std::max(s.ctx, s.n), p0 = total - s.n;
  const int q_w = s.heads * s.hd, kv_w = s.kv * s.hd, q_stride = q_w + 2 * kv_w;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // q lives in a fused qkv row whose k/v part is NaN, and cache rows >= total are NaN: the kernel
  // must read neither.
  std::vector<float> qkv(static_cast<size_t>(s.n) * q_stride, nan);
  const std::vector<float> q = rand_bf16(rng, static_cast<size_t>(s.n) * q_w, -4.f, 4.f);
  for (int i = 0; i < s.n; ++i)
    std::copy_n(q.begin() + static_cast<size_t>(i) * q_w, q_w, qkv.begin() + static_cast<size_t>(i) * q_stride);
  const int max_ctx = total + 8;
  std::vector<float> k_cache(static_cast<size_t>(max_ctx) * kv_w, nan), v_cache(k_cache.size(), nan);
  const std::vector<float> k = rand_bf16(rng, static_cast<size_t>(total) * kv_w, -1.f, 1.f);
  const std::vector<float> v = rand_bf16(rng, static_cast<size_t>(total) * kv_w, -1.f, 1.f);
  std::copy(k.begin(), k.end(), k_cache.begin());
  std::copy(v.begin(), v.end(), v_cache.begin());

  Stream st;
  auto d_qkv = upload_bf16(qkv);
  auto d_k = upload_bf16(k_cache);
  auto d_v = upload_bf16(v_cache);
  DeviceBuffer<bf16> d_out(static_cast<size_t>(s.n) * q_w);
  const size_t ws_bytes = cu::block_attention_workspace_bytes(s.n, s.heads, s.hd);
  DeviceBuffer<unsigned char> d_ws(ws_bytes);
  cu::invoke_block_attention(d_qkv.get(), q_stride, d_k.get(), d_v.get(), d_out.get(), d_ws.get(), ws_bytes, s.n, p0,
                             s.heads, s.kv, s.hd, st.s);
  st.sync();

  std::vector<float> ref(static_cast<size_t>(s.n) * q_w);
  cllm::ref::block_attention(q.data(), k.data(), v.data(), ref.data(), s.n, p0, s.heads, s.kv, s.hd);
  return {{"out", download_bf16(d_out), ref}};
}

// `count` blocks of 1..n queries at random positions 0..ctx, each in its own KV slot of a cache
// with 3 spare slots. Cache rows outside [0, pos + n) of each used slot, every unused slot, and the
// k/v part of the fused qkv rows are NaN: the kernel must read none of them. The reference is the
// single-block CPU attention of each block over its slot. tiny_ws: no workspace, so the adaptive
// planner must fall back to one chunk per block. chunk_keys > 0: the batch-invariant plan, its
// workspace sized after planning as CudaModel sizes it. branches: every other block is a lookahead
// branch (AttnBlock::base, shift: its keys from a random base on lie 1..8 cache rows further), and
// the reference attends over the keys gathered into their logical order.
std::vector<Compared> run_batched_attention(const Shape& s, std::mt19937& rng, bool tiny_ws, int chunk_keys = 0,
                                            bool branches = false) {
  const int q_w = s.heads * s.hd, kv_w = s.kv * s.hd, q_stride = q_w + 2 * kv_w;
  constexpr int kMaxShift = 8;
  const int slots = s.count + 3, capacity = s.ctx + s.n + 8 + kMaxShift;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<int> slot_ids(slots);
  for (int i = 0; i < slots; ++i) slot_ids[i] = i;
  std::shuffle(slot_ids.begin(), slot_ids.end(), rng);
  std::uniform_int_distribution<int> n_dist(1, s.n), pos_dist(0, s.ctx);
  std::vector<cu::AttnBlock> blocks(s.count);
  int rows = 0;
  for (int b = 0; b < s.count; ++b) {
    const bool widest = b == s.count / 2;  // one block at the full n and context
    blocks[b] = {rows, widest ? s.ctx : pos_dist(rng), widest ? s.n : n_dist(rng), slot_ids[b]};
    if (branches && b % 2 == 1) {
      blocks[b].base = std::uniform_int_distribution<int>(0, blocks[b].pos)(rng);
      blocks[b].shift = std::uniform_int_distribution<int>(1, kMaxShift)(rng);
    }
    rows += blocks[b].n;
  }
  std::vector<float> qkv(static_cast<size_t>(rows) * q_stride, nan);
  const std::vector<float> q = rand_bf16(rng, static_cast<size_t>(rows) * q_w, -4.f, 4.f);
  for (int r = 0; r < rows; ++r)
    std::copy_n(q.begin() + static_cast<size_t>(r) * q_w, q_w, qkv.begin() + static_cast<size_t>(r) * q_stride);
  const size_t slot_elems = static_cast<size_t>(capacity) * kv_w;
  std::vector<float> k_cache(slots * slot_elems, nan), v_cache(k_cache.size(), nan);
  std::vector<std::vector<float>> keys(s.count), values(s.count);  // each block's keys in logical order
  for (int b = 0; b < s.count; ++b) {
    const cu::AttnBlock& blk = blocks[b];
    const size_t len = static_cast<size_t>(blk.pos + blk.n) * kv_w;
    keys[b] = rand_bf16(rng, len, -1.f, 1.f);
    values[b] = rand_bf16(rng, len, -1.f, 1.f);
    for (int t = 0; t < blk.pos + blk.n; ++t) {
      const size_t row = static_cast<size_t>(t < blk.base ? t : t + blk.shift);
      std::copy_n(keys[b].begin() + static_cast<size_t>(t) * kv_w, kv_w, k_cache.begin() + blk.slot * slot_elems + row * kv_w);
      std::copy_n(values[b].begin() + static_cast<size_t>(t) * kv_w, kv_w, v_cache.begin() + blk.slot * slot_elems + row * kv_w);
    }
  }

  size_t ws_bytes = tiny_ws ? 0 : cu::block_attention_workspace_bytes(rows, s.heads, s.hd);
  const size_t table_bytes = cu::batched_attention_table_bytes(rows, s.count, s.heads, s.kv);
  cu::BatchedAttentionPlan plan;
  cu::plan_batched_attention(blocks.data(), s.count, s.heads, s.kv, s.hd, ws_bytes, table_bytes, chunk_keys, plan);
  if (chunk_keys > 0) {
    EXPECT_EQ(plan.chunk_len, chunk_keys);
    ws_bytes = cu::attention_partials_bytes(plan.partials, s.hd);
  }
  EXPECT_EQ(plan.rows, rows);
  if (tiny_ws) {
    EXPECT_FALSE(plan.combine) << "no workspace, yet the plan splits a context";
  }

  Stream st;
  auto d_qkv = upload_bf16(qkv);
  auto d_k = upload_bf16(k_cache);
  auto d_v = upload_bf16(v_cache);
  auto d_table = upload(plan.table);
  DeviceBuffer<bf16> d_out(static_cast<size_t>(rows) * q_w);
  DeviceBuffer<unsigned char> d_ws(ws_bytes);
  cu::invoke_batched_attention(d_qkv.get(), q_stride, d_k.get(), d_v.get(), slot_elems, d_out.get(), d_ws.get(),
                               ws_bytes, plan, d_table.get(), s.heads, s.kv, s.hd, st.s);
  st.sync();

  std::vector<float> ref(static_cast<size_t>(rows) * q_w);
  for (int b = 0; b < s.count; ++b)
    cllm::ref::block_attention(q.data() + static_cast<size_t>(blocks[b].q_row) * q_w, keys[b].data(), values[b].data(),
                               ref.data() + static_cast<size_t>(blocks[b].q_row) * q_w, blocks[b].n, blocks[b].pos,
                               s.heads, s.kv, s.hd);
  return {{"out", download_bf16(d_out), ref}};
}

// `arrays` arrays (a cache's K and V of every layer) of `capacity` rows of `dim` elements; rows
// [src, src + n) moved to [dst, dst + n), overlapping or not, against std::memmove per array.
std::vector<Compared> run_kv_move(const Shape& s, std::mt19937& rng) {
  const int arrays = 6, capacity = 3 * s.n + 10, dim = s.dim;
  const size_t array_elems = static_cast<size_t>(capacity) * dim;
  std::vector<float> cache = rand_bf16(rng, arrays * array_elems, -1.f, 1.f);
  auto d_cache = upload_bf16(cache);
  std::vector<Compared> out;
  // Down past the source, down overlapping, up overlapping, up past it.
  const int moves[][2] = {{2 * s.n + 5, 1}, {s.n / 2 + 3, 3}, {3, s.n / 2 + 3}, {1, 2 * s.n + 5}};
  Stream st;
  for (const auto& [src, dst] : moves) {
    cu::invoke_kv_move(d_cache.get(), array_elems, arrays, src, dst, s.n, dim, st.s);
    for (int a = 0; a < arrays; ++a)
      std::memmove(cache.data() + a * array_elems + static_cast<size_t>(dst) * dim,
                   cache.data() + a * array_elems + static_cast<size_t>(src) * dim, sizeof(float) * s.n * dim);
  }
  st.sync();
  out.push_back({"cache", download_bf16(d_cache), cache});
  return out;
}

std::vector<Compared> run_silu_mul(const Shape& s, std::mt19937& rng) {
  const int ffn = s.dim;
  const std::vector<float> gate_up = rand_bf16(rng, static_cast<size_t>(s.n) * 2 * ffn, -6.f, 6.f);

  Stream st;
  auto d_in = upload_bf16(gate_up);
  DeviceBuffer<bf16> d_out(static_cast<size_t>(s.n) * ffn);
  cu::invoke_silu_mul(d_in.get(), d_out.get(), s.n, ffn, st.s);
  st.sync();

  const std::vector<float> gate = columns(gate_up, s.n, 2 * ffn, 0, ffn), up = columns(gate_up, s.n, 2 * ffn, ffn, ffn);
  std::vector<float> ref(gate.size());
  cllm::ref::silu_mul(gate.data(), up.data(), ref.data(), ref.size());
  return {{"out", download_bf16(d_out), ref}};
}

template <typename T>
std::vector<Compared> run_argmax(const Shape& s, std::mt19937& rng) {
  constexpr bool kBf16 = std::is_same_v<T, bf16>;
  const int index_offset = 1000;  // as for a vocab shard starting at id 1000
  std::vector<float> logits = kBf16 ? rand_bf16(rng, static_cast<size_t>(s.n) * s.vocab, -8.f, 8.f)
                                    : rand_f32(rng, static_cast<size_t>(s.n) * s.vocab, -8.f, 8.f);
  // Every row gets its maximum twice, at random places (often in different segments): the lower
  // index must win.
  std::uniform_int_distribution<int> at(0, s.vocab - 1);
  for (int r = 0; r < s.n; ++r)
    for (int copy = 0; copy < 2; ++copy) logits[static_cast<size_t>(r) * s.vocab + at(rng)] = 9.f;

  Stream st;
  DeviceBuffer<T> d_logits = [&] {
    if constexpr (kBf16) return upload_bf16(logits); else return upload(logits);
  }();
  DeviceBuffer<int32_t> d_ids(s.n);
  DeviceBuffer<float> d_vals(s.n);
  const size_t ws_bytes = cu::argmax_workspace_bytes(s.n, s.vocab);
  DeviceBuffer<unsigned char> d_ws(ws_bytes);
  cu::invoke_argmax(d_logits.get(), s.n, s.vocab, d_ids.get(), d_vals.get(), index_offset, d_ws.get(), ws_bytes, st.s);
  st.sync();

  std::vector<float> ref_ids(s.n), ref_vals(s.n), gpu_ids(s.n);
  for (int r = 0; r < s.n; ++r) {
    const float* row = logits.data() + static_cast<size_t>(r) * s.vocab;
    const int32_t id = cllm::ref::argmax(row, s.vocab);
    ref_ids[r] = static_cast<float>(index_offset + id);
    ref_vals[r] = row[id];
  }
  const std::vector<int32_t> ids = download(d_ids);
  std::transform(ids.begin(), ids.end(), gpu_ids.begin(), [](int32_t i) { return static_cast<float>(i); });
  return {{"ids", gpu_ids, ref_ids}, {"values", download(d_vals), ref_vals}};
}

std::vector<Compared> run_gemm(const Shape& s, std::mt19937& rng) {
  const std::vector<float> x = rand_bf16(rng, static_cast<size_t>(s.M) * s.K, -1.f, 1.f);
  const std::vector<float> w = rand_bf16(rng, static_cast<size_t>(s.N) * s.K, -1.f, 1.f);

  struct Lt {
    cublasLtHandle_t h = nullptr;
    Lt() { CLLM_CUBLAS_CHECK(cublasLtCreate(&h)); }
    ~Lt() { cublasLtDestroy(h); }
  } lt;
  Stream st;
  auto d_x = upload_bf16(x);
  auto d_w = upload_bf16(w);
  DeviceBuffer<bf16> d_y(static_cast<size_t>(s.M) * s.N);
  const cu::GemmPlan plan(lt.h, s.M, s.N, s.K);
  plan.run(d_x.get(), d_w.get(), d_y.get(), st.s);
  st.sync();

  std::vector<float> ref(static_cast<size_t>(s.M) * s.N);
  cllm::ref::matmul_wt(x.data(), w.data(), ref.data(), s.M, s.N, s.K);
  return {{"y", download_bf16(d_y), ref}};
}

std::vector<Compared> run_skinny_gemm(const Shape& s, std::mt19937& rng) {
  const std::vector<float> x = rand_bf16(rng, static_cast<size_t>(s.M) * s.K, -1.f, 1.f);
  const std::vector<float> w = rand_bf16(rng, static_cast<size_t>(s.N) * s.K, -1.f, 1.f);

  // y is pre-filled with NaN (bf16 0xffff) and has a guard tail: an element the kernel forgets
  // fails the finiteness check, a write past the end shows in the guard.
  constexpr size_t kGuard = 64;
  const size_t count = static_cast<size_t>(s.M) * s.N;
  Stream st;
  auto d_x = upload_bf16(x);
  auto d_w = upload_bf16(w);
  DeviceBuffer<bf16> d_y(count + kGuard);
  CLLM_CUDA_CHECK(cudaMemset(d_y.get(), 0xff, (count + kGuard) * sizeof(bf16)));
  finish_upload();
  EXPECT_TRUE(cu::skinny_gemm_supported(s.M, s.N, s.K, d_x.get(), d_w.get()));
  cu::invoke_skinny_gemm(d_x.get(), d_w.get(), d_y.get(), s.M, s.N, s.K, st.s);
  st.sync();
  std::vector<uint16_t> bits(count + kGuard), again(count + kGuard);
  CLLM_CUDA_CHECK(cudaMemcpy(bits.data(), d_y.get(), bits.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  for (size_t i = count; i < bits.size(); ++i) EXPECT_EQ(bits[i], 0xffff) << "write past y[M, N] at " << i;
  // Deterministic: a second run gives the same bits.
  cu::invoke_skinny_gemm(d_x.get(), d_w.get(), d_y.get(), s.M, s.N, s.K, st.s);
  st.sync();
  CLLM_CUDA_CHECK(cudaMemcpy(again.data(), d_y.get(), again.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  EXPECT_TRUE(bits == again) << "two runs on the same inputs differ";

  std::vector<float> gpu(count);
  std::transform(bits.begin(), bits.begin() + count, gpu.begin(), cllm::bf16_bits_to_float);
  std::vector<float> ref(count);
  cllm::ref::matmul_wt(x.data(), w.data(), ref.data(), s.M, s.N, s.K);
  return {{"y", gpu, ref}};
}

// ---- the table -----------------------------------------------------------------------------------

const int kBlockSizes[] = {1, 4, 16, 64};

std::vector<Shape> rows_by(std::initializer_list<int> dims, int vocab = 0) {
  std::vector<Shape> shapes;
  for (int n : kBlockSizes)
    for (int dim : dims) shapes.push_back({.n = n, .dim = dim, .vocab = vocab});
  return shapes;
}

// GQA ratios 1, 4 and 8 for head_dim 64 and 128, at prior contexts `contexts`.
std::vector<Shape> attention_shapes(std::initializer_list<int> contexts) {
  const std::pair<int, int> heads_kv[] = {{16, 16}, {32, 8}, {32, 4}};
  std::vector<Shape> shapes;
  for (int n : kBlockSizes)
    for (int ctx : contexts)
      for (const auto& [heads, kv] : heads_kv)
        for (int hd : {64, 128}) shapes.push_back({.n = n, .ctx = ctx, .heads = heads, .kv = kv, .hd = hd});
  return shapes;
}

// Batches of `counts` blocks of up to n queries at contexts up to ctx, GQA 1, 4 and 8.
std::vector<Shape> batched_attention_shapes(std::initializer_list<int> counts) {
  const std::pair<int, int> heads_kv[] = {{16, 16}, {32, 8}, {32, 4}};
  std::vector<Shape> shapes;
  for (int count : counts)
    for (int n : {1, 4, 16})
      for (int ctx : {1, 100, 1000})
        for (const auto& [heads, kv] : heads_kv)
          for (int hd : {64, 128}) {
            if (count == 16 && ctx == 1000 && hd == 64) continue;  // keeps the CPU reference's time down
            shapes.push_back({.n = n, .ctx = ctx, .heads = heads, .kv = kv, .hd = hd, .count = count});
          }
  return shapes;
}

std::vector<Shape> vocab_shapes() {
  std::vector<Shape> shapes;
  for (int n : kBlockSizes)
    for (int vocab : {32000, 49152, 128256}) shapes.push_back({.n = n, .vocab = vocab});
  return shapes;
}

std::vector<Shape> gemm_shapes() {
  // (M, N, K): decoding/Jacobi block rows against LLaMA-family projections (576: SmolLM-135M,
  // 4096/11008: LLaMA-2-7B); M = 7 and N = 1536 are off the power-of-two grid on purpose.
  const int mnk[][3] = {{1, 576, 576},     {4, 1536, 576},    {16, 4096, 4096}, {64, 11008, 4096},
                        {256, 576, 1536}, {256, 4096, 576}, {1, 11008, 4096}, {7, 4096, 4096}};
  std::vector<Shape> shapes;
  for (const auto& s : mnk) shapes.push_back({.M = s[0], .N = s[1], .K = s[2]});
  return shapes;
}

std::vector<Shape> skinny_gemm_shapes() {
  // Every M up to 32 at one small shape (each M picks its tile variant: <= 8, <= 16, <= 32, with
  // tokens past M masked); then the LLaMA-2-7B projections at the M the model uses; N not a multiple of
  // 16 or 32 and K not a multiple of 32 (K % 8 == 0 is required) exercise the masked edges.
  std::vector<Shape> shapes;
  for (int m = 1; m <= 32; ++m) shapes.push_back({.M = m, .N = 200, .K = 264});
  // (The CPU reference is a serial fp64 loop, about 1 GFMA/s: the widest shapes run at M = 1 and 16 only.)
  const int wide[][2] = {{12288, 4096}, {22016, 4096}, {32000, 4096}};
  const int narrow[][2] = {{4096, 4096}, {4096, 11008}, {576, 576}, {1000, 1000}, {1, 8}, {17, 4104}};
  for (const int m : {1, 16})
    for (const auto& s : wide) shapes.push_back({.M = m, .N = s[0], .K = s[1]});
  for (const int m : {1, 7, 16, 32})
    for (const auto& s : narrow) shapes.push_back({.M = m, .N = s[0], .K = s[1]});
  // Past 32 rows: M tiles of 64 tokens, partial last tiles.
  for (const int m : {33, 64, 65, 130, 256}) shapes.push_back({.M = m, .N = 576, .K = 576});
  for (const int m : {64, 100}) shapes.push_back({.M = m, .N = 1000, .K = 1000});
  return shapes;
}

const std::vector<Op>& ops() {
  static const std::vector<Op> table = {
      {"embedding", kExact, rows_by({576, 4096}, 32000), run_embedding},
      {"add_rmsnorm", kTolElementwise, rows_by({576, 4096, 8192}),
       [](const Shape& s, std::mt19937& rng) { return run_add_rmsnorm(s, rng, true); }},
      {"rmsnorm", kTolElementwise, rows_by({576, 4096}),
       [](const Shape& s, std::mt19937& rng) { return run_add_rmsnorm(s, rng, false); }},
      {"rope_kv_write", kTolElementwise, attention_shapes({0, 2000}),
       [](const Shape& s, std::mt19937& rng) { return run_rope_kv_write(s, rng, false); }},
      {"rope_kv_write_slots", kTolElementwise, attention_shapes({0, 2000}),
       [](const Shape& s, std::mt19937& rng) { return run_rope_kv_write(s, rng, true); }},
      {"block_attention", kTolDot, attention_shapes({1, 100, 2048}), run_block_attention},
      {"batched_attention", kTolDot, batched_attention_shapes({2, 5, 16}),
       [](const Shape& s, std::mt19937& rng) { return run_batched_attention(s, rng, false); }},
      {"batched_attention_no_ws", kTolDot, batched_attention_shapes({5}),
       [](const Shape& s, std::mt19937& rng) { return run_batched_attention(s, rng, true); }},
      {"batched_attention_invariant", kTolDot, batched_attention_shapes({1, 5, 16}),
       [](const Shape& s, std::mt19937& rng) { return run_batched_attention(s, rng, false, cu::invariant_chunk_keys(s.kv)); }},
      {"batched_attention_branches", kTolDot, batched_attention_shapes({2, 5}),
       [](const Shape& s, std::mt19937& rng) { return run_batched_attention(s, rng, false, 0, true); }},
      {"batched_attention_branches_invariant", kTolDot, batched_attention_shapes({5}),
       [](const Shape& s, std::mt19937& rng) {
         return run_batched_attention(s, rng, false, cu::invariant_chunk_keys(s.kv), true);
       }},
      {"kv_move", kExact, rows_by({64, 1024}), run_kv_move},
      {"silu_mul", kTolElementwise, rows_by({1536, 11008, 14336}), run_silu_mul},
      {"argmax_bf16", kExact, vocab_shapes(), run_argmax<bf16>},
      {"argmax_f32", kExact, vocab_shapes(), run_argmax<float>},
      {"gemm", kTolDot, gemm_shapes(), run_gemm},
      {"skinny_gemm", kTolDot, skinny_gemm_shapes(), run_skinny_gemm},
  };
  return table;
}

struct Case {
  const Op* op;
  Shape shape;
  std::string name() const { return op->name + "__" + shape.name(); }
};

// gtest prints a failing case's parameter with this instead of its raw bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const Op& op : ops())
    for (const Shape& s : op.shapes) cases.push_back({&op, s});
  return cases;
}

// FNV-1a of the case name: each case has its own reproducible inputs.
uint32_t seed_for(const std::string& name) {
  uint32_t h = 2166136261u;
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h;
}

class OpVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(OpVsReference, MatchesCpu) {
  const Case& c = GetParam();
  std::mt19937 rng(seed_for(c.name()));
  for (const Compared& t : c.op->run(c.shape, rng)) {
    SCOPED_TRACE(t.tensor);
    ASSERT_EQ(t.gpu.size(), t.ref.size());
    double max_ref = 0, max_diff = 0;
    size_t worst = 0;
    for (size_t i = 0; i < t.ref.size(); ++i) {
      ASSERT_TRUE(std::isfinite(t.gpu[i])) << "gpu[" << i << "] = " << t.gpu[i] << ", ref " << t.ref[i];
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(t.ref[i])));
      const double diff = std::fabs(static_cast<double>(t.gpu[i]) - t.ref[i]);
      if (diff > max_diff) max_diff = diff, worst = i;
    }
    const double err = max_diff / std::max(max_ref, 1e-30);
    EXPECT_LE(err, c.op->tol) << "max |gpu - ref| / max |ref| = " << err << "; worst at " << worst << ": gpu "
                              << t.gpu[worst] << " ref " << t.ref[worst];
  }
}

// CudaModel replays a step's CUDA graph without capture while the attention's launch shape stays
// the same: a decoding sequence (one block of n = 1 or a 16-token Jacobi block, as SmolLM2's and
// a 7B's heads) must change it only a handful of times over a 2048-token context, and the padded
// work list must be a power of two of items.
TEST(BatchedAttentionPlan, LaunchShapeChangesRarelyAsContextGrows) {
  struct Heads {
    int heads, kv, hd;
  };
  for (const Heads h : {Heads{9, 3, 64}, Heads{32, 32, 128}})
    for (const int n : {1, 16}) {
      const size_t ws = cu::block_attention_workspace_bytes(256, h.heads, h.hd);
      const size_t table = cu::batched_attention_table_bytes(1024, 1024, h.heads, h.kv);
      cu::BatchedAttentionPlan plan;
      int changes = 0;
      cu::AttentionLaunchShape last;
      for (int pos = 0; pos + n <= 2048; ++pos) {
        const cu::AttnBlock block{0, pos, n, 0};
        cu::plan_batched_attention(&block, 1, h.heads, h.kv, h.hd, ws, table, 0, plan);
        ASSERT_EQ(plan.items & (plan.items - 1), 0) << "items " << plan.items << " not a power of two at pos " << pos;
        if (pos == 0 || !(plan.launch_shape() == last)) ++changes;
        last = plan.launch_shape();
      }
      std::printf("[ shapes   ] heads %d/%d n %d: %d launch shapes over 2048 positions\n", h.heads, h.kv, n, changes);
      EXPECT_LE(changes, 16) << "heads " << h.heads << "/" << h.kv << " n " << n;
    }
}

// ---- batch invariance ---------------------------------------------------------------------------
// A row's output bits must not depend on what else shares the launch (design.md, "GPU numerics").
// Each test computes one probe row alone, then inside launches of other sizes with fresh random
// rows around it at a random place, and compares bits.

std::vector<uint16_t> download_bits(const DeviceBuffer<bf16>& d, size_t offset, size_t count) {
  std::vector<uint16_t> bits(count);
  CLLM_CUDA_CHECK(cudaMemcpy(bits.data(), d.get() + offset, count * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  return bits;
}

// The invariant GEMM: row r of y for M = 1 .. 1024 (every tile variant and M tiling) equals the
// probe's M = 1 row, at the 135M and 7B projection shapes.
TEST(BatchInvariance, GemmRowIndependentOfM) {
  const int nk[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {4096, 4096}, {11008, 4096}, {4096, 11008}};
  std::mt19937 rng(7);
  Stream st;
  for (const auto& [N, K] : nk) {
    const std::vector<float> w = rand_bf16(rng, static_cast<size_t>(N) * K, -1.f, 1.f);
    const std::vector<float> probe = rand_bf16(rng, K, -1.f, 1.f);
    auto d_w = upload_bf16(w);
    auto d_probe = upload_bf16(probe);
    DeviceBuffer<bf16> d_y1(N);
    cu::invoke_skinny_gemm(d_probe.get(), d_w.get(), d_y1.get(), 1, N, K, st.s);
    st.sync();
    const std::vector<uint16_t> alone = download_bits(d_y1, 0, N);
    for (const int M : {2, 3, 8, 9, 16, 17, 31, 32, 33, 64, 65, 100, 256, 1024}) {
      std::vector<float> x = rand_bf16(rng, static_cast<size_t>(M) * K, -1.f, 1.f);
      const int r = std::uniform_int_distribution<int>(0, M - 1)(rng);
      std::copy(probe.begin(), probe.end(), x.begin() + static_cast<size_t>(r) * K);
      auto d_x = upload_bf16(x);
      DeviceBuffer<bf16> d_y(static_cast<size_t>(M) * N);
      cu::invoke_skinny_gemm(d_x.get(), d_w.get(), d_y.get(), M, N, K, st.s);
      st.sync();
      EXPECT_TRUE(download_bits(d_y, static_cast<size_t>(r) * N, N) == alone)
          << "N " << N << " K " << K << ": row " << r << " of M = " << M << " differs from the same row alone";
    }
  }
}

// Every built tile shape of the register-tiled kernel (what a tuning bench may pick) gives the bits
// of the default dispatch, for row counts that fill, split and overhang its tiles.
TEST(BatchInvariance, GemmTileShapesGiveTheSameBits) {
  const int nk[][2] = {{576, 1536}, {200, 264}, {4096, 4096}};
  std::mt19937 rng(17);
  Stream st;
  for (const auto& [N, K] : nk) {
    auto d_w = upload_bf16(rand_bf16(rng, static_cast<size_t>(N) * K, -0.05f, 0.05f));
    for (const int M : {1, 7, 16, 23, 64}) {
      auto d_x = upload_bf16(rand_bf16(rng, static_cast<size_t>(M) * K, -4.f, 4.f));
      const size_t count = static_cast<size_t>(M) * N;
      DeviceBuffer<bf16> d_ref(count), d_y(count);
      cu::invoke_skinny_gemm(d_x.get(), d_w.get(), d_ref.get(), M, N, K, st.s);
      st.sync();
      const std::vector<uint16_t> ref = download_bits(d_ref, 0, count);
      for (const cu::SkinnyTileShape& t : cu::skinny_tile_shapes()) {
        cu::SkinnyInput in;
        in.x = d_x.get();
        cu::invoke_skinny_gemm_tiles(t, in, d_w.get(), cu::SkinnyOutput{d_y.get()}, M, N, K, st.s);
        st.sync();
        EXPECT_TRUE(download_bits(d_y, 0, count) == ref)
            << "N " << N << " K " << K << " M " << M << ": tile shape " << t.name() << " differs from the default";
      }
    }
  }
}

// The SwiGLU in the gate|up projection's epilogue: the same bits as the GEMM into [M, 2F] followed by
// invoke_silu_mul, for plain and normalised inputs, at the 135M, 7B and one TP=4 70B rank's shapes,
// for every row count the fused forms take, and every built tile shape.
TEST(FusedKernels, SwigluEpilogueEqualsGemmThenSiluMul) {
  const int fk[][2] = {{1536, 576}, {11008, 4096}, {7168, 8192}, {24, 40}};  // F, K
  std::mt19937 rng(19);
  Stream st;
  for (const auto& [F, K] : fk) {
    const int N = 2 * F;
    auto d_w = upload_bf16(rand_bf16(rng, static_cast<size_t>(N) * K, -0.05f, 0.05f));
    for (const int M : {1, 3, 8, 9, 16, 17, 33, 64}) {
      const std::vector<float> x = rand_bf16(rng, static_cast<size_t>(M) * K, -4.f, 4.f);
      auto d_x = upload_bf16(x);
      DeviceBuffer<bf16> d_gu(static_cast<size_t>(M) * N), d_ref(static_cast<size_t>(M) * F),
          d_act(static_cast<size_t>(M) * F);
      cu::invoke_skinny_gemm(d_x.get(), d_w.get(), d_gu.get(), M, N, K, st.s);
      cu::invoke_silu_mul(d_gu.get(), d_ref.get(), M, F, st.s);
      st.sync();
      const size_t count = static_cast<size_t>(M) * F;
      const std::vector<uint16_t> ref = download_bits(d_ref, 0, count);
      cu::SkinnyInput in;
      in.x = d_x.get();
      cu::SkinnyOutput out{d_act.get()};
      out.swiglu = true;
      ASSERT_TRUE(cu::skinny_gemm_fused_supported(M, N, K, in, out, d_w.get())) << "F " << F << " M " << M;
      cu::invoke_skinny_gemm_fused(in, d_w.get(), out, M, N, K, st.s);
      st.sync();
      EXPECT_TRUE(download_bits(d_act, 0, count) == ref) << "F " << F << " K " << K << " M " << M;
      if (M == 3 && F <= 1536) {  // and against the CPU reference, as every kernel
        const std::vector<float> w = download_bf16(d_w);
        std::vector<float> gu(static_cast<size_t>(M) * N), act(count);
        cllm::ref::matmul_wt(x.data(), w.data(), gu.data(), M, N, K);
        for (float& v : gu) v = cllm::round_to_bf16(v);  // the GEMM's output is rounded to bf16 first
        const std::vector<float> gate = columns(gu, M, N, 0, F), up = columns(gu, M, N, F, F);
        cllm::ref::silu_mul(gate.data(), up.data(), act.data(), act.size());
        const std::vector<float> got = download_bf16(d_act);
        for (size_t i = 0; i < count; ++i)
          ASSERT_NEAR(got[i], act[i], 2e-2f + 1e-2f * std::fabs(act[i])) << "F " << F << " K " << K << " at " << i;
      }
      if (M == 9 && F <= 1536)
        for (const cu::SkinnyTileShape& t : cu::skinny_tile_shapes()) {
          CLLM_CUDA_CHECK(cudaMemset(d_act.get(), 0xff, count * sizeof(bf16)));
          cu::invoke_skinny_gemm_tiles(t, in, d_w.get(), out, M, N, K, st.s);
          st.sync();
          EXPECT_TRUE(download_bits(d_act, 0, count) == ref)
              << "F " << F << " M " << M << ": tile shape " << t.name();
        }
    }
    cu::SkinnyInput in;
    in.x = d_w.get();
    cu::SkinnyOutput odd{d_w.get()};
    odd.swiglu = true;
    EXPECT_FALSE(cu::skinny_gemm_fused_supported(1, N - 8, K, in, odd, d_w.get())) << "N % 16 != 0 accepted";
  }
}

// The fused layer boundary: a GEMM whose output is added into the residual (with its RMS partials),
// then a GEMM that normalises the residual as it loads it, give the bits of GEMM -> add_rmsnorm ->
// GEMM: the new residual and the second output, for every row count the fused forms take, at the
// 135M, 7B and 70B-rank (TP=4) widths.
void check_layer_boundary_fusion() {
  struct Widths {
    int d, k_in, n_out;  // residual width, first GEMM's K (its input), second GEMM's N
  };
  const Widths shapes[] = {{576, 576, 3072}, {4096, 11008, 4096}, {8192, 2048, 2304}};
  const float eps = 1e-5f;
  std::mt19937 rng(17);
  Stream st;
  for (const Widths& sh : shapes) {
    const std::vector<float> w1 = rand_bf16(rng, static_cast<size_t>(sh.d) * sh.k_in, -0.05f, 0.05f);
    const std::vector<float> w2 = rand_bf16(rng, static_cast<size_t>(sh.n_out) * sh.d, -0.05f, 0.05f);
    const std::vector<float> gamma = rand_bf16(rng, sh.d, 0.5f, 1.5f);
    auto d_w1 = upload_bf16(w1);
    auto d_w2 = upload_bf16(w2);
    auto d_gamma = upload_bf16(gamma);
    for (const int M : {1, 2, 3, 8, 9, 16, 17, 33, 64}) {
      auto d_x = upload_bf16(rand_bf16(rng, static_cast<size_t>(M) * sh.k_in, -3.f, 3.f));
      const std::vector<float> res0 = rand_f32(rng, static_cast<size_t>(M) * sh.d, -2.f, 2.f);
      auto d_res_ref = upload(res0);
      auto d_res_fused = upload(res0);
      DeviceBuffer<bf16> d_sub(static_cast<size_t>(M) * sh.d),
          d_normed(static_cast<size_t>(M) * sh.d), d_y_ref(static_cast<size_t>(M) * sh.n_out),
          d_y_fused(static_cast<size_t>(M) * sh.n_out);
      DeviceBuffer<float> d_parts(static_cast<size_t>(M) * cu::rms_segments(sh.d));
      // Separate kernels.
      cu::invoke_skinny_gemm(d_x.get(), d_w1.get(), d_sub.get(), M, sh.d, sh.k_in, st.s);
      cu::invoke_add_rmsnorm(d_res_ref.get(), d_sub.get(), d_gamma.get(), d_normed.get(), M, sh.d, eps, st.s);
      cu::invoke_skinny_gemm(d_normed.get(), d_w2.get(), d_y_ref.get(), M, sh.n_out, sh.d, st.s);
      // Fused.
      cu::SkinnyInput in1;
      in1.x = d_x.get();
      const cu::SkinnyOutput out1{nullptr, d_res_fused.get(), d_parts.get()};
      ASSERT_TRUE(cu::skinny_gemm_fused_supported(M, sh.d, sh.k_in, in1, out1, d_w1.get()));
      cu::invoke_skinny_gemm_fused(in1, d_w1.get(), out1, M, sh.d, sh.k_in, st.s);
      cu::SkinnyInput in2;
      in2.residual = d_res_fused.get();
      in2.gamma = d_gamma.get();
      in2.rms_parts = d_parts.get();
      in2.eps = eps;
      cu::invoke_skinny_gemm_fused(in2, d_w2.get(), cu::SkinnyOutput{d_y_fused.get()}, M, sh.n_out, sh.d, st.s);
      st.sync();
      const std::string tag = "d " + std::to_string(sh.d) + " M " + std::to_string(M);
      EXPECT_TRUE(download(d_res_fused) == download(d_res_ref)) << tag << ": residual differs";
      const size_t count = static_cast<size_t>(M) * sh.n_out;
      const std::vector<uint16_t> y_ref = download_bits(d_y_ref, 0, count);
      EXPECT_TRUE(download_bits(d_y_fused, 0, count) == y_ref) << tag << ": output differs";
      if (M == 3 || M == 9)  // the normalised input through every built tile shape (registers and ring)
        for (const cu::SkinnyTileShape& t : cu::skinny_tile_shapes()) {
          CLLM_CUDA_CHECK(cudaMemset(d_y_fused.get(), 0xff, count * sizeof(bf16)));
          cu::invoke_skinny_gemm_tiles(t, in2, d_w2.get(), cu::SkinnyOutput{d_y_fused.get()}, M, sh.n_out, sh.d, st.s);
          st.sync();
          EXPECT_TRUE(download_bits(d_y_fused, 0, count) == y_ref) << tag << ": tile shape " << t.name();
        }
    }
    // Refused: more rows than the register tiles take, or two output forms at once.
    cu::SkinnyInput in;
    in.x = d_w1.get();
    EXPECT_FALSE(cu::skinny_gemm_fused_supported(cu::kSkinnyFusedMaxM + 1, sh.d, sh.k_in, in,
                                                 cu::SkinnyOutput{d_w2.get()}, d_w1.get()));
  }
}

// The qkv projection's RoPE + KV write epilogue: q in y, k and v in the caches with the bits of the
// GEMM followed by invoke_rope_kv_write, for every row count the fused forms take, at the 135M, 7B
// and 70B-rank head layouts; positions past 2048 and tokens in different cache slots (cache rows).
void check_qkv_rope_fusion() {
  struct Heads {
    int d, heads, kv, hd;
  };
  std::mt19937 rng(19);
  Stream st;
  for (const Heads h : {Heads{576, 9, 3, 64}, Heads{4096, 32, 32, 128}, Heads{8192, 16, 2, 128}}) {
    const int q_w = h.heads * h.hd, kv_w = h.kv * h.hd, N = q_w + 2 * kv_w;
    const std::vector<float> w = rand_bf16(rng, static_cast<size_t>(N) * h.d, -0.05f, 0.05f);
    auto d_w = upload_bf16(w);
    auto d_inv_freq = upload(inv_freq_for(h.hd));
    for (const int M : {1, 3, 8, 16, 17, 64}) {
      const int cache_rows_total = 3 * 4096;
      std::vector<int32_t> pos(M), rows(M);
      for (int i = 0; i < M; ++i) {
        pos[i] = 2040 + i / 3 + 700 * (i % 3);
        rows[i] = (i % 3) * 4096 + pos[i];
      }
      auto d_pos = upload(pos);
      auto d_rows = upload(rows);
      auto d_x = upload_bf16(rand_bf16(rng, static_cast<size_t>(M) * h.d, -2.f, 2.f));
      const std::vector<float> cache0 = rand_bf16(rng, static_cast<size_t>(cache_rows_total) * kv_w, -1.f, 1.f);
      auto d_k_ref = upload_bf16(cache0), d_v_ref = upload_bf16(cache0), d_k_fused = upload_bf16(cache0),
           d_v_fused = upload_bf16(cache0);
      DeviceBuffer<bf16> d_qkv(static_cast<size_t>(M) * N), d_y(static_cast<size_t>(M) * N);
      cu::invoke_skinny_gemm(d_x.get(), d_w.get(), d_qkv.get(), M, N, h.d, st.s);
      bf16* q = d_qkv.get();
      cu::invoke_rope_kv_write(q, N, q + q_w, N, q + q_w + kv_w, N, d_k_ref.get(), d_v_ref.get(), d_pos.get(),
                               d_rows.get(), d_inv_freq.get(), M, h.heads, h.kv, h.hd, st.s);
      cu::SkinnyInput in;
      in.x = d_x.get();
      cu::SkinnyOutput out{d_y.get()};
      out.rope = cu::SkinnyRopeKv{d_pos.get(), d_rows.get(), d_inv_freq.get(), d_k_fused.get(), d_v_fused.get(),
                                  q_w, kv_w, h.hd};
      ASSERT_TRUE(cu::skinny_gemm_fused_supported(M, N, h.d, in, out, d_w.get()));
      cu::invoke_skinny_gemm_fused(in, d_w.get(), out, M, N, h.d, st.s);
      st.sync();
      const std::string tag = "heads " + std::to_string(h.heads) + "/" + std::to_string(h.kv) + " M " + std::to_string(M);
      for (int i = 0; i < M; ++i)
        ASSERT_TRUE(download_bits(d_y, static_cast<size_t>(i) * N, q_w) ==
                    download_bits(d_qkv, static_cast<size_t>(i) * N, q_w))
            << tag << ": q of token " << i << " differs";
      const size_t cache_elems = static_cast<size_t>(cache_rows_total) * kv_w;
      EXPECT_TRUE(download_bits(d_k_fused, 0, cache_elems) == download_bits(d_k_ref, 0, cache_elems)) << tag << ": K";
      EXPECT_TRUE(download_bits(d_v_fused, 0, cache_elems) == download_bits(d_v_ref, 0, cache_elems)) << tag << ": V";
    }
  }
}

// The default dispatch's shapes: register loads, and the shared-memory ring (set_skinny_ring), whose
// shapes then carry the fused layer's residual output, normalised input and RoPE epilogue.
struct RingDefaults {
  explicit RingDefaults(bool on) { cu::set_skinny_ring(on); }
  ~RingDefaults() { cu::set_skinny_ring(false); }
};
TEST(FusedKernels, LayerBoundaryEqualsAddRmsnorm) {
  RingDefaults registers(false);
  check_layer_boundary_fusion();
}
TEST(FusedKernels, LayerBoundaryEqualsAddRmsnormRing) {
  RingDefaults ring(true);
  check_layer_boundary_fusion();
}
TEST(FusedKernels, QkvRopeEpilogueEqualsRopeKvWrite) {
  RingDefaults registers(false);
  check_qkv_rope_fusion();
}
TEST(FusedKernels, QkvRopeEpilogueEqualsRopeKvWriteRing) {
  RingDefaults ring(true);
  check_qkv_rope_fusion();
}

// The batch-invariant attention plan: a query row at position p gives the same bits as a lone
// one-token block (n = 1, the AR step) when it is row i of a Jacobi block at p - i, and when other
// blocks of random sizes and contexts share the launch; positions straddle chunk boundaries.
TEST(BatchInvariance, AttentionRowIndependentOfBatch) {
  struct Heads {
    int heads, kv, hd;
  };
  std::mt19937 rng(11);
  Stream st;
  for (const Heads h : {Heads{9, 3, 64}, Heads{32, 32, 128}, Heads{32, 8, 128}})
    for (const int p : {0, 5, 127, 128, 255, 256, 300, 1000, 2047}) {  // chunk boundaries of 128 and 256 keys
      const int q_w = h.heads * h.hd, kv_w = h.kv * h.hd, stride = q_w + 2 * kv_w;
      const int slots = 6, capacity = 2048 + 64;
      const size_t slot_elems = static_cast<size_t>(capacity) * kv_w;
      // Every slot holds random K/V for all its rows; the probe's slot is slot 0.
      const std::vector<float> k = rand_bf16(rng, slots * slot_elems, -1.f, 1.f);
      const std::vector<float> v = rand_bf16(rng, slots * slot_elems, -1.f, 1.f);
      const std::vector<float> probe_q = rand_bf16(rng, q_w, -4.f, 4.f);
      auto d_k = upload_bf16(k);
      auto d_v = upload_bf16(v);
      // Runs `blocks` with the probe as query row `probe_row`; returns the probe's output bits.
      auto run = [&](const std::vector<cu::AttnBlock>& blocks, int probe_row) {
        int rows = 0;
        for (const cu::AttnBlock& b : blocks) rows = std::max(rows, b.q_row + b.n);
        std::vector<float> qkv = rand_bf16(rng, static_cast<size_t>(rows) * stride, -4.f, 4.f);
        std::copy(probe_q.begin(), probe_q.end(), qkv.begin() + static_cast<size_t>(probe_row) * stride);
        cu::BatchedAttentionPlan plan;
        cu::plan_batched_attention(blocks.data(), static_cast<int>(blocks.size()), h.heads, h.kv, h.hd, 0, 0,
                                   cu::invariant_chunk_keys(h.kv), plan);
        auto d_qkv = upload_bf16(qkv);
        auto d_table = upload(plan.table);
        const size_t ws_bytes = cu::attention_partials_bytes(plan.partials, h.hd);
        DeviceBuffer<unsigned char> d_ws(ws_bytes);
        DeviceBuffer<bf16> d_out(static_cast<size_t>(rows) * q_w);
        cu::invoke_batched_attention(d_qkv.get(), stride, d_k.get(), d_v.get(), slot_elems, d_out.get(), d_ws.get(),
                                     ws_bytes, plan, d_table.get(), h.heads, h.kv, h.hd, st.s);
        st.sync();
        return download_bits(d_out, static_cast<size_t>(probe_row) * q_w, q_w);
      };
      const std::vector<uint16_t> alone = run({{0, p, 1, 0}}, 0);
      for (const int n : {2, 4, 16, 64}) {
        const int i = std::min(p, std::uniform_int_distribution<int>(0, n - 1)(rng));  // the probe's row in its block
        // The probe's block first, alone; then between blocks of other slots at random contexts.
        EXPECT_TRUE(run({{0, p - i, n, 0}}, i) == alone)
            << "heads " << h.heads << "/" << h.kv << " p " << p << ": row " << i << " of a " << n << "-token block";
        std::vector<cu::AttnBlock> blocks;
        int row = 0;
        for (int s = 1; s < slots; ++s) {
          const int bn = std::uniform_int_distribution<int>(1, 16)(rng);
          const int pos = std::uniform_int_distribution<int>(0, capacity - bn)(rng);
          blocks.push_back({row, pos, bn, s});
          row += bn;
          if (s == 2) {
            blocks.push_back({row, p - i, n, 0});
            row += n;
          }
        }
        const int probe_row = blocks[2].q_row + i;
        EXPECT_TRUE(run(blocks, probe_row) == alone)
            << "heads " << h.heads << "/" << h.kv << " p " << p << ": row " << i << " of a " << n
            << "-token block among " << blocks.size() - 1 << " others";
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Kernels, OpVsReference, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name(); });

}  // namespace
