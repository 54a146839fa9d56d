// CPU kernels (kernels/cpu/ops.h) against the naive references (kernels/cpu/reference.h).
//
// One harness: every op is a row in op_cases() with its shapes, its tolerance and a run function
// that builds fresh random inputs from a seeded std::mt19937, runs cpu:: and ref:: on identical
// copies, and returns the max normalised error max|fast - ref| / max(|ref|, 1e-30). Adding an op
// is one row. Targeted property tests (causal mask, ties, aliasing, thread-count independence)
// follow the harness.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/membw.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/reference.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm {
namespace {

using Dims = std::vector<int>;

std::vector<float> random_vec(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double max_norm_err(const std::vector<float>& fast, const std::vector<float>& ref) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::abs(double(fast[i]) - ref[i]));
    scale = std::max(scale, std::abs(double(ref[i])));
  }
  return diff / scale;
}

// RoPE inverse frequencies base^(-2d/head_dim), LLaMA's default base.
std::vector<float> inv_freqs(int head_dim, double base = 10000.0) {
  std::vector<float> f(head_dim / 2);
  for (int d = 0; d < head_dim / 2; ++d) f[d] = float(std::pow(base, -2.0 * d / head_dim));
  return f;
}

// Attention inputs: q spread over [-3, 3] so softmaxes are peaked, not near-uniform.
struct AttnInputs {
  std::vector<float> q, k, v;
};
AttnInputs attn_inputs(std::mt19937& rng, int n, int p0, int n_heads, int n_kv, int hd) {
  const size_t T = size_t(p0) + n;
  return {random_vec(rng, size_t(n) * n_heads * hd, -3, 3), random_vec(rng, T * n_kv * hd),
          random_vec(rng, T * n_kv * hd)};
}

