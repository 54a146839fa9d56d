#include "runtime/random_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/check.h"
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
  const int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  // Linear weights ~ U(-1/sqrt(in), 1/sqrt(in)) keep activations O(1) through the layers; norms
  // near 1 with a little noise so that a wrong norm weight shows up in the logits.
  auto lin = [](int64_t in) { return 1.0f / std::sqrt(static_cast<float>(in)); };
  std::vector<PlannedTensor> t;
  t.push_back({"model.embed_tokens.weight", {c.vocab_size, d}, 0.0f, 1.0f});
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", {d}, 1.0f, 0.1f});
    t.push_back({p + "self_attn.q_proj.weight", {q, d}, 0.0f, lin(d)});
    t.push_back({p + "self_attn.k_proj.weight", {kv, d}, 0.0f, lin(d)});
    t.push_back({p + "self_attn.v_proj.weight", {kv, d}, 0.0f, lin(d)});
    t.push_back({p + "self_attn.o_proj.weight", {d, q}, 0.0f, lin(q)});
    t.push_back({p + "post_attention_layernorm.weight", {d}, 1.0f, 0.1f});
    t.push_back({p + "mlp.gate_proj.weight", {f, d}, 0.0f, lin(d)});
    t.push_back({p + "mlp.up_proj.weight", {f, d}, 0.0f, lin(d)});
    t.push_back({p + "mlp.down_proj.weight", {d, f}, 0.0f, lin(f)});
  }
  t.push_back({"model.norm.weight", {d}, 1.0f, 0.1f});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, d}, 0.0f, lin(d)});
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
  CLLM_FAIL("unknown model shape '" << name << "' (expected tiny, 135m, 7b, 13b, 70b or custom)");
}

void write_random_model(const ModelConfig& cfg, const std::string& dir, const RandomModelOptions& opts,
                        const std::function<void(int, int)>& progress) {
  validate(cfg, "random-model shape");
  CLLM_CHECK(opts.dtype == DType::F32 || opts.dtype == DType::F16 || opts.dtype == DType::BF16,
             "random-model writes F32, F16 or BF16 only");
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
  const TokenizerSpec tok = make_byte_level_spec(cfg.vocab_size);
  write_hf_tokenizer_json(tok, dir + "/tokenizer.json");
}

}  // namespace cllm
