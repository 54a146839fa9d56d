#include "lookahead_check.h"

#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

namespace cllm::test {
namespace {

std::vector<int32_t> tokens_of(int count, int salt, int vocab) {
  std::vector<int32_t> s;
  for (int i = 0; i < count; ++i) s.push_back(static_cast<int32_t>((i * 37 + salt * 101 + (i * i) % 13) % vocab));
  return s;
}

// The logits of the last row of `seq` forwarded causally after a fresh reset: a prompt chunk, then the rest.
std::vector<float> causal_last(Model& m, const std::vector<int32_t>& seq, int prompt) {
  const int vocab = m.config().vocab_size;
  m.reset(256);
  std::vector<int32_t> ids(seq.size());
  std::vector<float> logits(seq.size() * vocab);
  m.forward(seq.data(), prompt, 0, ids.data(), logits.data());
  m.forward(seq.data() + prompt, static_cast<int>(seq.size()) - prompt, prompt, ids.data(), logits.data());
  const size_t last = (seq.size() - prompt - 1) * vocab;  // the second forward's rows start at 0
  return std::vector<float>(logits.begin() + last, logits.begin() + last + vocab);
}

}  // namespace

void check_branches(Model& model, Model& reference) {
  const int vocab = model.config().vocab_size, P = 70, main = 6;
  const std::vector<int32_t> prompt = tokens_of(P, 1, vocab);
  const std::vector<int32_t> g = tokens_of(main, 2, vocab);
  // Branches (root row, tokens): three from g[0], one from g[2].
  const std::vector<std::pair<int, std::vector<int32_t>>> branches = {
      {0, tokens_of(3, 3, vocab)}, {0, tokens_of(3, 4, vocab)}, {2, tokens_of(2, 5, vocab)}, {0, tokens_of(4, 6, vocab)}};
  std::vector<int32_t> rows_tokens = g;
  std::vector<RowSpec> rows;
  for (int i = 0; i < main; ++i) rows.push_back({P + i, 0});
  for (const auto& [root, b] : branches)
    for (int k = 0; k < static_cast<int>(b.size()); ++k) {
      rows_tokens.push_back(b[k]);
      rows.push_back({P + root + 1 + k, P + root + 1});
    }
  const int n = static_cast<int>(rows_tokens.size());
  model.reset(256);
  std::vector<int32_t> ids(P);
  std::vector<float> logits(static_cast<size_t>(P) * vocab);
  model.forward(prompt.data(), P, 0, ids.data(), logits.data());
  const SeqBlock block{0, P, n};
  model.forward_rows(rows_tokens.data(), &block, 1, rows.data(), nullptr, ids.data(), logits.data());

  int row = 0;
  auto expect_row = [&](std::vector<int32_t> seq, const char* what) {
    const std::vector<float> want = causal_last(reference, seq, P);
    EXPECT_EQ(0, std::memcmp(want.data(), logits.data() + static_cast<size_t>(row) * vocab, vocab * sizeof(float)))
        << what << " row " << row << " differs from the causal forward of its tokens";
    ++row;
  };
  for (int i = 0; i < main; ++i) {
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), g.begin(), g.begin() + i + 1);
    expect_row(seq, "main");
  }
  for (const auto& [root, b] : branches)
    for (int k = 0; k < static_cast<int>(b.size()); ++k) {
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), g.begin(), g.begin() + root + 1);
      seq.insert(seq.end(), b.begin(), b.begin() + k + 1);
      expect_row(seq, "branch");
    }

  // Accept the last branch's first three tokens: their KV moves to positions P+1..P+3 before the
  // next forward, which then equals the causal forward of prompt, g[0], the branch tokens, next.
  const int first_row = n - 4;
  const KvMove move{P + first_row, 3};
  const int32_t next = 5;
  const SeqBlock after{0, P + 4, 1};
  std::vector<float> got(vocab);
  model.forward_rows(&next, &after, 1, nullptr, &move, ids.data(), got.data());
  std::vector<int32_t> seq = prompt;
  seq.push_back(g[0]);
  seq.insert(seq.end(), branches[3].second.begin(), branches[3].second.begin() + 3);
  seq.push_back(next);
  const std::vector<float> want = causal_last(reference, seq, P);
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), vocab * sizeof(float))) << "the forward after a KV move";
}

}  // namespace cllm::test
