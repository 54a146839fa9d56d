// From a parsed OpenAI request to what the scheduler runs: the server's settings that shape every
// request, and request_spec(), a pure function of the request, those settings and the tokenizer
// (tests/unit/test_openai_api.cpp). Admission, polling and SSE stay in openai_routes.cpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "launch/openai_api.h"
#include "runtime/decoding.h"
#include "runtime/scheduler.h"
#include "runtime/tokenizer.h"

namespace cllm::openai {

struct RouteConfig {
  std::string model_name;      // what /v1/models lists and requests may name
  std::string api_key;         // "" : no auth
  // A family name or the checkpoint's jinja text, which carries what the family name does not
  // (SmolLM2's default system prompt). "": the model has no chat template (chat answers 400).
  std::string chat_template;
  bool add_bos = false;
  std::vector<int32_t> eos_ids;
  std::string eos_token, bos_token;  // the control tokens' text ("" when the checkpoint has none)
  JacobiOptions jacobi;        // server defaults (block, window, init)
  int max_context = 0;         // KV rows of one slot
  int default_chat_max_tokens = 256;
  int max_sequences = 0;       // sequences the server holds at once, running and queued (0: no limit)
  // Prompt + max_tokens a request with the server's default decoding may ask for: a slot's rows
  // less the rows one iteration forwards past them (kv_rows_needed). What /tokenize and
  // /tokenizer_info report as the model's length, so a client that truncates to it is never refused.
  int max_model_len() const { return max_context - std::max(jacobi.rows(), 1); }
};

// The sequence a request asks for: its prompt ids (chat template applied; given ids checked
// against the vocabulary), its decoding (the server's Jacobi options, cllm_block, cllm_decode "ar"
// or sampling at temperature > 0: both one token per iteration), max_new_tokens (OpenAI's
// defaults when absent, cut to what fits: 16 for completions, default_chat_max_tokens for chat)
// the stop ids (the model's EOS unless cllm_ignore_eos) and the logprobs asked for (the prompt's
// too with echo). Throws ApiError naming the field:
// 404 for another model's name, 400 otherwise. Whether the sequence fits a KV slot is the
// engine's check, not this.
SequenceSpec request_spec(const ApiRequest& r, const RouteConfig& cfg, const Tokenizer& tok);

}  // namespace cllm::openai
