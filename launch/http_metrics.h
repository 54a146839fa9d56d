// Server metrics in the Prometheus text format (GET /metrics). Thread safe: HTTP threads count
// requests by status, the engine thread records tokens, iterations and latencies.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/block_rows.h"

namespace cllm::http {

// A cumulative histogram: bucket upper bounds (le), counts, sum.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
  void observe(double v);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct Gauges {
  int queue_depth = 0;     // requests waiting for a slot
  int batch_size = 0;      // sequences in the last step's batched forward
  int batch_rows = 0;      // token rows in the last step's batched forward
  int64_t kv_rows = 0;     // committed tokens of the active sequences
  int64_t kv_budget = 0;   // slots x context
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int prompt, int generated);
  // One iteration of one sequence that made `tokens` tokens final.
  void observe_iteration(int tokens);
  // Tokens accepted beyond the first of an iteration, by source (block, later blocks, pool, recycled).
  void add_accepted(int block, int later, int pool, int recycled);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  // One batched forward (engine step) over `sequences` sequences and `rows` token rows;
  // decode_blocks[n]: decoding sequences that forwarded a block of n rows in it.
  void observe_step(int sequences, int rows, const std::array<int, kMaxBlockRows + 1>& decode_blocks = {});
  void set_gauges(const Gauges& g);
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::array<uint64_t, kMaxBlockRows + 1> decode_blocks_{};
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, iterations_ = 0, steps_ = 0;
  uint64_t accepted_block_ = 0, accepted_later_ = 0, accepted_pool_ = 0, accepted_recycled_ = 0;
  Histogram tokens_per_iteration_, ttft_, inter_token_, step_sequences_, step_rows_;
  Gauges gauges_;
};

}  // namespace cllm::http