struct OpCase {
  std::string name;
  std::string dims_doc;  // what the Dims entries mean, for failure messages
  double tol;            // max normalised error allowed
  std::vector<Dims> shapes;
  std::function<double(const Dims&, std::mt19937&)> run;
};

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = {
      {"matmul_wt", "M,N,K", 1e-4,
       {{1, 1, 1}, {1, 257, 129}, {3, 17, 33}, {7, 64, 128}, {64, 100, 300}, {1, 4096, 512}},
       [](const Dims& s, std::mt19937& rng) {
         const int M = s[0], N = s[1], K = s[2];
         auto x = random_vec(rng, size_t(M) * K), w = random_vec(rng, size_t(N) * K);
         std::vector<float> a(size_t(M) * N), b(a.size());
         cpu::matmul_wt(x.data(), w.data(), a.data(), M, N, K);
         ref::matmul_wt(x.data(), w.data(), b.data(), M, N, K);
         return max_norm_err(a, b);
       }},
      {"rmsnorm", "rows,dim", 1e-5,
       {{1, 1}, {1, 7}, {3, 129}, {64, 4096}, {5, 5000}},
       [](const Dims& s, std::mt19937& rng) {
         const int rows = s[0], dim = s[1];
         auto x = random_vec(rng, size_t(rows) * dim, -4, 4), w = random_vec(rng, dim, 0.5f, 1.5f);
         std::vector<float> a(x.size()), b(x.size());
         cpu::rmsnorm(x.data(), w.data(), a.data(), rows, dim, 1e-5f);
         ref::rmsnorm(x.data(), w.data(), b.data(), rows, dim, 1e-5f);
         return max_norm_err(a, b);
       }},
      {"rope", "n_tok,n_heads,head_dim,first_pos", 1e-5,
       {{1, 1, 2, 0}, {3, 5, 64, 7}, {64, 32, 128, 8100}, {17, 4, 128, 0}},
       [](const Dims& s, std::mt19937& rng) {
         const int n_tok = s[0], n_heads = s[1], hd = s[2];
         auto a = random_vec(rng, size_t(n_tok) * n_heads * hd), b = a;
         std::vector<int32_t> pos(n_tok);
         for (int t = 0; t < n_tok; ++t) pos[t] = s[3] + t;
         const auto f = inv_freqs(hd);
         cpu::rope(a.data(), pos.data(), n_tok, n_heads, hd, f.data());
         ref::rope(b.data(), pos.data(), n_tok, n_heads, hd, f.data());
         return max_norm_err(a, b);
       }},
      {"block_attention", "n,p0,n_heads,n_kv,head_dim", 1e-4,
       {{1, 0, 1, 1, 64},      // single query, empty prefix
        {1, 300, 8, 8, 64},    // decode step, GQA ratio 1
        {5, 3, 6, 2, 64},      // ratio 3, odd sizes
        {16, 129, 32, 4, 128}, // ratio 8, p0 > 0, crosses key-tile edges
        {64, 0, 8, 1, 128},    // ratio 8 (MQA-like), whole block causal
        {7, 61, 3, 3, 17},     // odd head_dim
        {2, 8190, 4, 1, 128}}, // long context: fp32 running sums over 8192 keys
       [](const Dims& s, std::mt19937& rng) {
         const int n = s[0], p0 = s[1], nh = s[2], nkv = s[3], hd = s[4];
         const auto in = attn_inputs(rng, n, p0, nh, nkv, hd);
         std::vector<float> a(in.q.size()), b(in.q.size());
         cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), a.data(), n, p0, nh, nkv, hd);
         ref::block_attention(in.q.data(), in.k.data(), in.v.data(), b.data(), n, p0, nh, nkv, hd);
         return max_norm_err(a, b);
       }},
      {"block_attention_window", "n,p0,n_heads,n_kv,head_dim,window", 1e-4,
       {{5, 3, 6, 2, 64, 1},          // window 1: each query sees only itself
        {16, 129, 32, 4, 128, 8},     // window inside one key tile, rows spanning tiles
        {64, 0, 8, 1, 128, 70},       // window longer than the block: only later rows slide
        {7, 61, 3, 3, 17, 64},        // window edge on a tile edge, odd head_dim
        {2, 8190, 4, 1, 128, 4096}},  // Mistral-7B's window at a long context
       [](const Dims& s, std::mt19937& rng) {
         const int n = s[0], p0 = s[1], nh = s[2], nkv = s[3], hd = s[4], w = s[5];
         const auto in = attn_inputs(rng, n, p0, nh, nkv, hd);
         std::vector<float> a(in.q.size()), b(in.q.size());
         cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), a.data(), n, p0, nh, nkv, hd, w);
         ref::block_attention(in.q.data(), in.k.data(), in.v.data(), b.data(), n, p0, nh, nkv, hd, w);
         return max_norm_err(a, b);
       }},
      {"silu_mul", "n", 1e-5,
       {{1}, {7}, {4097}, {64 * 11008}},
       [](const Dims& s, std::mt19937& rng) {
         const size_t n = s[0];
         auto g = random_vec(rng, n, -8, 8), u = random_vec(rng, n);
         std::vector<float> a(n), b(n);
         cpu::silu_mul(g.data(), u.data(), a.data(), n);
         ref::silu_mul(g.data(), u.data(), b.data(), n);
         return max_norm_err(a, b);
       }},
      {"add_inplace", "n", 0.0,  // one fp32 add per element on both sides: bit-exact
       {{1}, {13}, {300001}},
       [](const Dims& s, std::mt19937& rng) {
         const size_t n = s[0];
         auto a = random_vec(rng, n), y = random_vec(rng, n), b = a;
         cpu::add_inplace(a.data(), y.data(), n);
         ref::add_inplace(b.data(), y.data(), n);
         return max_norm_err(a, b);
       }},
      {"embedding", "vocab,n,dim", 0.0,  // a copy: bit-exact
       {{1, 1, 1}, {50, 9, 33}, {32000, 64, 256}},
       [](const Dims& s, std::mt19937& rng) {
         const int vocab = s[0], n = s[1], dim = s[2];
         auto table = random_vec(rng, size_t(vocab) * dim);
         std::uniform_int_distribution<int32_t> id(0, vocab - 1);
         std::vector<int32_t> ids(n);
         for (auto& i : ids) i = id(rng);
         std::vector<float> a(size_t(n) * dim), b(a.size());
         cpu::embedding(table.data(), ids.data(), a.data(), n, dim);
         ref::embedding(table.data(), ids.data(), b.data(), n, dim);
         return max_norm_err(a, b);
       }},
      {"argmax", "n", 0.0,
       {{1}, {7}, {9}, {32000}, {128257}},
       [](const Dims& s, std::mt19937& rng) {
         // Coarse values (multiples of 1/8) so ties are common and the tie rule is exercised.
         auto x = random_vec(rng, s[0], -4, 4);
         for (float& v : x) v = std::round(v * 8) / 8;
         return double(cpu::argmax(x.data(), s[0]) != ref::argmax(x.data(), s[0]));
       }},
  };
  return cases;
}

