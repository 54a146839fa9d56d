#include "launch/http_metrics.h"

#include <charconv>
#include <sstream>

namespace cllm::http {
namespace {

// The shortest text that reads back as the same double: a stream's default 6 digits would round
// a sum of latencies that a scraper differentiates over time.
std::string num(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  std::ostringstream os;
  os << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    os << name << "_bucket{le=\"" << num(bounds_[i]) << "\"} " << cumulative << "\n";
  }
  os << name << "_bucket{le=\"+Inf\"} " << count_ << "\n" << name << "_sum " << num(sum_) << "\n"
     << name << "_count " << count_ << "\n";
  out += os.str();
}

Metrics::Metrics()
    : tokens_per_iteration_({1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64}),
      ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      inter_token_({0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}),
      step_sequences_({1, 2, 4, 8, 16, 32, 64, 128, 256}),
      step_rows_({1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096}) {}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(int prompt, int generated) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

void Metrics::observe_iteration(int tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  ++iterations_;
  tokens_per_iteration_.observe(tokens);
}

void Metrics::add_accepted(int block, int later, int pool, int recycled) {
  std::lock_guard<std::mutex> lock(mu_);
  accepted_block_ += block;
  accepted_later_ += later;
  accepted_pool_ += pool;
  accepted_recycled_ += recycled;
}

void Metrics::observe_ttft(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}

void Metrics::observe_inter_token(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  inter_token_.observe(s);
}

void Metrics::observe_step(int sequences, int rows, const std::array<int, kMaxBlockRows + 1>& decode_blocks) {
  std::lock_guard<std::mutex> lock(mu_);
  ++steps_;
  for (size_t n = 0; n < decode_blocks.size(); ++n) decode_blocks_[n] += static_cast<uint64_t>(decode_blocks[n]);
  step_sequences_.observe(sequences);
  step_rows_.observe(rows);
}

void Metrics::set_gauges(const Gauges& g) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_ = g;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  os << "# HELP cllm_requests_total HTTP requests by endpoint and status.\n# TYPE cllm_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    os << "cllm_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << "\n";
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n" << name << " " << v << "\n";
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n" << name << " " << num(v) << "\n";
  };
  counter("cllm_prompt_tokens_total", "Prompt tokens of admitted requests.", prompt_tokens_);
  counter("cllm_generated_tokens_total", "Generated tokens returned to clients.", generated_tokens_);
  counter("cllm_jacobi_iterations_total", "Forward iterations of all sequences (prefill included).", iterations_);
  os << "# HELP cllm_decode_blocks_total Decoding iterations of a sequence by block size (rows; 1 is an AR step).\n"
        "# TYPE cllm_decode_blocks_total counter\n";
  for (size_t n = 1; n < decode_blocks_.size(); ++n)
    if (decode_blocks_[n]) os << "cllm_decode_blocks_total{block=\"" << n << "\"} " << decode_blocks_[n] << "\n";
  os << "# HELP cllm_accepted_tokens_total Tokens accepted beyond the first of an iteration, by source: the Jacobi "
        "block's guesses, later blocks' guesses (multi-block), a verified lookahead n-gram of the pool, a recycled "
        "n-gram.\n"
     << "# TYPE cllm_accepted_tokens_total counter\n";
  for (const auto& [source, n] : {std::pair<const char*, uint64_t>{"block", accepted_block_},
                                  {"later", accepted_later_}, {"pool", accepted_pool_}, {"recycled", accepted_recycled_}})
    os << "cllm_accepted_tokens_total{source=\"" << source << "\"} " << n << "\n";
  gauge("cllm_queue_depth", "Requests waiting for a KV slot.", gauges_.queue_depth);
  counter("cllm_forward_steps_total", "Batched forwards (engine steps); each advances every active sequence.", steps_);
  gauge("cllm_batch_size", "Sequences in the last engine step's batched forward.", gauges_.batch_size);
  gauge("cllm_batch_rows", "Token rows in the last engine step's batched forward.", gauges_.batch_rows);
  gauge("cllm_kv_rows_in_use", "Committed tokens of the active sequences.", static_cast<double>(gauges_.kv_rows));
  gauge("cllm_kv_usage_ratio", "kv_rows_in_use / (slots x context).",
        gauges_.kv_budget ? static_cast<double>(gauges_.kv_rows) / gauges_.kv_budget : 0.0);
  std::string out = os.str();
  tokens_per_iteration_.render(out, "cllm_tokens_per_iteration", "Tokens made final per iteration of a sequence.");
  ttft_.render(out, "cllm_time_to_first_token_seconds", "From arrival to the first generated token.");
  inter_token_.render(out, "cllm_inter_token_latency_seconds", "Between successive token deliveries of a request.");
  step_sequences_.render(out, "cllm_step_sequences", "Sequences sharing one batched forward, per engine step.");
  step_rows_.render(out, "cllm_step_rows", "Token rows of one batched forward, per engine step.");
  return out;
}

}  // namespace cllm::http
