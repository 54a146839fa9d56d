// The decode GEMM must (a) match the naive reference and (b) give every output row bit for bit
// the same value whatever the number of rows M it is computed with: that is what makes greedy
// Jacobi (M = n) reproduce greedy AR (M = 1) exactly on the CPU.
// The quantized-weight GEMM (gemm_quant.h) is held to the same two properties: against a
// dequantize-then-multiply fp32 reference on fresh random blocks (the gap is the int8 activation
// rounding, ~1/254 of each block's max), every SIMD path against the scalar one (same bits), and
// each row the same bits alone as inside M = 2..64, on every path.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/gemm_invariant.h"
#include "kernels/cpu/gemm_quant.h"
#include "kernels/cpu/int8_peak.h"
#include "kernels/cpu/reference.h"

namespace cllm {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(GemmInvariant, MatchesReference) {
  for (auto [M, N, K] : {std::tuple{1, 7, 5}, {3, 33, 576}, {16, 192, 1536}, {64, 130, 97}}) {
    const auto x = random_vec(static_cast<size_t>(M) * K, 1), w = random_vec(static_cast<size_t>(N) * K, 2);
    std::vector<float> y(static_cast<size_t>(M) * N), ref(y.size());
    cpu::matmul_wt_invariant(x.data(), w.data(), y.data(), M, N, K);
    ref::matmul_wt(x.data(), w.data(), ref.data(), M, N, K);
    double max_err = 0, max_ref = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      max_err = std::max(max_err, static_cast<double>(std::fabs(y[i] - ref[i])));
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[i])));
    }
    EXPECT_LT(max_err / max_ref, 1e-5) << "M=" << M << " N=" << N << " K=" << K;
  }
}

TEST(GemmInvariant, RowsDoNotDependOnBatchSize) {
  // Up to a continuous batch's worth of rows (32 sequences x 16), past the kernel's row blocking.
  const int N = 257, K = 583, Mmax = 515;
  const auto x = random_vec(static_cast<size_t>(Mmax) * K, 3), w = random_vec(static_cast<size_t>(N) * K, 4);
  std::vector<float> single(static_cast<size_t>(Mmax) * N);
  for (int m = 0; m < Mmax; ++m)
    cpu::matmul_wt_invariant(x.data() + static_cast<size_t>(m) * K, w.data(), single.data() + static_cast<size_t>(m) * N,
                             1, N, K);
  for (int M : {2, 3, 7, 16, 33, 64, 65, 112, 113, 200, 515}) {
    std::vector<float> batch(static_cast<size_t>(M) * N);
    cpu::matmul_wt_invariant(x.data(), w.data(), batch.data(), M, N, K);
    EXPECT_EQ(0, std::memcmp(batch.data(), single.data(), batch.size() * sizeof(float))) << "M=" << M;
  }
}

// Random blocks in ggml's row-major order (what a GGUF file holds), and the matrix packed from them.
struct RandomQuant {
  std::vector<uint8_t> qs;
  std::vector<float> d, m;
  cpu::QuantMatrix w;
};

RandomQuant random_quant(cpu::QuantFormat f, int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f), minimum(-0.4f, 0.0f);
  RandomQuant r;
  const size_t blocks = static_cast<size_t>(rows) * cols / cpu::kQuantBlock;
  r.qs.resize(blocks * (f == cpu::QuantFormat::Q8_0 ? 32 : 16));
  for (uint8_t& q : r.qs) q = static_cast<uint8_t>(byte(rng));  // Q8_0: all of -128..127
  r.d.resize(blocks);
  for (float& d : r.d) d = scale(rng);
  if (f == cpu::QuantFormat::Q4_1) {
    r.m.resize(blocks);
    for (float& m : r.m) m = minimum(rng);
  }
  r.w = cpu::pack_quant(f, rows, cols, r.qs.data(), r.d.data(), f == cpu::QuantFormat::Q4_1 ? r.m.data() : nullptr);
  return r;
}