struct CaseShape {
  const OpCase* op;
  Dims dims;
};

void PrintTo(const CaseShape& c, std::ostream* os) { *os << c.op->name << "(" << c.op->dims_doc << ")"; }

std::vector<CaseShape> all_case_shapes() {
  std::vector<CaseShape> out;
  for (const auto& op : op_cases())
    for (const auto& d : op.shapes) out.push_back({&op, d});
  return out;
}

std::string dims_str(const Dims& d, char sep) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? std::string(1, sep) : "") + std::to_string(d[i]);
  return s;
}

class OpVsReference : public ::testing::TestWithParam<CaseShape> {};

TEST_P(OpVsReference, MatchesWithinTolerance) {
  const auto& [op, dims] = GetParam();
  for (uint32_t seed : {1u, 2u}) {
    std::mt19937 rng(seed);
    const double err = op->run(dims, rng);
    EXPECT_LE(err, op->tol) << op->name << " (" << op->dims_doc << ") = " << dims_str(dims, ',') << " seed "
                            << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, OpVsReference, ::testing::ValuesIn(all_case_shapes()),
                         [](const ::testing::TestParamInfo<CaseShape>& info) {
                           return info.param.op->name + "_" + dims_str(info.param.dims, 'x');
                         });

// Changing cache rows after a query's position must not change that query's output.
TEST(BlockAttention, CausalMaskIgnoresFutureRows) {
  const int n = 8, p0 = 20, nh = 4, nkv = 2, hd = 64;
  std::mt19937 rng(7);
  auto in = attn_inputs(rng, n, p0, nh, nkv, hd);
  std::vector<float> before(in.q.size()), after(in.q.size());
  cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), before.data(), n, p0, nh, nkv, hd);
  const int changed = p0 + 5;  // the cache row of query 5: queries 0..4 must not see it
  for (size_t j = 0; j < size_t(nkv) * hd; ++j) {
    in.k[changed * nkv * hd + j] += 10.0f;
    in.v[changed * nkv * hd + j] -= 10.0f;
  }
  cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), after.data(), n, p0, nh, nkv, hd);
  const size_t per_query = size_t(nh) * hd;
  for (int i = 0; i < n; ++i) {
    const bool same = std::equal(before.begin() + i * per_query, before.begin() + (i + 1) * per_query,
                                 after.begin() + i * per_query);
    EXPECT_EQ(same, i < 5) << "query " << i;
  }
}

// Logits of magnitude ~1e3 overflow exp() without the running-max subtraction.
TEST(BlockAttention, StableForLargeLogits) {
  const int n = 4, p0 = 100, nh = 4, nkv = 4, hd = 64;
  std::mt19937 rng(8);
  auto in = attn_inputs(rng, n, p0, nh, nkv, hd);
  for (float& x : in.q) x *= 100.0f;
  std::vector<float> a(in.q.size()), b(in.q.size());
  cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), a.data(), n, p0, nh, nkv, hd);
  ref::block_attention(in.q.data(), in.k.data(), in.v.data(), b.data(), n, p0, nh, nkv, hd);
  for (float x : a) ASSERT_TRUE(std::isfinite(x));
  EXPECT_LE(max_norm_err(a, b), 1e-4);
}

