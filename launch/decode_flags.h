// Decoding flags of generate: block size (auto or fixed), window mode, initial guesses, seed,
// max_new_tokens. Construct before parsing, call finish() after.
#pragma once
#include <string>

#include "launch/flags.h"

#include "runtime/decoding.h"

namespace cllm::cli {

class DecodeFlags {
 public:
  DecodeFlags(flags::options_description& opts, GenerateOptions& gen, JacobiOptions& jac);
  // Translates the string flags into the option structs; throws naming a bad value.
  void finish();

 private:
  GenerateOptions& gen_;
  JacobiOptions& jac_;
  std::string window_ = "sliding";
  std::string init_ = "random";
  std::string block_ = "auto";
  int max_block_ = 0;  // 0: not given (kMaxBlockRows)
  std::string pool_ = "prompt";
};

}  // namespace cllm::cli
