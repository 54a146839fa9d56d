#include "parallel/coordinator.h"

#include <algorithm>
#include <sstream>
#include <vector>

#include "core/check.h"
#include "runtime/acceptance.h"

namespace cllm {
namespace {

// What every rank runs next; broadcast by rank 0. A forward's batch follows in a second
// broadcast of int32s: `count` SeqBlocks (slot, pos, n), then the `rows` token ids, then with a
// branch layout the `rows` RowSpecs (pos, base) and the `count` KvMoves (src, n).
struct StepPlan {
  enum Kind : int32_t { kForward = 0, kReset = 1, kStop = 2, kIdle = 3 };
  int64_t step;         // counts plans from 1, so that a rank that missed one notices
  int32_t kind;
  int32_t rows;         // forward: token rows of the batch; reset: KV rows per slot
  int32_t count;        // forward: blocks (sequences); reset: KV slots
  int32_t want_logits;  // forward: 1 if rank 0 asked for logits (the gather is collective)
  int32_t layout;       // forward: 1 if a branch layout (RowSpecs and KvMoves) follows the token ids
};

// One rank's vote on a batched forward, as int64s: step, rows, count, hash of the predicted ids,
// then each block's decision as the decoding core makes it (runtime/acceptance.h, verify_block):
// the winning branch (-1: the block's main run) and the accepted count m. count comes from the
// broadcast plan, so every rank's ballot has the same size.
std::vector<int64_t> make_ballot(int64_t step, const int32_t* g, const int32_t* y, const SeqBlock* blocks,
                                 const RowSpec* layout, int count, int rows) {
  uint64_t hash = 1469598103934665603ULL;  // FNV-1a over the predicted ids
  for (int i = 0; i < rows; ++i)
    for (int byte = 0; byte < 4; ++byte)
      hash = (hash ^ ((static_cast<uint32_t>(y[i]) >> (8 * byte)) & 0xff)) * 1099511628211ULL;
  std::vector<int64_t> b = {step, rows, count, static_cast<int64_t>(hash)};
  for (int k = 0, row = 0; k < count; row += blocks[k++].n) {
    const Verdict v = verify_block(g + row, y + row, blocks[k].n, blocks[k].pos, layout ? layout + row : nullptr);
    b.push_back(v.branch);
    b.push_back(v.accepted);
  }
  return b;
}

// "accept A, ids hash H" (one block) or "accept [A0 A1 ...], ids hash H" (a batch).
// "accept [branch:m ...], ids hash H" (branch -1: the block's main run).
std::string describe(const int64_t* b, size_t len) {
  std::ostringstream os;
  os << "accept [";
  for (size_t i = 4; i + 1 < len; i += 2) os << (i > 4 ? " " : "") << b[i] << ":" << b[i + 1];
  os << "], ids hash " << std::hex << static_cast<uint64_t>(b[3]) << std::dec;
  return os.str();
}

// The forward of one step on this rank's shard, then the vote. Every rank runs this for every
// forward plan, so the collectives inside match.
void run_forward(Model& local, Comm& comm, const StepPlan& p, const int32_t* tokens, const SeqBlock* blocks,
                 const RowSpec* rows, const KvMove* moves, int32_t* out, float* logits) {
  local.forward_rows(tokens, blocks, p.count, rows, moves, out, logits);
  const std::vector<int64_t> mine = make_ballot(p.step, tokens, out, blocks, rows, p.count, p.rows);
  const size_t len = mine.size();
  std::vector<int64_t> all(len * comm.size());
  comm.all_gather(mine.data(), len * sizeof(int64_t), all.data(), {"convergence vote"});
  std::ostringstream os;
  for (int r = 1; r < comm.size(); ++r) {
    if (std::equal(all.begin() + r * len, all.begin() + (r + 1) * len, all.begin())) continue;
    os << (os.tellp() > 0 ? "; " : "") << "rank " << r << " (step " << all[r * len] << ", "
       << describe(&all[r * len], len) << ")";
  }
  if (os.tellp() > 0) {
    std::ostringstream msg;
    msg << "convergence vote failed at step " << p.step << ": rank 0 has " << describe(all.data(), len)
        << "; disagreeing: " << os.str();
    comm.abort(msg.str());
  }
}

}  // namespace

CoordinatorModel::CoordinatorModel(Model& local, Comm& comm) : local_(local), comm_(comm) {
  CLLM_CHECK(comm.rank() == 0, "the coordinator runs on rank 0, not on rank " << comm.rank());
}

void CoordinatorModel::reset(int max_tokens, int slots) {
  CLLM_CHECK(!stopped_, "reset after the workers were stopped");
  CLLM_CHECK(max_tokens > 0 && slots > 0,
             "KV capacity and slots must be positive, got " << max_tokens << " rows x " << slots << " slots");
  StepPlan p{++step_, StepPlan::kReset, max_tokens, slots, 0, 0};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
  local_.reset(max_tokens, slots);
  capacity_ = max_tokens;
  slots_ = slots;
}

void CoordinatorModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  const SeqBlock block{0, pos, n};
  forward_batch(tokens, &block, 1, out_ids, logits);
}

