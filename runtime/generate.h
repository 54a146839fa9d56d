// Greedy generation loops over a BlockPredictor: AR (one token per forward) and Jacobi.
// Both prefill the prompt the same way, so their outputs can be compared token for token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/block_policy.h"
#include "runtime/decoding.h"
#include "runtime/model.h"

namespace cllm {

// KV rows a request can touch: prompt + generated + the guesses of the last block. 64-bit, so a
// max_new_tokens near INT32_MAX is a large count, not a negative one.
int64_t kv_rows_needed(int64_t prompt_tokens, int64_t max_new_tokens, int block);

// The context rule, checked where a request enters (generate, serve admission, trajectories): the
// prompt plus max_new_tokens commit that many positions, which must be within the model's
// max_position_embeddings, and the request touches kv_rows_needed() KV rows, which must fit
// `kv_capacity` rows (0: the KV is sized for the request). Returns why the request cannot run,
// naming the numbers, or "" when it fits.
std::string context_limit_error(const ModelConfig& cfg, int64_t prompt_tokens, int64_t max_new_tokens, int block,
                                int64_t kv_capacity = 0);

GenerateResult generate_ar(BlockPredictor& model, const std::vector<int32_t>& prompt,
                           const GenerateOptions& opts, const TokenSink& sink = {});

// jacobi.adaptive: each iteration's block is picked by choose_blocks() from `cost` (refined with
// every timed forward) and the sequence's acceptance; `cost` is then required.
GenerateResult generate_jacobi(BlockPredictor& model, const std::vector<int32_t>& prompt,
                               const GenerateOptions& opts, const JacobiOptions& jacobi,
                               const TokenSink& sink = {}, StepCostModel* cost = nullptr);

}  // namespace cllm
