// Greedy generation loops over a BlockPredictor: AR (one token per forward) and Jacobi.
// Both prefill the prompt the same way, so their outputs can be compared token for token.
#pragma once
#include <vector>

#include "runtime/decoding.h"
#include "runtime/model.h"

namespace cllm {

// KV rows a request can touch: prompt + generated + the guesses of the last block.
int kv_rows_needed(int prompt_tokens, int max_new_tokens, int block);

GenerateResult generate_ar(BlockPredictor& model, const std::vector<int32_t>& prompt,
                           const GenerateOptions& opts, const TokenSink& sink = {});

GenerateResult generate_jacobi(BlockPredictor& model, const std::vector<int32_t>& prompt,
                               const GenerateOptions& opts, const JacobiOptions& jacobi,
                               const TokenSink& sink = {});

}  // namespace cllm
