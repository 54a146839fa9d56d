#include "runtime/jacobi.h"

#include <algorithm>

#include "core/check.h"

namespace cllm {

JacobiDecoder::JacobiDecoder(const JacobiOptions& opts, std::vector<int32_t> context, int32_t first)
    : opts_(opts), context_(std::move(context)), rng_(opts.seed) {
  CLLM_CHECK(opts_.block >= 1, "Jacobi block size must be >= 1, got " << opts_.block);
  CLLM_CHECK(!context_.empty(), "Jacobi decoding needs a non-empty prompt");
  block_.push_back(first);
  block_end_ = position() + opts_.block;
  append_guesses(opts_.block - 1);
}

void JacobiDecoder::append_guesses(int count) {
  for (int i = 0; i < count; ++i) {
    int32_t g = opts_.pad_id;
    switch (opts_.init) {
      case InitialGuess::RandomFromContext: {
        // Draw from everything known so far: committed tokens and the final g[0].
        const size_t known = context_.size() + 1;
        const size_t k = std::uniform_int_distribution<size_t>(0, known - 1)(rng_);
        g = k < context_.size() ? context_[k] : block_[0];
        break;
      }
      case InitialGuess::RepeatLast:
        g = block_.back();
        break;
      case InitialGuess::Pad:
        break;
    }
    block_.push_back(g);
  }
}

void JacobiDecoder::set_block(int n) {
  CLLM_CHECK(n >= 1, "Jacobi block size must be >= 1, got " << n);
  CLLM_CHECK(opts_.window == JacobiWindow::Sliding, "the Jacobi block can change between iterations only with the "
                                                    "sliding window");
  opts_.block = n;
  if (static_cast<int>(block_.size()) > n)
    block_.resize(static_cast<size_t>(n));
  else
    append_guesses(n - static_cast<int>(block_.size()));
}

std::vector<int32_t> JacobiDecoder::accept(const int32_t* y) {
  const int L = static_cast<int>(block_.size());
  int m = 0;
  while (m + 1 < L && block_[m + 1] == y[m]) ++m;

  // Stationary: a fast-forwarded guess that already sat at the same position, with the same
  // value, in the previous iteration (when something before it was still wrong).
  const int pos = position();
  for (int j = 1; j <= m; ++j) {
    const int prev_index = pos + j - previous_pos_;
    if (previous_pos_ >= 0 && prev_index >= 0 && prev_index < static_cast<int>(previous_.size()) &&
        previous_[prev_index] == block_[j])
      ++stationary_;
  }
  fast_forwarded_ += m;
  previous_ = block_;
  previous_pos_ = pos;

  std::vector<int32_t> final_tokens(block_.begin() + 1, block_.begin() + m + 1);
  final_tokens.push_back(y[m]);
  context_.insert(context_.end(), block_.begin(), block_.begin() + m + 1);

  // Next block starts at the new position with y[m] as its final first token.
  std::vector<int32_t> next(y + m, y + L);
  if (opts_.window == JacobiWindow::Sliding) {
    block_ = std::move(next);
    append_guesses(opts_.block - static_cast<int>(block_.size()));
  } else if (position() >= block_end_) {
    // The paper's block is fully fixed: start the next n-token block.
    block_.assign(1, y[m]);
    block_end_ = position() + opts_.block;
    append_guesses(opts_.block - 1);
  } else {
    // Keep iterating the same block: only its remaining positions (y[L-1] lies past its end).
    next.resize(static_cast<size_t>(block_end_ - position()));
    block_ = std::move(next);
  }
  return final_tokens;
}

}  // namespace cllm
