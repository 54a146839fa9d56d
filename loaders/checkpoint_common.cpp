// Shared pieces of the checkpoint readers; see checkpoint_common.h.
#include "loaders/checkpoint_common.h"

#include <algorithm>
#include <unordered_set>

#include "core/check.h"

namespace cllm::detail {

void check_tensors(const CheckpointReader& r, const ModelConfig& cfg, int64_t tokenizer_vocab,
                   std::vector<HeldTensor> held) {
  // The manifest has an entry per layer: a corrupted layer count (2147483647) is named by the first
  // layer it promises that the file lacks, before any entry is allocated.
  const std::string last = "model.layers." + std::to_string(cfg.num_layers - 1) + ".input_layernorm.weight";
  CLLM_CHECK(r.has_tensor(last), r.source() << ": num_hidden_layers is " << cfg.num_layers
                                            << ", but the checkpoint has no tensor '" << last << "'");
  const TensorManifest manifest = make_tensor_manifest(cfg);
  std::unordered_set<std::string> used;
  for (const TensorSpec* t : manifest.all()) {
    check_shape(r, *t);
    used.insert(t->name);
  }
  std::sort(held.begin(), held.end(), [](const HeldTensor& a, const HeldTensor& b) { return a.file_name < b.file_name; });
  const std::string ignored = ".rotary_emb.inv_freq";  // a buffer transformers recomputes (older LLaMA files)
  for (const HeldTensor& t : held) {
    const bool buffer = t.name.size() >= ignored.size() && t.name.compare(t.name.size() - ignored.size(), ignored.size(), ignored) == 0;
    CLLM_CHECK(used.count(t.name) || buffer,
               r.source() << ": tensor '" << t.file_name << "' has no place in the LLaMA forward of this checkpoint's "
                          << "config (" << cfg.num_layers << " layers" << (cfg.tie_word_embeddings ? ", tied LM head" : "")
                          << "; no biases): another architecture, or a wrong layer count");
  }
  CLLM_CHECK(tokenizer_vocab <= cfg.vocab_size,
             r.source() << ": vocab size mismatch: the tokenizer has " << tokenizer_vocab
                        << " tokens but model.embed_tokens.weight has " << cfg.vocab_size << " rows");
}

Rect resolve_range(const TensorRange& range, const std::vector<int64_t>& shape, const std::string& source,
                   const std::string& name) {
  CLLM_CHECK(!shape.empty(), source << ": tensor '" << name << "' is a scalar");
  int64_t rows = shape[0], cols = 1;
  for (size_t d = 1; d < shape.size(); ++d) cols *= shape[d];
  Rect r{range.row_begin, range.row_end < 0 ? rows : range.row_end, 0, 1};
  if (shape.size() > 1) {
    r.c0 = range.col_begin;
    r.c1 = range.col_end < 0 ? cols : range.col_end;
  }
  CLLM_CHECK(0 <= r.r0 && r.r0 <= r.r1 && r.r1 <= rows && 0 <= r.c0 && r.c0 <= r.c1 && r.c1 <= cols,
             source << ": tensor '" << name << "' of shape " << shape_str(shape) << ": range rows [" << r.r0 << ", "
                    << r.r1 << ") cols [" << r.c0 << ", " << r.c1 << ") is out of bounds");
  return r;
}

void convert_rows(const uint8_t* base, DType dtype, int64_t row_len, const Rect& rect,
                  const std::function<int64_t(int64_t)>& file_row, float* dst) {
  const uint64_t row_bytes = dtype_row_bytes(dtype, row_len, "convert_rows");
  const int64_t w = rect.c1 - rect.c0;
  for (int64_t r = rect.r0; r < rect.r1; ++r) {
    const uint8_t* row = base + static_cast<uint64_t>(file_row(r)) * row_bytes;
    dequantize_row(dtype, row, rect.c0, rect.c1, dst + (r - rect.r0) * w);
  }
}

}  // namespace cllm::detail
