// Lookahead verification on the CPU model (Model::forward_rows): a branch row, which sees the
// committed context and its own branch prefix only, gives bit for bit the logits of the same
// tokens forwarded causally; a KV move puts a verified branch's KV where AR would have written it.
#include <gtest/gtest.h>

#include "loaders/checkpoint.h"
#include "lookahead_check.h"
#include "runtime/model.h"
#include "test_support.h"

namespace cllm {
namespace {

TEST(Lookahead, BranchRowsEqualCausalRowsTinyRandom) {
  auto ckpt = open_checkpoint(test::random_model_dir("tiny", 7));
  auto model = make_model(*ckpt, Device::Cpu);
  auto reference = make_model(*ckpt, Device::Cpu);
  ASSERT_TRUE(model->verifies_branches());
  test::check_branches(*model, *reference);
}

// A sliding window counts a branch row's logical keys: the window of 8 ends inside the branch.
TEST(Lookahead, BranchRowsEqualCausalRowsSlidingWindow) {
  auto ckpt = open_checkpoint(test::random_model_with_config(
      "tiny", 7, "lookahead_mistral_sw8", R"({"architectures": ["MistralForCausalLM"], "sliding_window": 8})"));
  ASSERT_EQ(ckpt->config().sliding_window, 8);
  auto model = make_model(*ckpt, Device::Cpu);
  auto reference = make_model(*ckpt, Device::Cpu);
  test::check_branches(*model, *reference);
}

TEST(Lookahead, BranchRowsEqualCausalRowsSmolLM2) {
  auto ckpt = open_checkpoint(test::smollm2_path());
  auto model = make_model(*ckpt, Device::Cpu);
  auto reference = make_model(*ckpt, Device::Cpu);
  test::check_branches(*model, *reference);
}

TEST(Lookahead, RefusesBadLayouts) {
  auto ckpt = open_checkpoint(test::random_model_dir("tiny", 7));
  auto model = make_model(*ckpt, Device::Cpu);
  model->reset(64);
  const std::vector<int32_t> t = {1, 2, 3};
  std::vector<int32_t> ids(3);
  const SeqBlock block{0, 4, 3};
  const std::vector<RowSpec> past_cache_row = {{4, 0}, {5, 0}, {7, 5}};  // position 7 at cache row 6
  EXPECT_THROW(model->forward_rows(t.data(), &block, 1, past_cache_row.data(), nullptr, ids.data(), nullptr),
               std::exception);
  const KvMove too_far{60, 8};  // rows 60..67 beyond the capacity of 64
  EXPECT_THROW(model->forward_rows(t.data(), &block, 1, nullptr, &too_far, ids.data(), nullptr), std::exception);
}

}  // namespace
}  // namespace cllm
