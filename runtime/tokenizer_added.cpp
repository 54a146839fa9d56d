#include "runtime/tokenizer_added.h"

#include <algorithm>

#include "core/check.h"

namespace cllm {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

AddedTokenSplitter::AddedTokenSplitter(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    CLLM_CHECK(!tokens_[i].content.empty(), "added token id " << tokens_[i].id << " has empty text");
    by_first_byte_[static_cast<uint8_t>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [&](size_t a, size_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
  }
}

void AddedTokenSplitter::split(std::string_view text, const std::function<void(std::string_view)>& on_text,
                               const std::function<void(int32_t)>& on_token) const {
  size_t seg_begin = 0, pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (size_t i : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if (text.compare(pos, tokens_[i].content.size(), tokens_[i].content) == 0) {
        hit = &tokens_[i];
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t seg_end = pos;
    if (hit->lstrip) {
      while (seg_end > seg_begin && is_ws(text[seg_end - 1])) --seg_end;
    }
    on_text(text.substr(seg_begin, seg_end - seg_begin));
    on_token(hit->id);
    pos += hit->content.size();
    if (hit->rstrip) {
      while (pos < text.size() && is_ws(text[pos])) ++pos;
    }
    seg_begin = pos;
  }
  on_text(text.substr(seg_begin));
}

}  // namespace cllm
