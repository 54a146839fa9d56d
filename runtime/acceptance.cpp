#include "runtime/acceptance.h"

#include <algorithm>

#include "core/check.h"

namespace cllm {

int accept_length(const int32_t* g, const int32_t* y, int n) {
  int m = 0;
  while (m + 1 < n && g[m + 1] == y[m]) ++m;
  return m;
}

int main_rows(int n, int pos, const RowSpec* rows) {
  if (!rows) return n;
  int k = 0;
  while (k < n && rows[k].pos == pos + k) ++k;
  return k;
}

Verdict verify_block(const int32_t* tokens, const int32_t* y, int n, int pos, const RowSpec* rows) {
  const int main = main_rows(n, pos, rows);
  CLLM_CHECK(main >= 1, "a verified block starts with a row at its own position " << pos << ", got "
                                                                                   << (rows ? rows[0].pos : pos));
  Verdict best;
  const int main_m = accept_length(tokens, y, main);
  best.accepted = main_m;
  std::vector<int32_t> seq, pred;
  for (int i = main, b = 0; i < n; ++b) {
    const int base = rows[i].base, root = base - 1 - pos;
    CLLM_CHECK(rows[i].pos == base && root >= 0 && root < main,
               "row " << i << " of the block at position " << pos << " (position " << rows[i].pos << ", base "
                      << base << ") neither continues the main run nor starts a branch rooted on it");
    int len = 1;
    while (i + len < n && rows[i + len].base == base && rows[i + len].pos == base + len) ++len;
    // The root must be final on the main run, else the branch's context is wrong.
    if (root <= main_m) {
      seq.assign(1, tokens[root]);
      pred.assign(1, y[root]);
      seq.insert(seq.end(), tokens + i, tokens + i + len);
      pred.insert(pred.end(), y + i, y + i + len);
      const int m = root + accept_length(seq.data(), pred.data(), len + 1);
      if (m > best.accepted) best = {b, i, root, m};
    }
    i += len;
  }
  return best;
}

Sources accepted_sources(const Verdict& v, int guesses, int frontier) {
  CLLM_CHECK(frontier >= 1 && frontier <= guesses, "the frontier block (" << frontier << " rows) must lie in the "
                                                                          << guesses << " guesses");
  Sources s;
  const int from_guesses = v.branch >= 0 ? v.root : std::min(v.accepted, guesses - 1);
  s.block = std::min(from_guesses, frontier - 1);
  s.later = from_guesses - s.block;
  s.candidate = v.accepted - from_guesses;
  return s;
}

std::vector<int32_t> verdict_tokens(const Verdict& v, const int32_t* tokens, const int32_t* y) {
  std::vector<int32_t> out;
  if (v.branch < 0) {
    out.assign(tokens + 1, tokens + v.accepted + 1);
    out.push_back(y[v.accepted]);
    return out;
  }
  // Main tokens 1..root, then the branch's first m - root tokens; the prediction after the last.
  out.assign(tokens + 1, tokens + v.root + 1);
  const int k = v.accepted - v.root;  // >= 1: a branch only wins by accepting past its root
  out.insert(out.end(), tokens + v.first_row, tokens + v.first_row + k);
  out.push_back(y[v.first_row + k - 1]);
  return out;
}

}  // namespace cllm
