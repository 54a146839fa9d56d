#include "runtime/row_runs.h"

namespace cllm {

void append_row_runs(int cache_pos, int n, const RowSpec* rows, std::vector<RowRun>& out) {
  if (rows == nullptr) {
    if (n > 0) out.push_back({0, n, cache_pos, 0, 0});
    return;
  }
  for (int i = 0; i < n; ++i) {
    const int shift = cache_pos + i - rows[i].pos;
    const int base = shift == 0 ? 0 : rows[i].base;  // with no shift both parts are the cache rows
    RowRun* last = out.empty() ? nullptr : &out.back();
    if (i > 0 && last->pos + last->n == rows[i].pos && last->shift == shift && last->base == base) {
      ++last->n;
      continue;
    }
    out.push_back({i, 1, rows[i].pos, base, shift});
  }
}

}  // namespace cllm