// Every rank must produce identical bits regardless of how many threads it runs.
TEST(BlockAttention, BitwiseIndependentOfThreadCount) {
  const int n = 16, p0 = 200, nh = 8, nkv = 2, hd = 128;
  std::mt19937 rng(9);
  const auto in = attn_inputs(rng, n, p0, nh, nkv, hd);
  const int saved = cpu::num_threads();
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 3}) {
    cpu::set_num_threads(threads);
    ASSERT_EQ(cpu::num_threads(), threads);
    outs.emplace_back(in.q.size());
    cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), outs.back().data(), n, p0, nh, nkv, hd);
  }
  cpu::set_num_threads(saved);
  EXPECT_EQ(outs[0], outs[1]);
}

// Continuous batching: each block of a batch_attention call, over its own cache, gives bit for
// bit what block_attention gives for that block alone (decode rows beside a long prefill chunk).
TEST(BlockAttention, BatchEqualsEachBlockAlone) {
  const int nh = 8, nkv = 2, hd = 64;
  const int shapes[][2] = {{1, 300}, {64, 0}, {16, 70}, {1, 0}, {5, 129}};  // (n, p0) per block
  std::mt19937 rng(10);
  std::vector<AttnInputs> ins;
  std::vector<cpu::AttentionBlock> blocks;
  std::vector<float> q, alone;
  for (const auto& [n, p0] : shapes) {
    ins.push_back(attn_inputs(rng, n, p0, nh, nkv, hd));
    q.insert(q.end(), ins.back().q.begin(), ins.back().q.end());
    std::vector<float> out(ins.back().q.size());
    cpu::block_attention(ins.back().q.data(), ins.back().k.data(), ins.back().v.data(), out.data(), n, p0, nh, nkv,
                         hd);
    alone.insert(alone.end(), out.begin(), out.end());
  }
  for (size_t b = 0; b < ins.size(); ++b) blocks.push_back({ins[b].k.data(), ins[b].v.data(), shapes[b][0], shapes[b][1]});
  std::vector<float> batched(q.size());
  cpu::batch_attention(q.data(), batched.data(), blocks.data(), int(blocks.size()), nh, nkv, hd);
  EXPECT_EQ(alone, batched);
}

// Sliding window: a query's output does not depend on the block it is computed in (a Jacobi
// block of n rows gives each row what a one-row step at its position gives), bit for bit.
TEST(BlockAttention, WindowRowsIndependentOfBlocking) {
  const int n = 24, p0 = 90, nh = 4, nkv = 2, hd = 64, window = 40;
  std::mt19937 rng(11);
  const auto in = attn_inputs(rng, n, p0, nh, nkv, hd);
  std::vector<float> block(in.q.size()), rows(in.q.size());
  cpu::block_attention(in.q.data(), in.k.data(), in.v.data(), block.data(), n, p0, nh, nkv, hd, window);
  const size_t row = size_t(nh) * hd;
  for (int i = 0; i < n; ++i)
    cpu::block_attention(in.q.data() + i * row, in.k.data(), in.v.data(), rows.data() + i * row, 1, p0 + i, nh, nkv,
                         hd, window);
  EXPECT_EQ(block, rows);
}

TEST(Argmax, TiesChooseLowestIndex) {
  std::vector<float> x(1000, 0.0f);
  x[3] = x[517] = x[999] = 2.0f;
  EXPECT_EQ(cpu::argmax(x.data(), int(x.size())), 3);
  EXPECT_EQ(ref::argmax(x.data(), int(x.size())), 3);
  std::fill(x.begin(), x.end(), -1.0f);  // all equal
  EXPECT_EQ(cpu::argmax(x.data(), int(x.size())), 0);
  x[998] = x[999] = 5.0f;  // tie inside the scalar tail
  EXPECT_EQ(cpu::argmax(x.data(), int(x.size())), 998);
}

