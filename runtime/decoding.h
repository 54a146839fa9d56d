// Greedy decoding options, results and statistics, shared by AR and Jacobi.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cllm {

enum class JacobiWindow {
  Sliding,    // after each iteration, refill the block to n with fresh guesses
  Blockwise,  // the paper's mode: iterate one n-token block until all of it is fixed, then the next
};

enum class InitialGuess {
  RandomFromContext,  // the paper's default: tokens drawn (seeded) from prompt + generated text
  RepeatLast,         // the last final token, repeated
  Pad,                // the pad id
};

struct JacobiOptions {
  int block = 16;  // n: guesses forwarded per iteration (adaptive: the most)
  JacobiWindow window = JacobiWindow::Sliding;
  InitialGuess init = InitialGuess::RandomFromContext;
  uint64_t seed = 0;
  int32_t pad_id = 0;
  // Load-adaptive: each iteration's block is picked in 1..block by runtime/block_policy.h (sliding
  // window only); false: every iteration forwards `block` rows.
  bool adaptive = false;
  // Lookahead (design.md, "More tokens per forward"): beside the block, verify up to `candidates`
  // n-grams of `ngram` tokens (the final first token, then ngram - 1 rows each) from the
  // sequence's pool, in the same forward. 0 candidates: plain Jacobi.
  int candidates = 0;
  int ngram = 4;
  bool prompt_pool = true;  // the pool also holds the prompt's n-grams (else only generated text
                            // and the Jacobi trajectory)
  // Multi-block (design.md, "More tokens per forward"): K blocks of `block` guesses in flight, one
  // causal run; block 1 sits at the frontier, blocks 2..K draft further ahead and become the
  // frontier already refined. 1: a single block. Needs a fixed block (not adaptive).
  int blocks = 1;
  // Jacobi Forcing's rule for when a later block joins (multi-block only): 0, every block is in
  // flight from the start; r in (0, 1], one more block joins (up to `blocks`) after an iteration
  // that settles at least ceil(r x (block - 1)) (and at least one) of the frontier's block - 1
  // guesses: made them final, or left them unchanged (the model predicted at each the guess it
  // already held); a block leaves when the frontier block is done. Until the frontier settles,
  // drafting further ahead is mostly wasted rows.
  double later_after = 0;
  // Rows of the lookahead candidates: ngram - 1 branch rows each.
  int candidate_rows() const { return candidates > 0 ? candidates * (ngram - 1) : 0; }
  // Rows one iteration forwards: the blocks and every candidate's rows.
  int rows() const { return block * blocks + candidate_rows(); }
};

struct GenerateOptions {
  int max_new_tokens = 128;
  std::vector<int32_t> stop_ids;  // EOS and other stop tokens: generation ends before them
};

// Statistics of one request. An "iteration" is one forward pass, the prompt prefill included,
// so with block n = 1 Jacobi makes exactly one iteration per generated token, like AR.
struct DecodeStats {
  int iterations = 0;
  int tokens = 0;           // generated tokens returned
  int fast_forwarded = 0;   // tokens accepted beyond the first one in an iteration
  int accepted_block = 0;   // of those, tokens the Jacobi block's guesses gave (the frontier block)
  int accepted_later = 0;   // of those, tokens the guesses of later blocks (2..K, multi-block) gave
  int accepted_pool = 0;    // of those, tokens a verified n-gram of committed text (prompt, output) gave
  int accepted_recycled = 0;  // of those, tokens a verified n-gram of the Jacobi trajectory gave: guesses
                              // and predictions rejected in their iteration, recycled as candidates
  int stationary = 0;       // fast-forwarded tokens whose guess was already right one iteration earlier
  std::vector<int> block_iterations;  // Jacobi: decode iterations per block size (index = rows)
  double prefill_seconds = 0;
  double decode_seconds = 0;

  int accepted_by_sources() const { return accepted_block + accepted_later + accepted_pool + accepted_recycled; }
  double tokens_per_iteration() const { return iterations ? static_cast<double>(tokens) / iterations : 0; }
  double tokens_per_second() const {
    const double s = prefill_seconds + decode_seconds;
    return s > 0 ? tokens / s : 0;
  }
  double decode_tokens_per_second() const { return decode_seconds > 0 ? tokens / decode_seconds : 0; }
};

// Jacobi's decode speed over AR's, as a ratio of tokens per second: the two may stop at different
// lengths (an EOS reached earlier or later after a near-tie), so a ratio of times would not compare
// like with like.
inline double decode_speedup(const DecodeStats& ar, const DecodeStats& jacobi) {
  const double ar_rate = ar.decode_tokens_per_second();
  return ar_rate > 0 ? jacobi.decode_tokens_per_second() / ar_rate : 0;
}

struct GenerateResult {
  std::vector<int32_t> tokens;   // generated ids, stop token excluded
  std::string finish_reason;     // "stop" (a stop id) or "length" (max_new_tokens)
  DecodeStats stats;
};

// The request's limits applied to newly final tokens ids[0..n) after `generated` earlier ones:
// `take` of them count, cut before a stop id or at max_new_tokens; finish_reason is "stop",
// "length" or "" (go on). The one truncation rule of generate, serve and the scheduler.
struct Truncation {
  int take = 0;
  std::string finish_reason;
};
Truncation truncate_final(const GenerateOptions& opts, int generated, const int32_t* ids, int n);

// Called with each run of newly final tokens, in order, as soon as they are known.
using TokenSink = std::function<void(const int32_t* ids, int n)>;

}  // namespace cllm
