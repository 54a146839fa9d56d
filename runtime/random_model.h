// Randomly initialised LLaMA checkpoints in HF format (config.json, generation_config.json,
// safetensors [+ index], tokenizer.json): for tests, and for benchmarking large shapes without
// real weights. Deterministic for a given shape and seed.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/model_config.h"
#include "loaders/checkpoint.h"
#include "loaders/dequant.h"

namespace cllm {

// Named shapes: tiny (GQA + llama3 RoPE scaling, untied head; for tests), 135m (SmolLM2),
// 7b, 13b, 70b (LLaMA-2). Throws listing the names on an unknown one.
ModelConfig random_model_shape(const std::string& name);

struct RandomModelOptions {
  uint64_t seed = 1;
  DType dtype = DType::F32;           // F32, F16 or BF16 on disk
  double shard_bytes = 2e9;           // start a new safetensors shard past this size
};

// True for a file name write_random_model writes (config, generation config, tokenizer.json, the
// safetensors file or shards and their index): a directory holding others holds another checkpoint.
bool is_random_model_file(const std::string& name);

// Writes the checkpoint into `dir` (created if needed). progress(done, total) counts tensors.
void write_random_model(const ModelConfig& cfg, const std::string& dir, const RandomModelOptions& opts,
                        const std::function<void(int, int)>& progress = {});

// The weights write_random_model(cfg, dir, {seed, F32}) would write, computed on read instead of
// stored: serving or benchmarking a 7B shape needs no 13 GB file (`--model random:7b`, see
// launch/cli_common.h). Its tokenizer is the byte-level one random checkpoints ship with, except
// that the ids past the bytes decode to their names, so a server streams text for every token.
std::unique_ptr<CheckpointReader> random_checkpoint(const ModelConfig& cfg, uint64_t seed = 1);

}  // namespace cllm
