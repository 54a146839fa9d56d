// Fault injection for the failure-semantics tests (design.md: no rank waits forever).
//   tp_fault MODEL_DIR MODE VICTIM_RANK AT_FORWARD DEADLINE_S
// Every rank loads its shard; rank 0 decodes with Jacobi (block 4) through a CoordinatorModel
// and the others serve, as in `cllm generate`. On the victim, forward (batch) number AT_FORWARD:
//   kill     raise(SIGKILL): the launcher sees the death and ends the job
//   stall    sleeps far past the deadline: the others' collectives time out and abort
//   diverge  flips its first predicted id after the forward: the convergence vote fails
//   stall-start  sleeps far past the deadline before MPI_Init (AT_FORWARD unused): the others'
//                start-up watchdogs stop them, and the launcher ends the job
// expect_abort.sh runs it and checks a non-zero exit, the time it took and the message.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/check.h"
#include "parallel/comm.h"
#include "parallel/coordinator.h"
#include "parallel/tp_model.h"
#include "runtime/generate.h"

namespace cllm {
namespace {

class FaultyModel final : public Model {
 public:
  FaultyModel(Model& inner, std::string mode, int at, double deadline_s)
      : inner_(inner), mode_(std::move(mode)), at_(at), deadline_s_(deadline_s) {}
  const ModelConfig& config() const override { return inner_.config(); }
  void reset(int max_tokens, int slots = 1) override { inner_.reset(max_tokens, slots); }
  // Workers and the coordinator both run every step through forward_batch (coordinator.h);
  // forward is kept faulty too for a direct caller.
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override {
    before();
    inner_.forward_batch(tokens, blocks, count, out_ids, logits);
    after(out_ids);
  }
  double step_bytes(int context) const override { return inner_.step_bytes(context); }
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override {
    before();
    inner_.forward(tokens, n, pos, out_ids, logits);
    after(out_ids);
  }

 private:
  Model& inner_;
  std::string mode_;
  int at_;
  double deadline_s_;
  int count_ = 0;

  void before() {
    if (++count_ == at_ && mode_ == "kill") raise(SIGKILL);
    if (count_ == at_ && mode_ == "stall") sleep(static_cast<unsigned>(10 * deadline_s_));
  }
  void after(int32_t* out_ids) const {
    if (count_ == at_ && mode_ == "diverge") out_ids[0] ^= 1;
  }
};

int run(int argc, char** argv, Comm& comm) {
  CLLM_CHECK(argc == 6, "usage: tp_fault MODEL_DIR kill|stall|diverge VICTIM_RANK AT_FORWARD DEADLINE_S");
  const std::string mode = argv[2];
  const int victim = std::stoi(argv[3]), at = std::stoi(argv[4]);
  const double deadline_s = std::stod(argv[5]);
  CLLM_CHECK(mode == "kill" || mode == "stall" || mode == "diverge" || mode == "stall-start",
             "unknown mode '" << mode << "'");
  comm.set_deadline_seconds(deadline_s);
  auto ckpt = open_checkpoint(argv[1]);
  std::unique_ptr<Model> shard = make_sharded_model(*ckpt, Device::Cpu, comm);
  FaultyModel faulty(*shard, comm.rank() == victim ? mode : "none", at, deadline_s);
  if (comm.rank() != 0) {
    worker_loop(faulty, comm);
    return 0;
  }
  CoordinatorModel group(faulty, comm);
  const std::vector<int32_t> prompt = {5, 42, 17, 99, 3, 250, 7};
  GenerateOptions gen;
  gen.max_new_tokens = 64;
  JacobiOptions jac;
  jac.block = 4;
  group.reset(kv_rows_needed(static_cast<int>(prompt.size()), gen.max_new_tokens, jac.block));
  const GenerateResult r = generate_jacobi(group, prompt, gen, jac);
  group.stop();
  std::printf("generated %zu tokens without a fault\n", r.tokens.size());
  return 0;
}

}  // namespace
}  // namespace cllm

int main(int argc, char** argv) {
  // stall-start: the victim (its launcher rank, as MPI has none yet) stalls before MPI_Init.
  const double deadline_s = argc == 6 ? std::atof(argv[5]) : 60;
  const char* launcher_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (argc == 6 && std::string(argv[2]) == "stall-start" && launcher_rank && std::string(launcher_rank) == argv[3])
    sleep(static_cast<unsigned>(10 * deadline_s));
  const std::unique_ptr<cllm::Comm> comm = cllm::init_comm_from_environment(deadline_s > 0 ? deadline_s : 60);
  return cllm::run_on_all_ranks(*comm, [&] { return cllm::run(argc, argv, *comm); });
}
