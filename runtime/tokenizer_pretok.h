// Pre-tokenization for byte-level BPE: the text is cut into pieces that BPE never merges
// across. HF expresses this with regexes run by Oniguruma; std::regex has no \p{L}/\p{N},
// so each supported regex is a hand-written matcher that gives the same matches
// (leftmost-first alternation, greedy runs, the (?!\S) lookahead).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace cllm {

enum class PreTokStage {
  Gpt2Regex,        // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3Regex,      // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
                    //   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  DigitsIndividual, // HF Digits(individual_digits=true): every \p{N} code point alone
  DigitsGrouped,    // HF Digits(individual_digits=false): runs of \p{N} apart from the rest
};

// Applies the stages in order (each one splits every piece of the previous one) and
// returns the pieces as views into text. Pieces are never empty and cover text exactly.
std::vector<std::string_view> pre_tokenize(std::string_view text, const std::vector<PreTokStage>& stages);

// Maps an HF Split/ByteLevel regex string to its stage; false when it is not one we implement.
bool pre_tok_stage_from_regex(const std::string& regex, PreTokStage* stage);

}  // namespace cllm
