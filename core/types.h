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

// Called while weights load: (bytes done, bytes total, current tensor name).
using LoadProgress = std::function<void(double, double, const std::string&)>;

}  // namespace cllm
