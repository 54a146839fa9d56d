// Randomly initialised LLaMA checkpoints in HF format (config.json, generation_config.json,
// safetensors [+ index], tokenizer.json): for tests, and for benchmarking large shapes without
// real weights. Deterministic for a given shape and seed.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "loaders/dequant.h"
#include "runtime/model_config.h"

namespace cllm {

// Named shapes: tiny (GQA + llama3 RoPE scaling, untied head; for tests), 135m (SmolLM2),
// 7b, 13b, 70b (LLaMA-2). Throws listing the names on an unknown one.
ModelConfig random_model_shape(const std::string& name);

struct RandomModelOptions {
  uint64_t seed = 1;
  DType dtype = DType::F32;           // F32, F16 or BF16 on disk
  double shard_bytes = 2e9;           // start a new safetensors shard past this size
};

// Writes the checkpoint into `dir` (created if needed). progress(done, total) counts tensors.
void write_random_model(const ModelConfig& cfg, const std::string& dir, const RandomModelOptions& opts,
                        const std::function<void(int, int)>& progress = {});

}  // namespace cllm
