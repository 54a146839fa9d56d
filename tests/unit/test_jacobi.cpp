// The Jacobi decoder against a fake model that follows an oracle sequence: its prediction at a
// position is right only if every token up to there is right (as a causal LM would be), so the
// decoder must reproduce the oracle exactly, with the iteration counts the contract implies.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "core/check.h"

#include "runtime/generate.h"
#include "runtime/jacobi.h"

namespace cllm {
namespace {

class OracleModel final : public BlockPredictor {
 public:
  // oracle[i]: the correct token at position i (the prompt occupies the first positions).
  // lookahead: how many positions past the first wrong one the model still predicts correctly
  // anyway ("stationary" behaviour of a CLLM); 0 = plain causal behaviour.
  // local: after a wrong token the prediction is still right two times in three, decided by a
  // hash of (position, token there): correct guesses then survive unchanged behind a wrong
  // token, as in a CLLM.
  OracleModel(std::vector<int32_t> oracle, int lookahead = 0, bool local = false)
      : oracle_(std::move(oracle)), lookahead_(lookahead), local_(local) {}
  std::vector<int32_t> seen;  // KV "cache": the tokens at each position

  void predict(const int32_t* tokens, int n, int pos, int32_t* out) override {
    predict_rows(tokens, n, pos, nullptr, KvMove{}, out);
  }
  // Lookahead rows: row i (cache row pos + i) sees the logical tokens its RowSpec names.
  void predict_rows(const int32_t* tokens, int n, int pos, const RowSpec* rows, KvMove move, int32_t* out) override {
    if (move.n > 0) std::copy(seen.begin() + move.src, seen.begin() + move.src + move.n, seen.begin() + pos - move.n);
    seen.resize(std::max<size_t>(seen.size(), pos + n));
    for (int i = 0; i < n; ++i) seen[pos + i] = tokens[i];
    ++forwards;
    for (int i = 0; i < n; ++i) {
      const int c = pos + i, p = rows ? rows[i].pos : c, base = rows ? rows[i].base : c;
      auto logical = [&](int t) { return t < base ? seen[t] : seen[c - p + t]; };
      int first_wrong = -1;
      for (int q = 0; q <= p && first_wrong < 0; ++q)
        if (logical(q) != oracle_[q]) first_wrong = q;
      const bool lucky = local_ && (static_cast<uint32_t>(p * 2654435761u) ^ static_cast<uint32_t>(logical(p) * 40503u)) % 3 != 0;
      const bool right = first_wrong < 0 || p - first_wrong < lookahead_ || lucky;
      // A wrong prediction is deterministic garbage that never equals an oracle token (< 50).
      out[i] = right ? oracle_[p + 1] : static_cast<int32_t>(1000 + (p * 7 + tokens[i]) % 97);
    }
  }
  bool verifies_branches() const override { return true; }
  int forwards = 0;

 private:
  std::vector<int32_t> oracle_;
  int lookahead_;
  bool local_;
};

std::vector<int32_t> make_oracle(int len, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> o(len);
  for (int32_t& t : o) t = static_cast<int32_t>(rng() % 50);
  return o;
}

constexpr int kPrompt = 5;

TEST(Jacobi, MatchesOracleForEveryBlockSizeAndMode) {
  const std::vector<int32_t> oracle = make_oracle(200, 1);
  const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + kPrompt);
  const std::vector<int32_t> expected(oracle.begin() + kPrompt, oracle.begin() + kPrompt + 40);
  for (int n : {1, 2, 3, 4, 16, 32}) {
    for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
      for (InitialGuess init : {InitialGuess::RandomFromContext, InitialGuess::RepeatLast, InitialGuess::Pad}) {
        OracleModel model(oracle);
        GenerateOptions gen;
        gen.max_new_tokens = 40;
        JacobiOptions jac;
        jac.block = n;
        jac.window = w;
        jac.init = init;
        const GenerateResult r = generate_jacobi(model, prompt, gen, jac);
        EXPECT_EQ(r.tokens, expected) << "n=" << n;
        EXPECT_EQ(r.finish_reason, "length");
        EXPECT_EQ(r.stats.iterations, model.forwards);
      }
    }
  }
}

