#include "runtime/generate.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"
#include "runtime/jacobi.h"

namespace cllm {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Collects final tokens, applies stop ids and max_new_tokens, and forwards them to the sink.
class Output {
 public:
  Output(const GenerateOptions& opts, const TokenSink& sink, GenerateResult& result)
      : opts_(opts), sink_(sink), r_(result) {}

  // Returns true when generation is over.
  bool push(const std::vector<int32_t>& ids) {
    const Truncation t =
        truncate_final(opts_, static_cast<int>(r_.tokens.size()), ids.data(), static_cast<int>(ids.size()));
    if (t.take > 0) {
      if (sink_) sink_(ids.data(), t.take);
      r_.tokens.insert(r_.tokens.end(), ids.begin(), ids.begin() + t.take);
    }
    r_.finish_reason = t.finish_reason;
    return !r_.finish_reason.empty();
  }

 private:
  const GenerateOptions& opts_;
  const TokenSink& sink_;
  GenerateResult& r_;
};

// Forwards the whole prompt; returns the argmax after its last token.
int32_t prefill(BlockPredictor& model, const std::vector<int32_t>& prompt, DecodeStats& stats) {
  CLLM_CHECK(!prompt.empty(), "the prompt is empty: nothing to condition on");
  const auto t0 = Clock::now();
  std::vector<int32_t> ids(prompt.size());
  model.predict(prompt.data(), static_cast<int>(prompt.size()), 0, ids.data());
  stats.prefill_seconds = seconds_since(t0);
  stats.iterations = 1;
  return ids.back();
}

}  // namespace

int64_t kv_rows_needed(int64_t prompt_tokens, int64_t max_new_tokens, int block) {
  return prompt_tokens + max_new_tokens + std::max(block, 1);
}

std::string context_limit_error(const ModelConfig& cfg, int64_t prompt_tokens, int64_t max_new_tokens, int block,
                                int64_t kv_capacity) {
  const std::string sum = "prompt (" + std::to_string(prompt_tokens) + " tokens) + max_new_tokens (" +
                          std::to_string(max_new_tokens) + ")";
  const int64_t rows = kv_rows_needed(prompt_tokens, max_new_tokens, block);
  const bool over_kv = kv_capacity > 0 && rows > kv_capacity;
  const std::string kv = sum + " + block (" + std::to_string(block) + ") = " + std::to_string(rows) +
                         " KV rows, over the KV capacity of " + std::to_string(kv_capacity) + " rows per sequence";
  // A KV capacity below the model's positions (a server's --max-context) is the limit to name.
  if (over_kv && kv_capacity < cfg.max_position_embeddings) return kv;
  const int64_t positions = prompt_tokens + max_new_tokens;
  if (positions > cfg.max_position_embeddings)
    return sum + " = " + std::to_string(positions) + " positions, beyond the model's " +
           std::to_string(cfg.max_position_embeddings) + " (max_position_embeddings)";
  return over_kv ? kv : "";
}

GenerateResult generate_ar(BlockPredictor& model, const std::vector<int32_t>& prompt,
                           const GenerateOptions& opts, const TokenSink& sink) {
  GenerateResult r;
  CLLM_CHECK(opts.max_new_tokens > 0, "max_new_tokens must be positive, got " << opts.max_new_tokens);
  Output out(opts, sink, r);
  int32_t next = prefill(model, prompt, r.stats);
  const auto t0 = Clock::now();
  int pos = static_cast<int>(prompt.size());
  while (!out.push({next})) {
    int32_t y = 0;
    model.predict(&next, 1, pos++, &y);
    ++r.stats.iterations;
    next = y;
  }
  r.stats.decode_seconds = seconds_since(t0);
  r.stats.tokens = static_cast<int>(r.tokens.size());
  return r;
}

GenerateResult generate_jacobi(BlockPredictor& model, const std::vector<int32_t>& prompt,
                               const GenerateOptions& opts, const JacobiOptions& jacobi, const TokenSink& sink,
                               StepCostModel* cost) {
  GenerateResult r;
  CLLM_CHECK(opts.max_new_tokens > 0, "max_new_tokens must be positive, got " << opts.max_new_tokens);
  CLLM_CHECK(!jacobi.adaptive || cost, "adaptive Jacobi needs a step cost model");
  Output out(opts, sink, r);
  CLLM_CHECK(jacobi.candidates == 0 || model.verifies_branches(),
             "lookahead candidates need a backend that verifies branches (the CPU and CUDA models); this one does not");
  const int32_t first = prefill(model, prompt, r.stats);
  const auto t0 = Clock::now();
  JacobiDecoder dec(jacobi, prompt, first);
  AcceptanceEstimate estimate;
  std::vector<int32_t> y;
  r.stats.block_iterations.assign(static_cast<size_t>(jacobi.block) * jacobi.blocks + 1, 0);  // by guesses
  bool done = out.push({first});
  while (!done) {
    if (jacobi.adaptive) {
      // Guesses past the tokens still wanted would be wasted rows.
      const int cap = std::max(1, std::min(jacobi.block, opts.max_new_tokens - static_cast<int>(r.tokens.size())));
      dec.set_block(pick_block(estimate, cap, dec.position(), *cost));
    }
    const std::vector<int32_t>& g = dec.block();
    const int n = static_cast<int>(g.size());
    y.resize(g.size());
    const auto t = Clock::now();
    if (dec.rows().empty() && dec.move().n == 0)
      model.predict(g.data(), n, dec.position(), y.data());
    else
      model.predict_rows(g.data(), n, dec.position(), dec.layout(), dec.move(), y.data());
    if (jacobi.adaptive) cost->observe(n, static_cast<double>(n) * dec.position(), seconds_since(t));
    ++r.stats.iterations;
    const int block_rows = dec.block_rows();
    ++r.stats.block_iterations[static_cast<size_t>(block_rows)];
    const std::vector<int32_t> finals = dec.accept(y.data());
    estimate.observe(block_rows, static_cast<int>(finals.size()));
    done = out.push(finals);
  }
  r.stats.decode_seconds = seconds_since(t0);
  r.stats.tokens = static_cast<int>(r.tokens.size());
  dec.add_stats(r.stats);
  return r;
}

}  // namespace cllm