TEST(Rmsnorm, InPlaceMatchesOutOfPlace) {
  const int rows = 3, dim = 4096;
  std::mt19937 rng(10);
  auto x = random_vec(rng, size_t(rows) * dim), w = random_vec(rng, dim);
  std::vector<float> out(x.size());
  cpu::rmsnorm(x.data(), w.data(), out.data(), rows, dim, 1e-6f);
  cpu::rmsnorm(x.data(), w.data(), x.data(), rows, dim, 1e-6f);
  EXPECT_EQ(x, out);
}

TEST(Kernels, BadInputsThrow) {
  std::vector<int32_t> ids(4, 0);
  ids[2] = -1;
  std::vector<float> table(16), out(4 * 16);
  EXPECT_THROW(cpu::embedding(table.data(), ids.data(), out.data(), 4, 16), Error);
  EXPECT_THROW(cpu::block_attention(nullptr, nullptr, nullptr, nullptr, 1, 0, 6, 4, 64), Error);  // 6 % 4 != 0
  EXPECT_THROW(cpu::argmax(nullptr, 0), Error);
}

TEST(ThreadPool, RunsEveryItemOnceIncludingNested) {
  std::vector<std::atomic<int>> hits(1000);
  cpu::parallel_for(10, [&](size_t outer) {
    cpu::parallel_for(100, [&](size_t inner) { hits[outer * 100 + inner]++; });  // nested: runs inline
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPool, ErrorInItemReachesCallerAndPoolSurvives) {
  EXPECT_THROW(cpu::parallel_for(100, [](size_t i) { CLLM_CHECK(i != 77, "item " << i); }), Error);
  std::atomic<size_t> sum{0};
  cpu::parallel_for_range(100000, 1000, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), size_t(100000) * 99999 / 2);
}

// Each probe against the same traffic measured a second way in this test: with one thread the
// copy probe does what one memcpy of the buffer does, and the read probe what one memchr over a
// buffer of the same size does (a bandwidth-bound scan through libc). Both sides take their best of
// interleaved runs, so other load slows both alike; a probe that miscounts its bytes (2x), times
// the wrong region or lets the compiler drop its reads leaves the [2/3, 3/2] band. Load that comes
// and goes (a test beside this one under ctest -j) can still push one side out for a round, so a
// round out of the band is measured again, up to 4 rounds: a miscount stays out in every round.
TEST(MemoryBandwidth, ProbesAgreeWithTheSameTrafficMeasuredDirectly) {
  const size_t bytes = size_t(64) << 20;
  const int threads = cpu::num_threads();
  cpu::set_num_threads(1);
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  auto best_gbs = [](double traffic, const std::function<void()>& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    return traffic / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
  };
  auto in_band = [](double ratio) { return ratio > 2.0 / 3 && ratio < 1.5; };
  double copy = 0, copy_ref = 0, read = 0, read_ref = 0;
  for (int round = 0; round < 4; ++round) {
    copy = copy_ref = read = read_ref = 0;
    for (int rep = 0; rep < 5; ++rep) {
      copy = std::max(copy, cpu::measure_copy_bandwidth_gbs(bytes, 1));
      copy_ref = std::max(copy_ref, best_gbs(2.0 * bytes, [&] { std::memcpy(dst.data(), src.data(), bytes); }));
      read = std::max(read, cpu::measure_read_bandwidth_gbs(bytes, 1));
      read_ref = std::max(read_ref, best_gbs(bytes, [&] { ASSERT_EQ(std::memchr(dst.data(), 0, bytes), nullptr); }));
    }
    if (in_band(copy / copy_ref) && in_band(read / read_ref)) break;
  }
  cpu::set_num_threads(threads);
  EXPECT_GT(copy / copy_ref, 2.0 / 3) << copy << " GB/s copy probe, " << copy_ref << " GB/s memcpy";
  EXPECT_LT(copy / copy_ref, 1.5) << copy << " GB/s copy probe, " << copy_ref << " GB/s memcpy";
  EXPECT_GT(read / read_ref, 2.0 / 3) << read << " GB/s read probe, " << read_ref << " GB/s memchr";
  EXPECT_LT(read / read_ref, 1.5) << read << " GB/s read probe, " << read_ref << " GB/s memchr";
}

}  // namespace
}  // namespace cllm