// Element (row, i) dequantized straight from ggml's block layout (Q4_1: byte j holds element j
// in its low nibble and j + 16 in its high one), independent of the packed layout.
float ggml_element(const RandomQuant& r, cpu::QuantFormat f, int cols, int row, int i) {
  const size_t blk = static_cast<size_t>(row) * (cols / 32) + i / 32;
  const int e = i % 32;
  if (f == cpu::QuantFormat::Q8_0) return static_cast<float>(static_cast<int8_t>(r.qs[blk * 32 + e])) * r.d[blk];
  const uint8_t b = r.qs[blk * 16 + e % 16];
  return static_cast<float>(e < 16 ? (b & 0x0F) : (b >> 4)) * r.d[blk] + r.m[blk];
}

const cpu::QuantFormat kFormats[] = {cpu::QuantFormat::Q8_0, cpu::QuantFormat::Q4_1};

constexpr cpu::QuantPath kPaths[] = {cpu::QuantPath::Scalar, cpu::QuantPath::Avx2, cpu::QuantPath::AvxVnni,
                                     cpu::QuantPath::Avx512Vnni};

const char* format_name(cpu::QuantFormat f) { return f == cpu::QuantFormat::Q8_0 ? "Q8_0" : "Q4_1"; }

// The packed layout (16-row groups, rows interleaved 4 elements at a time, the last group padded)
// holds every element of the file's blocks where dequantize_quant_row finds it.
TEST(GemmQuant, PackedRowsDequantizeAsTheFileBlocks) {
  for (cpu::QuantFormat f : kFormats)
    for (auto [N, K] : {std::pair{1, 32}, {16, 64}, {37, 96}}) {
      const RandomQuant r = random_quant(f, N, K, 9);
      EXPECT_EQ(r.w.groups(), (N + 15) / 16);
      std::vector<float> row(K);
      for (int n = 0; n < N; ++n) {
        cpu::dequantize_quant_row(r.w, n, row.data());
        for (int i = 0; i < K; ++i)
          ASSERT_EQ(row[i], ggml_element(r, f, K, n, i)) << format_name(f) << " row " << n << " element " << i;
      }
    }
}

// Every path this CPU has (the scalar one always), each against a dequantize-then-multiply
// reference and bit for bit against the scalar path; shapes cover every token tile (M = 1..9:
// tiles of 16 / 8 / 4 / 2 / 1 tokens, and 16, 17), row counts that are not a multiple of the 16-row
// group (padding), and the model's K.
TEST(GemmQuant, MatchesDequantizedReference) {
  for (cpu::QuantFormat f : kFormats)
    for (auto [M, N, K] : {std::tuple{1, 7, 32}, {1, 67, 576}, {2, 9, 64}, {3, 33, 576}, {16, 192, 1536},
                           {5, 130, 96}, {7, 5, 1536}, {4, 48, 64}, {6, 17, 128}, {8, 16, 32}, {9, 40, 160},
                           {17, 24, 64}}) {
      const auto x = random_vec(static_cast<size_t>(M) * K, 1);
      const cpu::QuantMatrix w = random_quant(f, N, K, 2).w;
      std::vector<float> wf(static_cast<size_t>(N) * K);
      for (int r = 0; r < N; ++r) cpu::dequantize_quant_row(w, r, wf.data() + static_cast<size_t>(r) * K);
      std::vector<float> ref(static_cast<size_t>(M) * N), scalar(ref.size());
      ref::matmul_wt(x.data(), wf.data(), ref.data(), M, N, K);
      cpu::matmul_wt_quant_path(x.data(), w, scalar.data(), M, cpu::QuantPath::Scalar);
      const char* name = format_name(f);
      for (cpu::QuantPath p : kPaths) {
        if (!cpu::quant_path_supported(p)) continue;
        std::vector<float> y(ref.size(), -1.0f);
        cpu::matmul_wt_quant_path(x.data(), w, y.data(), M, p);
        double max_err = 0, max_ref = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          max_err = std::max(max_err, static_cast<double>(std::fabs(y[i] - ref[i])));
          max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[i])));
        }
        EXPECT_LT(max_err / max_ref, 1e-2) << name << " " << cpu::quant_path_name(p) << " M=" << M << " N=" << N
                                           << " K=" << K;
        EXPECT_EQ(0, std::memcmp(y.data(), scalar.data(), y.size() * sizeof(float)))
            << name << " " << cpu::quant_path_name(p) << " vs scalar, M=" << M << " N=" << N << " K=" << K;
      }
      std::vector<float> best(ref.size());
      cpu::matmul_wt_quant(x.data(), w, best.data(), M);
      EXPECT_EQ(0, std::memcmp(best.data(), scalar.data(), best.size() * sizeof(float))) << name << " default path";
    }
}

