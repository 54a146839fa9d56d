// CheckpointReader over a Hugging Face directory: config.json (+ generation_config.json),
// model.safetensors or model.safetensors.index.json + shards (all mmapped), and the tokenizer
// files (tokenizer.json or tokenizer.model, tokenizer_config.json).
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/check.h"
#include "loaders/checkpoint_common.h"
#include "loaders/hf_config.h"
#include "loaders/mapped_file.h"
#include "loaders/safetensors.h"

namespace cllm::detail {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const std::string& path) {
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    CLLM_FAIL(path << ": not valid JSON: " << e.what());
  }
}

// Walks the top-level fields of a protobuf message (wire format): calls on_field(number, wire type,
// bytes of a length-delimited field). Loaders read the sentencepiece ModelProto this way so they need
// not link sentencepiece.
void walk_protobuf(const uint8_t* p, size_t size, const std::string& where,
                   const std::function<void(uint64_t, int, const uint8_t*, size_t)>& on_field) {
  size_t pos = 0;
  const auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      CLLM_CHECK(pos < size, where << ": truncated protobuf varint at byte " << pos);
      const uint8_t b = p[pos++];
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    CLLM_FAIL(where << ": malformed protobuf varint at byte " << pos);
  };
  while (pos < size) {
    const uint64_t tag = varint();
    uint64_t skip = 0;
    switch (tag & 7) {
      case 0: varint(); break;
      case 1: skip = 8; break;
      case 2: skip = varint(); break;
      case 5: skip = 4; break;
      default: CLLM_FAIL(where << ": not a sentencepiece model (protobuf wire type " << (tag & 7) << " at byte " << pos << ")");
    }
    CLLM_CHECK(skip <= size - pos, where << ": truncated protobuf field at byte " << pos);
    on_field(tag >> 3, static_cast<int>(tag & 7), p + pos, static_cast<size_t>(skip));
    pos += skip;
  }
}

// A sentencepiece precompiled_charsmap (NormalizerSpec field 2): u32 trie size, a Darts double-array
// trie of that many bytes, then NUL-terminated replacement strings. sentencepiece trusts it and reads
// out of bounds on a damaged one, so every trie node reachable from the root must keep its children
// (256 units from base) and its leaf values (string offsets, each with a NUL after it) in bounds.
void check_precompiled_charsmap(const uint8_t* blob, size_t size, const std::string& where) {
  if (size == 0) return;  // no normaliser
  CLLM_CHECK(size >= 4, where << ": precompiled_charsmap of " << size << " bytes is shorter than its header");
  uint32_t trie_bytes = 0;
  std::memcpy(&trie_bytes, blob, 4);
  CLLM_CHECK(trie_bytes >= 4 && trie_bytes % 4 == 0 && trie_bytes <= size - 4,
             where << ": precompiled_charsmap trie of " << trie_bytes << " bytes does not fit its " << size << " bytes");
  const size_t units = trie_bytes / 4;
  const uint8_t* strings = blob + 4 + trie_bytes;
  const size_t strings_size = size - 4 - trie_bytes;
  auto unit = [&](size_t i) {
    uint32_t u = 0;
    std::memcpy(&u, blob + 4 + 4 * i, 4);
    return u;
  };
  // Darts-clone's unit layout: offset in bits 10.. (shifted by 8 more when bit 9 is set), leaf flag
  // bit 8, label in bits 0..7 and 31, value in bits 0..30 of a leaf unit.
  auto base_of = [&](size_t i) { const uint32_t u = unit(i); return i ^ ((u >> 10) << ((u & (1u << 9)) >> 6)); };
  // Depth-first over the nodes reachable from the root (unit 0), each once.
  std::vector<bool> seen(units, false);
  std::vector<size_t> unvisited = {0};
  seen[0] = true;
  while (!unvisited.empty()) {
    const size_t node = unvisited.back();
    unvisited.pop_back();
    const size_t base = base_of(node);
    CLLM_CHECK((base | 0xFF) < units, where << ": precompiled_charsmap trie node " << node << " points past the trie");
    if (unit(node) & (1u << 8)) {  // has a leaf: its value is at base
      const uint32_t value = unit(base) & 0x7FFFFFFFu;
      CLLM_CHECK(value < strings_size && std::memchr(strings + value, 0, strings_size - value) != nullptr,
                 where << ": precompiled_charsmap trie value " << value << " is outside its " << strings_size
                       << " bytes of strings");
    }
    for (uint32_t c = 1; c < 256; ++c) {  // children: the units whose label is their byte
      const size_t child = base ^ c;
      if ((unit(child) & ((1u << 31) | 0xFFu)) == c && !seen[child]) {
        seen[child] = true;
        unvisited.push_back(child);
      }
    }
  }
}