TEST(Jacobi, BlockOfOneTakesOneIterationPerToken) {
  const std::vector<int32_t> oracle = make_oracle(100, 2);
  OracleModel model(oracle);
  GenerateOptions gen;
  gen.max_new_tokens = 30;
  JacobiOptions jac;
  jac.block = 1;
  const GenerateResult r = generate_jacobi(model, {oracle.begin(), oracle.begin() + kPrompt}, gen, jac);
  EXPECT_EQ(r.stats.tokens, 30);
  EXPECT_EQ(r.stats.iterations, 30);
  EXPECT_EQ(r.stats.fast_forwarded, 0);
}

TEST(Jacobi, PerfectGuessesFinishInOneIterationPerBlock) {
  // A model that also predicts correctly after wrong tokens (lookahead) lets the guesses converge
  // fast: with lookahead >= n every iteration after the first accepts the whole block.
  const std::vector<int32_t> oracle = make_oracle(300, 3);
  OracleModel model(oracle, /*lookahead=*/64);
  GenerateOptions gen;
  gen.max_new_tokens = 64;
  JacobiOptions jac;
  jac.block = 16;
  const GenerateResult r = generate_jacobi(model, {oracle.begin(), oracle.begin() + kPrompt}, gen, jac);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + kPrompt, oracle.begin() + kPrompt + 64));
  EXPECT_GT(r.stats.tokens_per_iteration(), 4.0);
  EXPECT_GT(r.stats.fast_forwarded, 0);
  // Every accepted guess came from the previous iteration's predictions, which replaced the
  // random initial guesses wholesale: nothing sat unchanged, so nothing is stationary.
  EXPECT_EQ(r.stats.stationary, 0);
}

TEST(Jacobi, CountsStationaryTokens) {
  // With a local model a correct guess behind a wrong token is often predicted again unchanged
  // in the next iteration: it is stationary when it is finally accepted.
  const std::vector<int32_t> oracle = make_oracle(300, 6);
  OracleModel model(oracle, /*lookahead=*/0, /*local=*/true);
  GenerateOptions gen;
  gen.max_new_tokens = 64;
  JacobiOptions jac;
  jac.block = 16;
  const GenerateResult r = generate_jacobi(model, {oracle.begin(), oracle.begin() + kPrompt}, gen, jac);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + kPrompt, oracle.begin() + kPrompt + 64));
  EXPECT_GT(r.stats.stationary, 0);
  EXPECT_LE(r.stats.stationary, r.stats.fast_forwarded);
}

TEST(Jacobi, StopTokenInsideAcceptedSpanTruncates) {
  std::vector<int32_t> oracle = make_oracle(100, 4);
  oracle[kPrompt + 10] = 99;  // stop id, never produced by make_oracle (values < 50)
  OracleModel model(oracle, 64);
  GenerateOptions gen;
  gen.max_new_tokens = 50;
  gen.stop_ids = {99};
  JacobiOptions jac;
  jac.block = 16;
  const GenerateResult r = generate_jacobi(model, {oracle.begin(), oracle.begin() + kPrompt}, gen, jac);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + kPrompt, oracle.begin() + kPrompt + 10));
  const GenerateResult ar = generate_ar(model, {oracle.begin(), oracle.begin() + kPrompt}, gen);
  EXPECT_EQ(ar.tokens, r.tokens);
}

TEST(Jacobi, SinkReceivesExactlyTheReturnedTokens) {
  const std::vector<int32_t> oracle = make_oracle(100, 5);
  OracleModel model(oracle, 3);
  GenerateOptions gen;
  gen.max_new_tokens = 23;
  JacobiOptions jac;
  jac.block = 8;
  std::vector<int32_t> streamed;
  const GenerateResult r = generate_jacobi(model, {oracle.begin(), oracle.begin() + kPrompt}, gen, jac,
                                           [&](const int32_t* ids, int n) { streamed.insert(streamed.end(), ids, ids + n); });
  EXPECT_EQ(streamed, r.tokens);
  EXPECT_EQ(static_cast<int>(r.tokens.size()), 23);
}

