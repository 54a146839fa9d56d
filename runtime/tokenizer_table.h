// The id <-> token table every tokenizer kind shares: raw bytes per id for decoding, exact token
// strings to ids, BOS/EOS. Subclasses (byte-level BPE, sentencepiece, GGUF SPM) fill the tables
// and implement encode().
#pragma once
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/check.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode_text.h"

namespace cllm {

class TokenTable : public Tokenizer {
 public:
  std::string token_bytes(int32_t id) const override {
    check_id(id);
    return bytes_[id];
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string raw;
    for (int32_t id : ids) {
      check_id(id);
      raw += bytes_[id];
    }
    // Sentencepiece's dummy prefix: the space it put before the first word is not text.
    if (strip_leading_space_ && !raw.empty() && raw[0] == ' ') raw.erase(0, 1);
    return unicode::to_valid_utf8(raw);
  }
  int vocab_size() const override { return static_cast<int>(bytes_.size()); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  int32_t token_id(std::string_view token) const override {
    auto it = ids_.find(std::string(token));
    return it == ids_.end() ? -1 : it->second;
  }
  std::string token_string(int32_t id) const override {
    check_id(id);
    std::call_once(strings_once_, [this] {  // built on first use: the tables are final by then
      strings_.assign(bytes_.size(), "");
      for (const auto& [text, i] : ids_)
        if (i >= 0 && static_cast<size_t>(i) < strings_.size()) strings_[i] = text;
    });
    return strings_[id];
  }

 protected:
  void check_id(int32_t id) const {
    CLLM_CHECK(id >= 0 && id < vocab_size(), "token id " << id << " out of range [0, " << vocab_size() << ")");
  }
  std::vector<std::string> bytes_;                // id -> the bytes it stands for in the text
  std::unordered_map<std::string, int32_t> ids_;  // exact token string -> id
  int bos_ = -1, eos_ = -1;
  bool strip_leading_space_ = false;

 private:
  mutable std::once_flag strings_once_;
  mutable std::vector<std::string> strings_;  // id -> token string, from ids_
};

}  // namespace cllm