// Number of pieces in a sentencepiece ModelProto (top-level field 1, repeated SentencePiece), after
// checking its normaliser tables (fields 3 and 5, NormalizerSpec: field 2 the precompiled charsmap).
int64_t count_spm_pieces(const std::string& path) {
  const MappedFile f(path);
  int64_t pieces = 0;
  walk_protobuf(f.data(), f.size(), path, [&](uint64_t field, int wire, const uint8_t* p, size_t n) {
    if (wire != 2) return;
    if (field == 1) ++pieces;
    if (field == 3 || field == 5) {
      const std::string spec = path + (field == 3 ? ": normalizer_spec" : ": denormalizer_spec");
      walk_protobuf(p, n, spec, [&](uint64_t f2, int w2, const uint8_t* q, size_t m) {
        if (f2 == 2 && w2 == 2) check_precompiled_charsmap(q, m, spec);
      });
    }
  });
  return pieces;
}

// "<s>" or {"content": "<s>", ...} (tokenizer_config.json's two spellings); "" if null/absent.
std::string special_token_text(const json& cfg, const char* key, const std::string& source) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  CLLM_CHECK(v.is_object() && v.contains("content") && v["content"].is_string(),
             source << ": field '" << key << "' must be a string or {\"content\": ...}, got " << v.dump());
  return v["content"].get<std::string>();
}

// tokenizer.json's post-processors: the one named, or those inside a Sequence.
std::vector<json> post_processors(const json& tj) {
  const json pp = tj.value("post_processor", json());
  if (pp.is_object() && pp.value("type", "") == "Sequence" && pp.contains("processors") && pp["processors"].is_array())
    return pp["processors"].get<std::vector<json>>();
  return {pp};
}

// The single-sequence templates of tokenizer.json's TemplateProcessing post-processors:
// e.g. [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}].
std::vector<json> single_templates(const json& tj) {
  std::vector<json> out;
  for (const json& pp : post_processors(tj)) {
    if (!pp.is_object() || pp.value("type", "") != "TemplateProcessing") continue;
    const json single = pp.value("single", json::array());
    if (single.is_array()) out.push_back(single);
  }
  return out;
}

// Whether tokenizer.json's post-processor puts a special token first in single-sequence mode.
// One after the text (an appended EOS) is refused: cllm's prompts end in their last text token.
bool post_processor_adds_bos(const json& tj, const std::string& source) {
  // BertProcessing / RobertaProcessing add CLS and SEP around the text: not a decoder's prompt.
  for (const json& p : post_processors(tj)) {
    const std::string type = p.is_object() ? p.value("type", std::string()) : std::string();
    CLLM_CHECK(p.is_null() || type == "TemplateProcessing" || type == "ByteLevel" || type == "Sequence",
               source << ": post_processor '" << type << "' is not supported (TemplateProcessing, ByteLevel or a "
                                                             "Sequence of them)");
  }
  bool bos = false;
  for (const json& single : single_templates(tj)) {
    bool text_seen = false;
    for (const json& piece : single) {
      const bool special = piece.is_object() && piece.contains("SpecialToken");
      if (special && !text_seen) bos = true;
      CLLM_CHECK(!(special && text_seen), source << ": post_processor appends special token "
                                                 << piece["SpecialToken"].value("id", std::string("?"))
                                                 << " after the text; appending tokens to a prompt is not supported");
      text_seen |= piece.is_object() && piece.contains("Sequence");
    }
  }
  return bos;
}

