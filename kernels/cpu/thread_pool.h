// Persistent worker pool for the CPU kernels. Kernels run thousands of times per second, so the
// workers are started once and woken per call instead of spawning threads per call.
// The calling thread takes part in the work, so a pool of size n has n - 1 background workers.
#pragma once
#include <cstddef>
#include <functional>

namespace cllm::cpu {

// Runs fn(i) for every i in [0, n) across the pool; returns when all are done.
// Items are handed out one at a time (dynamic schedule), so callers pick n to balance grain
// against load imbalance. Calls from inside a running item execute serially on that thread,
// and concurrent calls from different threads are serialised, so neither can deadlock.
void parallel_for(size_t n, const std::function<void(size_t)>& fn);

// Splits [0, total) into at most (pool size * 4) chunks of at least min_grain elements and runs
// fn(begin, end) on each. Below 2 * min_grain everything runs on the calling thread.
void parallel_for_range(size_t total, size_t min_grain, const std::function<void(size_t, size_t)>& fn);

// Pool size (including the calling thread); resizing joins and restarts the workers.
void set_pool_size(int n);
int pool_size();

}  // namespace cllm::cpu
