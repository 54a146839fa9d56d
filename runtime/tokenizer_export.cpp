#include "runtime/tokenizer_export.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/check.h"
#include "runtime/tokenizer_bpe.h"
#include "runtime/unicode_text.h"

namespace cllm {
namespace {

using nlohmann::json;

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// The HF pre_tokenizer that performs the given stages.
json hf_pre_tokenizer(const std::vector<PreTokStage>& stages) {
  json seq = json::array();
  for (PreTokStage s : stages) {
    switch (s) {
      case PreTokStage::Gpt2Regex: seq.push_back(byte_level(true)); break;
      case PreTokStage::Llama3Regex:
        seq.push_back({{"type", "Split"},
                       {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                       {"behavior", "Isolated"},
                       {"invert", false}});
        break;
      case PreTokStage::DigitsIndividual: seq.push_back({{"type", "Digits"}, {"individual_digits", true}}); break;
      case PreTokStage::DigitsGrouped: seq.push_back({{"type", "Digits"}, {"individual_digits", false}}); break;
    }
  }
  // Byte-level mapping must come last; a regex stage that already split needs no second regex.
  if (seq.empty() || seq.back()["type"] != "ByteLevel") seq.push_back(byte_level(false));
  return seq.size() == 1 ? seq[0] : json{{"type", "Sequence"}, {"pretokenizers", seq}};
}

void write_file(const std::string& path, const json& j) {
  std::ofstream f(path);
  CLLM_CHECK(f, "cannot write " << path);
  f << j.dump(2) << "\n";
  CLLM_CHECK(f.good(), "error writing " << path);
}

}  // namespace

void write_hf_tokenizer_json(const TokenizerSpec& spec, const std::string& path) {
  CLLM_CHECK(spec.kind == TokenizerSpec::Kind::GgufBpe, "write_hf_tokenizer_json: only GGUF BPE vocabularies can be exported");
  bool ignore_merges = false;
  std::vector<PreTokStage> stages = gguf_pre_stages(spec.pre, &ignore_merges);

  json vocab = json::object();
  json added = json::array();
  std::unordered_set<std::string> seen;
  for (size_t id = 0; id < spec.tokens.size(); ++id) {
    const std::string& t = spec.tokens[id];
    CLLM_CHECK(seen.insert(t).second, "write_hf_tokenizer_json: token text '" << t << "' appears twice (id " << id << ")");
    vocab[t] = id;
    int type = id < spec.token_types.size() ? spec.token_types[id] : 1;
    if (type == 2 || type == 3 || type == 4 || type == 5) {
      added.push_back({{"id", id},
                       {"content", t},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", type != 4}});
    }
  }
  json merges = json::array();
  for (const std::string& m : spec.merges) {
    size_t sp = m.find(' ', 1);
    CLLM_CHECK(sp != std::string::npos, "write_hf_tokenizer_json: merge '" << m << "' is not 'left right'");
    merges.push_back({m.substr(0, sp), m.substr(sp + 1)});
  }

  json post = nullptr;
  if (spec.add_bos && spec.bos_id >= 0) {
    const std::string& bos = spec.tokens.at(spec.bos_id);
    json bos_piece = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
    post = {{"type", "TemplateProcessing"},
            {"single", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos_piece,
                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", {spec.bos_id}}, {"tokens", {bos}}}}}}};
  }

  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = hf_pre_tokenizer(stages);
  j["post_processor"] = post;
  j["decoder"] = byte_level(true);
  j["model"] = {{"type", "BPE"},           {"dropout", nullptr},  {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},       {"byte_fallback", false}, {"ignore_merges", ignore_merges},
                {"vocab", vocab},          {"merges", merges}};
  write_file(path, j);
}

void write_hf_tokenizer_config_json(const TokenizerSpec& spec, const std::string& path) {
  auto text = [&](int id) -> json {
    if (id < 0 || static_cast<size_t>(id) >= spec.tokens.size()) return nullptr;
    return spec.tokens[id];
  };
  json j;
  j["tokenizer_class"] = "PreTrainedTokenizerFast";
  j["bos_token"] = text(spec.bos_id);
  j["eos_token"] = text(spec.eos_id);
  j["add_bos_token"] = spec.add_bos;
  j["clean_up_tokenization_spaces"] = false;
  if (!spec.chat_template.empty()) j["chat_template"] = spec.chat_template;
  write_file(path, j);
}

TokenizerSpec make_byte_level_spec(int vocab_size) {
  CLLM_CHECK(vocab_size >= 258, "byte-level tokenizer needs vocab_size >= 258 (2 specials + 256 bytes), got " << vocab_size);
  TokenizerSpec s;
  s.kind = TokenizerSpec::Kind::GgufBpe;
  s.pre = "gpt2";
  s.tokens = {"<s>", "</s>"};
  s.token_types = {3, 3};
  for (int b = 0; b < 256; ++b) {
    std::string t;
    unicode::append_utf8(t, byte_to_unicode(static_cast<uint8_t>(b)));
    s.tokens.push_back(t);
    s.token_types.push_back(1);
  }
  for (int id = 258; id < vocab_size; ++id) {
    s.tokens.push_back("<|unused_" + std::to_string(id - 258) + "|>");
    s.token_types.push_back(3);
  }
  s.bos_id = 0;
  s.eos_id = 1;
  s.add_bos = true;
  return s;
}

}  // namespace cllm