TEST(Jacobi, AcceptCommitsLongestMatchingRun) {
  JacobiOptions jac;
  jac.block = 4;
  jac.init = InitialGuess::Pad;
  jac.pad_id = 7;
  JacobiDecoder dec(jac, {1, 2, 3}, 10);
  ASSERT_EQ(dec.block(), (std::vector<int32_t>{10, 7, 7, 7}));
  EXPECT_EQ(dec.position(), 3);
  // y[0] == g[1] (7), y[1] != g[2]: m = 1, so g[0..1] commit and y[1] = 8 becomes the next g[0].
  const int32_t y[4] = {7, 8, 9, 5};
  EXPECT_EQ(dec.accept(y), (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(dec.position(), 5);
  EXPECT_EQ(dec.block(), (std::vector<int32_t>{8, 9, 5, 7}));  // y[1..3] + one fresh pad guess
}

TEST(Jacobi, BlockChangedBetweenIterationsStillMatchesOracle) {
  // set_block: cut the guesses or append fresh ones; g[0] stays final, so any sequence of sizes
  // reproduces the oracle (a CLLM-like model, so longer blocks do accept several tokens).
  const std::vector<int32_t> oracle = make_oracle(300, 4);
  const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + kPrompt);
  OracleModel model(oracle, /*lookahead=*/3, /*local=*/true);
  JacobiOptions jac;
  jac.block = 8;
  std::vector<int32_t> y(prompt.size());
  model.predict(prompt.data(), kPrompt, 0, y.data());  // the prefill
  JacobiDecoder dec(jac, prompt, y.back());
  std::vector<int32_t> out = {y.back()};
  std::mt19937 rng(9);
  std::set<int> sizes;
  while (out.size() < 120) {
    const int n = 1 + static_cast<int>(rng() % 20);
    dec.set_block(n);
    ASSERT_EQ(static_cast<int>(dec.block().size()), n);
    sizes.insert(n);
    y.resize(n);
    model.predict(dec.block().data(), n, dec.position(), y.data());
    const std::vector<int32_t> finals = dec.accept(y.data());
    ASSERT_GE(static_cast<int>(finals.size()), 1);
    ASSERT_LE(static_cast<int>(finals.size()), n);
    out.insert(out.end(), finals.begin(), finals.end());
  }
  EXPECT_EQ(out, std::vector<int32_t>(oracle.begin() + kPrompt, oracle.begin() + kPrompt + out.size()));
  EXPECT_GT(sizes.size(), 10u);
  EXPECT_GT(dec.fast_forwarded(), 0);
}

TEST(Jacobi, BlockCannotChangeInBlockwiseMode) {
  JacobiOptions jac;
  jac.block = 4;
  jac.window = JacobiWindow::Blockwise;
  JacobiDecoder dec(jac, {1, 2, 3}, 4);
  EXPECT_THROW(dec.set_block(2), Error);
}

// A frozen step cost model where each extra row costs `per_row` of a one-row step.
StepCostModel frozen_cost(double per_row) {
  StepCostModel cost;
  for (int n = 1; n <= 64; n *= 2) cost.set_knot(n, 1.0 + per_row * (n - 1));
  cost.set_learning_rate(0);
  return cost;
}

TEST(Jacobi, AdaptiveGenerateMatchesOracleAndVariesTheBlock) {
  // generate_jacobi with jacobi.adaptive: a frozen cost model where each extra row costs 15% of a
  // step, so the block follows the acceptance (high on the CLLM-like model: longer blocks).
  const std::vector<int32_t> oracle = make_oracle(300, 5);
  const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + kPrompt);
  for (int lookahead : {0, 6}) {
    OracleModel model(oracle, lookahead, /*local=*/lookahead > 0);
    StepCostModel cost = frozen_cost(0.15);
    GenerateOptions gen;
    gen.max_new_tokens = 100;
    JacobiOptions jac;
    jac.block = 32;
    jac.adaptive = true;
    const GenerateResult r = generate_jacobi(model, prompt, gen, jac, {}, &cost);
    EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + kPrompt, oracle.begin() + kPrompt + 100));
    int used = 0;
    for (int c : r.stats.block_iterations) used += c > 0;
    EXPECT_GE(used, 2) << "lookahead " << lookahead;
    if (lookahead == 0) {  // a causal model accepts nothing past g[0]: mostly AR steps
      EXPECT_GT(r.stats.block_iterations[1], 80);
    } else {
      EXPECT_LT(r.stats.iterations, 80);  // vs about 100 for the causal model
    }
  }
}

