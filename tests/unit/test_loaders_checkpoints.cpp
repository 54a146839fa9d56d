// Loader tests, checkpoints: HF directories and GGUF files opened through open_checkpoint (valid and
// corrupted, written from code), and the real SmolLM2 GGUF against values from the python `gguf` package.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include "loaders/checkpoint.h"
#include "loaders/dequant.h"
#include "loaders/gguf.h"
#include "loaders/hf_config.h"
#include "loaders/safetensors.h"

#include "core/check.h"
#include "loader_test_util.h"

namespace fs = std::filesystem;
using namespace cllm;
using namespace cllm::loader_test;

// ---------------------------------------------------------------- HF checkpoint directories

namespace {
struct TinyModel {
  ModelConfig cfg;
  std::map<std::string, std::vector<float>> w;
  std::map<std::string, std::vector<int64_t>> shape;
};

TinyModel tiny_model() {
  TinyModel m;
  ModelConfig& c = m.cfg;
  c.vocab_size = 64, c.hidden_size = 16, c.intermediate_size = 32, c.num_layers = 2;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 4, c.bos_token_id = 1, c.eos_token_ids = {2};
  size_t seed = 0;
  const TensorManifest manifest = make_tensor_manifest(c);
  for (const TensorSpec* e : manifest.all()) {
    m.w[e->name] = ramp(static_cast<size_t>(e->elements()), 1.0f / 64, ++seed);
    m.shape[e->name] = e->shape;
  }
  return m;
}

// config.json + model.safetensors (F32, or BF16 for every other tensor), without `skip`.
void write_hf(const TinyModel& m, const fs::path& dir, const std::string& skip = "") {
  write_hf_config(m.cfg, dir.string());
  std::vector<SafetensorsWriteTensor> ts;
  for (const auto& [name, v] : m.w)
    if (name != skip) ts.push_back({name, ts.size() % 2 ? DType::BF16 : DType::F32, m.shape.at(name), v.data()});
  write_safetensors((dir / "model.safetensors").string(), ts);
}

void write_tokenizer_json(const fs::path& dir, int n_tokens) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < n_tokens; ++i) vocab["t" + std::to_string(i)] = i;
  const nlohmann::json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}}},
                             {"added_tokens", {{{"id", 1}, {"content", "<s>"}}, {{"id", 2}, {"content", "</s>"}}}}};
  write_file(dir / "tokenizer.json", tj.dump());
}
}  // namespace

TEST(HfCheckpoint, OpensAndReadsRanges) {
  const TinyModel m = tiny_model();
  const fs::path d = temp_dir();
  write_hf(m, d);
  write_tokenizer_json(d, 64);
  write_file(d / "tokenizer_config.json", R"({"add_bos_token": true, "eos_token": {"content": "</s>"},
      "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  const auto r = open_checkpoint(d.string());
  EXPECT_EQ(r->config().num_kv_heads, 2);
  EXPECT_EQ(r->tokenizer().kind, TokenizerSpec::Kind::HfJson);
  EXPECT_EQ(r->tokenizer().eos_id, 2);
  EXPECT_TRUE(r->tokenizer().add_bos);
  EXPECT_EQ(r->tokenizer().chat_template, "D");
  for (const char* name : {"model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight"}) {
    const auto shape = r->shape(name);
    const int64_t cols = shape[1];
    std::vector<float> full(m.w.at(name).size());
    r->read_f32(name, {}, full.data());
    EXPECT_EQ(full, m.w.at(name)) << name;  // multiples of 1/64 are exact in bf16
    std::vector<float> part(3 * 5);
    r->read_f32(name, {2, 5, 3, 8}, part.data());
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 5; ++j) EXPECT_EQ(part[i * 5 + j], full[(2 + i) * cols + 3 + j]);
  }
  float norm[2];
  r->read_f32("model.norm.weight", {4, 6}, norm);
  EXPECT_EQ(norm[1], m.w.at("model.norm.weight")[5]);
  expect_error([&] { r->read_f32("model.norm.weight", {0, 17}, norm); }, {"model.norm.weight", "out of bounds"});
}

