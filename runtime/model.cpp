#include "runtime/model.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include <vector>

#include "core/check.h"
#include "runtime/cpu_model.h"

namespace cllm {

void check_forward_args(const ModelConfig& cfg, const int32_t* tokens, int n, int pos, int capacity) {
  CLLM_CHECK(n > 0 && pos >= 0, "forward needs n > 0 and pos >= 0, got n=" << n << " pos=" << pos);
  CLLM_CHECK(pos + n <= capacity, "forward of " << n << " tokens at position " << pos
                                                << " exceeds the KV capacity " << capacity);
  for (int i = 0; i < n; ++i)
    CLLM_CHECK(tokens[i] >= 0 && tokens[i] < cfg.vocab_size,
               "token id " << tokens[i] << " outside the vocabulary [0, " << cfg.vocab_size << ")");
}

int check_batch_args(const ModelConfig& cfg, const int32_t* tokens, const SeqBlock* blocks, int count, int capacity,
                     int slots) {
  CLLM_CHECK(count > 0 && count <= slots, "a batch needs 1.." << slots << " blocks, got " << count);
  std::vector<bool> seen(slots, false);
  int rows = 0;
  for (int b = 0; b < count; ++b) {
    const SeqBlock& s = blocks[b];
    CLLM_CHECK(s.slot >= 0 && s.slot < slots, "batch block " << b << " names KV slot " << s.slot << ", outside [0, "
                                                             << slots << ")");
    CLLM_CHECK(!seen[s.slot], "KV slot " << s.slot << " appears twice in one batch");
    seen[s.slot] = true;
    check_forward_args(cfg, tokens + rows, s.n, s.pos, capacity);
    rows += s.n;
  }
  return rows;
}

bool check_row_layout(const SeqBlock* blocks, int count, const RowSpec* rows, const KvMove* moves, int capacity) {
  bool plain = true;
  for (int b = 0, row = 0; b < count; row += blocks[b++].n) {
    const SeqBlock& s = blocks[b];
    for (int i = 0; rows && i < s.n; ++i) {
      const RowSpec& r = rows[row + i];
      CLLM_CHECK(0 <= r.base && r.base <= r.pos && r.pos <= s.pos + i,
                 "block " << b << " row " << i << " (cache row " << s.pos + i << ") has position " << r.pos
                          << " and base " << r.base << ": need 0 <= base <= position <= cache row");
      plain = plain && r.pos == s.pos + i;
    }
    if (!moves || moves[b].n == 0) continue;
    const KvMove& m = moves[b];
    CLLM_CHECK(m.n > 0 && m.n <= s.pos && m.src >= 0 && m.src + m.n <= capacity,
               "block " << b << " moves " << m.n << " KV rows from row " << m.src << " to row " << s.pos - m.n
                        << ": outside the block's exact KV [0, " << s.pos << ") or the capacity " << capacity);
    plain = false;
  }
  return plain;
}

void Model::forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                         const KvMove* moves, int32_t* out_ids, float* logits) {
  CLLM_CHECK(check_row_layout(blocks, count, rows, moves, INT32_MAX),
             "this backend does not verify lookahead branches (verifies_branches() is false): decode without "
             "candidates, or on the CPU");
  forward_batch(tokens, blocks, count, out_ids, logits);
}

void BlockPredictor::predict_rows(const int32_t* tokens, int n, int pos, const RowSpec* rows, KvMove move,
                                  int32_t* out_ids) {
  const SeqBlock block{0, pos, n};
  CLLM_CHECK(check_row_layout(&block, 1, rows, &move, INT32_MAX),
             "this predictor does not verify lookahead branches (verifies_branches() is false)");
  predict(tokens, n, pos, out_ids);
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  CLLM_FAIL("unknown device '" << name << "' (expected cpu or cuda)");
}

ModelOptions parse_numerics(const std::string& name) {
  ModelOptions o;
  if (name == "blocks") return o;
  if (name == "invariant") {
    o.cuda_invariant_max_rows = INT32_MAX;
    return o;
  }
  if (name == "fast") {
    o.cuda_invariant_max_rows = 0;
    return o;
  }
  CLLM_FAIL("unknown numerics '" << name << "' (expected blocks, invariant or fast)");
}

namespace {
// A two-way switch: `on` -> true, `off` -> false; anything else is refused naming the flag.
bool parse_switch(const char* flag, const std::string& name, const char* on, const char* off) {
  if (name == on) return true;
  if (name == off) return false;
  CLLM_FAIL("unknown " << flag << " '" << name << "' (expected " << on << " or " << off << ")");
}
}  // namespace

bool parse_cuda_launch(const std::string& name) { return parse_switch("--cuda-launch", name, "overlapped", "serial"); }
bool parse_cuda_swiglu(const std::string& name) { return parse_switch("--cuda-swiglu", name, "fused", "separate"); }
bool parse_cuda_gemm_loads(const std::string& name) {
  return parse_switch("--cuda-gemm-loads", name, "ring", "registers");
}
int parse_cuda_layer(const std::string& name) {
  if (name.rfind("fused:", 0) == 0) {
    const std::string digits = name.substr(6);
    const bool numeric = !digits.empty() && digits.size() <= 2 && std::all_of(digits.begin(), digits.end(), ::isdigit);
    const int rows = numeric ? std::stoi(digits) : 0;
    CLLM_CHECK(rows >= 1 && rows <= 64, "--cuda-layer fused:N takes N rows from 1 to 64, got '" << name << "'");
    return rows;
  }
  return parse_switch("--cuda-layer", name, "fused", "separate") ? ModelOptions::kAutoFusedLayerRows : 0;
}

ModelOptions::CudaGraphs parse_cuda_graphs(const std::string& name) {
  if (name == "replay") return ModelOptions::CudaGraphs::kReplay;
  if (name == "recapture") return ModelOptions::CudaGraphs::kRecapture;
  if (name == "off") return ModelOptions::CudaGraphs::kOff;
  CLLM_FAIL("unknown --cuda-graphs '" << name << "' (expected replay, recapture or off)");
}

bool parse_weights(const std::string& name, int ranks) {
  if (name == "auto") return ranks == 1;
  if (name == "native") return true;
  if (name == "f32") return false;
  CLLM_FAIL("unknown weights '" << name << "' (expected auto, native or f32)");
}

std::unique_ptr<Model> make_model(const CheckpointReader& ckpt, Device device, const LoadProgress& progress,
                                  const ModelOptions& opts) {
  switch (device) {
    case Device::Cpu:
      return std::make_unique<CpuModel>(ckpt.config(), opts.cpu_native_weights ? load_weights_native(ckpt, progress)
                                                                                : load_weights_f32(ckpt, progress));
    case Device::Cuda:
#ifdef CLLM_HAVE_CUDA
      return make_cuda_model(ckpt, progress, opts);
#else
      (void)opts;
      CLLM_FAIL("this cllm was built without CUDA; rebuild with -DCLLM_CUDA=ON to use --device cuda");
#endif
  }
  CLLM_FAIL("unreachable device");
}

}  // namespace cllm
