// Building a rank's model for tensor parallelism, and the group-wide report of the load.
#pragma once
#include <memory>
#include <vector>

#include "core/comm.h"
#include "runtime/model.h"

namespace cllm {

// One rank: make_model (the whole model, any device). Several: this rank's shard of the model
// (core/shard_plan.h), read slice by slice so that host memory peaks near the shard's size.
// On the CPU only: the GPU's sharded model is make_cuda_sharded_model (parallel/cuda/cuda_tp_model.h).
// The sharded forward is collective: run it through CoordinatorModel / worker_loop.
// Throws naming the numbers when the model cannot be split over comm.size() ranks.
std::unique_ptr<Model> make_sharded_model(const CheckpointReader& ckpt, Device device, Comm& comm,
                                          const LoadProgress& progress = {}, const ModelOptions& opts = {});

// What one rank's load cost.
struct RankLoad {
  double seconds = 0;
  double weight_bytes = 0;    // fp32 bytes of the rank's slices
  double peak_rss_bytes = 0;  // VmHWM after loading
  uint64_t config_hash = 0;   // of the ModelConfig the rank loaded: every rank must agree
};

RankLoad describe_load(const Model& model, double seconds);

// All-gathers every rank's RankLoad (index = rank). Stops every rank if their configs differ,
// naming the ranks. The gather also confirms that every rank finished loading.
std::vector<RankLoad> gather_loads(Comm& comm, const RankLoad& mine);

// Before any weight is read: every rank all-gathers the config fields that fix the shapes and the
// forward, with its host and checkpoint source. When a rank's differ from rank 0's, every rank
// stops, naming that rank, its host and checkpoint, the field and both values. Loading itself is
// collective (one progress all-gather per tensor), so differing shapes must stop here.
void agree_on_config(const CheckpointReader& ckpt, Comm& comm);

// The model identity, agreed before the first forward (design.md, "One request, end to end", 8): a
// stale copy of a checkpoint on one node must stop the job, not produce wrong text. Every rank
// fingerprints each tensor of its checkpoint (CheckpointReader::fingerprint, whatever its slice)
// and all-gathers them with its host name and checkpoint source. When a rank's fingerprints differ
// from rank 0's, every rank stops, naming that rank, its host, the first differing tensor and both
// checkpoints. Call after agree_on_config, which agrees on the tensor list.
void agree_on_checkpoint(const CheckpointReader& ckpt, Comm& comm);

// Peak resident set size of this process (VmHWM in /proc/self/status), in bytes.
double peak_rss_bytes();

}  // namespace cllm
