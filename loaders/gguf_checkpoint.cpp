// CheckpointReader over a llama.cpp GGUF file. Tensors are renamed to HF names, reported in HF
// [out, in] order (GGUF stores ne = [in, out]), and q/k rows are un-permuted: llama.cpp's
// converter reorders each head's rows for its interleaved RoPE,
//   w.reshape(n_head, 2, head_dim/2, in).swapaxes(1, 2),
// so GGUF row h*head_dim + 2*i + j holds HF row h*head_dim + j*head_dim/2 + i.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>
#include <unordered_map>

#include "core/check.h"
#include "loaders/checkpoint_common.h"
#include "loaders/gguf.h"
#include "loaders/gguf_keys.h"
#include "loaders/mapped_file.h"

namespace cllm::detail {

namespace {

// GGUF -> HF name; "" for names with no HF counterpart.
std::string hf_name(const std::string& g) {
  static const std::unordered_map<std::string, std::string> top = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  static const std::unordered_map<std::string, std::string> layer = {
      {"attn_norm", "input_layernorm"},       {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},         {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"},    {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},          {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"}};
  static const std::regex blk(R"(blk\.(\d+)\.([a-z_]+)\.weight)");
  if (auto it = top.find(g); it != top.end()) return it->second;
  std::smatch m;
  if (std::regex_match(g, m, blk)) {
    if (auto it = layer.find(m[2].str()); it != layer.end())
      return "model.layers." + m[1].str() + "." + it->second + ".weight";
  }
  return "";
}

int to_int(int64_t v, const GgufFile& g, const std::string& key) {
  CLLM_CHECK(v >= INT32_MIN && v <= INT32_MAX, g.filename << ": metadata key '" << key << "' value " << v
                                                          << " does not fit in int32");
  return static_cast<int>(v);
}

ModelConfig config_from_gguf(const GgufFile& g) {
  const std::string arch = g.get_string("general.architecture");
  CLLM_CHECK(arch == "llama", g.filename << ": general.architecture '" << arch << "' is not supported (accepted: llama)");
  const auto key = [](const char* k) { return std::string("llama.") + k; };
  const auto geti = [&](const char* k) { return to_int(g.get_int(key(k)), g, key(k)); };
  const auto geti_or = [&](const char* k, int64_t d) { return to_int(g.get_int(key(k), d), g, key(k)); };

  ModelConfig c;
  c.num_layers = geti("block_count");
  c.hidden_size = geti("embedding_length");
  c.intermediate_size = geti("feed_forward_length");
  c.num_heads = geti("attention.head_count");
  c.num_kv_heads = geti_or("attention.head_count_kv", c.num_heads);
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.head_dim = geti_or("rope.dimension_count", c.head_dim);
  if (g.find(key("attention.key_length"))) {
    const int kl = geti("attention.key_length");
    CLLM_CHECK(kl == c.head_dim, g.filename << ": llama.attention.key_length " << kl << " differs from the rotary "
                                            << "dimension " << c.head_dim << " (partial RoPE is not supported)");
  }
  if (g.find(key("attention.value_length"))) {
    const int vl = geti("attention.value_length");
    CLLM_CHECK(vl == c.head_dim, g.filename << ": llama.attention.value_length " << vl << " differs from the head "
                                            << "dimension " << c.head_dim << " (expected equal)");
  }
  c.max_position_embeddings = geti_or("context_length", c.max_position_embeddings);
  // llama.cpp's converter writes no window for LLaMA/Mistral; a file that has one gets it, as the
  // HF model it came from attends (MistralForCausalLM's sliding_window).
  c.sliding_window = geti_or("attention.sliding_window", 0);
  CLLM_CHECK(c.sliding_window >= 0, g.filename << ": llama.attention.sliding_window is " << c.sliding_window
                                               << ", expected a window of 0 (none) or more tokens");
  c.rms_norm_eps = static_cast<float>(g.get_float(key("attention.layer_norm_rms_epsilon")));
  c.rope_theta = static_cast<float>(g.get_float(key("rope.freq_base"), 10000.0));

  std::string scaling = g.find(key("rope.scaling.type")) ? g.get_string(key("rope.scaling.type")) : "none";
  if (scaling == "none" && g.find(key("rope.scale_linear"))) scaling = "linear";  // pre-2024 key
  if (scaling == "linear") {
    c.rope_scaling.type = "linear";
    const bool factor = g.find(key("rope.scaling.factor")) != nullptr;
    CLLM_CHECK(factor || g.find(key("rope.scale_linear")), g.filename << ": llama.rope.scaling.type is linear but "
                                                                       << key("rope.scaling.factor") << " is missing");
    c.rope_scaling.factor =
        static_cast<float>(factor ? g.get_float(key("rope.scaling.factor")) : g.get_float(key("rope.scale_linear")));
  } else {
    CLLM_CHECK(scaling == "none", g.filename << ": llama.rope.scaling.type '" << scaling
                                             << "' is not supported (accepted: none, linear)");
  }
  // Llama 3.1-style scaling is baked into a per-frequency tensor whose parameters are lost.
  CLLM_CHECK(g.find_tensor("rope_freqs.weight") == nullptr,
             g.filename << ": tensor 'rope_freqs.weight' (llama3 RoPE scaling stored as a tensor) is not supported; "
                           "convert from the Hugging Face checkpoint instead");

  const GgufTensorInfo* emb = g.find_tensor("token_embd.weight");
  int64_t vocab = emb && emb->ne.size() == 2 ? emb->ne[1] : 0;
  if (g.find("tokenizer.ggml.tokens")) vocab = static_cast<int64_t>(g.get_strings("tokenizer.ggml.tokens").size());
  c.vocab_size = to_int(g.get_int(key("vocab_size"), vocab), g, key("vocab_size"));
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  c.bos_token_id = to_int(g.get_int("tokenizer.ggml.bos_token_id", -1), g, "tokenizer.ggml.bos_token_id");
  // Generation ends at any of them, as llama.cpp's end-of-generation tokens; the first is EOS.
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!g.find(k)) continue;
    const int id = to_int(g.get_int(k), g, k);
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
  }
  return c;
}

