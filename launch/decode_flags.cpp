#include "launch/decode_flags.h"

#include "core/check.h"
#include "launch/cli_common.h"
#include "runtime/block_rows.h"

namespace cllm::cli {

namespace po = cllm::flags;

DecodeFlags::DecodeFlags(po::options_description& opts, GenerateOptions& gen, JacobiOptions& jac)
    : gen_(gen), jac_(jac) {
  opts.add_options()
      ("max-new-tokens", po::value(&gen.max_new_tokens)->default_value(64), "tokens to generate at most")
      ("block", po::value(&block_)->default_value(block_), std::string(kBlockFlagHelp) + " (1.." + std::to_string(kMaxBlockRows) + ")")
      ("max-block", po::value(&max_block_)->default_value(0),
       "with --block auto: the largest block (0: " + std::to_string(kMaxBlockRows) + ")")
      ("window", po::value(&window_)->default_value(window_), "sliding | blockwise (the paper's mode)")
      ("init", po::value(&init_)->default_value(init_), "initial guesses: random (from the prompt, seeded) | repeat | pad")
      ("seed", po::value(&jac.seed)->default_value(0), "seed of the random initial guesses")
      ("pad-id", po::value(&jac.pad_id)->default_value(0), "token id used by --init pad")
      ("candidates", po::value(&jac.candidates)->default_value(jac.candidates),
       "lookahead: n-grams from the sequence's pool verified beside the block each iteration (0: none)")
      ("blocks", po::value(&jac.blocks)->default_value(jac.blocks),
       "multi-block: Jacobi blocks of --block guesses in flight, later ones drafting ahead of the frontier "
       "(1: one block; more need a fixed --block N)")
      ("later-block-after", po::value(&jac.later_after)->default_value(jac.later_after), kLaterBlockAfterHelp)
      ("ngram", po::value(&jac.ngram)->default_value(jac.ngram), "lookahead: n-gram size (its first token, then ngram - 1 rows)")
      ("pool", po::value(&pool_)->default_value(pool_), "lookahead pool: prompt (prompt, generated text, trajectory) | generated (no prompt)");
}

void DecodeFlags::finish() {
  CLLM_CHECK(gen_.max_new_tokens > 0, "--max-new-tokens must be positive, got " << gen_.max_new_tokens);
  if (pool_ == "prompt" || pool_ == "generated")
    jac_.prompt_pool = pool_ == "prompt";
  else
    CLLM_FAIL("--pool must be prompt or generated, got '" << pool_ << "'");
  if (window_ == "sliding")
    jac_.window = JacobiWindow::Sliding;
  else if (window_ == "blockwise")
    jac_.window = JacobiWindow::Blockwise;
  else
    CLLM_FAIL("--window must be sliding or blockwise, got '" << window_ << "'");
  if (init_ == "random")
    jac_.init = InitialGuess::RandomFromContext;
  else if (init_ == "repeat")
    jac_.init = InitialGuess::RepeatLast;
  else if (init_ == "pad")
    jac_.init = InitialGuess::Pad;
  else
    CLLM_FAIL("--init must be random, repeat or pad, got '" << init_ << "'");
  apply_block_flags(block_, max_block_ == 0 ? kMaxBlockRows : max_block_, max_block_ != 0, jac_);
  check_lookahead_flags(jac_);
  CLLM_CHECK(jac_.later_after == 0 || jac_.blocks > 1,
             "--later-block-after " << jac_.later_after << " decides when a later block joins: it needs --blocks > 1");
}

}  // namespace cllm::cli
