// A check shared by the CPU and the CUDA model tests: lookahead branch rows (Model::forward_rows)
// give bit for bit the logits of the same tokens forwarded causally, and a KV move puts a verified
// branch's KV where AR would have written it.
#pragma once
#include "runtime/model.h"

namespace cllm::test {

// `model` verifies branches of a Jacobi block after a 70-token prompt (three branches from g[0],
// one from g[2]), then forwards after a KV move; every row's logits must equal, bit for bit, those
// of `reference` (a second model of the same checkpoint and numerics) forwarding the row's tokens
// causally. Both models are reset.
void check_branches(Model& model, Model& reference);

}  // namespace cllm::test
