// Device side of the GPU communicator (parallel/comm_nccl.h): the one-shot all-reduce over CUDA IPC
// peer memory and the max-loc pick. Plain C++ may include this header (no device code in it).
//
// One-shot all-reduce, per call, on every rank at once (all ranks on one node, peer access on):
//   1. every block copies its slice of the input into this rank's IPC data buffer;
//   2. per-block barrier: thread r stores the step number into rank r's flag slot for this
//      (block, source rank) with a system-scope release, then waits (system-scope acquire) until
//      its own slot written by rank r has reached the step;
//   3. every block sums its slice over all ranks' buffers in rank order ((x0 + x1) + x2) + ...,
//      accumulating in fp32, and writes the output. Every rank reads the same bytes in the same
//      order, so all ranks hold bit-identical results, and a row's sum does not depend on the row
//      count (the Comm::all_reduce_sum contract).
// The step is a per-block counter kept in device memory and bumped by the kernel itself, so no
// reset is needed and a CUDA graph replays correctly (nothing step-dependent is a kernel argument).
// The data buffer has two halves used by step parity: rank A may write step s+1's input while
// rank B still reads step s's, but A passes barrier s+1 only after B started step s+1, i.e. after
// B's kernel for step s ended (stream order). This needs a fixed grid (every block takes part in
// every call) and all IPC all-reduces of one communicator ordered on one stream per rank.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cllm {

// Element type of a GPU collective.
enum class CommDType { f32, bf16 };
inline size_t comm_dtype_bytes(CommDType t) { return t == CommDType::f32 ? 4 : 2; }
inline const char* comm_dtype_name(CommDType t) { return t == CommDType::f32 ? "fp32" : "bf16"; }

constexpr int kIpcMaxRanks = 8;
constexpr int kIpcBlocks = 64;    // fixed grid: see the parity argument above
constexpr int kIpcThreads = 512;

// Head of each rank's IPC allocation; the data halves follow it.
struct alignas(256) IpcSignal {
  uint64_t flag[kIpcBlocks][kIpcMaxRanks];  // flag[b][r]: last step block b of rank r signalled here
  uint64_t step[kIpcBlocks];                // this rank's own per-block step counters
};

struct IpcKernelArgs {
  char* data[kIpcMaxRanks];          // each rank's data area (two halves of half_bytes), peer-mapped
  IpcSignal* signal[kIpcMaxRanks];   // each rank's signal block, peer-mapped
  int rank = 0, nranks = 0;
  size_t half_bytes = 0;             // capacity of one half, a multiple of 16
  unsigned long long timeout_ns = 0; // a block gives up waiting for a peer after this long
  int* error = nullptr;              // host-mapped; set to (peer rank + 1) by a block that gave up
};

// Enqueues the one-shot all-reduce of `count` elements, in place on `data` (device memory of this
// rank, any alignment; count * element size <= half_bytes). Throws cllm::Error on a launch error.
void launch_ipc_one_shot(const IpcKernelArgs& args, void* data, size_t count, CommDType dtype, cudaStream_t stream);

// gathered: [nranks][rows] (value, index) pairs, as float then int32 (MPI_FLOAT_INT layout).
// out[i] = the pair with the largest value over ranks, the lowest index among equal values (a NaN
// never wins over a number). Deterministic: every rank picks from the same gathered bytes.
void launch_pick_max_loc(const void* gathered, void* out, size_t rows, int nranks, cudaStream_t stream);

}  // namespace cllm
