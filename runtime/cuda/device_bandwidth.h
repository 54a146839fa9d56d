// GPU memory-bandwidth probes for `cllm bench --device cuda`: the ceiling that the decode floor
// (bytes one step reads / read bandwidth) is measured against, in the same run as the timings.
// Both run on the current device, allocate their buffers for the call, and return the best of
// `reps` timed runs (after one untimed warm-up), in units of 1e9 bytes/s.
#pragma once
#include <cstddef>

namespace cllm::cuda {

// Read-only streaming over one buffer of `bytes` (16-byte loads, several in flight per thread):
// the access pattern of a weight-streaming decode step. Counts `bytes` per rep. Use >= 2 GiB so the
// 50 MB L2 plays no part.
double measure_device_read_bandwidth_gbs(size_t bytes, int reps);

// Device-to-device cudaMemcpyAsync of `bytes`: counts read + write (2 * bytes per rep), like STREAM copy.
double measure_device_copy_bandwidth_gbs(size_t bytes, int reps);

}  // namespace cllm::cuda
