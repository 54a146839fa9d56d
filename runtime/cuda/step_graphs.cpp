#include "runtime/cuda/step_graphs.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.cuh"

namespace cllm::cuda {

StepGraphs::~StepGraphs() {
  for (Cached& g : graphs_)
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
}

void StepGraphs::launch(const GraphKey& key, bool replay, uint64_t clock, cudaStream_t stream,
                        const std::function<void()>& enqueue, CudaGraphStats& stats) {
  if (replay)
    for (Cached& g : graphs_)
      if (g.key == key) {
        g.last_use = clock;
        ++stats.replays;
        CLLM_CUDA_CHECK(cudaGraphLaunch(g.exec, stream));
        return;
      }
  cudaGraph_t graph = nullptr;
  CLLM_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    enqueue();
  } catch (...) {
    // Leave the stream usable: end the (invalidated) capture and drop what it recorded.
    if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  CLLM_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  ++stats.captures;
  // A new entry while there is room, else the least recently used one is patched (or rebuilt).
  const size_t room = replay ? kPerRows : 1;
  if (graphs_.size() < room) graphs_.push_back({});
  const auto victim = std::min_element(graphs_.begin(), graphs_.end(),
                                       [](const Cached& a, const Cached& b) { return a.last_use < b.last_use; });
  Cached& g = *victim;
  g.key = GraphKey{};  // matches no step until exec holds this one's graph (kv_generation starts at 1)
  if (g.exec != nullptr) {
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(g.exec, graph, &info) == cudaSuccess) {
      ++stats.updates;
    } else {  // topology or node kinds changed: build a new executable graph
      (void)cudaGetLastError();
      cudaGraphExecDestroy(g.exec);
      g.exec = nullptr;
    }
  }
  if (g.exec == nullptr) {
    const cudaError_t err = cudaGraphInstantiate(&g.exec, graph, 0);
    if (err != cudaSuccess) {
      g.exec = nullptr;
      cudaGraphDestroy(graph);
      graphs_.erase(victim);
      CLLM_CUDA_CHECK(err);
    }
    ++stats.instantiations;
  }
  cudaGraphDestroy(graph);
  g.key = key;
  g.last_use = clock;
  CLLM_CUDA_CHECK(cudaGraphLaunch(g.exec, stream));
}

}  // namespace cllm::cuda