TEST(HfCheckpoint, TiedEmbeddingsNeedNoLmHead) {
  TinyModel m = tiny_model();
  m.cfg.tie_word_embeddings = true;
  m.w.erase("lm_head.weight");
  const fs::path d = temp_dir();
  write_hf(m, d);
  const auto r = open_checkpoint(d.string());
  EXPECT_TRUE(r->config().tie_word_embeddings);
  EXPECT_FALSE(r->has_tensor("lm_head.weight"));
}

TEST(HfCheckpoint, MissingTensor) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d, "model.layers.1.mlp.up_proj.weight");
  expect_error([&] { open_checkpoint(d.string()); }, {d.string(), "missing tensor 'model.layers.1.mlp.up_proj.weight'"});
}

TEST(HfCheckpoint, ShapeDisagreesWithConfig) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d);
  nlohmann::json c = nlohmann::json::parse(read_file(d / "config.json"));
  c["intermediate_size"] = 48;
  write_file(d / "config.json", c.dump());
  expect_error([&] { open_checkpoint(d.string()); },
               {d.string(), "'model.layers.0.mlp.gate_proj.weight'", "[32, 16]", "[48, 16]"});
}

TEST(HfCheckpoint, VocabSizeMismatch) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d);
  write_tokenizer_json(d, 70);
  expect_error([&] { open_checkpoint(d.string()); }, {d.string(), "vocab size mismatch", "70 tokens", "64 rows"});
}

TEST(HfCheckpoint, TruncatedSafetensors) {
  const fs::path d = temp_dir();
  write_hf(tiny_model(), d);
  const std::string img = read_file(d / "model.safetensors");
  write_file(d / "model.safetensors", img.substr(0, img.size() - 10));
  expect_error([&] { open_checkpoint(d.string()); }, {(d / "model.safetensors").string(), "out of range"});
}

