// The CUDA graphs of one GEMM row count (CudaModel, "Graphs"): a few executable graphs, each with the
// key of the step it was captured from. A step whose key matches one launches it as is; otherwise
// the step is captured and patched into the least recently used executable (cudaGraphExecUpdate),
// or a new one is instantiated when the topology changed.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/cuda/attention.cuh"

namespace cllm::cuda {

// What a captured step's launches depend on besides the fixed buffers.
struct GraphKey {
  int rows = 0;
  size_t upload_bytes = 0, table_offset = 0;
  AttentionLaunchShape attention;
  uint64_t kv_generation = 0;  // bumped whenever a buffer a graph holds is reallocated
  bool operator==(const GraphKey& o) const {
    return rows == o.rows && upload_bytes == o.upload_bytes && table_offset == o.table_offset &&
           attention == o.attention && kv_generation == o.kv_generation;
  }
};

// What the graph cache did, for tests and benchmarks.
struct CudaGraphStats {
  int captures = 0;        // steps captured
  int updates = 0;         // captured steps patched into an existing executable graph
  int instantiations = 0;  // executable graphs (re)built: first use of a block size, or a topology change
  int replays = 0;         // steps launched from a cached graph without capture (their key was unchanged)
};

class StepGraphs {
 public:
  // Graphs kept per GEMM row count: a few launch shapes recur (contexts of different lengths, the
  // split-K combine on or off), e.g. when one process evaluates many prompts one after another.
  static constexpr size_t kPerRows = 4;

  StepGraphs() = default;
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Launches the step on `stream`: a cached graph whose key is `key` (when `replay`), else `enqueue`
  // captured (it must enqueue the whole step on `stream`) and patched in. `clock` orders uses for
  // the least-recently-used replacement; `stats` counts what happened.
  void launch(const GraphKey& key, bool replay, uint64_t clock, cudaStream_t stream,
              const std::function<void()>& enqueue, CudaGraphStats& stats);

 private:
  struct Cached {
    GraphKey key;
    cudaGraphExec_t exec = nullptr;
    uint64_t last_use = 0;
  };
  std::vector<Cached> graphs_;  // at most kPerRows
};

}  // namespace cllm::cuda
