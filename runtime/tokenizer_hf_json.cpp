// Reads an HF tokenizer.json whose model is BPE: byte-level (GPT-2 family), or a sentencepiece
// model converted by transformers (byte_fallback; LLaMA-2, Mistral, TinyLlama). Only the
// normalizers and pre-tokenizers cllm can reproduce exactly are accepted; anything else is
// refused by name rather than approximated, since a silently different split gives different ids.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "runtime/tokenizer_bpe.h"

namespace cllm {
namespace {

using nlohmann::json;

// obj[key] of a const JSON value, or null when obj is no object or has no such member (const
// operator[] on a missing key is undefined behaviour in nlohmann::json; found by fuzzing).
const json& member(const json& obj, const char* key) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  const auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

void add_pre_tokenizer(const json& pt, const std::string& path, BpeVocab& v) {
  if (pt.is_null()) return;
  const std::string type = pt.value("type", "");
  if (type == "Sequence") {
    for (const json& sub : pt.at("pretokenizers")) add_pre_tokenizer(sub, path, v);
  } else if (type == "ByteLevel") {
    v.add_prefix_space = pt.value("add_prefix_space", false);
    if (pt.value("use_regex", true)) v.pre.push_back(PreTokStage::Gpt2Regex);
  } else if (type == "Digits") {
    v.pre.push_back(pt.value("individual_digits", false) ? PreTokStage::DigitsIndividual : PreTokStage::DigitsGrouped);
  } else if (type == "Split") {
    const json& pat = pt.at("pattern");
    CLLM_CHECK(pat.contains("Regex"), path << ": Split pre-tokenizer with a plain string pattern is not supported");
    PreTokStage stage;
    CLLM_CHECK(pre_tok_stage_from_regex(pat["Regex"].get<std::string>(), &stage),
               path << ": unsupported Split regex " << pat["Regex"] << " (cllm implements the GPT-2 and LLaMA-3 ones)");
    CLLM_CHECK(pt.value("behavior", "") == "Isolated" && !pt.value("invert", false),
               path << ": Split pre-tokenizer must be behavior=Isolated, invert=false");
    v.pre.push_back(stage);
  } else {
    CLLM_FAIL(path << ": unsupported pre_tokenizer type '" << type
                   << "' (supported: ByteLevel, Digits, Split with the GPT-2/LLaMA-3 regex, Sequence)");
  }
}

constexpr const char* kSpmSpace = "\xE2\x96\x81";  // "▁"

// The two ways transformers writes a sentencepiece model's space handling:
//   legacy:  normalizer Sequence[Prepend "▁", Replace " " -> "▁"], no pre-tokenizer;
//   current: no normalizer, pre_tokenizer Metaspace(replacement "▁", prepend_scheme, split).
void read_spm_spaces(const json& j, const std::string& path, BpeVocab::Spm& spm) {
  const json& norm = member(j, "normalizer");
  const json& pre = member(j, "pre_tokenizer");
  if (!norm.is_null()) {
    const json& steps = member(norm, "normalizers");
    const bool legacy = norm.value("type", "") == "Sequence" && steps.is_array() && steps.size() == 2 &&
                        steps[0].value("type", "") == "Prepend" && steps[0].value("prepend", "") == kSpmSpace &&
                        steps[1].value("type", "") == "Replace" &&
                        member(steps[1], "pattern").value("String", "") == " " &&
                        steps[1].value("content", "") == kSpmSpace;
    CLLM_CHECK(legacy && pre.is_null(), path << ": normalizer " << norm.dump().substr(0, 160)
                                             << " is not supported for a byte_fallback BPE (accepted: "
                                                "Prepend \"\u2581\" + Replace \" \" -> \"\u2581\", or a Metaspace pre-tokenizer)");
    spm.prepend = BpeVocab::Spm::Prepend::Every;
    return;
  }
  CLLM_CHECK(pre.is_object() && pre.value("type", "") == "Metaspace" && pre.value("replacement", "") == kSpmSpace,
             path << ": pre_tokenizer " << pre.dump().substr(0, 160)
                  << " is not supported for a byte_fallback BPE (accepted: Metaspace with replacement \"\u2581\")");
  std::string scheme = pre.value("prepend_scheme", "");
  if (scheme.empty()) scheme = pre.value("add_prefix_space", true) ? "always" : "never";  // tokenizers < 0.14
  CLLM_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
             path << ": Metaspace prepend_scheme '" << scheme << "' is not supported (always, first, never)");
  spm.prepend = scheme == "always" ? BpeVocab::Spm::Prepend::Always
                : scheme == "first" ? BpeVocab::Spm::Prepend::First
                                    : BpeVocab::Spm::Prepend::Never;
  spm.split = pre.value("split", true);
}

// Decoders that undo the space handling above and byte fallback; anything else would change the
// decoded text.
void check_spm_decoder(const json& dec, const std::string& path) {
  if (dec.is_null()) return;
  const std::string type = dec.value("type", "");
  if (type == "Sequence") {
    for (const json& d : dec.at("decoders")) check_spm_decoder(d, path);
    return;
  }
  CLLM_CHECK(type == "Replace" || type == "ByteFallback" || type == "Fuse" || type == "Strip" || type == "Metaspace",
             path << ": decoder '" << type << "' is not supported for a byte_fallback BPE "
                  << "(Replace, ByteFallback, Fuse, Strip, Metaspace)");
}

}  // namespace

