// Greedy Jacobi decoding as host logic with no model inside (design.md, "the contract"):
//   block():   the guesses g[0..L) to forward at positions position() .. position()+L-1
//   accept(y): y[i] = argmax at position()+i; commits g[0..m] with m the longest run where
//              g[j] == y[j-1], makes y[m] the next g[0], and returns the newly final tokens.
// g[0] is always final (the argmax at the last committed position), so every iteration commits
// at least one token and the committed sequence equals greedy AR with exact arithmetic.
// Tested with a fake model that follows an oracle (tests/unit/test_jacobi.cpp).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/decoding.h"

namespace cllm {

class JacobiDecoder {
 public:
  // context: the prompt (its KV is exact once prefilled); first: the argmax after the prompt.
  JacobiDecoder(const JacobiOptions& opts, std::vector<int32_t> context, int32_t first);

  const std::vector<int32_t>& block() const { return block_; }
  int position() const { return static_cast<int>(context_.size()); }

  // Consumes the predictions for block(); returns the tokens that became final in this iteration
  // (accepted guesses g[1..m], then y[m]). Counts fast-forwarded and stationary tokens.
  std::vector<int32_t> accept(const int32_t* y);

  // Sliding window: the next iteration forwards n guesses (the current ones cut, or fresh ones
  // appended). Any n keeps the output equal to AR's: g[0] stays final.
  void set_block(int n);

  int fast_forwarded() const { return fast_forwarded_; }
  int stationary() const { return stationary_; }

 private:
  void append_guesses(int count);

  JacobiOptions opts_;
  std::vector<int32_t> context_;   // committed tokens: exact KV for all of them
  std::vector<int32_t> block_;     // current guesses, block_[0] final
  std::vector<int32_t> previous_;  // the block forwarded in the previous iteration
  int previous_pos_ = -1;          // its first position
  int block_end_ = 0;              // blockwise mode: one past the last position of the current block
  std::mt19937_64 rng_;
  int fast_forwarded_ = 0;
  int stationary_ = 0;
};

}  // namespace cllm
