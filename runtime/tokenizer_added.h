// Added/special tokens written literally in the text ("<|im_start|>", "<s>") are cut out
// before any model-specific encoding, as HF's AddedVocabulary and llama.cpp's special-token
// partition do: leftmost match, longest token first at a position.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace cllm {

struct AddedToken {
  int32_t id = -1;
  std::string content;  // literal text, not byte-level mapped
  bool lstrip = false;  // also swallows the whitespace before / after it (HF flags)
  bool rstrip = false;
};

class AddedTokenSplitter {
 public:
  explicit AddedTokenSplitter(std::vector<AddedToken> tokens);
  // Calls on_text for every stretch between added tokens (possibly empty: the callee
  // decides what an empty segment means) and on_token for each added token, in order.
  void split(std::string_view text, const std::function<void(std::string_view)>& on_text,
             const std::function<void(int32_t)>& on_token) const;

 private:
  std::vector<AddedToken> tokens_;
  std::array<std::vector<size_t>, 256> by_first_byte_;  // indices into tokens_, longest first
};

}  // namespace cllm
