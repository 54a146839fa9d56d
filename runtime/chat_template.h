// Chat prompt formatting. cllm does not run jinja: it recognises the template families that
// LLaMA-family chat/CLLM models use, from the jinja text in tokenizer_config.json / GGUF
// metadata or from a family name, and renders them in C++ exactly as transformers'
// apply_chat_template renders those templates (tests compare against it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cllm {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// The roles a chat message may have: system, user, assistant, and OpenAI's "developer" (a system
// message). Returns the role the templates render, or "" for any other (refused by every reader of
// chat messages: the API and prompts files).
std::string canonical_chat_role(const std::string& role);

// "chatml", "llama-2", "llama-3" or "vicuna" for a family name or a recognised jinja
// template; throws cllm::Error naming the supported families otherwise.
std::string chat_template_family(const std::string& family_or_jinja);

// The prompt text (special tokens written literally, e.g. "<|im_start|>"), ending with the
// assistant header when add_generation_prompt. A default system prompt that the jinja
// template inserts (SmolLM2's, vicuna's) is kept. llama-2 throws if roles do not alternate.
std::string apply_chat_template(const std::string& family_or_jinja, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt);

// The prompt ids of a chat, ending with the assistant header: transformers'
// apply_chat_template(tokenize=True, add_generation_prompt=True), which encodes the rendered text
// without adding special tokens, so templates that write BOS themselves (llama-2, llama-3) get it
// once. One difference: when the tokenizer adds BOS (add_bos) and the template writes none,
// BOS is prepended, as FastChat does for vicuna and as completions prompts get it.
std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::string& family_or_jinja,
                                 const std::vector<ChatMessage>& messages, bool add_bos);

}  // namespace cllm