// An oracle that repeats itself: the pool (prompt and generated text) holds the continuation.
std::vector<int32_t> periodic_oracle(int len, int period, uint32_t seed) {
  const std::vector<int32_t> base = make_oracle(period, seed);
  std::vector<int32_t> o(len);
  for (int i = 0; i < len; ++i) o[i] = base[i % period];
  return o;
}

TEST(Lookahead, MatchesOracleForEveryModeAndSize) {
  for (const auto& oracle : {make_oracle(300, 11), periodic_oracle(300, 23, 12)}) {
    const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + 30);
    const std::vector<int32_t> expected(oracle.begin() + 30, oracle.begin() + 130);
    for (int n : {1, 2, 5, 8})
      for (int g : {1, 3, 7})
        for (int ngram : {2, 3, 5})
          for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise})
            for (bool prompt_pool : {true, false})
              for (bool local : {false, true}) {
                OracleModel model(oracle, 0, local);
                GenerateOptions gen;
                gen.max_new_tokens = 100;
                JacobiOptions jac;
                jac.block = n;
                jac.window = w;
                jac.candidates = g;
                jac.ngram = ngram;
                jac.prompt_pool = prompt_pool;
                const GenerateResult r = generate_jacobi(model, prompt, gen, jac);
                ASSERT_EQ(r.tokens, expected) << "n=" << n << " window " << static_cast<int>(w) << " prompt pool "
                                              << prompt_pool << " G=" << g << " N=" << ngram << " local=" << local;
                EXPECT_EQ(r.stats.iterations, model.forwards);
                EXPECT_EQ(r.stats.fast_forwarded, r.stats.accepted_by_sources());
              }
  }
}

TEST(Lookahead, PoolOfARepeatingTextAcceptsMoreTokensPerForward) {
  const std::vector<int32_t> oracle = periodic_oracle(300, 23, 12);
  const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + 30);
  GenerateOptions gen;
  gen.max_new_tokens = 100;
  JacobiOptions jac;
  jac.block = 4;
  OracleModel plain_model(oracle);
  const GenerateResult plain = generate_jacobi(plain_model, prompt, gen, jac);
  jac.candidates = 3;
  jac.ngram = 6;
  OracleModel la_model(oracle);
  const GenerateResult la = generate_jacobi(la_model, prompt, gen, jac);
  EXPECT_EQ(la.tokens, plain.tokens);
  // The prompt already holds every 6-gram of the period: each forward verifies 5 tokens from it.
  EXPECT_GT(la.stats.accepted_pool, 60);
  EXPECT_GE(la.stats.tokens_per_iteration(), 4.5);
  EXPECT_LT(plain.stats.tokens_per_iteration(), 1.5);
}

TEST(Lookahead, RecyclesRejectedTrajectoryNgrams) {
  // A CLLM-like model (correct guesses survive behind a wrong one) on a text that does not repeat:
  // with no prompt in the pool, only the trajectory's rejected n-grams can be verified later.
  const std::vector<int32_t> oracle = make_oracle(300, 21);
  const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + 10);
  GenerateOptions gen;
  gen.max_new_tokens = 150;
  JacobiOptions jac;
  jac.block = 8;
  jac.candidates = 4;
  jac.ngram = 4;
  jac.prompt_pool = false;
  OracleModel model(oracle, 0, /*local=*/true);
  const GenerateResult r = generate_jacobi(model, prompt, gen, jac);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + 10, oracle.begin() + 160));
  EXPECT_GT(r.stats.accepted_recycled, 0);
}

