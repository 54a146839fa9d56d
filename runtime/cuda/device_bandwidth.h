// GPU ceilings for `cllm bench --device cuda`, measured in the same run as the timings: memory
// bandwidth, which the decode floor is measured against (bytes one step reads / read bandwidth),
// and the bf16 matmul rate, which the prefill floor is (FLOPs / rate). Each runs on the current
// device, allocates its buffers for the call, and returns the best of `reps` timed runs (after one
// untimed warm-up); bandwidths in units of 1e9 bytes/s.
#pragma once
#include <cstddef>

namespace cllm::cuda {

// Read-only streaming over one buffer of `bytes` (16-byte loads, several in flight per thread):
// the access pattern of a weight-streaming decode step. Counts `bytes` per rep. Use >= 2 GiB so the
// 50 MB L2 plays no part.
double measure_device_read_bandwidth_gbs(size_t bytes, int reps);

// Device-to-device cudaMemcpyAsync of `bytes`: counts read + write (2 * bytes per rep), like STREAM copy.
double measure_device_copy_bandwidth_gbs(size_t bytes, int reps);

// cuBLASLt bf16 GEMM (fp32 accumulation) of n x n x n on pseudo-random operands (not zeros, which
// run faster): 2 n^3 FLOPs per rep, returned in units of 1e12 FLOP/s.
double measure_device_bf16_matmul_tflops(int n, int reps);

}  // namespace cllm::cuda
