#include "launch/openai_spec.h"

#include <algorithm>

#include "core/check.h"
#include "runtime/chat_template.h"

namespace cllm::openai {

SequenceSpec request_spec(const ApiRequest& r, const RouteConfig& cfg, const Tokenizer& tok) {
  if (!r.model.empty() && r.model != cfg.model_name)
    throw ApiError(404, "model '" + r.model + "' is not served here (this server has '" + cfg.model_name + "')",
                   "model");
  SequenceSpec spec;
  if (r.chat) {
    if (cfg.chat_template.empty())
      throw ApiError(400, "this model has no chat template: restart the server with --chat-template", "messages");
    try {
      spec.prompt = encode_chat(tok, cfg.chat_template, r.messages, cfg.add_bos);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages");
    }
  } else if (!r.prompt_ids.empty()) {
    for (int32_t id : r.prompt_ids)
      if (id >= tok.vocab_size())
        throw ApiError(400, "token id " + std::to_string(id) + " is out of the vocabulary", "prompt");
    spec.prompt = r.prompt_ids;
  } else {
    spec.prompt = tok.encode(r.prompt, cfg.add_bos);
  }
  const int prompt_len = static_cast<int>(spec.prompt.size());
  spec.jacobi = cfg.jacobi;
  spec.jacobi.seed = r.seed;
  if (r.block > 0) {  // cllm_block pins the block (the server's --block auto picks it per step)
    spec.jacobi.block = r.block;
    spec.jacobi.adaptive = false;
  }
  if (r.candidates >= 0) spec.jacobi.candidates = r.candidates;
  if (r.ngram > 0) spec.jacobi.ngram = r.ngram;
  if (r.blocks > 0) spec.jacobi.blocks = r.blocks;
  if (r.later_block_after >= 0) spec.jacobi.later_after = r.later_block_after;
  if (!r.window.empty()) spec.jacobi.window = r.window == "blockwise" ? JacobiWindow::Blockwise : JacobiWindow::Sliding;
  // The per-step adaptive block runs only when the request decodes with greedy Jacobi (AR and
  // sampling take one block of 1 below): only then do settings that need a fixed block conflict.
  const bool adaptive_jacobi = spec.jacobi.adaptive && r.decode != "ar" && r.temperature <= 0;
  if (spec.jacobi.window == JacobiWindow::Blockwise && adaptive_jacobi)
    throw ApiError(400, "cllm_window blockwise iterates one block until it is fixed, so it needs a fixed block: give "
                        "cllm_block (the server picks the block per step)", "cllm_window");
  if (spec.jacobi.blocks > 1 && adaptive_jacobi)
    throw ApiError(400, "cllm_blocks (" + std::to_string(spec.jacobi.blocks) + ") needs a fixed block: give "
                            "cllm_block (the server picks the block per step)", "cllm_blocks");
  if (spec.jacobi.adaptive && spec.jacobi.candidates > 0 && spec.jacobi.ngram >= 2)
    // The adaptive block's largest size leaves the request's lookahead rows their place.
    spec.jacobi.block = std::max(1, std::min(spec.jacobi.block, kMaxBlockRows - spec.jacobi.candidate_rows()));
  if (spec.jacobi.rows() > kMaxBlockRows)
    throw ApiError(400, "cllm_block (" + std::to_string(spec.jacobi.block) + ") x cllm_blocks (" +
                            std::to_string(spec.jacobi.blocks) + ") + cllm_candidates (" +
                            std::to_string(spec.jacobi.candidates) + ") x (cllm_ngram " +
                            std::to_string(spec.jacobi.ngram) + " - 1) rows per iteration exceed " +
                            std::to_string(kMaxBlockRows),
                   spec.jacobi.candidates > 0 ? "cllm_candidates" : "cllm_blocks");
  if (r.decode == "ar") {  // Jacobi with one guess and no candidates is greedy AR
    spec.jacobi.block = 1;
    spec.jacobi.blocks = 1;
    spec.jacobi.adaptive = false;
    spec.jacobi.candidates = 0;
  }
  if (r.temperature > 0) {
    spec.sampling = {static_cast<float>(r.temperature), static_cast<float>(r.top_p), r.seed};
    spec.jacobi.block = 1;
    spec.jacobi.blocks = 1;
    spec.jacobi.adaptive = false;
    spec.jacobi.candidates = 0;
  }
  if (r.max_tokens > cfg.max_context)
    throw ApiError(400, r.max_tokens_field + " " + r.max_tokens_sent + " is beyond the context of " +
                            std::to_string(cfg.max_context), r.max_tokens_field, "context_length_exceeded");
  spec.gen.max_new_tokens = r.max_tokens;
  if (r.max_tokens == 0) {  // OpenAI's defaults (16 for completions, chat ours), cut to what fits
    const int room = cfg.max_context - prompt_len - spec.jacobi.rows();
    spec.gen.max_new_tokens = std::max(1, std::min(r.chat ? cfg.default_chat_max_tokens : 16, room));
  }
  // Echo with max_tokens 0 generates nothing the client sees; one token runs (the engine needs a
  // positive count) and the answer drops it.
  if (r.echo_only) spec.gen.max_new_tokens = 1;
  if (!r.ignore_eos) spec.gen.stop_ids = cfg.eos_ids;
  spec.logprobs = r.logprobs;
  spec.prompt_logprobs = r.echo && r.logprobs >= 0;
  return spec;
}

}  // namespace cllm::openai
