// The decode GEMM must (a) match the naive reference and (b) give every output row bit for bit
// the same value whatever the number of rows M it is computed with: that is what makes greedy
// Jacobi (M = n) reproduce greedy AR (M = 1) exactly on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/gemm_invariant.h"
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

}  // namespace
}  // namespace cllm
