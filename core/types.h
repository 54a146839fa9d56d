// Small value types that the layers above core pass to each other: a sequence's block in a
// batched step (the model backends in runtime/, the coordinator in parallel/, the server in
// launch/) and the weight-load progress callback.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace cllm {

// One sequence's block inside a batched forward: `n` consecutive rows of the token array, at
// positions pos..pos+n-1 of KV slot `slot`. The cache of that slot must hold exact KV for [0, pos).
struct SeqBlock {
  int32_t slot = 0;
  int32_t pos = 0;
  int32_t n = 0;
};

// One row of a block that verifies lookahead branches (design.md, "More tokens per forward"). Row i
// of a block at SeqBlock::pos still writes KV cache row c = pos + i, but sits at logical position
// `pos` (RoPE, causality) and sees the cache rows [0, base) as logical keys 0..base-1, then its own
// lineage, the cache rows c - (pos - base) .. c, as logical keys base..pos. A plain causal row has
// pos == c (and any base <= pos: it then sees every cache row up to its own). 0 <= base <= pos <= c.
struct RowSpec {
  int32_t pos = 0;
  int32_t base = 0;
};

// A KV move applied to a block's slot before its forward: cache rows [src, src + n) go to rows
// [pos - n, pos), where SeqBlock::pos is the block's first position (a verified branch's KV goes to
// the positions its tokens were accepted at). n = 0: none.
struct KvMove {
  int32_t src = 0;
  int32_t n = 0;
};

// Called while weights load: (bytes done, bytes total, current tensor name).
using LoadProgress = std::function<void(double, double, const std::string&)>;

}  // namespace cllm