TEST(HfCheckpoint, ShardedIndex) {
  const TinyModel m = tiny_model();
  const fs::path d = temp_dir();
  write_hf_config(m.cfg, d.string());
  std::vector<SafetensorsWriteTensor> a, b;
  nlohmann::json map = nlohmann::json::object();
  for (const auto& [name, v] : m.w) {
    const bool first = name.find("layers.1.") == std::string::npos;
    (first ? a : b).push_back({name, DType::F32, m.shape.at(name), v.data()});
    map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors((d / "model-00001-of-00002.safetensors").string(), a);
  write_safetensors((d / "model-00002-of-00002.safetensors").string(), b);
  write_file(d / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  std::vector<float> got(m.w.at("model.layers.1.mlp.up_proj.weight").size());
  open_checkpoint(d.string())->read_f32("model.layers.1.mlp.up_proj.weight", {}, got.data());
  EXPECT_EQ(got, m.w.at("model.layers.1.mlp.up_proj.weight"));

  map["model.norm.weight"] = "model-00002-of-00002.safetensors";  // wrong shard
  write_file(d / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  expect_error([&] { open_checkpoint(d.string()); }, {"model.safetensors.index.json", "'model.norm.weight'", "not in its shard"});
  fs::remove(d / "model-00002-of-00002.safetensors");
  expect_error([&] { open_checkpoint(d.string()); }, {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "does not exist"});
}

TEST(HfCheckpoint, UnknownFormatListsAccepted) {
  const fs::path p = temp_dir() / "weights.bin";
  write_file(p, "x");
  expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "unrecognised format", ".gguf", "config.json"});
}

// ---------------------------------------------------------------- GGUF checkpoints

namespace {
// A tiny llama GGUF holding the TinyModel's weights, q/k permuted as llama.cpp's converter does.
// token_types: tokenizer.ggml.token_type when not empty; extra adds keys or tensors last.
std::string tiny_gguf(const TinyModel& m, int n_tokens, const std::vector<int32_t>& token_types = {},
                      const std::function<void(GgufBuilder&)>& extra = {}) {
  const ModelConfig& c = m.cfg;
  GgufBuilder b;
  b.str("general.architecture", "llama");
  b.u32("llama.block_count", c.num_layers);
  b.u32("llama.embedding_length", c.hidden_size);
  b.u32("llama.feed_forward_length", c.intermediate_size);
  b.u32("llama.attention.head_count", c.num_heads);
  b.u32("llama.attention.head_count_kv", c.num_kv_heads);
  b.u32("llama.vocab_size", c.vocab_size);
  b.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.str("tokenizer.ggml.model", "gpt2");
  std::vector<std::string> toks;
  for (int i = 0; i < n_tokens; ++i) toks.push_back("t" + std::to_string(i));
  b.strs("tokenizer.ggml.tokens", toks);
  if (!token_types.empty()) b.i32s("tokenizer.ggml.token_type", token_types);
  b.strs("tokenizer.ggml.merges", {"t 1"});
  b.u32("tokenizer.ggml.eos_token_id", 2);
  const auto permute = [&](const std::vector<float>& w, int n_head) {  // HF -> GGUF row order
    const size_t hd = c.head_dim, in = c.hidden_size;
    std::vector<float> out(w.size());
    for (size_t h = 0; h < static_cast<size_t>(n_head); ++h)
      for (size_t j = 0; j < 2; ++j)
        for (size_t i = 0; i < hd / 2; ++i)
          std::memcpy(&out[(h * hd + 2 * i + j) * in], &w[(h * hd + j * hd / 2 + i) * in], in * 4);
    return out;
  };
  const std::map<std::string, std::string> names = {
      {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"}, {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}};
  for (const auto& [name, v] : m.w) {
    const auto& s = m.shape.at(name);
    std::vector<uint64_t> ne(s.rbegin(), s.rend());
    std::string g = name == "model.embed_tokens.weight" ? "token_embd.weight"
                    : name == "model.norm.weight"       ? "output_norm.weight"
                                                        : "output.weight";
    std::vector<float> data = v;
    if (name.rfind("model.layers.", 0) == 0) {
      const size_t dot = name.find('.', 13);
      const std::string layer = name.substr(13, dot - 13), part = name.substr(dot + 1, name.size() - dot - 8);
      g = "blk." + layer + "." + names.at(part) + ".weight";
      if (part == "self_attn.q_proj") data = permute(v, c.num_heads);
      if (part == "self_attn.k_proj") data = permute(v, c.num_kv_heads);
    }
    b.f32_tensor(g, ne, data);
  }
  if (extra) extra(b);
  return b.build();
}
}  // namespace

TEST(GgufCheckpoint, UnpermutesQkAndMapsNames) {
  TinyModel m = tiny_model();
  const fs::path p = temp_dir() / "tiny.gguf";
  write_file(p, tiny_gguf(m, 64));
  const auto r = open_checkpoint(p.string());
  EXPECT_FALSE(r->config().tie_word_embeddings);
  EXPECT_EQ(r->config().num_kv_heads, 2);
  EXPECT_EQ(r->config().head_dim, 4);
  EXPECT_EQ(r->tokenizer().kind, TokenizerSpec::Kind::GgufBpe);
  for (const auto& [name, v] : m.w) {
    EXPECT_EQ(r->shape(name), m.shape.at(name)) << name;
    std::vector<float> got(v.size());
    r->read_f32(name, {}, got.data());
    EXPECT_EQ(got, v) << name;
  }
  std::vector<float> rows(3 * 16);
  r->read_f32("model.layers.0.self_attn.q_proj.weight", {5, 8}, rows.data());
  EXPECT_TRUE(std::equal(rows.begin(), rows.end(), m.w.at("model.layers.0.self_attn.q_proj.weight").begin() + 5 * 16));
}

TEST(GgufCheckpoint, VocabSizeMismatch) {
  const fs::path p = temp_dir() / "tiny.gguf";
  write_file(p, tiny_gguf(tiny_model(), 70));
  expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "vocab size mismatch", "70 tokens", "64 rows"});
}

// ---------------------------------------------------------------- non-finite weights, every format

// One NaN in a linear weight and one Inf in a norm: every reader refuses the range that holds them,
// naming the file, the tensor and the element, and reads a range without them.
TEST(Checkpoints, NonFiniteWeightsAreNamed) {
  TinyModel m = tiny_model();
  const std::string down = "model.layers.1.mlp.down_proj.weight", norm = "model.layers.0.input_layernorm.weight";
  m.w.at(down)[3 * 32 + 5] = std::nanf("");  // [16, 32]: row 3, column 5
  m.w.at(norm)[7] = INFINITY;                // [16]: element 7
  const fs::path d = temp_dir(), gguf = d / "tiny.gguf";
  write_hf(m, d);
  write_tokenizer_json(d, 64);
  write_file(gguf, tiny_gguf(m, 64));
  for (const fs::path& path : {d, gguf}) {
    const auto r = open_checkpoint(path.string());
    std::vector<float> buf(16 * 32);
    expect_error([&] { r->read_f32(down, {}, buf.data()); },
                 {path.string(), "'" + down + "'", "nan at [3, 5]", "finite"});
    expect_error([&] { r->read_f32(down, {2, 6, 4, 8}, buf.data()); }, {"'" + down + "'", "at [3, 5]"});
    EXPECT_NO_THROW(r->read_f32(down, {4, 16}, buf.data())) << path;
    expect_error([&] { r->read_f32(norm, {}, buf.data()); }, {"'" + norm + "'", "inf at element 7"});
    EXPECT_NO_THROW(r->read_f32(norm, {0, 7}, buf.data())) << path;
  }
}

// A corrupted token_type entry (a byte flipped in an I32) would change how text is tokenized:
// refused, naming the entry, its token and the valid range.
TEST(GgufCheckpoint, CorruptedTokenTypeRefused) {
  std::vector<int32_t> types(64, 1);
  const fs::path p = temp_dir() / "tiny.gguf";
  write_file(p, tiny_gguf(tiny_model(), 64, types));
  EXPECT_EQ(open_checkpoint(p.string())->tokenizer().token_types, types);
  types[37] = 0x01000001;
  write_file(p, tiny_gguf(tiny_model(), 64, types));
  expect_error([&] { open_checkpoint(p.string()); },
               {p.string(), "tokenizer.ggml.token_type[37] (token 't37') is 16777217", "0..6", "corrupted"});
}

// GGUF keys beyond the LLaMA shape (loaders/gguf_keys.h): honoured ones change the config, ones
// cllm would ignore are refused naming the key and value unless they hold their no-op value.
TEST(GgufCheckpoint, MetadataKeysHonouredOrRefused) {
  const TinyModel m = tiny_model();
  const fs::path p = temp_dir() / "tiny.gguf";
  const auto open_with = [&](const std::function<void(GgufBuilder&)>& extra) {
    write_file(p, tiny_gguf(m, 64, {}, extra));
    return open_checkpoint(p.string());
  };
  EXPECT_EQ(open_with({})->config().sliding_window, 0);
  EXPECT_EQ(open_with([](GgufBuilder& b) { b.u32("llama.attention.sliding_window", 8); })->config().sliding_window, 8);
  // An end-of-message token ends generation too (Llama 3.1's <|eom_id|>), after EOS and EOT.
  const auto stops = open_with([](GgufBuilder& b) {
    b.u32("tokenizer.ggml.eot_token_id", 5);
    b.u32("tokenizer.ggml.eom_token_id", 6);
  })->config().eos_token_ids;
  EXPECT_EQ(stops, (std::vector<int>{2, 5, 6}));
  // No-op values pass; anything else is named.
  EXPECT_NO_THROW(open_with([](GgufBuilder& b) {
    b.u32("llama.expert_count", 0);
    b.f32("llama.logit_scale", 1.0f);
    b.boolean("tokenizer.ggml.add_eos_token", false);
    b.u32("split.count", 1);
    b.str("general.name", "tiny");
    b.u32("llama.attention.value_length", 4);
  }));
  const std::vector<std::pair<std::function<void(GgufBuilder&)>, std::vector<std::string>>> refused = {
      {[](GgufBuilder& b) { b.u32("llama.expert_count", 8); }, {"'llama.expert_count' = 8", "mixture-of-experts"}},
      {[](GgufBuilder& b) { b.f32("llama.logit_scale", 0.5f); }, {"'llama.logit_scale' = 0.5", "accepted only as 1"}},
      {[](GgufBuilder& b) { b.boolean("tokenizer.ggml.add_eos_token", true); }, {"'tokenizer.ggml.add_eos_token' = true"}},
      {[](GgufBuilder& b) { b.u32("split.count", 3); }, {"'split.count' = 3", "gguf-split --merge"}},
      {[](GgufBuilder& b) { b.f32("llama.some_future_scale", 2.0f); }, {"'llama.some_future_scale' = 2"}},
      {[](GgufBuilder& b) { b.u32("llama.attention.value_length", 8); }, {"llama.attention.value_length 8", "head dimension 4"}},
      {[](GgufBuilder& b) { b.str("adapter.type", "lora"); }, {"'adapter.type' = lora", "LoRA adapter"}},
  };
  for (const auto& [extra, needles] : refused) {
    std::vector<std::string> with_file = needles;
    with_file.push_back(p.string());
    expect_error([&] { open_with(extra); }, with_file);
  }
  // A key of no known family is ignored with a warning, not refused.
  EXPECT_NO_THROW(open_with([](GgufBuilder& b) { b.str("mytool.comment", "x"); }));
}

// A tensor outside the LLaMA forward (a bias llama.cpp would add, an expert) is refused, not dropped.
TEST(GgufCheckpoint, TensorsOutsideTheForwardRefused) {
  const TinyModel m = tiny_model();
  const fs::path p = temp_dir() / "tiny.gguf";
  for (const std::string name : {"blk.0.attn_q.bias", "blk.1.ffn_gate_exps.weight", "output.bias"}) {
    write_file(p, tiny_gguf(m, 64, {}, [&](GgufBuilder& b) { b.f32_tensor(name, {16}, std::vector<float>(16, 0.5f)); }));
    expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "tensor '" + name + "'", "not part of the LLaMA"});
  }
}