TEST(Lookahead, AdaptiveBlockWithCandidatesMatchesOracle) {
  // The adaptive policy picks each iteration's block; the candidates ride beside it. On a repeating
  // text the pool's n-grams win, so the policy sees high acceptance, yet the output is the oracle's.
  const std::vector<int32_t> oracle = periodic_oracle(300, 23, 12);
  const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + 30);
  StepCostModel cost = frozen_cost(0.15);
  GenerateOptions gen;
  gen.max_new_tokens = 100;
  JacobiOptions jac;
  jac.block = 16;
  jac.adaptive = true;
  jac.candidates = 3;
  jac.ngram = 5;
  OracleModel model(oracle, 0, /*local=*/true);
  const GenerateResult r = generate_jacobi(model, prompt, gen, jac, {}, &cost);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + 30, oracle.begin() + 130));
  EXPECT_EQ(r.stats.iterations, model.forwards);
  EXPECT_GT(r.stats.accepted_pool, 0);
  EXPECT_EQ(r.stats.fast_forwarded, r.stats.accepted_by_sources());
  int used = 0, total = 0;
  for (int c : r.stats.block_iterations) {
    used += c > 0;
    total += c;
  }
  EXPECT_EQ(total + 1, r.stats.iterations);  // the prefill, then decode iterations by the block's own rows
  EXPECT_GE(used, 2);
}

TEST(Lookahead, SetBlockLaysOutCandidatesAfterTheNewBlock) {
  // Prompt 1 2 3 1 2 3 ...: after key 3 the pool holds "1 2" (ngram 3); the block then grows.
  JacobiOptions jac;
  jac.block = 2;
  jac.candidates = 1;
  jac.ngram = 3;
  jac.init = InitialGuess::Pad;  // guesses 0: never the candidate itself
  JacobiDecoder dec(jac, {1, 2, 3, 1, 2, 3, 1, 2}, 3);
  ASSERT_EQ(dec.block_rows(), 2);
  ASSERT_EQ(dec.block().size(), 4u);  // 2 guesses + one candidate of 2 rows
  dec.set_block(5);
  EXPECT_EQ(dec.block_rows(), 5);
  ASSERT_EQ(dec.block().size(), 7u);
  EXPECT_EQ(dec.block()[5], 1);
  EXPECT_EQ(dec.block()[6], 2);
  ASSERT_EQ(dec.rows().size(), 7u);
  EXPECT_EQ(dec.rows()[5].pos, dec.position() + 1);  // the candidate's rows follow g[0], not the block
}

TEST(Lookahead, BackendWithoutBranchesIsRefused) {
  struct Plain final : BlockPredictor {
    void predict(const int32_t*, int n, int, int32_t* out) override { std::fill(out, out + n, 1); }
  } model;
  GenerateOptions gen;
  JacobiOptions jac;
  jac.candidates = 2;
  EXPECT_THROW(generate_jacobi(model, {1, 2, 3}, gen, jac), std::exception);
}

// Multi-block (JacobiOptions::blocks): K blocks of guesses in one causal run. The output stays the
// oracle's in every mode, with and without lookahead candidates, and every accepted token has one
// source.
TEST(MultiBlock, MatchesOracleForEveryModeAndSize) {
  for (const auto& oracle : {make_oracle(300, 31), periodic_oracle(300, 23, 32)}) {
    const std::vector<int32_t> prompt(oracle.begin(), oracle.begin() + 30);
    const std::vector<int32_t> expected(oracle.begin() + 30, oracle.begin() + 130);
    for (int blocks : {2, 3})
      for (int n : {1, 2, 4, 8})
        for (int candidates : {0, 3})
          for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise})
            for (int lookahead : {0, 3})
              for (bool local : {false, true})
                for (double later_after : {0.0, 0.5, 1.0}) {
                OracleModel model(oracle, lookahead, local);
                GenerateOptions gen;
                gen.max_new_tokens = 100;
                const JacobiOptions jac{.block = n, .window = w, .candidates = candidates, .ngram = 4, .blocks = blocks,
                                        .later_after = later_after};
                const GenerateResult r = generate_jacobi(model, prompt, gen, jac);
                const std::string what = "K=" + std::to_string(blocks) + " n=" + std::to_string(n) + " G=" +
                                         std::to_string(candidates) + " window " + std::to_string(static_cast<int>(w)) +
                                         " lookahead " + std::to_string(lookahead) + " local " + std::to_string(local) +
                                         " later_after " + std::to_string(later_after);
                ASSERT_EQ(r.tokens, expected) << what;
                EXPECT_EQ(r.stats.iterations, model.forwards) << what;
                EXPECT_EQ(r.stats.fast_forwarded, r.stats.accepted_by_sources()) << what;
              }
  }
}

