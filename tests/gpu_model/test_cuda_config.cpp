// Config checks of the CUDA model at load, before any device allocation: shapes the kernels cannot
// run are refused naming the file and the field; a sliding window is accepted (the CUDA attention
// implements it; test_cuda_model.cpp compares it with the CPU model).
#include <gtest/gtest.h>

#include <string>

#include "core/check.h"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/model.h"
#include "runtime/random_model.h"
#include "test_support.h"

namespace cllm {
namespace {

TEST(CudaConfig, HeadDimOutsideTheKernelsRefused) {
  ModelConfig c = random_model_shape("tiny");
  c.head_dim = 96;
  try {
    cuda::check_cuda_supported(c, "m/config.json");
    ADD_FAILURE() << "head_dim 96 was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("m/config.json: head_dim 96"), std::string::npos) << msg;
  }
  c.head_dim = 64;
  c.sliding_window = 8;  // smaller than max_position_embeddings: the CUDA attention applies it
  EXPECT_NO_THROW(cuda::check_cuda_supported(c, "m/config.json"));
}

// Through the loader: a Mistral checkpoint (config.json + safetensors) with a short window loads.
TEST(CudaConfig, MistralCheckpointWithShortWindowLoads) {
  ModelConfig c = random_model_shape("tiny");
  c.num_heads = c.num_kv_heads = 1;
  c.head_dim = 64;
  c.sliding_window = 8;
  const std::string dir = test::process_dir("cuda_mistral_sw8").string();
  write_random_model(c, dir, {});
  auto ckpt = open_checkpoint(dir);
  ASSERT_EQ(ckpt->config().sliding_window, 8);
  EXPECT_NO_THROW(make_model(*ckpt, Device::Cuda));
}

}  // namespace
}  // namespace cllm
