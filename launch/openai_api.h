// The OpenAI request and response formats that `cllm serve` speaks: parsing and validation of
// /v1/completions and /v1/chat/completions bodies, and the JSON it answers with.
//
// Field policy: known fields are validated (wrong type or range: 400). Fields that only carry
// client bookkeeping (user, metadata, store, service_tier) are ignored. Fields that would change
// the output in ways cllm does not implement (n > 1, penalties, logprobs, logit_bias, tools, ...)
// are accepted only at their neutral value; any other field is refused with 400, so a client
// never silently gets something other than what it asked for.
//
// Decoding: temperature 0 (the default here, unlike OpenAI's 1) is greedy and decoded with
// Jacobi iterations; temperature > 0 samples one token per iteration (AR) with top_p, seeded
// by `seed` (a random one when absent, as OpenAI). Extensions: cllm_decode "jacobi"
// (greedy only) or "ar" (greedy AR at temperature 0), cllm_block (Jacobi block, 1..64),
// cllm_ignore_eos (true: generate exactly max_tokens, for load benchmarks).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"

namespace cllm::openai {

// A request refused before it reaches the engine.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = "", std::string code = "")
      : std::runtime_error(message), status(status), param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string param;
  std::string code;  // OpenAI's error code, e.g. context_length_exceeded
};

struct ApiRequest {
  bool chat = false;
  std::string model;
  std::string prompt;                   // completions: text ("" when prompt_ids is used)
  std::vector<int32_t> prompt_ids;      // completions: a prompt given as token ids
  // completions: a batch of prompts (["a", "b"] or [[ids], [ids]]), each with n choices, choice
  // index = prompt * n + j as OpenAI numbers them; prompt / prompt_ids then hold the first.
  struct PromptInput {
    std::string text;
    std::vector<int32_t> ids;
  };
  std::vector<PromptInput> batch;
  std::vector<ChatMessage> messages;    // chat
  int max_tokens = 0;                   // 0: not given
  std::string max_tokens_field = "max_tokens";  // the field it came from (errors name it)
  std::string max_tokens_sent;                  // its value as the client wrote it (errors show it)
  std::vector<std::string> stop;
  double temperature = 0;
  double top_p = 1;
  uint64_t seed = 0;
  bool seed_given = false;
  bool stream = false;
  bool include_usage = false;           // stream_options.include_usage
  bool stream_options = false;          // stream_options given (only with stream: true)
  std::string decode;                   // "jacobi", "ar" or "" (by temperature)
  int block = 0;                        // 0: the server's --block (auto: picked per step); N: pinned
  int candidates = -1;                  // cllm_candidates: lookahead n-grams per iteration (-1: --candidates)
  int ngram = 0;                        // cllm_ngram: their size (0: the server's --ngram)
  int blocks = 0;                       // cllm_blocks: Jacobi blocks in flight (0: the server's --blocks)
  double later_block_after = -1;        // cllm_later_block_after: in [0, 1] (-1: the server's --later-block-after)
  std::string window;                   // cllm_window: "sliding" or "blockwise" ("": the server's --window)
  bool ignore_eos = false;              // cllm_ignore_eos: no stop ids
  // Log-probabilities: -1 none, else of each token with that many alternatives (chat: logprobs
  // true and top_logprobs; completions: logprobs N).
  int logprobs = -1;
  bool echo = false;                    // completions: the answer starts with the prompt
  bool echo_only = false;               // echo with max_tokens 0: the prompt (and its logprobs) only
  int n = 1;                            // independent choices
  int best_of = 0;                      // 0: not given; else must equal n
  int top_logprobs = -1;                // chat's top_logprobs as given (-1: absent)
};
constexpr int kMaxChoices = 16;
constexpr int kMaxBatchPrompts = 256;  // prompts in one completions request

// Throws ApiError (400) naming the field at fault.
ApiRequest parse_request(const std::string& body, bool chat);
ApiRequest parse_request_object(const nlohmann::json& body, bool chat);  // a body parse_body gave
// A request body as a JSON object; ApiError (400) when it is not JSON, not an object, or nests
// deeper than cli::kMaxJsonDepth.
nlohmann::json parse_body(const std::string& body);

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int iterations = 0;  // forward iterations of the request, the prefill included
  // Measured by the engine from admission (after parsing and tokenizing) to the first token and to
  // the last event: the server's own time without HTTP, JSON and SSE delivery, so a client can
  // tell the engine's latency from the transport's (tests/server/bench_serve.py).
  double server_ttft_s = 0;
  double server_total_s = 0;
};

// One token as logprobs shows it: its text (the token's bytes), its log-probability (NaN: none,
// the echoed prompt's first token) and its most probable alternatives, best first.
struct TokenInfo {
  std::string token;  // as shown: a special token by its name ("<s>")
  double logprob = 0;
  std::vector<std::pair<std::string, double>> top;
  std::string bytes;       // what it adds to the answer's text, raw (empty for a special token)
  size_t text_chars = 0;   // characters of the answer's text it completes (Utf8CharCounter): the
                           // text_offset steps
};

// One choice of an answer, or what a chunk adds to it.
struct Choice {
  int index = 0;
  std::string text;
  std::string finish_reason;  // "" while it runs
  std::vector<TokenInfo> tokens;  // when r.logprobs >= 0: the tokens of `text`
  size_t text_offset = 0;         // completions: where tokens[0]'s text starts in the answer
};

// Whole responses and SSE chunks ("data: {...}\n\n"); `created` is Unix seconds.
std::string completion_json(const ApiRequest& r, const std::string& id, int64_t created,
                            const std::vector<Choice>& choices, const Usage& u);
std::string chunk_event(const ApiRequest& r, const std::string& id, int64_t created, const Choice& delta,
                        const Usage* usage, bool first);
std::string usage_event(const ApiRequest& r, const std::string& id, int64_t created, const Usage& u);

}  // namespace cllm::openai
