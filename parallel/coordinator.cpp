#include "parallel/coordinator.h"

#include <sstream>
#include <vector>

#include "kernels/check.h"

namespace cllm {
namespace {

// What every rank runs next; broadcast by rank 0. For a forward, n token ids follow in a
// second broadcast.
struct StepPlan {
  enum Kind : int32_t { kForward = 0, kReset = 1, kStop = 2, kIdle = 3 };
  int64_t step;         // counts plans from 1, so that a rank that missed one notices
  int32_t kind;
  int32_t n;            // forward: tokens; reset: KV rows
  int32_t pos;          // forward: position of the first token
  int32_t want_logits;  // forward: 1 if rank 0 asked for logits (the gather is collective)
};

// One rank's vote on a forward.
struct Ballot {
  int64_t step;
  int32_t n;
  int32_t accept;     // Jacobi accept count m: longest run with g[j] == y[j-1], j = 1..m
  uint64_t ids_hash;  // FNV-1a over the predicted ids
};

Ballot make_ballot(int64_t step, const int32_t* g, const int32_t* y, int n) {
  Ballot b{step, n, 0, 1469598103934665603ULL};
  while (b.accept + 1 < n && g[b.accept + 1] == y[b.accept]) ++b.accept;
  for (int i = 0; i < n; ++i) {
    for (int byte = 0; byte < 4; ++byte)
      b.ids_hash = (b.ids_hash ^ ((static_cast<uint32_t>(y[i]) >> (8 * byte)) & 0xff)) * 1099511628211ULL;
  }
  return b;
}

bool same(const Ballot& a, const Ballot& b) {
  return a.step == b.step && a.n == b.n && a.accept == b.accept && a.ids_hash == b.ids_hash;
}

// The forward of one step on this rank's shard, then the vote. Every rank runs this for every
// forward plan, so the collectives inside match.
void run_forward(Model& local, Comm& comm, const StepPlan& p, const int32_t* tokens, int32_t* out, float* logits) {
  local.forward(tokens, p.n, p.pos, out, logits);
  const Ballot mine = make_ballot(p.step, tokens, out, p.n);
  std::vector<Ballot> all(comm.size());
  comm.all_gather(&mine, sizeof mine, all.data(), {"convergence vote"});
  std::ostringstream os;
  for (int r = 1; r < comm.size(); ++r) {
    if (same(all[r], all[0])) continue;
    os << (os.tellp() > 0 ? "; " : "") << "rank " << r << " (step " << all[r].step << ", accept " << all[r].accept
       << ", ids hash " << std::hex << all[r].ids_hash << std::dec << ")";
  }
  if (os.tellp() > 0) {
    std::ostringstream msg;
    msg << "convergence vote failed at step " << p.step << ": rank 0 has accept " << all[0].accept << ", ids hash "
        << std::hex << all[0].ids_hash << std::dec << "; disagreeing: " << os.str();
    comm.abort(msg.str());
  }
}

}  // namespace

CoordinatorModel::CoordinatorModel(Model& local, Comm& comm) : local_(local), comm_(comm) {
  CLLM_CHECK(comm.rank() == 0, "the coordinator runs on rank 0, not on rank " << comm.rank());
}

void CoordinatorModel::reset(int max_tokens, int slots) {
  CLLM_CHECK(slots == 1, "CoordinatorModel: one KV slot only for now");
  CLLM_CHECK(!stopped_, "reset after the workers were stopped");
  StepPlan p{++step_, StepPlan::kReset, max_tokens, 0, 0};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
  local_.reset(max_tokens);
}

void CoordinatorModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  CLLM_CHECK(!stopped_, "forward after the workers were stopped");
  CLLM_CHECK(n > 0, "forward needs n > 0, got " << n);
  StepPlan p{++step_, StepPlan::kForward, n, pos, logits != nullptr};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
  // The root's buffer is only read by a broadcast.
  comm_.broadcast(const_cast<int32_t*>(tokens), sizeof(int32_t) * n, 0, {"step tokens"});
  run_forward(local_, comm_, p, tokens, out_ids, logits);
}

void CoordinatorModel::stop() {
  CLLM_CHECK(!stopped_, "the workers were already stopped");
  StepPlan p{++step_, StepPlan::kStop, 0, 0, 0};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
  stopped_ = true;
}

void CoordinatorModel::keepalive() {
  CLLM_CHECK(!stopped_, "keepalive after the workers were stopped");
  StepPlan p{++step_, StepPlan::kIdle, 0, 0, 0};
  comm_.broadcast(&p, sizeof p, 0, {"step plan"});
}

void worker_loop(Model& local, Comm& comm) {
  CLLM_CHECK(comm.rank() != 0, "worker_loop runs on ranks other than 0");
  std::vector<int32_t> tokens, out;
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
        local.reset(p.n);
        break;
      case StepPlan::kIdle:
        break;
      case StepPlan::kForward:
        tokens.resize(p.n);
        out.resize(p.n);
        comm.broadcast(tokens.data(), sizeof(int32_t) * p.n, 0, {"step tokens"});
        if (p.want_logits) logits.resize(static_cast<size_t>(p.n) * local.config().vocab_size);
        run_forward(local, comm, p, tokens.data(), out.data(), p.want_logits ? logits.data() : nullptr);
        break;
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


// Placeholder until the batched forward lands: one block on slot 0 only.
void CoordinatorModel::forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids, float* logits) {
  CLLM_CHECK(count == 1 && blocks[0].slot == 0, "CoordinatorModel: batched forward not implemented yet");
  forward(tokens, blocks[0].n, blocks[0].pos, out_ids, logits);
}

}  // namespace cllm