BpeVocab load_hf_bpe_vocab(const std::string& path) {
  std::ifstream f(path);
  CLLM_CHECK(f, "cannot open tokenizer file " << path);
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    CLLM_FAIL(path << ": invalid JSON: " << e.what());
  }
  try {
    const json& model = j.at("model");
    CLLM_CHECK(model.value("type", "BPE") == "BPE",
               path << ": model type '" << model.value("type", "") << "' is not supported (byte-level BPE only)");
    // BPE settings whose effect cllm does not reproduce: refused unless at their neutral values.
    auto neutral = [&](const char* key, const json& ok) {
      CLLM_CHECK(!model.contains(key) || model[key].is_null() || model[key] == ok,
                 path << ": model." << key << " = " << model[key].dump() << " is not supported (only " << ok.dump()
                      << " or null)");
    };
    neutral("dropout", 0.0);
    neutral("continuing_subword_prefix", "");
    neutral("end_of_word_suffix", "");
    BpeVocab v;
    v.spm.on = model.value("byte_fallback", false);
    if (v.spm.on) {
      read_spm_spaces(j, path, v.spm);
      check_spm_decoder(j["decoder"], path);
      CLLM_CHECK(!model.value("ignore_merges", false), path << ": ignore_merges with byte_fallback is not supported");
    } else {
      CLLM_CHECK(j["normalizer"].is_null(), path << ": normalizer " << j["normalizer"].value("type", "?")
                                                 << " is not supported (byte-level BPE tokenizers have none)");
      const json& dec = j["decoder"];
      CLLM_CHECK(dec.is_null() || dec.value("type", "") == "ByteLevel",
                 path << ": decoder '" << dec.value("type", "") << "' is not supported (ByteLevel only)");
    }
    // A token's id as the file gives it: an integer in [0, 2^24) (a float or a huge number would
    // not convert to an integer soundly; found by fuzzing).
    auto id_of = [&](const json& id, const std::string& text) {
      CLLM_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (1 << 24),
                 path << ": token '" << text.substr(0, 40) << "' has id " << id.dump() << ", expected an integer in 0.."
                      << (1 << 24) - 1);
      return static_cast<int32_t>(id.get<int64_t>());
    };
    auto place = [&](int32_t id, const std::string& text, TokenAttr attr) {
      if (static_cast<size_t>(id) >= v.tokens.size()) {
        v.tokens.resize(id + 1);
        v.attrs.resize(id + 1, TokenAttr::Unused);
      }
      v.tokens[id] = text;
      v.attrs[id] = attr;
    };
    for (const auto& [text, id] : model.at("vocab").items()) place(id_of(id, text), text, TokenAttr::Normal);
    for (const json& a : j.value("added_tokens", json::array())) {
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      t.id = id_of(a.at("id"), t.content);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      CLLM_CHECK(!a.value("single_word", false),
                 path << ": added token '" << t.content << "' has single_word = true, which is not supported");
      place(t.id, t.content, a.value("special", false) ? TokenAttr::Control : TokenAttr::UserDefined);
      v.added.push_back(std::move(t));
    }
    for (size_t id = 0; id < v.tokens.size(); ++id) {
      CLLM_CHECK(v.attrs[id] != TokenAttr::Unused || !v.tokens[id].empty(), path << ": token id " << id << " is missing");
    }
    const json& merges = model.at("merges");
    CLLM_CHECK(merges.is_array(), path << ": model.merges must be a list of \"left right\" strings or [left, right] pairs");
    for (const json& m : merges) {
      CLLM_CHECK(m.is_string() || (m.is_array() && m.size() == 2),
                 path << ": merge " << m.dump() << " is not a \"left right\" string or a [left, right] pair");
      v.merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    }
    v.ignore_merges = model.value("ignore_merges", false);
    if (v.spm.on) {
      if (model.contains("unk_token") && model["unk_token"].is_string()) {
        const auto it = std::find(v.tokens.begin(), v.tokens.end(), model["unk_token"].get<std::string>());
        CLLM_CHECK(it != v.tokens.end(), path << ": unk_token " << model["unk_token"] << " is not in the vocab");
        v.spm.unk_id = static_cast<int32_t>(it - v.tokens.begin());
      }
      CLLM_CHECK(model.value("fuse_unk", true), path << ": byte_fallback BPE without fuse_unk is not supported");
    } else {
      add_pre_tokenizer(j["pre_tokenizer"], path, v);
    }
    return v;
  } catch (const json::exception& e) {
    CLLM_FAIL(path << ": malformed tokenizer.json: " << e.what());
  }
}

}  // namespace cllm
