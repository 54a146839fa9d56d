// The control plane of a tensor-parallel group (design.md, "One request, end to end", 4-8).
// Rank 0, the coordinator, owns the prompts and the decoding; the other ranks, the workers, only
// run forwards. Before every call of the sharded model, rank 0 broadcasts a step plan (what to
// run: reset of how many slots, a batched forward, keepalive or stop), then for a forward the
// batch itself (its SeqBlocks and token ids), and every rank runs the same call, so every rank
// meets the same collectives in the same order. After each forward the ranks vote: one
// all-gather of (step, every block's decision by the decoding core, hash of the predicted ids); a
// disagreement stops every rank with a message naming the ranks that differ.
#pragma once
#include <functional>
#include <vector>

#include "core/comm.h"
#include "runtime/model.h"

namespace cllm {

// Rank 0's view of the group: a Model whose reset(), forward() and forward_batch() lead the
// workers through the same call on their shards. Decoders (generate_ar, generate_jacobi) and the
// Scheduler use it unchanged.
class CoordinatorModel final : public Model {
 public:
  // local: rank 0's shard of the model; comm.rank() must be 0. Both must outlive this.
  CoordinatorModel(Model& local, Comm& comm);
  const ModelConfig& config() const override { return local_.config(); }
  void reset(int max_tokens, int slots = 1) override;
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override;
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override;
  // A branch layout travels with the batch; the vote then covers each block's verified branch.
  void forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                    const KvMove* moves, int32_t* out_ids, float* logits) override;
  bool verifies_branches() const override { return local_.verifies_branches(); }
  // Rank 0's bytes per step (its weight slices plus KV heads); every rank's shard is the same size.
  double step_bytes(int context) const override { return local_.step_bytes(context); }
  // Ends worker_loop on every worker. Call once, after the last forward.
  void stop();
  // A plan that runs nothing: an idle server sends one more often than the comm deadline, since
  // workers apply the deadline while they wait for the next plan.
  void keepalive();

 private:
  Model& local_;
  Comm& comm_;
  int64_t step_ = 0;
  bool stopped_ = false;
  int capacity_ = 0, slots_ = 0;  // of the last reset: calls are checked on rank 0 before any broadcast
  std::vector<int32_t> batch_;    // the broadcast batch: [count][3] SeqBlocks, then the rows' token ids
};

// Every rank but 0: runs the calls that rank 0 plans, on local (this rank's shard), until a stop.
void worker_loop(Model& local, Comm& comm);

// Runs body on this rank. An exception in a group of more than one rank stops every rank
// (Comm::abort names this rank and the error), since the others may be waiting in a collective
// that this rank will never join. With one rank the exception propagates as usual.
int run_on_all_ranks(Comm& comm, const std::function<int()>& body);

}  // namespace cllm
