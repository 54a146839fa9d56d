#include "parallel/tp_model.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
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
  uint64_t h = fnv1a(nullptr, 0);
  for (int64_t v : {c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads,
                    c.head_dim, static_cast<int>(c.tie_word_embeddings), c.sliding_window})
    h = fnv1a(&v, sizeof v, h);
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

namespace {
// A rank's origin as all_gather carries it: fixed-size text, cut to fit.
struct RankOrigin {
  char host[64];
  char source[448];
};
void copy_text(char* dst, size_t size, const std::string& text) {
  const size_t n = std::min(size - 1, text.size());
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}
std::vector<RankOrigin> gather_origins(const CheckpointReader& ckpt, Comm& comm, const CommPhase& phase) {
  RankOrigin me{};
  char host[256] = "unknown host";
  gethostname(host, sizeof host - 1);
  copy_text(me.host, sizeof me.host, host);
  copy_text(me.source, sizeof me.source, ckpt.source());
  std::vector<RankOrigin> all(comm.size());
  comm.all_gather(&me, sizeof me, all.data(), phase);
  return all;
}
// "rank 2 (host node3: /models/x)"
std::string rank_origin(const std::vector<RankOrigin>& origins, int r) {
  return "rank " + std::to_string(r) + " (host " + origins[r].host + ": " + origins[r].source + ")";
}
}  // namespace

void agree_on_config(const CheckpointReader& ckpt, Comm& comm) {
  const ModelConfig& c = ckpt.config();
  // The fields that fix the tensor shapes and the forward, with their config.json names.
  const std::pair<const char*, double> fields[] = {
      {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers}, {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings}, {"tie_word_embeddings", c.tie_word_embeddings ? 1 : 0},
      {"rms_norm_eps", c.rms_norm_eps}, {"rope_theta", c.rope_theta}};
  constexpr size_t n = std::size(fields);
  double mine[n];
  for (size_t i = 0; i < n; ++i) mine[i] = fields[i].second;
  std::vector<double> all(n * comm.size());
  comm.all_gather(mine, sizeof mine, all.data(), {"config agreement"});
  const std::vector<RankOrigin> origins = gather_origins(ckpt, comm, {"config agreement"});
  for (int r = 1; r < comm.size(); ++r)
    for (size_t i = 0; i < n; ++i)
      if (all[r * n + i] != all[i]) {
        std::ostringstream os;
        os << rank_origin(origins, r) << " opened a checkpoint whose " << fields[i].first << " is " << all[r * n + i]
           << ", but " << rank_origin(origins, 0) << " has " << all[i]
           << ": every rank must load the same checkpoint";
        comm.abort(os.str());
      }
}

void agree_on_checkpoint(const CheckpointReader& ckpt, Comm& comm) {
  const TensorManifest manifest = make_tensor_manifest(ckpt.config());
  std::vector<std::string> names;
  std::vector<uint64_t> mine;
  for (const TensorSpec* t : manifest.all()) {
    names.push_back(t->name);
    mine.push_back(ckpt.fingerprint(t->name));
  }
  const size_t n = mine.size();  // the same on every rank: their configs agree (agree_on_config)
  std::vector<uint64_t> all(n * comm.size());
  comm.all_gather(mine.data(), n * sizeof(uint64_t), all.data(), {"checkpoint identity"});
  const std::vector<RankOrigin> origins = gather_origins(ckpt, comm, {"checkpoint identity"});
  for (int r = 1; r < comm.size(); ++r)
    for (size_t i = 0; i < n; ++i)
      if (all[r * n + i] != all[i]) {
        std::ostringstream os;
        os << "rank " << r << " (host " << origins[r].host << ") loaded a checkpoint different from rank 0's: tensor '"
           << names[i] << "' differs (rank " << r << ": " << origins[r].source << "; rank 0 (host " << origins[0].host
           << "): " << origins[0].source << "). Every rank must load the same checkpoint; a stale copy on one node "
           << "gives wrong text";
        comm.abort(os.str());
      }
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