void CoordinatorModel::forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                                     float* logits) {
  forward_rows(tokens, blocks, count, nullptr, nullptr, out_ids, logits);
}

void CoordinatorModel::forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                                    const KvMove* moves, int32_t* out_ids, float* logits) {
  CLLM_CHECK(!stopped_, "forward after the workers were stopped");
  // Refused here, on rank 0 alone, a bad call leaves the workers waiting for the next plan
  // instead of failing inside the collective forward on every rank.
  const int n = check_batch_args(config(), tokens, blocks, count, capacity_, slots_);
  const bool layout = !check_row_layout(blocks, count, rows, moves, capacity_);
  CLLM_CHECK(!layout || local_.verifies_branches(),
             "this backend does not verify lookahead branches: decode without candidates, or on the CPU");
  StepPlan p{++step_, StepPlan::kForward, n, count, logits != nullptr, layout};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
  batch_.clear();
  for (int k = 0; k < count; ++k) batch_.insert(batch_.end(), {blocks[k].slot, blocks[k].pos, blocks[k].n});
  batch_.insert(batch_.end(), tokens, tokens + n);
  if (layout) {
    for (int r = 0, k = 0; k < count; ++k)
      for (int i = 0; i < blocks[k].n; ++i, ++r)
        batch_.insert(batch_.end(), {rows ? rows[r].pos : blocks[k].pos + i, rows ? rows[r].base : 0});
    for (int k = 0; k < count; ++k) batch_.insert(batch_.end(), {moves ? moves[k].src : 0, moves ? moves[k].n : 0});
  }
  comm_.broadcast(batch_.data(), sizeof(int32_t) * batch_.size(), 0, {"step batch"});
  run_forward(local_, comm_, p, tokens, blocks, rows, moves, out_ids, logits);
}

void CoordinatorModel::stop() {
  CLLM_CHECK(!stopped_, "the workers were already stopped");
  StepPlan p{++step_, StepPlan::kStop, 0, 0, 0, 0};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
  stopped_ = true;
}

void CoordinatorModel::keepalive() {
  CLLM_CHECK(!stopped_, "keepalive after the workers were stopped");
  StepPlan p{++step_, StepPlan::kIdle, 0, 0, 0, 0};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
}

void worker_loop(Model& local, Comm& comm) {
  CLLM_CHECK(comm.rank() != 0, "worker_loop runs on ranks other than 0");
  std::vector<int32_t> batch, out;
  std::vector<SeqBlock> blocks;
  std::vector<RowSpec> rows;
  std::vector<KvMove> moves;
  std::vector<float> logits;
  for (int64_t expected = 1;; ++expected) {
    StepPlan p{};
    comm.broadcast(&p, sizeof p, 0, {"step plan"});
    if (p.step != expected) {
      std::ostringstream msg;
      msg << "expected step plan " << expected << " from rank 0, got " << p.step;
      comm.abort(msg.str());
    }
    switch (p.kind) {
      case StepPlan::kStop:
        return;
      case StepPlan::kReset:
        local.reset(p.rows, p.count);
        break;
      case StepPlan::kIdle:
        break;
      case StepPlan::kForward: {
        if (p.count <= 0 || p.rows <= 0) {
          std::ostringstream msg;
          msg << "step plan " << p.step << " forwards " << p.count << " blocks of " << p.rows << " rows";
          comm.abort(msg.str());
        }
        const size_t layout_ints = p.layout ? static_cast<size_t>(2) * (p.rows + p.count) : 0;
        batch.resize(static_cast<size_t>(3) * p.count + p.rows + layout_ints);
        comm.broadcast(batch.data(), sizeof(int32_t) * batch.size(), 0, {"step batch"});
        blocks.resize(p.count);
        for (int k = 0; k < p.count; ++k) blocks[k] = {batch[3 * k], batch[3 * k + 1], batch[3 * k + 2]};
        rows.clear();
        moves.clear();
        if (p.layout) {
          const int32_t* l = batch.data() + 3 * p.count + p.rows;
          for (int r = 0; r < p.rows; ++r) rows.push_back({l[2 * r], l[2 * r + 1]});
          l += 2 * p.rows;
          for (int k = 0; k < p.count; ++k) moves.push_back({l[2 * k], l[2 * k + 1]});
        }
        out.resize(p.rows);
        if (p.want_logits) logits.resize(static_cast<size_t>(p.rows) * local.config().vocab_size);
        run_forward(local, comm, p, batch.data() + 3 * p.count, blocks.data(), p.layout ? rows.data() : nullptr,
                    p.layout ? moves.data() : nullptr, out.data(), p.want_logits ? logits.data() : nullptr);
        break;
      }
      default: {
        std::ostringstream msg;
        msg << "unknown step plan kind " << p.kind << " at step " << p.step;
        comm.abort(msg.str());
      }
    }
  }
}

int run_on_all_ranks(Comm& comm, const std::function<int()>& body) {
  if (comm.size() == 1) return body();
  try {
    return body();
  } catch (const std::exception& e) {
    comm.abort(std::string("error: ") + e.what());
  }
}

}  // namespace cllm
