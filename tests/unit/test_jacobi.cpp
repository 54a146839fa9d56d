// The Jacobi decoder against a fake model that follows an oracle sequence: its prediction at a
// position is right only if every token up to there is right (as a causal LM would be), so the
// decoder must reproduce the oracle exactly, with the iteration counts the contract implies.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

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
                EXPECT_EQ(r.stats.fast_forwarded, r.stats.accepted_block + r.stats.accepted_pool + r.stats.accepted_recycled);
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

TEST(Lookahead, BackendWithoutBranchesIsRefused) {
  struct Plain final : BlockPredictor {
    void predict(const int32_t*, int n, int, int32_t* out) override { std::fill(out, out + n, 1); }
  } model;
  GenerateOptions gen;
  JacobiOptions jac;
  jac.candidates = 2;
  EXPECT_THROW(generate_jacobi(model, {1, 2, 3}, gen, jac), std::exception);
}

}  // namespace
}  // namespace cllm