TokenizerSpec tokenizer_from_gguf(const GgufFile& g, const ModelConfig& c) {
  TokenizerSpec t;
  t.path = g.filename;
  t.bos_id = c.bos_token_id;
  t.eos_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
  if (g.find("tokenizer.chat_template")) t.chat_template = g.get_string("tokenizer.chat_template");
  if (!g.find("tokenizer.ggml.model")) return t;
  const std::string model = g.get_string("tokenizer.ggml.model");
  t.tokens = g.get_strings("tokenizer.ggml.tokens");
  if (g.find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t>& types = g.get_ints("tokenizer.ggml.token_type");
    CLLM_CHECK(types.size() == t.tokens.size(),
               g.filename << ": tokenizer.ggml.token_type has " << types.size() << " entries, tokenizer.ggml.tokens has "
                          << t.tokens.size());
    // llama.cpp's token types: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    // 6 byte. Anything else is a corrupted entry, which would silently change how text is tokenized.
    for (size_t i = 0; i < types.size(); ++i) {
      CLLM_CHECK(types[i] >= 0 && types[i] <= 6, g.filename << ": tokenizer.ggml.token_type[" << i << "] (token '"
                                                             << t.tokens[i] << "') is " << types[i]
                                                             << ", expected a token type in 0..6: the file is corrupted");
      t.token_types.push_back(static_cast<int32_t>(types[i]));
    }
  }
  if (model == "gpt2") {
    t.kind = TokenizerSpec::Kind::GgufBpe;
    t.merges = g.get_strings("tokenizer.ggml.merges");
    t.pre = g.find("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "default";
    t.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", false);
  } else if (model == "llama") {
    t.kind = TokenizerSpec::Kind::GgufSpm;
    for (double s : g.get_floats("tokenizer.ggml.scores")) {
      CLLM_CHECK(std::isfinite(s), g.filename << ": tokenizer.ggml.scores[" << t.scores.size() << "] is " << s
                                              << ", expected a finite score: the file is corrupted");
      t.scores.push_back(static_cast<float>(s));
    }
    CLLM_CHECK(t.scores.size() == t.tokens.size(), g.filename << ": tokenizer.ggml.scores has " << t.scores.size()
                                                              << " entries, tokenizer.ggml.tokens has " << t.tokens.size());
    t.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", true);
    t.add_space_prefix = g.get_bool("tokenizer.ggml.add_space_prefix", true);
  } else {
    CLLM_FAIL(g.filename << ": tokenizer.ggml.model '" << model << "' is not supported (accepted: gpt2, llama)");
  }
  const int64_t n = static_cast<int64_t>(t.tokens.size());
  CLLM_CHECK(t.bos_id < n && t.eos_id < n, g.filename << ": bos/eos token id (" << t.bos_id << "/" << t.eos_id
                                                      << ") outside the " << n << "-token vocabulary");
  return t;
}

class GgufReader final : public CheckpointReader {
 public:
  explicit GgufReader(const std::string& path)
      : file_(path), g_(parse_gguf(file_.data(), file_.size(), path)) {
    cfg_ = config_from_gguf(g_);  // first: another architecture is refused as such, not key by key
    check_gguf_keys(g_);
    validate(cfg_, path);
    tok_ = tokenizer_from_gguf(g_, cfg_);
    for (const auto& t : g_.tensors) {
      CLLM_CHECK(t.ne.size() <= 2, path << ": tensor '" << t.name << "' has " << t.ne.size() << " dims (expected 1 or 2)");
      // A tensor the LLaMA forward has no place for (biases, experts, ...) would be used by
      // llama.cpp or means another architecture: refused, not dropped.
      const std::string name = hf_name(t.name);
      CLLM_CHECK(!name.empty(), path << ": tensor '" << t.name << "' is not part of the LLaMA forward cllm runs "
                                     << "(expected token_embd, output_norm, output and blk.N.{attn_norm, attn_q, "
                                        "attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight)");
      Entry e{&t, 0};
      if (name.find("q_proj") != std::string::npos) e.permute_heads = cfg_.num_heads;
      else if (name.find("k_proj") != std::string::npos) e.permute_heads = cfg_.num_kv_heads;
      tensors_.emplace(name, e);
    }
    std::vector<HeldTensor> held;
    for (const auto& [name, e] : tensors_) held.push_back({name, e.info->name});
    check_tensors(*this, cfg_, static_cast<int64_t>(tok_.tokens.size()), std::move(held));
  }

  const ModelConfig& config() const override { return cfg_; }
  const TokenizerSpec& tokenizer() const override { return tok_; }
  bool has_tensor(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::string source() const override { return file_.path(); }

  std::vector<int64_t> shape(const std::string& name) const override {
    const auto& ne = entry(name).info->ne;
    return std::vector<int64_t>(ne.rbegin(), ne.rend());
  }

 protected:
  void convert_f32(const std::string& name, const TensorRange& range, float* dst) const override {
    const Entry& e = entry(name);
    const Rect rect = resolve_range(range, shape(name), source(), name);
    const int64_t row_len = e.info->ne.size() == 1 ? 1 : e.info->ne[0];
    const uint8_t* base = file_.data() + e.info->offset;
    if (e.info->ne.size() == 1) {  // a 1-D tensor is one row; the range selects elements
      dequantize_row(e.info->dtype, base, rect.r0, rect.r1, dst);
      return;
    }
    if (e.permute_heads == 0) {
      convert_rows(base, e.info->dtype, row_len, rect, [](int64_t r) { return r; }, dst);
      return;
    }
    check_permute(name, e);
    convert_rows(base, e.info->dtype, row_len, rect, [&](int64_t r) { return stored_row(e, r); }, dst);
  }

  DType stored_dtype(const std::string& name) const override { return entry(name).info->dtype; }

  void copy_blocks(const std::string& name, int64_t row_begin, int64_t row_end, uint8_t* dst) const override {
    const Entry& e = entry(name);
    CLLM_CHECK(e.info->ne.size() == 2 && 0 <= row_begin && row_begin <= row_end && row_end <= e.info->ne[1],
               source() << ": rows [" << row_begin << ", " << row_end << ") of tensor '" << name << "' asked as blocks");
    check_permute(name, e);
    const uint64_t row_bytes = dtype_row_bytes(e.info->dtype, e.info->ne[0], name);
    const uint8_t* base = file_.data() + e.info->offset;
    for (int64_t r = row_begin; r < row_end; ++r)
      std::memcpy(dst + (r - row_begin) * row_bytes, base + stored_row(e, r) * row_bytes, row_bytes);
  }

 private:
  struct Entry {
    const GgufTensorInfo* info;
    int permute_heads;  // 0: rows stored as in HF; else the head count of the q/k permutation
  };
  // The stored row holding HF row r (q/k rows are permuted, see the top of the file).
  int64_t stored_row(const Entry& e, int64_t r) const {
    if (e.permute_heads == 0) return r;
    const int64_t hd = cfg_.head_dim, half = hd / 2;
    const int64_t h = r / hd, j = (r % hd) / half, i = r % half;
    return h * hd + 2 * i + j;
  }
  void check_permute(const std::string& name, const Entry& e) const {
    const int64_t hd = cfg_.head_dim;
    CLLM_CHECK(e.permute_heads == 0 || e.info->ne[1] == e.permute_heads * hd,
               source() << ": tensor '" << name << "' has " << e.info->ne[1] << " rows, expected " << e.permute_heads
                        << " heads x " << hd);
  }
  const Entry& entry(const std::string& name) const {
    const auto it = tensors_.find(name);
    CLLM_CHECK(it != tensors_.end(), source() << ": no tensor '" << name << "'");
    return it->second;
  }

  MappedFile file_;
  GgufFile g_;
  ModelConfig cfg_;
  TokenizerSpec tok_;
  std::unordered_map<std::string, Entry> tensors_;
};

}  // namespace

std::unique_ptr<CheckpointReader> open_gguf_checkpoint(const std::string& path) {
  return std::make_unique<GgufReader>(path);
}

}  // namespace cllm::detail
