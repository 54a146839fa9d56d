// A block's rows as causal runs (runtime/row_runs.h): every row of every run sees, key by logical
// key, exactly the cache rows its RowSpec names, and lookahead's layouts give one run per branch.
#include <gtest/gtest.h>

#include <random>

#include "runtime/model.h"
#include "runtime/row_runs.h"

namespace cllm {
namespace {

// The cache row behind each logical key 0..pos of a row at cache row c (core/types.h, RowSpec).
std::vector<int> keys_of_spec(const RowSpec& r, int c) {
  std::vector<int> keys;
  for (int t = 0; t <= r.pos; ++t) keys.push_back(t < r.base ? t : c - (r.pos - t));
  return keys;
}

// The same through row j of a run.
std::vector<int> keys_of_run(const RowRun& run, int j) {
  std::vector<int> keys;
  for (int t = 0; t <= run.pos + j; ++t) keys.push_back(t < run.base ? t : t + run.shift);
  return keys;
}

void expect_runs_cover(int cache_pos, const std::vector<RowSpec>& rows, const std::vector<RowRun>& runs) {
  int next = 0;
  for (const RowRun& run : runs) {
    ASSERT_EQ(run.first, next) << "runs must cover the rows in order";
    ASSERT_GT(run.n, 0);
    for (int j = 0; j < run.n; ++j) {
      const int i = run.first + j;
      EXPECT_EQ(keys_of_run(run, j), keys_of_spec(rows[static_cast<size_t>(i)], cache_pos + i)) << "row " << i;
    }
    next += run.n;
  }
  EXPECT_EQ(next, static_cast<int>(rows.size()));
}

TEST(RowRuns, PlainBlockIsOneRun) {
  std::vector<RowRun> runs;
  append_row_runs(40, 7, nullptr, runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], (RowRun{0, 7, 40, 0, 0}));
  // Causal rows given explicitly, whatever their bases: still one run.
  std::vector<RowSpec> rows;
  for (int i = 0; i < 7; ++i) rows.push_back({40 + i, i % 3 == 0 ? 40 : 0});
  runs.clear();
  append_row_runs(40, 7, rows.data(), runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], (RowRun{0, 7, 40, 0, 0}));
}

TEST(RowRuns, LookaheadLayoutIsOneRunPerBranch) {
  // As runtime/jacobi.cpp lays it out: a block of 5 guesses at position p, then 3 branches of 3
  // rows, each at positions p + 1 .. p + 3 seeing the context and g[0] (base p + 1).
  const int p = 100, block = 5, branches = 3, len = 3;
  std::vector<RowSpec> rows;
  for (int i = 0; i < block; ++i) rows.push_back({p + i, 0});
  for (int b = 0; b < branches; ++b)
    for (int i = 0; i < len; ++i) rows.push_back({p + 1 + i, p + 1});
  const int n = static_cast<int>(rows.size());
  std::vector<RowRun> runs;
  append_row_runs(p, n, rows.data(), runs);
  ASSERT_EQ(runs.size(), static_cast<size_t>(1 + branches));
  EXPECT_EQ(runs[0], (RowRun{0, block, p, 0, 0}));
  for (int b = 0; b < branches; ++b) {
    const int first = block + b * len;
    EXPECT_EQ(runs[1 + b], (RowRun{first, len, p + 1, p + 1, first - 1}));
  }
  expect_runs_cover(p, rows, runs);
}

TEST(RowRuns, RandomLayoutsSeeTheirRowsKeys) {
  std::mt19937 rng(20261207);
  for (int trial = 0; trial < 500; ++trial) {
    const int cache_pos = static_cast<int>(rng() % 90), n = 1 + static_cast<int>(rng() % 24);
    std::vector<RowSpec> rows;
    for (int i = 0; i < n; ++i) {
      const int c = cache_pos + i;
      if (i > 0 && rng() % 2 == 0 && rows.back().pos + 1 <= c) {  // continue the last row's lineage
        rows.push_back({rows.back().pos + 1, rows.back().base});
        continue;
      }
      const int pos = static_cast<int>(rng() % (c + 1)), base = static_cast<int>(rng() % (pos + 1));
      rows.push_back({pos, base});
    }
    const SeqBlock block{0, cache_pos, n};
    ASSERT_NO_THROW(check_row_layout(&block, 1, rows.data(), nullptr, cache_pos + n));  // a layout a model accepts
    std::vector<RowRun> runs = {{0, 3, 1, 0, 0}};  // runs of an earlier block stay as they are
    append_row_runs(cache_pos, n, rows.data(), runs);
    ASSERT_EQ(runs[0], (RowRun{0, 3, 1, 0, 0}));
    runs.erase(runs.begin());
    expect_runs_cover(cache_pos, rows, runs);
  }
}

}  // namespace
}  // namespace cllm
