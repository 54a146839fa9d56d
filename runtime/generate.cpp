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
  const int64_t positions = prompt_tokens + max_new_tokens;
  if (positions > cfg.max_position_embeddings)
    return sum + " = " + std::to_string(positions) + " positions, beyond the model's " +
           std::to_string(cfg.max_position_embeddings) + " (max_position_embeddings)";
  const int64_t rows = kv_rows_needed(prompt_tokens, max_new_tokens, block);
  if (kv_capacity > 0 && rows > kv_capacity)
    return sum + " + block (" + std::to_string(block) + ") = " + std::to_string(rows) +
           " KV rows, over the KV capacity of " + std::to_string(kv_capacity) + " rows per sequence";
  return "";
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
                               const GenerateOptions& opts, const JacobiOptions& jacobi, const TokenSink& sink) {
  GenerateResult r;
  CLLM_CHECK(opts.max_new_tokens > 0, "max_new_tokens must be positive, got " << opts.max_new_tokens);
  Output out(opts, sink, r);
  CLLM_CHECK(jacobi.candidates == 0 || model.verifies_branches(),
             "lookahead candidates need a backend that verifies branches (the CPU model); this one does not");
  const int32_t first = prefill(model, prompt, r.stats);
  const auto t0 = Clock::now();
  JacobiDecoder dec(jacobi, prompt, first);
  std::vector<int32_t> y;
  bool done = out.push({first});
  while (!done) {
    const std::vector<int32_t>& g = dec.block();
    y.resize(g.size());
    if (dec.rows().empty() && dec.move().n == 0)
      model.predict(g.data(), static_cast<int>(g.size()), dec.position(), y.data());
    else
      model.predict_rows(g.data(), static_cast<int>(g.size()), dec.position(), dec.layout(), dec.move(), y.data());
    ++r.stats.iterations;
    done = out.push(dec.accept(y.data()));
  }
  r.stats.decode_seconds = seconds_since(t0);
  r.stats.tokens = static_cast<int>(r.tokens.size());
  dec.add_stats(r.stats);
  return r;
}

}  // namespace cllm