// Greedy Jacobi over an oracle's first `prompt` tokens, `max_new` tokens, with a model that stays
// right `lookahead` positions past a wrong token.
GenerateResult decode_oracle(const std::vector<int32_t>& oracle, int prompt, int max_new, const JacobiOptions& jac,
                             int lookahead) {
  OracleModel model(oracle, lookahead);
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  GenerateResult r = generate_jacobi(model, {oracle.begin(), oracle.begin() + prompt}, gen, jac);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(oracle.begin() + prompt, oracle.begin() + prompt + max_new));
  EXPECT_EQ(r.stats.iterations, model.forwards);
  return r;
}

TEST(MultiBlock, LaterBlocksGiveAcceptedTokens) {
  // A CLLM-like model (predictions stay right for 3 positions past a wrong token) in the paper's
  // blockwise window: with one block each new block starts from fresh guesses; with K blocks the
  // next block's guesses converge while the frontier finishes, so when the frontier is fixed the
  // path runs on into the next block.
  const std::vector<int32_t> oracle = make_oracle(400, 41);
  const GenerateResult one = decode_oracle(oracle, 10, 200, {.block = 4, .window = JacobiWindow::Blockwise}, 3);
  const GenerateResult multi =
      decode_oracle(oracle, 10, 200, {.block = 4, .window = JacobiWindow::Blockwise, .blocks = 3}, 3);
  EXPECT_EQ(one.stats.accepted_later, 0);
  EXPECT_GT(multi.stats.accepted_later, 40);
  EXPECT_GT(multi.stats.tokens_per_iteration(), 1.3 * one.stats.tokens_per_iteration())
      << one.stats.tokens_per_iteration() << " -> " << multi.stats.tokens_per_iteration();
}

TEST(MultiBlock, SlidingBlocksForwardAsOneLongBlock) {
  // In the sliding window K blocks of n are one causal run of K x n guesses refilled at its end:
  // the same rows, iterations and output as one block of K x n; only the sources differ (tokens
  // past the first n guesses count as later blocks').
  const std::vector<int32_t> oracle = make_oracle(400, 43);
  const GenerateResult one_long = decode_oracle(oracle, 10, 200, {.block = 12}, 6);
  const GenerateResult multi = decode_oracle(oracle, 10, 200, {.block = 4, .blocks = 3}, 6);
  EXPECT_EQ(multi.stats.iterations, one_long.stats.iterations);
  EXPECT_EQ(multi.stats.accepted_block + multi.stats.accepted_later, one_long.stats.accepted_block);
  EXPECT_GT(multi.stats.accepted_later, 0);
}

