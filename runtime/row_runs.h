// A block's rows (core/types.h, RowSpec) as causal runs: the form in which an attention kernel that
// takes contiguous causal blocks (kernels/cuda/attention.cuh) serves lookahead branches.
//
// A run is consecutive rows whose logical positions follow each other and whose lineage is the
// same stretch of cache rows: every row of it sees the cache rows [0, base) as logical keys
// 0..base-1, then the cache rows base + shift .. its own as logical keys base..its position. So a
// run is an ordinary causal block at logical positions pos .. pos + n - 1 whose keys at or past
// `base` are read `shift` cache rows further on. A plain causal row has shift 0 (base then does not
// matter: both parts are the cache rows themselves); a lookahead branch of g rows after the
// context is one run. The attention of a run's row over its logical keys is the attention of the
// same row in a plain block at that position (the same keys, the same order), which is what keeps
// a verified branch's bits those of AR.
#pragma once
#include <vector>

#include "core/types.h"

namespace cllm {

struct RowRun {
  int first = 0;  // its first row, counted from the block's first row
  int n = 0;      // rows
  int pos = 0;    // logical position of its first row
  int base = 0;   // logical keys below this are cache rows of the same index
  int shift = 0;  // logical key t >= base is cache row t + shift
  bool operator==(const RowRun& o) const {
    return first == o.first && n == o.n && pos == o.pos && base == o.base && shift == o.shift;
  }
};

// Appends the runs of the n rows of a block whose first cache row is `cache_pos` (row i writes
// cache row cache_pos + i) to `out`, fewest runs first: a row starts a new run only where the
// layout makes it (its position does not follow the previous row's, or its lineage differs).
// rows: the block's n RowSpecs, or null when every row is causal (one run). The layout must have
// passed check_row_layout (runtime/model.h).
void append_row_runs(int cache_pos, int n, const RowSpec* rows, std::vector<RowRun>& out);

}  // namespace cllm
