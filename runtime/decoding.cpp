#include "runtime/decoding.h"

#include <algorithm>

namespace cllm {

Truncation truncate_final(const GenerateOptions& opts, int generated, const int32_t* ids, int n) {
  Truncation t;
  for (; t.take < n; ++t.take) {
    if (generated + t.take >= opts.max_new_tokens) {
      t.finish_reason = "length";
      return t;
    }
    if (std::find(opts.stop_ids.begin(), opts.stop_ids.end(), ids[t.take]) != opts.stop_ids.end()) {
      t.finish_reason = "stop";
      return t;
    }
  }
  if (generated + t.take >= opts.max_new_tokens) t.finish_reason = "length";
  return t;
}

}  // namespace cllm