// Tensors past the config's layer count, biases and stray tensors are refused in every format,
// not dropped (they would change the outputs silently); transformers' inv_freq buffers are ignored.
TEST(Checkpoints, TensorsTheConfigHasNoPlaceForRefused) {
  const fs::path d = temp_dir() / "extra";
  fs::create_directories(d);
  for (const std::string extra : {"model.layers.0.self_attn.q_proj.bias", "model.layers.2.mlp.up_proj.weight", "foo"}) {
    TinyModel m = tiny_model();
    m.w[extra] = std::vector<float>(16, 5.0f);
    m.shape[extra] = {16};
    write_hf(m, d);
    write_tokenizer_json(d, 64);
    expect_error([&] { open_checkpoint(d.string()); }, {d.string(), "tensor '" + extra + "'", "no place"});
  }
  TinyModel m = tiny_model();
  m.w["model.layers.1.self_attn.rotary_emb.inv_freq"] = std::vector<float>(2, 1.0f);
  m.shape["model.layers.1.self_attn.rotary_emb.inv_freq"] = {2};
  write_hf(m, d);
  EXPECT_NO_THROW(open_checkpoint(d.string()));
  // A GGUF whose block_count is below its blk.N tensors names the first one it would drop.
  m = tiny_model();
  const fs::path p = temp_dir() / "layers.gguf";
  write_file(p, tiny_gguf(m, 64, {}, [&](GgufBuilder& b) { b.f32_tensor("blk.2.attn_norm.weight", {16}, std::vector<float>(16, 1)); }));
  expect_error([&] { open_checkpoint(p.string()); }, {p.string(), "tensor 'blk.2.attn_norm.weight'", "2 layers"});
}

