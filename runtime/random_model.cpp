#include "runtime/random_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/tensor_manifest.h"
#include "kernels/cpu/thread_pool.h"
#include "loaders/hf_config.h"
#include "loaders/safetensors.h"
#include "runtime/tokenizer_export.h"

namespace cllm {
namespace {

ModelConfig llama(int vocab, int d, int ffn, int layers, int heads, int kv, int ctx, float theta) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = d;
  c.intermediate_size = ffn;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = d / heads;
  c.max_position_embeddings = ctx;
  c.rope_theta = theta;
  c.rms_norm_eps = 1e-5f;
  // The ids of make_byte_level_spec's "<s>" and "</s>", the tokenizer random models ship with.
  c.bos_token_id = 0;
  c.eos_token_ids = {1};
  return c;
}

// splitmix64: a counter-based generator, so each element is independent of thread scheduling.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ seed;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ULL;
  return mix(h);
}

// Uniform in [center - scale, center + scale].
void fill_uniform(std::vector<float>& v, uint64_t key, float center, float scale) {
  cpu::parallel_for_range(v.size(), 1 << 16, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const double u = static_cast<double>(mix(key + i) >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
      v[i] = center + scale * static_cast<float>(2.0 * u - 1.0);
    }
  });
}

struct PlannedTensor {
  std::string name;
  std::vector<int64_t> shape;
  float center, scale;
};

std::vector<PlannedTensor> plan(const ModelConfig& c) {
  // Linear weights ~ U(-1/sqrt(in), 1/sqrt(in)) keep activations O(1) through the layers; norms
  // near 1 with a little noise so that a wrong norm weight shows up in the logits.
  auto lin = [](int64_t in) { return 1.0f / std::sqrt(static_cast<float>(in)); };
  const TensorManifest m = make_tensor_manifest(c);
  std::vector<PlannedTensor> t;
  for (const TensorSpec* s : m.all()) {
    if (s == &m.embed) t.push_back({s->name, s->shape, 0.0f, 1.0f});
    else if (s->shape.size() == 1) t.push_back({s->name, s->shape, 1.0f, 0.1f});
    else t.push_back({s->name, s->shape, 0.0f, lin(s->shape[1])});  // [out, in]
  }
  return t;
}

size_t element_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

}  // namespace

ModelConfig random_model_shape(const std::string& name) {
  if (name == "tiny") {
    ModelConfig c = llama(320, 64, 160, 2, 4, 2, 256, 10000.0f);
    c.rope_scaling = RopeScaling{"llama3", 8.0f, 1.0f, 4.0f, 64};
    return c;
  }
  if (name == "135m") {
    ModelConfig c = llama(49152, 576, 1536, 30, 9, 3, 8192, 100000.0f);
    c.tie_word_embeddings = true;
    return c;
  }
  if (name == "7b") return llama(32000, 4096, 11008, 32, 32, 32, 4096, 10000.0f);
  if (name == "13b") return llama(32000, 5120, 13824, 40, 40, 40, 4096, 10000.0f);
  if (name == "70b") return llama(32000, 8192, 28672, 80, 64, 8, 4096, 10000.0f);
  CLLM_FAIL("unknown model shape '" << name << "' (expected tiny, 135m, 7b, 13b or 70b; `cllm random-model --shape "
            "custom` writes a checkpoint of any other shape)");
}

