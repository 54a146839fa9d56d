#include "runtime/jacobi.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "runtime/acceptance.h"
#include "runtime/block_rows.h"

namespace cllm {

void NgramPool::add(int32_t key, const int32_t* continuation, Origin origin, int32_t before) {
  std::vector<Entry>& list = pool_[key];
  Entry e{std::vector<int32_t>(continuation, continuation + ngram_ - 1), origin, before};
  auto it = std::find_if(list.begin(), list.end(), [&](const Entry& x) { return x.gram == e.gram; });
  if (it != list.end()) {
    if (it->origin == Origin::Text) e.origin = Origin::Text;  // once in the text, it is text
    list.erase(it);
  }
  list.insert(list.begin(), std::move(e));  // newest first
  if (static_cast<int>(list.size()) > keep_) list.resize(keep_);
}

void NgramPool::add_text(const int32_t* tokens, int n) {
  for (int i = 0; i + ngram_ <= n; ++i) add(tokens[i], tokens + i + 1, Origin::Text, i > 0 ? tokens[i - 1] : -1);
}

const std::vector<NgramPool::Entry>& NgramPool::candidates(int32_t key) const {
  static const std::vector<Entry> none;
  auto it = pool_.find(key);
  return it == pool_.end() ? none : it->second;
}

JacobiDecoder::JacobiDecoder(const JacobiOptions& opts, std::vector<int32_t> context, int32_t first)
    : opts_(opts), context_(std::move(context)), rng_(opts.seed), pool_(std::max(opts.ngram, 2), 4 * std::max(opts.candidates, 1)) {
  CLLM_CHECK(opts_.block >= 1, "Jacobi block size must be >= 1, got " << opts_.block);
  CLLM_CHECK(opts_.blocks >= 1, "Jacobi blocks in flight must be >= 1, got " << opts_.blocks);
  CLLM_CHECK(opts_.blocks == 1 || !opts_.adaptive, "multi-block Jacobi (" << opts_.blocks << " blocks) needs a "
                                                   "fixed block size, not an adaptive one");
  CLLM_CHECK(!context_.empty(), "Jacobi decoding needs a non-empty prompt");
  CLLM_CHECK(opts_.candidates >= 0, "lookahead candidates must be >= 0, got " << opts_.candidates);
  CLLM_CHECK(opts_.candidates == 0 || opts_.ngram >= 2,
             "the lookahead n-gram size must be >= 2 (a key token and a continuation), got " << opts_.ngram);
  CLLM_CHECK(opts_.rows() <= kMaxBlockRows, "block (" << opts_.block << ") x blocks (" << opts_.blocks
                                                      << ") + candidates (" << opts_.candidates << ") x (ngram "
                                                      << opts_.ngram << " - 1) = " << opts_.rows()
                                                      << " rows per iteration, over " << kMaxBlockRows);
  CLLM_CHECK(opts_.later_after >= 0 && opts_.later_after <= 1,
             "the later-block threshold must be in [0, 1], got " << opts_.later_after);
  if (opts_.candidates > 0 && opts_.prompt_pool) pool_.add_text(context_.data(), static_cast<int>(context_.size()));
  in_flight_ = opts_.later_after > 0 ? 1 : opts_.blocks;
  block_.push_back(first);
  block_end_ = position() + opts_.block;
  append_guesses(opts_.block * in_flight_ - 1);
  lay_out();
}

void JacobiDecoder::update_in_flight(int blocks_done, int settled) {
  if (opts_.later_after <= 0) return;  // every block always in flight
  in_flight_ = std::max(1, in_flight_ - blocks_done);
  const int needed = static_cast<int>(std::ceil(opts_.later_after * (opts_.block - 1) - 1e-9));  // of block - 1 guesses
  if (in_flight_ < opts_.blocks && settled >= std::max(needed, 1)) ++in_flight_;
}

int JacobiDecoder::frontier_rows() const {
  const int guesses = static_cast<int>(block_.size());
  return opts_.window == JacobiWindow::Sliding ? std::min(opts_.block, guesses) : block_end_ - position();
}

void JacobiDecoder::fill_guesses(int count) {
  if (static_cast<int>(block_.size()) > count)
    block_.resize(static_cast<size_t>(count));
  else
    append_guesses(count - static_cast<int>(block_.size()));
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
  fill_guesses(n * in_flight_);
  CLLM_CHECK(opts_.rows() <= kMaxBlockRows, "block (" << n << ") x blocks + lookahead rows = " << opts_.rows()
                                                      << " rows per iteration, over " << kMaxBlockRows);
  lay_out();  // the candidates' rows follow the block's new length
}

void JacobiDecoder::lay_out() {
  rows_tokens_ = block_;
  rows_.clear();
  origins_.clear();
  if (opts_.candidates == 0) return;
  const int p = position(), len = opts_.ngram - 1;
  int taken = 0;
  const std::vector<NgramPool::Entry>& pool = pool_.candidates(block_[0]);
  // Newest first, those seen after the same two tokens (context_.back(), g[0]) before the others.
  for (bool two_token_match : {true, false})
    for (const NgramPool::Entry& e : pool) {
      const std::vector<int32_t>& gram = e.gram;
      if (taken == opts_.candidates) break;
      if ((e.before == context_.back()) != two_token_match) continue;
      // The block itself already verifies the guesses it holds.
      if (static_cast<int>(block_.size()) > len && std::equal(gram.begin(), gram.end(), block_.begin() + 1)) continue;
      if (rows_.empty())
        for (int i = 0; i < static_cast<int>(block_.size()); ++i) rows_.push_back({p + i, 0});
      for (int i = 0; i < len; ++i) rows_.push_back({p + 1 + i, p + 1});  // sees the context, g[0], its prefix
      rows_tokens_.insert(rows_tokens_.end(), gram.begin(), gram.end());
      origins_.push_back(e.origin);
      ++taken;
    }
}

void JacobiDecoder::add_stats(DecodeStats& stats) const {
  stats.fast_forwarded += fast_forwarded_;
  stats.stationary += stationary_;
  stats.accepted_block += accepted_block_;
  stats.accepted_later += accepted_later_;
  stats.accepted_pool += accepted_pool_;
  stats.accepted_recycled += accepted_recycled_;
}

std::vector<int32_t> JacobiDecoder::accept(const int32_t* y) {
  const int L = static_cast<int>(rows_tokens_.size()), n = static_cast<int>(block_.size());
  const int pos = position();
  const Verdict v = verify_block(rows_tokens_.data(), y, L, pos, rows_.empty() ? nullptr : rows_.data());
  const int m = v.accepted;
  const int frontier = frontier_rows();
  const Sources src = accepted_sources(v, n, frontier);
  const int from_block = src.block + src.later;  // tokens from the guesses, any block
  accepted_block_ += src.block;
  accepted_later_ += src.later;
  // A one-token block's first candidate continues it causally: the main run then holds it.
  const int candidate = v.branch >= 0 ? v.branch : 0;
  if (src.candidate > 0)
    (origins_[candidate] == NgramPool::Origin::Text ? accepted_pool_ : accepted_recycled_) += src.candidate;
  fast_forwarded_ += m;

  // Stationary: a fast-forwarded guess of the block that already sat at the same position, with
  // the same value, in the previous iteration (when something before it was still wrong).
  for (int j = 1; j <= from_block; ++j) {
    const int prev_index = pos + j - previous_pos_;
    if (previous_pos_ >= 0 && prev_index >= 0 && prev_index < static_cast<int>(previous_.size()) &&
        previous_[prev_index] == block_[j])
      ++stationary_;
  }
  previous_ = block_;
  previous_pos_ = pos;

  const std::vector<int32_t> final_tokens = verdict_tokens(v, rows_tokens_.data(), y);
  // Token i of the path after the root sits on the branch: its prediction is one row earlier there.
  final_rows_.resize(final_tokens.size());
  for (int i = 0; i < static_cast<int>(final_tokens.size()); ++i)
    final_rows_[static_cast<size_t>(i)] = v.branch < 0 || i <= v.root ? i : v.first_row + i - v.root - 1;
  const int32_t previous_last = context_.back();  // the token before g[0]
  context_.push_back(block_[0]);
  context_.insert(context_.end(), final_tokens.begin(), final_tokens.end() - 1);
  const int32_t next0 = final_tokens.back();
  // A verified candidate's KV sits in its rows: it moves to its positions before the next forward.
  move_ = v.branch >= 0 ? KvMove{pos + v.first_row, m - v.root} : KvMove{};

  if (opts_.candidates > 0) {
    // The pool learns the committed text (windows ending in the new tokens) and the block's
    // trajectory: after each guess g[j], the predictions y[j..] that followed it.
    std::vector<int32_t> text(context_.end() - std::min<size_t>(context_.size(), m + opts_.ngram + 1), context_.end());
    text.push_back(next0);
    pool_.add_text(text.data(), static_cast<int>(text.size()));
    for (int j = 0; j + opts_.ngram - 1 <= n; ++j)
      pool_.add(block_[j], y + j, NgramPool::Origin::Recycled, j > 0 ? block_[j - 1] : previous_last);
  }

  // The next guesses start at the new position with next0 as their final first token, then the
  // predictions past the accepted path, each at the position it predicts.
  std::vector<int32_t> next = {next0};
  for (int j = m + 1; j < n; ++j) next.push_back(y[j]);
  // Settled, for JacobiOptions::later_after: of the frontier's guesses g[1..frontier), those this
  // iteration made final or left unchanged (the prediction at the guess's position is the guess).
  int settled = 0;
  for (int j = 1; j < std::min(frontier, n); ++j) settled += j <= m || y[j - 1] == block_[j];
  block_ = std::move(next);
  if (opts_.window == JacobiWindow::Sliding) {
    int done = 0;
    for (frontier_done_ += m + 1; frontier_done_ >= opts_.block; frontier_done_ -= opts_.block) ++done;
    update_in_flight(done, settled);
    fill_guesses(opts_.block * in_flight_);
  } else {
    // The blocks keep their ends. Fixed blocks leave the front (the next one in flight becomes the
    // frontier, its guesses refined) and fresh ones join at the far end; a path past every block
    // in flight starts a new frontier at the new position.
    int done = 0;
    if (position() >= block_end_ + (in_flight_ - 1) * opts_.block) {
      done = in_flight_;
      block_end_ = position() + opts_.block;
    } else {
      for (; position() >= block_end_; ++done) block_end_ += opts_.block;
    }
    update_in_flight(done, settled);
    fill_guesses(block_end_ + (in_flight_ - 1) * opts_.block - position());
  }
  lay_out();
  return final_tokens;
}

}  // namespace cllm
