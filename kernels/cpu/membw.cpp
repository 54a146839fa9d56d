// Bandwidth probes. Buffers are filled before timing so page faults are not measured; callers
// should pass sizes well above the last-level cache (>= 256 MB) to measure DRAM, not cache.
#include "kernels/cpu/membw.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/thread_pool.h"

namespace cllm::cpu {
namespace {

constexpr size_t kGrain = size_t(1) << 18;  // floats per chunk (1 MB)

// Best (shortest) wall time of reps calls of fn, in seconds.
double best_seconds(int reps, const std::function<void()>& fn) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

double measure_copy_bandwidth_gbs(size_t bytes, int reps) {
  CLLM_CHECK(bytes >= sizeof(float) && reps >= 1, "copy bandwidth: need bytes >= 4 and reps >= 1");
  const size_t n = bytes / sizeof(float);
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  const double s = best_seconds(reps, [&] {
    parallel_for_range(n, kGrain, [&](size_t b, size_t e) {
      std::memcpy(dst.data() + b, src.data() + b, (e - b) * sizeof(float));
    });
  });
  CLLM_CHECK(dst[n - 1] == 1.0f, "copy bandwidth: copy did not complete");
  return 2.0 * double(n * sizeof(float)) / s / 1e9;
}

double measure_read_bandwidth_gbs(size_t bytes, int reps) {
  CLLM_CHECK(bytes >= sizeof(float) && reps >= 1, "read bandwidth: need bytes >= 4 and reps >= 1");
  const size_t n = bytes / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  const size_t max_chunks = (n + kGrain - 1) / kGrain;
  std::vector<float> partial(max_chunks);
  double total = 0;
  const double s = best_seconds(reps, [&] {
    std::fill(partial.begin(), partial.end(), 0.0f);
    parallel_for_range(n, kGrain, [&](size_t b, size_t e) {
      float lane[8] = {};  // independent accumulators: the loop vectorises and never waits on one add chain
      size_t i = b;
      for (; i + 8 <= e; i += 8)
        for (int u = 0; u < 8; ++u) lane[u] += buf[i + u];
      for (; i < e; ++i) lane[0] += buf[i];
      float sum = 0;
      for (float x : lane) sum += x;
      partial[b / kGrain] = sum;  // chunk starts are >= kGrain apart, so slots are distinct
    });
    total = 0;
    for (float p : partial) total += p;
  });
  // Using the sum keeps the compiler from dropping the reads.
  CLLM_CHECK(total > 0, "read bandwidth: sum lost");
  return double(n * sizeof(float)) / s / 1e9;
}

}  // namespace cllm::cpu
