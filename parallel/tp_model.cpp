#include "parallel/tp_model.h"

#include <fstream>
#include <sstream>
#include <string>

#include "core/check.h"
#include "core/shard_plan.h"
#include "runtime/cpu_model.h"

namespace cllm {

std::unique_ptr<Model> make_sharded_model(const CheckpointReader& ckpt, Device device, Comm& comm,
                                          const LoadProgress& progress, const ModelOptions& opts) {
  if (comm.size() == 1) return make_model(ckpt, device, progress, opts);
  // The GPU's sharded model lives in cllm_parallel_cuda (parallel/cuda/cuda_tp_model.h), which
  // needs CUDA, MPI and NCCL; the cllm executable calls it directly when it was built with them.
  CLLM_CHECK(device == Device::Cpu, "tensor parallelism over " << comm.size()
                                        << " ranks with --device cuda needs cllm built with CUDA, MPI and NCCL "
                                           "(parallel/cuda/cuda_tp_model.h); use --device cpu or one rank");
  CLLM_CHECK(!opts.cpu_native_weights, "--weights native runs on one rank only (its kernels hold whole tensors); "
                                       "use --weights f32 under mpirun");
  const ModelConfig& cfg = ckpt.config();
  const ShardPlan plan = make_shard_plan(cfg, comm.rank(), comm.size());
  return std::make_unique<CpuModel>(cfg, load_weights_f32(ckpt, plan, progress), plan, comm);
}

RankLoad describe_load(const Model& model, double seconds) {
  const ModelConfig& c = model.config();
  uint64_t h = 1469598103934665603ULL;
  for (int64_t v : {c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads,
                    c.head_dim, static_cast<int>(c.tie_word_embeddings), c.sliding_window})
    h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ULL;
  return {seconds, model.step_bytes(0), peak_rss_bytes(), h};
}

std::vector<RankLoad> gather_loads(Comm& comm, const RankLoad& mine) {
  std::vector<RankLoad> all(comm.size());
  comm.all_gather(&mine, sizeof mine, all.data(), {"load report"});
  std::ostringstream differ;
  for (int r = 1; r < comm.size(); ++r)
    if (all[r].config_hash != all[0].config_hash) differ << " " << r;
  if (differ.tellp() > 0) comm.abort("ranks" + differ.str() + " loaded a model config different from rank 0's");
  return all;
}

double peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;  // "VmHWM:  1234 kB"
  }
  CLLM_FAIL("/proc/self/status has no VmHWM line");
}

}  // namespace cllm
