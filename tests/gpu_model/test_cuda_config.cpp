// Settings the CUDA model cannot honour are refused at load, naming the config field, before any
// device allocation: a sliding window smaller than the positions the model can be used at (the
// CUDA attention has no window; the CPU one does).
#include <gtest/gtest.h>

#include <string>

#include "core/check.h"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/model.h"
#include "runtime/random_model.h"
#include "test_support.h"

namespace cllm {
namespace {

TEST(CudaConfig, SlidingWindowSmallerThanContextRefused) {
  ModelConfig c = random_model_shape("tiny");
  c.head_dim = 64;  // a head size the CUDA attention takes, so only the window is at fault
  c.max_position_embeddings = 256;
  c.sliding_window = 8;
  try {
    cuda::check_cuda_supported(c, "m/config.json");
    ADD_FAILURE() << "a window of 8 at 256 positions was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("m/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'sliding_window' = 8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("max_position_embeddings 256"), std::string::npos) << msg;
  }
  c.sliding_window = 256;  // covers every position: the same as full attention
  EXPECT_NO_THROW(cuda::check_cuda_supported(c, "m/config.json"));
  c.sliding_window = 0;
  EXPECT_NO_THROW(cuda::check_cuda_supported(c, "m/config.json"));
}

// Through the loader: a Mistral checkpoint (written as config.json + safetensors) with a short
// window is refused by make_model.
TEST(CudaConfig, MistralCheckpointWithShortWindowRefusedAtLoad) {
  ModelConfig c = random_model_shape("tiny");
  c.num_heads = c.num_kv_heads = 1;
  c.head_dim = 64;
  c.sliding_window = 8;
  const std::string dir = test::process_dir("cuda_mistral_sw8").string();
  write_random_model(c, dir, {});
  auto ckpt = open_checkpoint(dir);
  ASSERT_EQ(ckpt->config().sliding_window, 8);
  try {
    make_model(*ckpt, Device::Cuda);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'sliding_window' = 8"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cllm