TokenizerSpec load_tokenizer(const fs::path& dir, const ModelConfig& cfg, int64_t* vocab) {
  TokenizerSpec t;
  t.bos_id = cfg.bos_token_id;
  t.eos_id = cfg.eos_token_ids.empty() ? -1 : cfg.eos_token_ids[0];
  *vocab = 0;
  std::unordered_map<std::string, int> ids;  // token text -> id, from tokenizer.json
  bool default_add_bos = false;
  const fs::path tj_path = dir / "tokenizer.json", spm_path = dir / "tokenizer.model";
  if (fs::exists(tj_path)) {
    // With both files (the LLaMA-2 / Mistral / TinyLlama layout) transformers' AutoTokenizer
    // loads the fast tokenizer, tokenizer.json; so does cllm.
    t.kind = TokenizerSpec::Kind::HfJson;
    t.path = tj_path.string();
    if (fs::exists(spm_path))
      t.note = "tokenizer.json (the fast tokenizer transformers loads); tokenizer.model beside it is not used";
    const json tj = read_json(t.path);
    CLLM_CHECK(tj.is_object(), t.path << ": top level is not a JSON object");
    const json vocab_map = tj.contains("model") && tj["model"].is_object() ? tj["model"].value("vocab", json()) : json();
    if (vocab_map.is_object())
      for (auto it = vocab_map.begin(); it != vocab_map.end(); ++it)
        if (it->is_number_integer()) ids[it.key()] = it->get<int>();
    if (tj.contains("added_tokens") && tj["added_tokens"].is_array())
      for (const auto& a : tj["added_tokens"])
        if (a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") && a["content"].is_string())
          ids[a["content"].get<std::string>()] = a["id"].get<int>();
    for (const auto& [text, id] : ids) *vocab = std::max<int64_t>(*vocab, int64_t{id} + 1);
    default_add_bos = post_processor_adds_bos(tj, t.path);
  } else if (fs::exists(spm_path)) {
    t.kind = TokenizerSpec::Kind::SentencePieceModel;
    t.path = spm_path.string();
    *vocab = count_spm_pieces(t.path);
    default_add_bos = true;  // LlamaTokenizer's default
  } else {
    t.path = dir.string();  // no tokenizer (Kind::None): make_tokenizer's refusal names the directory
  }
  t.add_bos = default_add_bos;

  const fs::path tc_path = dir / "tokenizer_config.json";
  if (!fs::exists(tc_path)) return t;
  const std::string src = tc_path.string();
  const json tc = read_json(src);
  CLLM_CHECK(tc.is_object(), src << ": top level is not a JSON object");
  if (tc.contains("add_bos_token") && !tc["add_bos_token"].is_null()) {
    CLLM_CHECK(tc["add_bos_token"].is_boolean(), src << ": field 'add_bos_token' must be true/false");
    t.add_bos = tc["add_bos_token"].get<bool>();
  }
  // transformers appends EOS to every encoded text with add_eos_token true (some fine-tunes' files).
  if (tc.contains("add_eos_token") && !tc["add_eos_token"].is_null()) {
    CLLM_CHECK(tc["add_eos_token"].is_boolean(), src << ": field 'add_eos_token' must be true/false");
    CLLM_CHECK(!tc["add_eos_token"].get<bool>(), src << ": field 'add_eos_token' = true is not supported (prompts "
                                                        "would end in EOS, which cllm does not append)");
  }
  // transformers' LlamaTokenizer rebuilds a sentencepiece tokenizer.json's space handling from
  // add_prefix_space (default true) and legacy (default false): prepend_scheme always, first or never.
  const std::string cls = tc.contains("tokenizer_class") && tc["tokenizer_class"].is_string()
                              ? tc["tokenizer_class"].get<std::string>() : "";
  if (t.kind == TokenizerSpec::Kind::HfJson && (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast")) {
    const auto flag = [&](const char* key, bool fallback) {
      if (!tc.contains(key) || tc[key].is_null()) return fallback;
      CLLM_CHECK(tc[key].is_boolean(), src << ": field '" << key << "' must be true/false");
      return tc[key].get<bool>();
    };
    t.spm_prepend = !flag("add_prefix_space", true) ? "never" : flag("legacy", false) ? "always" : "first";
  }
  if (tc.contains("chat_template") && !tc["chat_template"].is_null()) {
    const json& ct = tc["chat_template"];
    if (ct.is_string()) {
      t.chat_template = ct.get<std::string>();
    } else {
      CLLM_CHECK(ct.is_array(), src << ": field 'chat_template' must be a string or a list of {name, template}");
      for (const auto& e : ct)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
          t.chat_template = e["template"].get<std::string>();
      CLLM_CHECK(!t.chat_template.empty(), src << ": field 'chat_template' list has no entry named \"default\"");
    }
  }
  // Token strings resolve to ids only through tokenizer.json; sentencepiece keeps config.json's ids.
  for (auto [key, id] : {std::pair{"bos_token", &t.bos_id}, std::pair{"eos_token", &t.eos_id}}) {
    const std::string text = special_token_text(tc, key, src);
    if (text.empty() || ids.empty()) continue;
    const auto it = ids.find(text);
    CLLM_CHECK(it != ids.end(), src << ": " << key << " '" << text << "' is not in " << t.path);
    *id = it->second;
  }
  return t;
}

class HfReader final : public CheckpointReader {
 public:
  explicit HfReader(const std::string& dir) : dir_(dir) {
    cfg_ = load_hf_config(dir);
    const fs::path single = fs::path(dir) / "model.safetensors", index = fs::path(dir) / "model.safetensors.index.json";
    if (fs::exists(single)) {
      add_shard(single.string());
    } else {
      CLLM_CHECK(fs::exists(index), dir << ": no model.safetensors or model.safetensors.index.json");
      load_index(index.string());
    }
    // tie_word_embeddings with a distinct lm_head.weight in the file: transformers loads the
    // file's head (and warns), so cllm does the same rather than dropping it.
    if (cfg_.tie_word_embeddings && tensors_.count("lm_head.weight")) {
      cfg_.tie_word_embeddings = false;
      std::cerr << "cllm: warning: " << dir << ": config.json has tie_word_embeddings = true but the checkpoint "
                << "holds its own lm_head.weight; using lm_head.weight, as transformers does\n";
    }
    int64_t tok_vocab = 0;
    try {
      tok_ = load_tokenizer(dir, cfg_, &tok_vocab);
    } catch (const json::exception& e) {  // a field of an unexpected JSON type
      CLLM_FAIL(dir << ": malformed tokenizer.json or tokenizer_config.json: " << e.what());
    }
    std::vector<HeldTensor> held;
    for (const auto& kv : tensors_) held.push_back({kv.first, kv.first});
    check_tensors(*this, cfg_, tok_vocab, std::move(held));
  }

  const ModelConfig& config() const override { return cfg_; }
  const TokenizerSpec& tokenizer() const override { return tok_; }
  bool has_tensor(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::string source() const override { return dir_; }
  std::vector<int64_t> shape(const std::string& name) const override { return entry(name).info.shape; }

 protected:
  void convert_f32(const std::string& name, const TensorRange& range, float* dst) const override {
    const Entry& e = entry(name);
    const Rect rect = resolve_range(range, e.info.shape, shards_[e.shard].path(), name);
    const uint8_t* base = shards_[e.shard].data() + e.info.begin;
    if (e.info.shape.size() <= 1) {  // a 1-D tensor is one row; the range selects elements
      dequantize_row(e.info.dtype, base, rect.r0, rect.r1, dst);
      return;
    }
    int64_t row_len = 1;
    for (size_t d = 1; d < e.info.shape.size(); ++d) row_len *= e.info.shape[d];
    convert_rows(base, e.info.dtype, row_len, rect, [](int64_t r) { return r; }, dst);
  }

 private:
  struct Entry {
    size_t shard;
    SafetensorsTensor info;
  };

  const Entry& entry(const std::string& name) const {
    const auto it = tensors_.find(name);
    CLLM_CHECK(it != tensors_.end(), dir_ << ": no tensor '" << name << "'");
    return it->second;
  }

  void add_shard(const std::string& path) {
    shards_.emplace_back(path);
    const MappedFile& f = shards_.back();
    for (auto& t : parse_safetensors(f.data(), f.size(), path).tensors) {
      const std::string name = t.name;
      const auto [it, inserted] = tensors_.emplace(name, Entry{shards_.size() - 1, std::move(t)});
      CLLM_CHECK(inserted, path << ": tensor '" << name << "' also appears in " << shards_[it->second.shard].path());
    }
  }

  void load_index(const std::string& index) {
    const json j = read_json(index);
    CLLM_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
               index << ": missing object field 'weight_map'");
    std::unordered_map<std::string, size_t> shard_of_file;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      CLLM_CHECK(it->is_string(), index << ": weight_map entry '" << it.key() << "' is not a file name");
      const std::string file = it->get<std::string>();
      CLLM_CHECK(file.find('/') == std::string::npos && file != ".." && !file.empty(),
                 index << ": weight_map entry '" << it.key() << "' names '" << file << "', not a file in " << dir_);
      if (!shard_of_file.count(file)) {
        const std::string path = (fs::path(dir_) / file).string();
        CLLM_CHECK(fs::exists(path), index << ": shard " << file << " (for tensor '" << it.key() << "') does not exist");
        add_shard(path);
        shard_of_file[file] = shards_.size() - 1;
      }
      const auto t = tensors_.find(it.key());
      CLLM_CHECK(t != tensors_.end() && t->second.shard == shard_of_file[file],
                 index << ": tensor '" << it.key() << "' is not in its shard " << file);
    }
  }

  std::string dir_;
  ModelConfig cfg_;
  TokenizerSpec tok_;
  std::vector<MappedFile> shards_;
  std::unordered_map<std::string, Entry> tensors_;
};

}  // namespace

std::unique_ptr<CheckpointReader> open_hf_checkpoint(const std::string& dir) {
  return std::make_unique<HfReader>(dir);
}

}  // namespace cllm::detail
