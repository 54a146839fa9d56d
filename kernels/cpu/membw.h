// Memory-bandwidth probes, so benchmarks can report achieved GB/s against this machine's own
// ceiling measured in the same run (absolute times are meaningless on shared CPU machines).
// Both use the kernels' thread pool (cpu::num_threads() threads) and return the best of reps runs.
#pragma once
#include <cstddef>

namespace cllm::cpu {

// STREAM "copy": dst = src over two buffers of `bytes` each. Counts read + write bytes
// (2 * bytes per rep), like STREAM; write-allocate traffic is not counted. Units: 1e9 bytes/s.
double measure_copy_bandwidth_gbs(size_t bytes, int reps);

// Threaded sum over one buffer of `bytes`: read-only traffic, the pattern of a weight-streaming
// decode step. Counts `bytes` per rep. Units: 1e9 bytes/s.
double measure_read_bandwidth_gbs(size_t bytes, int reps);

}  // namespace cllm::cpu
