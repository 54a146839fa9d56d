// Internal helpers shared by the checkpoint readers (not part of the loaders interface):
// the tensor check of a freshly opened checkpoint, range resolution, and row-wise conversion.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loaders/checkpoint.h"
#include "loaders/dequant.h"

namespace cllm::detail {

// A tensor the file holds: its name in the forward (HF naming) and in the file, for messages.
struct HeldTensor {
  std::string name, file_name;
};

// Throws naming the file, the tensor and expected vs actual when a tensor of the config's manifest
// is missing or misshapen, when the file holds a tensor the forward has no place for (a bias, a
// layer past the config's count: dropping it would change the outputs silently; transformers'
// rotary_emb.inv_freq buffers excepted), and when the tokenizer has more tokens than the embedding
// has rows.
void check_tensors(const CheckpointReader& r, const ModelConfig& cfg, int64_t tokenizer_vocab,
                   std::vector<HeldTensor> held);

// A TensorRange made concrete against a tensor viewed as [rows, cols] (1-D: cols = 1).
struct Rect {
  int64_t r0, r1, c0, c1;
};
Rect resolve_range(const TensorRange& range, const std::vector<int64_t>& shape, const std::string& source,
                   const std::string& name);

// Converts rows [rect.r0, rect.r1) x cols [rect.c0, rect.c1) of a row-major tensor of `dtype`
// with `row_len` elements per row starting at `base` into dst (packed). file_row maps a logical
// row to the stored row (identity unless the file permutes rows).
void convert_rows(const uint8_t* base, DType dtype, int64_t row_len, const Rect& rect,
                  const std::function<int64_t(int64_t)>& file_row, float* dst);

std::unique_ptr<CheckpointReader> open_hf_checkpoint(const std::string& dir);
std::unique_ptr<CheckpointReader> open_gguf_checkpoint(const std::string& path);

}  // namespace cllm::detail