// A FIFO where a model file should be is refused at once; opening it would wait for a writer forever.
TEST(Checkpoints, FifoRefusedWithoutBlocking) {
  const fs::path dir = temp_dir() / "fifo";
  fs::create_directories(dir);
  const fs::path fifo = dir / "model.gguf";
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error([&] { open_checkpoint(fifo.string()); }, {fifo.string(), "not a regular file"});
  const fs::path hf = dir / "hf";
  TinyModel m = tiny_model();
  fs::create_directories(hf);
  write_hf(m, hf);
  write_tokenizer_json(hf, 64);
  fs::remove(hf / "model.safetensors");
  ASSERT_EQ(::mkfifo((hf / "model.safetensors").c_str(), 0600), 0);
  expect_error([&] { open_checkpoint(hf.string()); }, {"model.safetensors", "not a regular file"});
}

// A tokenizer.model whose normaliser table is damaged is refused naming it; sentencepiece itself
// would read out of bounds. The protobuf field appended here (normalizer_spec { precompiled_charsmap })
// overrides the file's own, as a parser merges repeated messages.
TEST(HfCheckpoint, DamagedSentencepieceCharsmapRefused) {
  const fs::path d = temp_dir() / "spm_charsmap";
  fs::create_directories(d);
  write_hf(tiny_model(), d);
  fs::remove(d / "tokenizer.json");
  std::ifstream in(std::string(CLLM_SOURCE_DIR) + "/tests/fixtures/tokenizer/tiny_sp.model", std::ios::binary);
  const std::string model((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(model.empty());
  // Its own tables pass: what stops this checkpoint is the vocabulary size (1000 pieces, 64 rows).
  write_file(d / "tokenizer.model", model);
  expect_error([&] { open_checkpoint(d.string()); }, {"1000 tokens"});
  const std::vector<std::string> bad_tries = {
      std::string("\0\0\0\0abc", 7),                                    // a trie of 0 bytes
      std::string("\x08\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 12)};  // its root points far away
  for (const std::string& charsmap : bad_tries) {
    const std::string normalizer = std::string("\x12") + static_cast<char>(charsmap.size()) + charsmap;  // field 2
    write_file(d / "tokenizer.model", model + "\x1a" + static_cast<char>(normalizer.size()) + normalizer);  // field 3
    expect_error([&] { open_checkpoint(d.string()); }, {"tokenizer.model", "normalizer_spec", "precompiled_charsmap"});
  }
}

// A BERT-style post-processor (CLS / SEP around the text) is refused, not silently dropped.
TEST(HfCheckpoint, BertPostProcessorRefused) {
  const fs::path d = temp_dir() / "bert_pp";
  fs::create_directories(d);
  write_hf(tiny_model(), d);
  write_tokenizer_json(d, 64);
  nlohmann::json tj = nlohmann::json::parse(std::ifstream(d / "tokenizer.json"));
  for (const char* type : {"BertProcessing", "RobertaProcessing"}) {
    tj["post_processor"] = {{"type", type}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 1}}};
    std::ofstream(d / "tokenizer.json") << tj.dump();
    expect_error([&] { open_checkpoint(d.string()); }, {"tokenizer.json", std::string("post_processor '") + type + "'"});
  }
}

// One checkpoint fingerprints alike whatever its format (HF f32/bf16 and GGUF hold the same values
// here: multiples of 1/64); other weights of the same shape fingerprint differently, tensor by tensor.
TEST(Checkpoints, TensorFingerprintNamesTheCheckpoint) {
  TinyModel m = tiny_model();
  const fs::path d = temp_dir(), gguf = d / "tiny.gguf", other = d / "other";
  fs::create_directories(other);
  write_hf(m, d);
  write_tokenizer_json(d, 64);
  write_file(gguf, tiny_gguf(m, 64));
  for (auto& [name, v] : m.w)
    for (float& x : v) x = -x;
  write_hf(m, other);
  write_tokenizer_json(other, 64);
  const auto a = open_checkpoint(d.string()), b = open_checkpoint(gguf.string()), c = open_checkpoint(other.string());
  for (const auto& [name, v] : m.w) {
    EXPECT_EQ(a->fingerprint(name), b->fingerprint(name)) << name;
    EXPECT_NE(a->fingerprint(name), c->fingerprint(name)) << name;
  }
}

// ---------------------------------------------------------------- the real SmolLM2 GGUF

namespace {
std::unique_ptr<CheckpointReader> smollm() {
  const std::string path = std::string(CLLM_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) ADD_FAILURE() << path << " is missing (fetch it with launch/fetch_model.sh)";
  return open_checkpoint(path);
}
}  // namespace

TEST(SmolLM2, ConfigAndTokenizer) {
  const auto r = smollm();
  const ModelConfig& c = r->config();
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(r->has_tensor("lm_head.weight"));
  const TokenizerSpec& t = r->tokenizer();
  EXPECT_EQ(t.kind, TokenizerSpec::Kind::GgufBpe);
  EXPECT_EQ(t.pre, "smollm");
  EXPECT_EQ(t.tokens.size(), 49152u);
  EXPECT_EQ(t.merges.size(), 48900u);
  EXPECT_EQ(t.token_types.size(), 49152u);
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_FALSE(t.add_bos);
  EXPECT_NE(t.chat_template.find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(r->shape("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{192, 576}));
}

// Reference values from the python gguf package (gguf 0.x, numpy 2.4), q/k un-permuted in numpy:
//   python3 -c "import gguf, numpy as np
//   r = gguf.GGUFReader('models/SmolLM2-135M-Instruct.Q4_1.gguf'); T = {t.name: t for t in r.tensors}
//   deq = lambda n: gguf.quants.dequantize(T[n].data, T[n].tensor_type)
//   un = lambda w, h: w.reshape(h, w.shape[0] // h // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
//   e = deq('token_embd.weight'); print(e[100, :4], e[49151, 572:576])
//   q = un(deq('blk.0.attn_q.weight'), 9); print(q[1, :4], q[33, 100:103], q[575, 575])
//   k = un(deq('blk.0.attn_k.weight'), 3); print(k[40, 10:13])
//   print(deq('blk.29.ffn_down.weight')[575, 1533:1536], deq('output_norm.weight')[:3])"
TEST(SmolLM2, DequantizedValuesMatchPythonGguf) {
  const auto r = smollm();
  const auto check = [&](const std::string& name, TensorRange range, const std::vector<float>& want) {
    std::vector<float> got(want.size());
    r->read_f32(name, range, got.data());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6f) << name << " [" << i << "]";
  };
  check("model.embed_tokens.weight", {100, 101, 0, 4}, {0.019052505f, -0.08437538f, -0.16602898f, -0.1007061f});
  check("model.embed_tokens.weight", {49151, 49152, 572, 576}, {0.07819176f, 0.128582f, -0.11989403f, -0.04170227f});
  check("model.layers.0.self_attn.q_proj.weight", {1, 2, 0, 4}, {-0.15917969f, 0.39794922f, -0.019897461f, -1.2734375f});
  check("model.layers.0.self_attn.q_proj.weight", {33, 34, 100, 103}, {0.3057251f, 0.58862305f, -0.07147217f});
  check("model.layers.0.self_attn.q_proj.weight", {575, 576, 575, 576}, {-0.25585938f});
  check("model.layers.0.self_attn.k_proj.weight", {40, 41, 10, 13}, {0.13671875f, -0.50390625f, 0.45703125f});
  check("model.layers.29.mlp.down_proj.weight", {575, 576, 1533, 1536}, {0.203125f, -0.08984375f, 0.056640625f});
  check("model.norm.weight", {0, 3}, {1.7578125f, 1.8203125f, 1.78125f});
}

TEST(SmolLM2, RowRangeEqualsFullReadAfterUnpermute) {
  const auto r = smollm();
  for (const char* name : {"model.layers.3.self_attn.q_proj.weight", "model.layers.3.self_attn.k_proj.weight"}) {
    const auto s = r->shape(name);
    std::vector<float> full(static_cast<size_t>(s[0] * s[1]));
    r->read_f32(name, {}, full.data());
    const int64_t r0 = 70, r1 = 131, c0 = 17, c1 = 300;  // crosses head and Q4_1 block boundaries
    std::vector<float> part(static_cast<size_t>((r1 - r0) * (c1 - c0)));
    r->read_f32(name, {r0, r1, c0, c1}, part.data());
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t j = c0; j < c1; ++j)
        ASSERT_EQ(part[(i - r0) * (c1 - c0) + j - c0], full[i * s[1] + j]) << name << " " << i << "," << j;
  }
}