TEST(GemmQuant, BestPathIsSupportedAndUnsupportedPathsThrow) {
  EXPECT_TRUE(cpu::quant_path_supported(cpu::quant_best_path()));
  const cpu::QuantMatrix w = random_quant(cpu::QuantFormat::Q8_0, 2, 32, 5).w;
  const auto x = random_vec(32, 6);
  std::vector<float> y(2);
  for (cpu::QuantPath p : kPaths)
    if (!cpu::quant_path_supported(p)) EXPECT_THROW(cpu::matmul_wt_quant_path(x.data(), w, y.data(), 1, p), std::exception);
}

// x quantized once (quantize_activations, split across the threads from 512 blocks on) and read by
// several GEMMs gives the bits of each GEMM quantizing x itself; activations of another width are
// refused naming both.
TEST(GemmQuant, PreQuantizedInputGivesTheSameBits) {
  for (cpu::QuantFormat f : kFormats)
    for (auto [M, N, K] : {std::tuple{1, 67, 576}, {16, 48, 576}, {64, 33, 1536}}) {
      const auto x = random_vec(static_cast<size_t>(M) * K, 21);
      const cpu::QuantMatrix w = random_quant(f, N, K, 22).w;
      std::vector<float> direct(static_cast<size_t>(M) * N), shared(direct.size(), -1.0f);
      cpu::matmul_wt_quant(x.data(), w, direct.data(), M);
      cpu::QuantActivations xq;
      cpu::quantize_activations(x.data(), M, K, xq);
      EXPECT_EQ(xq.rows, M);
      EXPECT_EQ(xq.cols, K);
      cpu::matmul_wt_quant(xq, w, shared.data());
      EXPECT_EQ(0, std::memcmp(shared.data(), direct.data(), direct.size() * sizeof(float)))
          << format_name(f) << " M=" << M << " K=" << K;
      const cpu::QuantMatrix narrower = random_quant(f, N, K - 32, 23).w;
      try {
        cpu::matmul_wt_quant(xq, narrower, shared.data());
        ADD_FAILURE() << "activations of " << K << " columns accepted against " << K - 32;
      } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("activations [" + std::to_string(M) + ", " + std::to_string(K) + "]"),
                  std::string::npos)
            << e.what();
      }
    }
  cpu::QuantActivations bad;
  EXPECT_THROW(cpu::quantize_activations(nullptr, 1, 40, bad), std::exception);  // K % 32 != 0
}