namespace {

class RandomCheckpoint final : public CheckpointReader {
 public:
  RandomCheckpoint(const ModelConfig& cfg, uint64_t seed) : cfg_(cfg), seed_(seed), tok_(make_byte_level_spec(cfg.vocab_size)) {
    validate(cfg_, source());
    // Random weights mostly predict ids past the 256 bytes; as normal tokens they decode to their
    // names ("<|unused_7|>") instead of nothing, so every generated token streams some text.
    for (size_t id = 258; id < tok_.token_types.size(); ++id) tok_.token_types[id] = 1;
    for (PlannedTensor& t : plan(cfg_)) tensors_.emplace(t.name, std::move(t));
  }
  const ModelConfig& config() const override { return cfg_; }
  const TokenizerSpec& tokenizer() const override { return tok_; }
  bool has_tensor(const std::string& name) const override { return tensors_.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const override { return get(name).shape; }
  std::string source() const override { return "random weights (seed " + std::to_string(seed_) + ")"; }

 protected:
  // One call per range: the values are computed in parallel over its rows.
  int64_t read_block_values() const override { return INT64_MAX; }
  // Element i of a tensor (row-major over its whole shape) is the value fill_uniform gives it.
  void convert_f32(const std::string& name, const TensorRange& r, float* dst) const override {
    const PlannedTensor& t = get(name);
    const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1, cols = t.shape.back();
    const int64_t r0 = t.shape.size() == 2 ? r.row_begin : 0, r1 = t.shape.size() == 2 && r.row_end >= 0 ? r.row_end : rows;
    const int64_t c0 = t.shape.size() == 2 ? r.col_begin : r.row_begin;
    const int64_t c1 = t.shape.size() == 2 ? (r.col_end >= 0 ? r.col_end : cols) : (r.row_end >= 0 ? r.row_end : cols);
    CLLM_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows && 0 <= c0 && c0 <= c1 && c1 <= cols,
               source() << ": range outside tensor " << name);
    const uint64_t key = hash_name(name, seed_);
    cpu::parallel_for_range(static_cast<size_t>(r1 - r0), 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        const int64_t row = r0 + static_cast<int64_t>(i);
        float* out = dst + i * static_cast<size_t>(c1 - c0);
        for (int64_t c = c0; c < c1; ++c) {
          const double u = static_cast<double>(mix(key + static_cast<uint64_t>(row * cols + c)) >> 11) *
                           (1.0 / 9007199254740992.0);
          out[c - c0] = t.center + t.scale * static_cast<float>(2.0 * u - 1.0);
        }
      }
    });
  }

 private:
  const PlannedTensor& get(const std::string& name) const {
    const auto it = tensors_.find(name);
    CLLM_CHECK(it != tensors_.end(), source() << " has no tensor " << name);
    return it->second;
  }

  ModelConfig cfg_;
  uint64_t seed_;
  TokenizerSpec tok_;
  std::map<std::string, PlannedTensor> tensors_;
};

}  // namespace

std::unique_ptr<CheckpointReader> random_checkpoint(const ModelConfig& cfg, uint64_t seed) {
  return std::make_unique<RandomCheckpoint>(cfg, seed);
}

bool is_random_model_file(const std::string& name) {
  const auto ends_with = [&](const std::string& tail) {
    return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  return name == "config.json" || name == "generation_config.json" || name == "tokenizer.json" ||
         name == "model.safetensors" || name == "model.safetensors.index.json" ||
         (name.rfind("model-", 0) == 0 && ends_with(".safetensors"));
}

void write_random_model(const ModelConfig& cfg, const std::string& dir, const RandomModelOptions& opts,
                        const std::function<void(int, int)>& progress) {
  validate(cfg, "random-model shape");
  CLLM_CHECK(opts.dtype == DType::F32 || opts.dtype == DType::F16 || opts.dtype == DType::BF16,
             "random-model writes F32, F16 or BF16 only");
  const TokenizerSpec tok = make_byte_level_spec(cfg.vocab_size);  // refuses a vocabulary too small before any write
  std::filesystem::create_directories(dir);
  const std::vector<PlannedTensor> tensors = plan(cfg);

  // Group tensors into shards of at most shard_bytes (on disk).
  std::vector<std::vector<size_t>> shards(1);
  double shard_size = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    double numel = 1;
    for (int64_t s : tensors[i].shape) numel *= static_cast<double>(s);
    const double bytes = numel * element_bytes(opts.dtype);
    if (shard_size > 0 && shard_size + bytes > opts.shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(i);
    shard_size += bytes;
  }

  nlohmann::json weight_map = nlohmann::json::object();
  int done = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1
                                 ? "model.safetensors"
                                 : "model-" + std::to_string(s + 1) + "-of-" + std::to_string(shards.size()) +
                                       ".safetensors";
    std::vector<std::vector<float>> data(shards[s].size());
    std::vector<SafetensorsWriteTensor> out;
    for (size_t j = 0; j < shards[s].size(); ++j) {
      const PlannedTensor& t = tensors[shards[s][j]];
      size_t numel = 1;
      for (int64_t x : t.shape) numel *= static_cast<size_t>(x);
      data[j].resize(numel);
      fill_uniform(data[j], hash_name(t.name, opts.seed), t.center, t.scale);
      out.push_back({t.name, opts.dtype, t.shape, data[j].data()});
      weight_map[t.name] = file;
      if (progress) progress(++done, static_cast<int>(tensors.size()));
    }
    write_safetensors(dir + "/" + file, out, {{"format", "pt"}});
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}};
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2) << "\n";
  }
  write_hf_config(cfg, dir);
  write_hf_tokenizer_json(tok, dir + "/tokenizer.json");
}

}  // namespace cllm