TEST(MultiBlock, BlockwiseBlocksKeepTheirEnds) {
  // Two blocks of 4 at position 3: the frontier is 4 guesses, the run 8. An iteration that fixes
  // one token leaves the frontier 3 guesses (its end stays) and the run 7; a path through the
  // frontier into the second block then leaves both behind: a new frontier and a fresh block.
  JacobiOptions jac;
  jac.block = 4;
  jac.blocks = 2;
  jac.window = JacobiWindow::Blockwise;
  jac.init = InitialGuess::Pad;
  JacobiDecoder dec(jac, {7, 8, 9}, 10);
  ASSERT_EQ(dec.block_rows(), 8);
  EXPECT_EQ(dec.frontier_rows(), 4);
  // g = 10 0 0 0 0 0 0 0: the pad guesses are wrong, so only the next token becomes final.
  std::vector<int32_t> y = {11, 12, 13, 14, 15, 16, 17, 18};
  std::vector<int32_t> finals = dec.accept(y.data());
  EXPECT_EQ(finals, std::vector<int32_t>({11}));  // g[1] = 0 != 11: only the next token
  EXPECT_EQ(dec.position(), 4);
  EXPECT_EQ(dec.frontier_rows(), 3);
  ASSERT_EQ(dec.block_rows(), 7);
  // The guesses are now the predictions at their positions: 11 (final) 12 13 | 14 15 16 17.
  EXPECT_EQ(dec.block(), std::vector<int32_t>({11, 12, 13, 14, 15, 16, 17}));
  y = {12, 13, 14, 15, 16, 17, 99};
  finals = dec.accept(y.data());  // the whole run: the frontier, then into the second block
  EXPECT_EQ(finals, std::vector<int32_t>({12, 13, 14, 15, 16, 17, 99}));
  EXPECT_EQ(dec.accepted_block(), 2);
  EXPECT_EQ(dec.accepted_later(), 4);
  // Position 11: past both blocks' ends (7, 11): a new frontier of 4 and one block behind it.
  EXPECT_EQ(dec.position(), 11);
  EXPECT_EQ(dec.frontier_rows(), 4);
  EXPECT_EQ(dec.block_rows(), 8);
}

// Rows forwarded over a decode: sum over iterations of their rows (stats.block_iterations).
int rows_forwarded(const DecodeStats& s) {
  int rows = 0;
  for (size_t r = 0; r < s.block_iterations.size(); ++r) rows += static_cast<int>(r) * s.block_iterations[r];
  return rows;
}

TEST(MultiBlock, LaterBlocksJoinOnceTheFrontierSettles) {
  // Jacobi Forcing's rule (JacobiOptions::later_after): the decode starts with the frontier alone and
  // a later block joins after an iteration that settles half the frontier's guesses. On a CLLM-like
  // model (right 6 positions past a wrong token) blocks join and give accepted tokens; on a plain
  // causal model little settles, so most of the later blocks' rows are saved.
  const std::vector<int32_t> oracle = make_oracle(400, 41);
  for (JacobiWindow w : {JacobiWindow::Sliding, JacobiWindow::Blockwise}) {
    const JacobiOptions always{.block = 4, .window = w, .blocks = 3};
    JacobiOptions settle = always;
    settle.later_after = 0.5;
    JacobiDecoder first(settle, {oracle.begin(), oracle.begin() + 10}, oracle[10]);
    EXPECT_EQ(first.block_rows(), 4);
    EXPECT_EQ(first.blocks_in_flight(), 1);
    const GenerateResult cllm = decode_oracle(oracle, 10, 200, settle, 6);
    EXPECT_GT(cllm.stats.accepted_later, 0) << "window " << static_cast<int>(w);
    int widest = 0;
    for (size_t r = 0; r < cllm.stats.block_iterations.size(); ++r)
      if (cllm.stats.block_iterations[r] > 0) widest = static_cast<int>(r);
    EXPECT_GE(widest, 8) << "a later block in flight at some iteration; window " << static_cast<int>(w);
    const GenerateResult plain_always = decode_oracle(oracle, 10, 200, always, 0);
    const GenerateResult plain_settle = decode_oracle(oracle, 10, 200, settle, 0);
    EXPECT_LT(rows_forwarded(plain_settle.stats), rows_forwarded(plain_always.stats) / 2)
        << "window " << static_cast<int>(w);
  }
}

TEST(MultiBlock, AdaptiveBlockIsRefused) {
  JacobiOptions jac;
  jac.block = 8;
  jac.blocks = 2;
  jac.adaptive = true;
  EXPECT_THROW(JacobiDecoder(jac, {1, 2, 3}, 4), std::exception);
}

}  // namespace
}  // namespace cllm
