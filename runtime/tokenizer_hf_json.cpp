// Reads an HF tokenizer.json whose model is byte-level BPE. Only the pre-tokenizers cllm can
// reproduce exactly are accepted; anything else is refused by name rather than approximated,
// since a silently different split gives different ids.
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "runtime/tokenizer_bpe.h"

namespace cllm {
namespace {

using nlohmann::json;

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
    CLLM_CHECK(!model.value("byte_fallback", false),
               path << ": BPE with byte_fallback (sentencepiece-style) is not supported; use tokenizer.model");
    CLLM_CHECK(j["normalizer"].is_null(), path << ": normalizer " << j["normalizer"].value("type", "?")
                                               << " is not supported (byte-level BPE tokenizers have none)");
    const json& dec = j["decoder"];
    CLLM_CHECK(dec.is_null() || dec.value("type", "") == "ByteLevel",
               path << ": decoder '" << dec.value("type", "") << "' is not supported (ByteLevel only)");

    BpeVocab v;
    auto place = [&](int64_t id, const std::string& text, TokenAttr attr) {
      CLLM_CHECK(id >= 0 && id < (1 << 24), path << ": token id " << id << " out of range");
      if (static_cast<size_t>(id) >= v.tokens.size()) {
        v.tokens.resize(id + 1);
        v.attrs.resize(id + 1, TokenAttr::Unused);
      }
      v.tokens[id] = text;
      v.attrs[id] = attr;
    };
    for (const auto& [text, id] : model.at("vocab").items()) place(id.get<int64_t>(), text, TokenAttr::Normal);
    for (const json& a : j.value("added_tokens", json::array())) {
      AddedToken t;
      t.id = a.at("id").get<int32_t>();
      t.content = a.at("content").get<std::string>();
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      place(t.id, t.content, a.value("special", false) ? TokenAttr::Control : TokenAttr::UserDefined);
      v.added.push_back(std::move(t));
    }
    for (size_t id = 0; id < v.tokens.size(); ++id) {
      CLLM_CHECK(v.attrs[id] != TokenAttr::Unused || !v.tokens[id].empty(), path << ": token id " << id << " is missing");
    }
    for (const json& m : model.at("merges")) {
      v.merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    }
    v.ignore_merges = model.value("ignore_merges", false);
    add_pre_tokenizer(j["pre_tokenizer"], path, v);
    return v;
  } catch (const json::exception& e) {
    CLLM_FAIL(path << ": malformed tokenizer.json: " << e.what());
  }
}

}  // namespace cllm
