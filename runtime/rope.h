// RoPE inverse frequencies, as HF LLaMA computes them (default and llama3 scaling), in fp32.
#pragma once
#include <vector>

#include "core/model_config.h"

namespace cllm {

// [head_dim / 2] radians per position.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

}  // namespace cllm