// Batch invariance on every path: each row of a random block of M = 1..64 tokens (every token
// tiling) has the bits it has alone (M = 1), and a row range that cuts the 16-row groups (the LM
// head's vocab chunks) the bits of the whole matrix.
TEST(GemmQuant, RowsDoNotDependOnBatchSize) {
  const int N = 67, K = 576, Mmax = 64;
  const auto x = random_vec(static_cast<size_t>(Mmax) * K, 3);
  for (cpu::QuantFormat f : kFormats) {
    const cpu::QuantMatrix w = random_quant(f, N, K, 4).w;
    for (cpu::QuantPath p : kPaths) {
      if (!cpu::quant_path_supported(p)) continue;
      const std::string name = std::string(format_name(f)) + " " + cpu::quant_path_name(p);
      std::vector<float> single(static_cast<size_t>(Mmax) * N);
      for (int m = 0; m < Mmax; ++m)
        cpu::matmul_wt_quant_path(x.data() + static_cast<size_t>(m) * K, w, single.data() + static_cast<size_t>(m) * N,
                                  1, p);
      for (int M = 2; M <= Mmax; ++M) {
        std::vector<float> batch(static_cast<size_t>(M) * N);
        cpu::matmul_wt_quant_path(x.data(), w, batch.data(), M, p);
        EXPECT_EQ(0, std::memcmp(batch.data(), single.data(), batch.size() * sizeof(float))) << name << " M=" << M;
      }
      for (auto [r0, r1] : {std::pair{0, 5}, {5, 40}, {17, 67}, {33, 34}}) {
        const int M = 11, cols = r1 - r0;
        std::vector<float> part(static_cast<size_t>(M) * cols);
        cpu::matmul_wt_quant_path(x.data(), w, part.data(), M, p, r0, r1);
        for (int t = 0; t < M; ++t)
          EXPECT_EQ(0, std::memcmp(part.data() + static_cast<size_t>(t) * cols,
                                   single.data() + static_cast<size_t>(t) * N + r0, cols * sizeof(float)))
              << name << " rows [" << r0 << ", " << r1 << ") token " << t;
      }
    }
  }
}

// The int8 ceiling (kernels/cpu/int8_peak.h) is what benchmarks call the compute floor of a
// multi-token step, so the quantized GEMM must never beat it: a 16-token GEMM whose weights sit in
// cache runs at most at the measured rate (1.25x of slack). The two are measured at different
// moments, and load that comes and goes (a test beside this one under ctest -j) can slow the probe
// alone, so a round the GEMM wins is measured again, up to 4 rounds, the ceiling taken as the best
// of the probes before and after the GEMM: a probe that undercounts its multiply-adds, or times more
// than its chains, loses every round.
TEST(Int8Peak, TheQuantizedGemmNeverBeatsIt) {
  EXPECT_EQ(cpu::measure_int8_gmacs(cpu::QuantPath::Scalar, 1), 0.0);
  const int M = 16, N = 1536, K = 576;
  const cpu::QuantMatrix w = random_quant(cpu::QuantFormat::Q4_1, N, K, 3).w;
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(M) * K), y(static_cast<size_t>(M) * N);
  for (float& v : x) v = dist(rng);
  for (cpu::QuantPath p : {cpu::QuantPath::Avx2, cpu::QuantPath::AvxVnni, cpu::QuantPath::Avx512Vnni}) {
    if (!cpu::quant_path_supported(p)) continue;
    double ceiling = 0, gemm = 0;
    for (int round = 0; round < 4; ++round) {
      ceiling = cpu::measure_int8_gmacs(p, 3);
      double best = 1e300;
      for (int r = 0; r < 30; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        cpu::matmul_wt_quant_path(x.data(), w, y.data(), M, p);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      gemm = static_cast<double>(M) * N * K / best / 1e9;
      ceiling = std::max(ceiling, cpu::measure_int8_gmacs(p, 3));
      std::printf("[ int8     ] %s round %d: ceiling %.1f GMAC/s, 16-token GEMM in cache %.1f GMAC/s\n",
                  cpu::quant_path_name(p), round, ceiling, gemm);
      if (gemm <= 1.25 * ceiling) break;
    }
    EXPECT_GT(ceiling, 0.0) << cpu::quant_path_name(p);
    EXPECT_LE(gemm, 1.25 * ceiling) << cpu::quant_path_name(p) << ": the GEMM beat the measured int8 ceiling";
  }
}

}  // namespace
}  // namespace cllm
