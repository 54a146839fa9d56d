// One sequence's greedy decoding state, as host logic with no model inside (design.md, "the
// contract" and "More tokens per forward"); generate, the scheduler (serve) and the trajectory
// collector all drive it:
//   block():   the rows to forward, the guesses g[0..n) at positions position() .. position()+n-1
//              first, then (lookahead) the rows of each candidate n-gram;
//   rows():    the rows' layout (core/types.h, RowSpec), empty when every row is causal;
//   move():    the KV move to apply before that forward (a verified n-gram's KV to its positions);
//   accept(y): y[i] = argmax at row i; the decision is runtime/acceptance.h's verify_block: the
//              longest accepted path, on the block (g[j] == y[j-1]) or through a candidate. Returns
//              the newly final tokens.
// Multi-block (JacobiOptions::blocks = K): the guesses are K blocks in one causal run, the frontier
// block first; each later block drafts the positions after the one before it. An accepted path may
// run into a later block (its guesses were conditioned on tokens now final, so it is exact), and a
// later block keeps its refined guesses when it becomes the frontier. With the blockwise window the
// blocks have fixed ends: when the frontier block is fixed, the next one takes its place and a
// fresh block joins at the far end. With JacobiOptions::later_after, later blocks join only once the
// frontier has partly settled, and leave as frontier blocks are done (blocks_in_flight()).
// Every block's trajectory feeds the n-gram pool (recycled).
// g[0] is always final (the argmax at the last committed position), so every iteration commits
// at least one token and the committed sequence equals greedy AR with exact arithmetic.
// Tested with a fake model that follows an oracle (tests/unit/test_jacobi.cpp).
#pragma once
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include "core/types.h"
#include "runtime/decoding.h"

namespace cllm {

// A sequence's n-gram pool for lookahead: for each key token, the most recent distinct
// continuations (ngram - 1 tokens) seen after it, newest first, each with where it came from:
// committed text (the prompt, generated tokens) or the Jacobi trajectory (a block's guesses and
// predictions, rejected in their iteration and kept as candidates: recycled). The decoder prefers
// the entries whose token before the key matches its own (a two-token match, as prompt lookup).
class NgramPool {
 public:
  enum class Origin { Text, Recycled };
  struct Entry {
    std::vector<int32_t> gram;
    Origin origin;
    int32_t before = -1;  // the token before the key where it was seen (-1: unknown)
  };
  NgramPool(int ngram, int keep) : ngram_(ngram), keep_(keep) {}
  // Adds the n-grams of tokens[0..n) (each window of `ngram` consecutive tokens) as text.
  void add_text(const int32_t* tokens, int n);
  // ngram - 1 tokens after key; a gram already there moves to the front, and text confirms it.
  void add(int32_t key, const int32_t* continuation, Origin origin, int32_t before = -1);
  const std::vector<Entry>& candidates(int32_t key) const;

 private:
  int ngram_, keep_;
  std::unordered_map<int32_t, std::vector<Entry>> pool_;
};

class JacobiDecoder {
 public:
  // context: the prompt (its KV is exact once prefilled); first: the argmax after the prompt.
  JacobiDecoder(const JacobiOptions& opts, std::vector<int32_t> context, int32_t first);

  const std::vector<int32_t>& block() const { return rows_tokens_; }
  const std::vector<RowSpec>& rows() const { return rows_; }
  // rows() for Model::forward_rows: null when every row is causal.
  const RowSpec* layout() const { return rows_.empty() ? nullptr : rows_.data(); }
  KvMove move() const { return move_; }
  int position() const { return static_cast<int>(context_.size()); }
  // The Jacobi guesses alone, all blocks (the first rows of block()).
  int block_rows() const { return static_cast<int>(block_.size()); }
  // Of those, the frontier block's (the first ones).
  int frontier_rows() const;
  // Blocks whose guesses the next forward holds (JacobiOptions::blocks, or fewer under later_after).
  int blocks_in_flight() const { return in_flight_; }

  // Consumes the predictions for block(); returns the tokens that became final in this iteration
  // (the accepted path's tokens after g[0], then the prediction after them).
  std::vector<int32_t> accept(const int32_t* y);
  // The last accept()'s rows (indices into that iteration's block()) whose predictions its returned
  // tokens are: the i-th final token is the argmax at row final_rows()[i] (for log-probabilities).
  const std::vector<int>& final_rows() const { return final_rows_; }

  // Sliding window: the next iteration forwards n guesses per block (the current ones cut, or fresh
  // ones appended). Any n keeps the output equal to AR's: g[0] stays final.
  void set_block(int n);

  int fast_forwarded() const { return fast_forwarded_; }
  int stationary() const { return stationary_; }
  int accepted_block() const { return accepted_block_; }
  int accepted_later() const { return accepted_later_; }
  int accepted_pool() const { return accepted_pool_; }
  int accepted_recycled() const { return accepted_recycled_; }
  // Adds this decoder's counts to stats (fast-forwarded, stationary, by source).
  void add_stats(DecodeStats& stats) const;

 private:
  void append_guesses(int count);
  void fill_guesses(int count);  // cuts block_ to count guesses or appends fresh ones
  void lay_out();  // block() and rows() from block_ and the pool's candidates for block_[0]
  // later_after: the blocks in flight after an iteration that finished `blocks_done` frontier
  // blocks and left `settled` leading frontier guesses unchanged.
  void update_in_flight(int blocks_done, int settled);

  JacobiOptions opts_;
  std::vector<int32_t> context_;   // committed tokens: exact KV for all of them
  std::vector<int32_t> block_;     // current guesses, block_[0] final
  std::vector<int32_t> previous_;  // the block forwarded in the previous iteration
  int previous_pos_ = -1;          // its first position
  int block_end_ = 0;              // blockwise mode: one past the last position of the frontier block
  int in_flight_ = 1;              // blocks whose guesses block_ holds
  int frontier_done_ = 0;          // sliding window, later_after: tokens final since the frontier block began
  std::mt19937_64 rng_;
  NgramPool pool_;
  std::vector<int32_t> rows_tokens_;  // block_, then each candidate's ngram - 1 tokens
  std::vector<RowSpec> rows_;         // empty without candidates
  std::vector<NgramPool::Origin> origins_;  // of each candidate laid out
  KvMove move_;
  std::vector<int> final_rows_;
  int fast_forwarded_ = 0;
  int stationary_ = 0;
  int accepted_block_ = 0, accepted_later_ = 0, accepted_pool_ = 0, accepted_recycled_ = 0;
};

}  // namespace cllm
