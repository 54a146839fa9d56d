// Tokenizer tests against HF `tokenizers` / python sentencepiece, through the fixtures that
// tests/reference/make_tokenizer_fixtures.py writes: the real SmolLM2 GGUF vocabulary, tiny
// GPT-2- and LLaMA-3-style byte-level BPEs, and a tiny sentencepiece model, each on the same
// ~270 strings. Also the llama.cpp SPM algorithm, streaming decode, export and the byte-level spec.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "loaders/checkpoint.h"
#include "runtime/model.h"
#include "runtime/random_model.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_bpe.h"
#include "runtime/tokenizer_export.h"
#include "runtime/unicode_text.h"

namespace fs = std::filesystem;
using namespace cllm;
using nlohmann::json;

namespace {

const std::string kFixtures = std::string(CLLM_SOURCE_DIR) + "/tests/fixtures/tokenizer/";
const std::string kModel = std::string(CLLM_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

json read_json(const std::string& name) {
  std::ifstream f(kFixtures + name);
  if (!f) throw std::runtime_error("missing fixture " + kFixtures + name);
  return json::parse(f);
}

const std::vector<std::string>& strings() {
  static const std::vector<std::string> s = read_json("strings.json").get<std::vector<std::string>>();
  return s;
}

// Loud, not skipped: the default model is part of the test setup (launch/fetch_model.sh).
const TokenizerSpec& smollm2_spec() {
  static const TokenizerSpec spec = [] {
    if (!fs::exists(kModel)) throw std::runtime_error("model file missing: " + kModel + " (run launch/fetch_model.sh)");
    return open_checkpoint(kModel)->tokenizer();
  }();
  return spec;
}

const Tokenizer& smollm2() {
  static const std::unique_ptr<Tokenizer> tok = make_tokenizer(smollm2_spec());
  return *tok;
}

std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder d(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = d.push(id);
    EXPECT_EQ(unicode::to_valid_utf8(piece), piece) << "streamed piece is not valid UTF-8";
    out += piece;
  }
  return out + d.flush();
}

// Compares ids (and decode, and streaming decode) with the fixture on every string that has
// expected ids; reports the first few mismatches by index and text.
void expect_matches_fixture(const Tokenizer& tok, const json& fx) {
  const auto& s = strings();
  ASSERT_EQ(fx["ids"].size(), s.size());
  int checked = 0, bad = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (fx["ids"][i].is_null()) continue;
    ++checked;
    const auto want = fx["ids"][i].get<std::vector<int32_t>>();
    const auto got = tok.encode(s[i], false);
    if (got != want && ++bad <= 5) ADD_FAILURE() << "ids differ on string " << i << ": '" << s[i] << "'";
    const std::string want_text = fx["decoded"][i].get<std::string>();
    EXPECT_EQ(tok.decode(want), want_text) << "decode differs on string " << i;
    EXPECT_EQ(stream_all(tok, want), want_text) << "streaming decode differs on string " << i;
  }
  EXPECT_EQ(bad, 0) << bad << " of " << checked << " strings encode differently";
  EXPECT_GT(checked, 200);
}

TokenizerSpec hf_json_spec(const std::string& path) {
  TokenizerSpec spec;
  spec.kind = TokenizerSpec::Kind::HfJson;
  spec.path = path;
  return spec;
}

template <typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    return;
  }
  ADD_FAILURE() << "no cllm::Error (expected one containing '" << needle << "')";
}

TEST(TokenizerSmolLM2, IdsMatchHuggingFace) { expect_matches_fixture(smollm2(), read_json("smollm2_ids.json")); }

TEST(TokenizerSmolLM2, RoundTripAndSpecials) {
  const Tokenizer& tok = smollm2();
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.token_id("<|im_start|>"), 1);
  EXPECT_EQ(tok.token_id("Ġthe"), tok.encode(" the", false).at(0));
  EXPECT_EQ(tok.token_id("no such token"), -1);
  EXPECT_EQ(tok.encode("<|im_start|>user", false).front(), 1);
  EXPECT_EQ(tok.encode("hi", true).front(), tok.bos_id());
  EXPECT_EQ(tok.token_bytes(tok.token_id("<|im_end|>")), "");
  EXPECT_EQ(tok.token_bytes(tok.token_id("Ġthe")), " the");
  for (const std::string& s : {std::string("plain text"), std::string("naïve café 😀 中文"), std::string("  \t\n x  ")}) {
    EXPECT_EQ(tok.decode(tok.encode(s, false)), s);
  }
  expect_error([&] { tok.token_bytes(tok.vocab_size()); }, "out of range");
}

// Encoding work is linear in the text: merge-table lookups per byte, counted, not timed (a
// time bound races with the other tests that ctest runs beside it). A fresh tokenizer has nothing
// cached, so every piece of the ~12 KB of varied text goes through BPE; one long piece (a 4 KB
// and an 8 KB run of letters, which the pre-tokenizer keeps whole) shows the growth with length.
TEST(TokenizerSmolLM2, EncodingWorkIsLinearInTheText) {
  auto lookups_for = [](const std::string& text) {
    auto tok = make_tokenizer(smollm2_spec());  // fresh: nothing cached yet
    const uint64_t before = bpe_pair_lookups();
    EXPECT_FALSE(tok->encode(text, false).empty());
    return static_cast<double>(bpe_pair_lookups() - before);
  };
  std::string text;
  for (const auto& s : strings()) text += s;
  EXPECT_LE(lookups_for(text), 3.0 * text.size());
  std::string run4k, run8k;
  for (int i = 0; i < 1024; ++i) run4k += "abcd";
  run8k = run4k + run4k;
  const double l4 = lookups_for(run4k), l8 = lookups_for(run8k);
  EXPECT_GT(l4, 0);
  EXPECT_LE(l4, 3.0 * run4k.size());
  EXPECT_LE(l8, 2.2 * l4) << "doubling a piece more than doubles the BPE work";
}

// A model whose embedding has more rows than its tokenizer has tokens (checkpoints pad it): the
// padded ids it may emit decode as no text, as HF tokenizers skip unknown ids; known ids are as before.
TEST(TokenizerSmolLM2, PaddedModelVocabDecodesAsNoText) {
  const Tokenizer& plain = smollm2();
  const int n = plain.vocab_size();
  const auto padded = make_tokenizer(smollm2_spec(), n + 64);
  EXPECT_EQ(padded->vocab_size(), n + 64);
  const std::vector<int32_t> ids = plain.encode("Hello, world", false);
  EXPECT_EQ(padded->encode("Hello, world", false), ids);
  std::vector<int32_t> with_padding = ids;
  with_padding.insert(with_padding.begin() + 1, n + 5);
  with_padding.push_back(n + 63);
  EXPECT_EQ(padded->decode(with_padding), plain.decode(ids));
  EXPECT_EQ(padded->token_bytes(n), "");
  EXPECT_EQ(padded->token_bytes(ids[0]), plain.token_bytes(ids[0]));
  EXPECT_THROW(padded->token_bytes(n + 64), std::exception);  // past the model's rows: a bug, still refused
  EXPECT_EQ(make_tokenizer(smollm2_spec(), n)->vocab_size(), n);  // no padding: the tokenizer itself
}

TEST(TokenizerStream, HoldsBackIncompleteUtf8) {
  const Tokenizer& tok = smollm2();
  // A 4-byte emoji becomes several byte-level tokens; nothing may come out mid-character.
  auto ids = tok.encode("a😀", false);
  ASSERT_GE(ids.size(), 2u);
  StreamDecoder d(tok);
  std::string out;
  for (size_t i = 0; i + 1 < ids.size(); ++i) out += d.push(ids[i]);
  EXPECT_EQ(out.find("\xF0"), std::string::npos);
  out += d.push(ids.back());
  EXPECT_EQ(out + d.flush(), "a😀");
  // A dangling lead byte is held back, then flushed as U+FFFD.
  StreamDecoder d2(tok);
  int32_t lead = tok.token_id("ð");  // byte 0xF0 in GPT-2's byte-level spelling
  ASSERT_GE(lead, 0);
  EXPECT_EQ(d2.push(lead), "");
  EXPECT_EQ(d2.flush(), "\xEF\xBF\xBD");
}

TEST(TokenizerTinyBpe, Gpt2RegexMatchesHuggingFace) {
  auto tok = make_tokenizer(hf_json_spec(kFixtures + "gpt2_tiny.json"));
  expect_matches_fixture(*tok, read_json("tiny_ids.json")["gpt2"]);
  EXPECT_GE(tok->token_id("<mask>"), 0);
  EXPECT_EQ(tok->token_bytes(tok->token_id("<mask>")), "<mask>");  // non-special: kept by decode
}

TEST(TokenizerTinyBpe, Llama3RegexMatchesHuggingFace) {
  auto tok = make_tokenizer(hf_json_spec(kFixtures + "llama3_tiny.json"));
  expect_matches_fixture(*tok, read_json("tiny_ids.json")["llama3"]);
}

TEST(TokenizerHfJson, RefusesWhatItCannotReproduce) {
  fs::path dir = fs::temp_directory_path() / ("cllm_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  json j = read_json("gpt2_tiny.json");
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  std::ofstream(dir / "bad.json") << j.dump();
  expect_error([&] { make_tokenizer(hf_json_spec((dir / "bad.json").string())); }, "Whitespace");
  j = read_json("gpt2_tiny.json");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  std::ofstream(dir / "bad2.json") << j.dump();
  expect_error([&] { make_tokenizer(hf_json_spec((dir / "bad2.json").string())); }, "unsupported Split regex");
  expect_error([&] { make_tokenizer(hf_json_spec((dir / "absent.json").string())); }, "cannot open");
  // BPE settings whose effect is not reproduced are refused unless neutral (null and "" / 0 pass).
  const std::vector<std::pair<std::function<void(json&)>, std::string>> refused = {
      {[](json& t) { t["model"]["dropout"] = 0.1; }, "model.dropout = 0.1"},
      {[](json& t) { t["model"]["continuing_subword_prefix"] = "##"; }, "model.continuing_subword_prefix"},
      {[](json& t) { t["model"]["end_of_word_suffix"] = "</w>"; }, "model.end_of_word_suffix"},
      {[](json& t) { t["added_tokens"][0]["single_word"] = true; }, "single_word = true"},
      {[](json& t) { t["model"]["merges"] = "a b"; }, "model.merges must be a list"},
      {[](json& t) { t["model"]["merges"][0] = json::array({"a", "b", "c"}); }, "is not a \"left right\" string"},
      // Ids that are no integer in range (found by fuzzing: a float id converted with undefined behaviour).
      {[](json& t) { t["model"]["vocab"].begin().value() = 3.9e93; }, "has id 3.9e+93, expected an integer"},
      {[](json& t) { t["model"]["vocab"].begin().value() = 1.5; }, "has id 1.5"},
      {[](json& t) { t["added_tokens"][0]["id"] = 5000000000LL; }, "has id 5000000000"},
  };
  for (const auto& [change, needle] : refused) {
    j = read_json("gpt2_tiny.json");
    change(j);
    std::ofstream(dir / "bad3.json") << j.dump();
    expect_error([&] { make_tokenizer(hf_json_spec((dir / "bad3.json").string())); }, needle);
  }
  j = read_json("gpt2_tiny.json");
  j["model"]["dropout"] = nullptr;
  j["model"]["continuing_subword_prefix"] = "";
  std::ofstream(dir / "ok.json") << j.dump();
  EXPECT_NO_THROW(make_tokenizer(hf_json_spec((dir / "ok.json").string())));
  fs::remove_all(dir);

  TokenizerSpec spec = smollm2_spec();
  spec.pre = "qwen2";
  expect_error([&] { make_tokenizer(spec); }, "unsupported GGUF pre-tokenizer 'qwen2'");
  expect_error([] { make_tokenizer(TokenizerSpec{}); }, "no tokenizer");
}

TEST(TokenizerExport, HfJsonFromGgufGivesSameIds) {
  const std::string dir = std::string(CLLM_BINARY_DIR) + "/tokenizer_export";
  fs::create_directories(dir);
  write_hf_tokenizer_json(smollm2_spec(), dir + "/tokenizer.json");
  write_hf_tokenizer_config_json(smollm2_spec(), dir + "/tokenizer_config.json");
  TokenizerSpec spec = hf_json_spec(dir + "/tokenizer.json");
  spec.bos_id = smollm2_spec().bos_id;
  spec.eos_id = smollm2_spec().eos_id;
  auto exported = make_tokenizer(spec);
  EXPECT_EQ(exported->vocab_size(), smollm2().vocab_size());
  for (const auto& s : strings()) EXPECT_EQ(exported->encode(s, false), smollm2().encode(s, false)) << s;
  std::ifstream cfg(dir + "/tokenizer_config.json");
  json c = json::parse(cfg);
  EXPECT_EQ(c["eos_token"], "<|im_end|>");
  EXPECT_EQ(c["chat_template"], smollm2_spec().chat_template);
}

TEST(TokenizerByteLevel, AnyVocabSize) {
  for (int n : {258, 1000, 32000}) {
    TokenizerSpec spec = make_byte_level_spec(n);
    auto tok = make_tokenizer(spec);
    EXPECT_EQ(tok->vocab_size(), n);
    EXPECT_EQ(tok->bos_id(), 0);
    EXPECT_EQ(tok->eos_id(), 1);
    const std::string s = "Byte-level: é 中 😀\n\t";
    auto ids = tok->encode(s, true);
    ASSERT_EQ(ids.size(), s.size() + 1);  // one token per byte, after BOS
    EXPECT_EQ(ids[0], 0);
    for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(ids[i + 1], 2 + static_cast<uint8_t>(s[i]));
    EXPECT_EQ(tok->decode(ids), s);
    if (n > 258) {
      EXPECT_EQ(tok->decode({n - 1}), "");  // fillers decode to nothing
    }
  }
  expect_error([] { make_byte_level_spec(100); }, ">= 258");
}

TokenizerSpec tiny_sp_spec() {
  TokenizerSpec spec;
  spec.kind = TokenizerSpec::Kind::SentencePieceModel;
  spec.path = kFixtures + "tiny_sp.model";
  return spec;
}

TEST(TokenizerSentencePiece, IdsMatchPythonSentencePiece) {
  auto tok = make_tokenizer(tiny_sp_spec());
  expect_matches_fixture(*tok, read_json("tiny_sp_ids.json"));
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // Control pieces written in the text are split out; the rest is encoded as on its own.
  auto rest = tok->encode("hello world", false);
  auto ids = tok->encode("<s>hello world</s>", false);
  std::vector<int32_t> want = {1};
  want.insert(want.end(), rest.begin(), rest.end());
  want.push_back(2);
  EXPECT_EQ(ids, want);
  EXPECT_EQ(tok->decode(ids), "hello world");
  EXPECT_EQ(stream_all(*tok, ids), "hello world");  // the dummy-prefix space is dropped
  EXPECT_EQ(tok->token_bytes(tok->token_id("<0x41>")), "A");
}

// The GGUF form of the tiny sentencepiece model (pieces, scores, types as llama.cpp's
// converter writes them), encoded with llama.cpp's SPM algorithm.
TokenizerSpec tiny_sp_as_gguf() {
  sentencepiece::SentencePieceProcessor sp;
  EXPECT_TRUE(sp.Load(kFixtures + "tiny_sp.model").ok());
  TokenizerSpec spec;
  spec.kind = TokenizerSpec::Kind::GgufSpm;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    spec.tokens.push_back(sp.IdToPiece(id));
    spec.scores.push_back(sp.GetScore(id));
    spec.token_types.push_back(sp.IsUnknown(id) ? 2 : sp.IsControl(id) ? 3 : sp.IsByte(id) ? 6 : sp.IsUnused(id) ? 5 : 1);
  }
  spec.bos_id = sp.bos_id();
  spec.eos_id = sp.eos_id();
  return spec;
}

TEST(TokenizerGgufSpm, AgreesWithSentencePieceOnItsModel) {
  auto tok = make_tokenizer(tiny_sp_as_gguf());
  expect_matches_fixture(*tok, read_json("tiny_sp_ids.json"));
}

// A hand-made vocab where scores, not order, decide the merges.
TEST(TokenizerGgufSpm, HighestScoreMergesFirstWithByteFallback) {
  TokenizerSpec spec;
  spec.kind = TokenizerSpec::Kind::GgufSpm;
  auto add = [&](const std::string& t, float score, int type) {
    spec.tokens.push_back(t);
    spec.scores.push_back(score);
    spec.token_types.push_back(type);
    return static_cast<int32_t>(spec.tokens.size() - 1);
  };
  add("<unk>", 0, 2);
  int32_t bos = add("<s>", 0, 3);
  add("</s>", 0, 3);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, 0, 6);
  }
  int32_t sp = add("\xE2\x96\x81", -1, 1), a = add("a", -1, 1), b = add("b", -1, 1), c = add("c", -1, 1);
  int32_t ab = add("ab", -3, 1), bc = add("bc", -2, 1), sp_a = add("\xE2\x96\x81" "a", -5, 1);
  spec.bos_id = bos;
  spec.eos_id = 2;
  auto tok = make_tokenizer(spec);
  // "▁abc": bc (-2) beats ab (-3) and ▁a (-5); then ▁a.
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int32_t>{sp_a, bc}));
  EXPECT_EQ(tok->encode("ab", false), (std::vector<int32_t>{sp, ab}));  // ab (-3) beats ▁a (-5)
  EXPECT_EQ(tok->encode("cab", false), (std::vector<int32_t>{sp, c, ab}));
  // é is not in the vocab: its two UTF-8 bytes.
  EXPECT_EQ(tok->encode("é", false), (std::vector<int32_t>{sp, 3 + 0xC3, 3 + 0xA9}));
  // As sentencepiece: no "▁" prefix after a special token, only at the start of the text.
  EXPECT_EQ(tok->encode("<s>a", true), (std::vector<int32_t>{bos, bos, a}));
  EXPECT_EQ(tok->encode("a<s>a", false), (std::vector<int32_t>{sp_a, bos, a}));
  EXPECT_EQ(tok->decode({bos, sp_a, bc, sp, c}), "abc c");
  EXPECT_EQ(stream_all(*tok, {bos, sp_a, bc, sp, 3 + 0xC3, 3 + 0xA9}), "abc é");
  // A string listed twice stands for its last id, as llama.cpp builds its token-to-id map.
  const int32_t ab_again = add("ab", -3, 1);
  EXPECT_EQ(make_tokenizer(spec)->encode("ab", false), (std::vector<int32_t>{sp, ab_again}));
  EXPECT_EQ(tok->encode("ba", false), (std::vector<int32_t>{sp, b, a}));
}

}  // namespace

// ---------------------------------------------------------------- tokenizer.json of a sentencepiece model

// tiny_sp.model as transformers converts it for its fast tokenizer (make_spm_json_fixtures.py):
// Metaspace with prepend_scheme "always" (legacy=True) and "first" (legacy=False), and the
// Prepend/Replace normalizer of the LLaMA-2 / TinyLlama files on the Hub; ids from HF tokenizers
// on strings.json and on strings with special tokens written in the text.
void expect_matches_spm_json(const std::string& name) {
  const json fx = read_json("tiny_sp_json_ids.json")[name];
  auto tok = make_tokenizer(hf_json_spec(kFixtures + name + ".json"));
  expect_matches_fixture(*tok, fx);
  for (size_t i = 0; i < fx["extra_strings"].size(); ++i) {
    const std::string text = fx["extra_strings"][i];
    const auto want = fx["extra_ids"][i].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(text, false), want) << "'" << text << "'";
    EXPECT_EQ(tok->decode(want), fx["extra_decoded"][i].get<std::string>()) << "'" << text << "'";
  }
}

TEST(TokenizerHfJsonSpm, MetaspaceAlwaysMatchesHuggingFace) { expect_matches_spm_json("tiny_sp_always"); }
TEST(TokenizerHfJsonSpm, MetaspaceFirstMatchesHuggingFace) { expect_matches_spm_json("tiny_sp_first"); }
TEST(TokenizerHfJsonSpm, PrependNormalizerMatchesHuggingFace) { expect_matches_spm_json("tiny_sp_prepend"); }

TEST(TokenizerHfJsonSpm, RefusesOtherNormalizers) {
  fs::path dir = fs::temp_directory_path() / ("cllm_tok_spm_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // The tokenizer of fixture `name` edited by `change`, written to a file of its own and loaded.
  auto load_edited = [&](const std::string& name, const std::function<void(json&)>& change) {
    json j = read_json(name + ".json");
    change(j);
    const fs::path path = dir / ("edited_" + name + ".json");
    std::ofstream(path) << j.dump();
    return make_tokenizer(hf_json_spec(path.string()));
  };
  expect_error([&] { load_edited("tiny_sp_prepend", [](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }); },
               "normalizer");
  // Members missing where the reader looks (found by fuzzing: a const lookup of a missing key was
  // undefined behaviour): no pre_tokenizer key at all (the legacy form needs none; the Metaspace
  // form is refused), and a Sequence normalizer without its list.
  EXPECT_NO_THROW(load_edited("tiny_sp_prepend", [](json& j) { j.erase("pre_tokenizer"); }));
  expect_error([&] { load_edited("tiny_sp_always", [](json& j) { j.erase("pre_tokenizer"); }); }, "pre_tokenizer");
  expect_error([&] { load_edited("tiny_sp_prepend", [](json& j) { j["normalizer"] = {{"type", "Sequence"}}; }); },
               "normalizer");
  fs::remove_all(dir);
}

// GGUF SPM with special tokens in the text: "▁" only at the start of the text, none after a
// special token, as transformers' non-legacy form (Metaspace "first") has it. Text that starts with
// a space is left out: there Metaspace adds no "▁" while sentencepiece (and cllm) do, which
// AgreesWithSentencePieceOnItsModel checks, and so is "<unk>", which sentencepiece reads as text.
TEST(TokenizerGgufSpm, SpecialTokensAsSentencePiece) {
  auto tok = make_tokenizer(tiny_sp_as_gguf());
  const json fx = read_json("tiny_sp_json_ids.json")["tiny_sp_first"];
  for (size_t i = 0; i < fx["extra_strings"].size(); ++i) {
    const std::string text = fx["extra_strings"][i];
    const auto want = fx["extra_ids"][i].get<std::vector<int32_t>>();
    if (text[0] == ' ' || text.find("<unk>") != std::string::npos) continue;
    EXPECT_EQ(tok->encode(text, false), want) << "'" << text << "'";
    EXPECT_EQ(tok->decode(want), fx["extra_decoded"][i].get<std::string>()) << "'" << text << "'";
    EXPECT_EQ(stream_all(*tok, want), fx["extra_decoded"][i].get<std::string>()) << "'" << text << "'";
  }
}

// tokenizer.ggml.add_space_prefix false: no dummy "▁" before the text, as llama.cpp encodes it. So
// " " + text then encodes as text does with the prefix, and text alone differently where a
// "▁word" piece exists.
TEST(TokenizerGgufSpm, NoSpacePrefixWhenTheFileSaysSo) {
  TokenizerSpec with = tiny_sp_as_gguf(), without = with;
  without.add_space_prefix = false;
  auto a = make_tokenizer(with), b = make_tokenizer(without);
  int differ = 0;
  for (const std::string text : {"hello world", "The quick brown fox.", "a</s>b", "x  y"}) {
    EXPECT_EQ(b->encode(" " + text, false), a->encode(text, false)) << "'" << text << "'";
    differ += b->encode(text, false) != a->encode(text, false);
    if (text.find('<') == std::string::npos) EXPECT_EQ(b->decode(b->encode(text, false)), text);
  }
  EXPECT_GE(differ, 3);
}

// The LLaMA-2 / Mistral / TinyLlama directory layout: tokenizer.json and tokenizer.model together,
// weights in safetensors shards with an index. cllm loads tokenizer.json, as AutoTokenizer does,
// says so, and gives the ids transformers gives (checked with transformers 5.25 in
// make_spm_json_fixtures.py's variants).
TEST(TokenizerHfDir, JsonAndModelTogetherUseTheFastTokenizer) {
  const fs::path dir = fs::temp_directory_path() / ("cllm_tok_dir_" + std::to_string(::getpid()));
  ModelConfig c = random_model_shape("tiny");
  c.vocab_size = 1000;  // tiny_sp's vocabulary
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  RandomModelOptions opts;
  opts.shard_bytes = 1e5;  // several shards + model.safetensors.index.json
  write_random_model(c, dir.string(), opts);
  ASSERT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  fs::copy_file(kFixtures + "tiny_sp_prepend.json", dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kFixtures + "tiny_sp.model", dir / "tokenizer.model", fs::copy_options::overwrite_existing);
  auto ckpt = open_checkpoint(dir.string());
  const TokenizerSpec& spec = ckpt->tokenizer();
  EXPECT_EQ(spec.kind, TokenizerSpec::Kind::HfJson);
  EXPECT_EQ(fs::path(spec.path).filename(), "tokenizer.json");
  EXPECT_NE(spec.note.find("tokenizer.json"), std::string::npos) << spec.note;
  auto tok = make_tokenizer(spec);
  const json fx = read_json("tiny_sp_json_ids.json")["tiny_sp_prepend"];
  for (size_t i = 0; i < fx["extra_strings"].size(); ++i)
    EXPECT_EQ(tok->encode(fx["extra_strings"][i].get<std::string>(), false), fx["extra_ids"][i].get<std::vector<int32_t>>());
  // tokenizer_class LlamaTokenizer: transformers replaces the file's Prepend normalizer by
  // Metaspace, prepend_scheme "first" (legacy false, its default) or "always" (legacy true).
  for (const auto& [legacy, variant] : {std::pair{"false", "tiny_sp_first"}, std::pair{"true", "tiny_sp_always"}}) {
    std::ofstream(dir / "tokenizer_config.json")
        << R"({"tokenizer_class": "LlamaTokenizer", "add_bos_token": false, "legacy": )" << legacy << "}";
    auto t = make_tokenizer(open_checkpoint(dir.string())->tokenizer());
    const json v = read_json("tiny_sp_json_ids.json")[variant];
    for (size_t i = 0; i < v["extra_strings"].size(); ++i)
      EXPECT_EQ(t->encode(v["extra_strings"][i].get<std::string>(), false), v["extra_ids"][i].get<std::vector<int32_t>>())
          << variant << ": " << v["extra_strings"][i];
  }
  auto model = make_model(*ckpt, Device::Cpu);  // every shard's tensors found through the index
  std::vector<int32_t> ids = tok->encode("Hello world", true), argmax(ids.size());
  model->reset(static_cast<int>(ids.size()));
  model->forward(ids.data(), static_cast<int>(ids.size()), 0, argmax.data(), nullptr);
  // An EOS that transformers would append to every prompt (add_eos_token, or a post-processor
  // template with a special token after the text) is refused, naming the file and field.
  const auto refused = [&](const std::string& needle) {
    try {
      open_checkpoint(dir.string());
      ADD_FAILURE() << "not refused: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::ofstream(dir / "tokenizer_config.json") << R"({"add_eos_token": true})";
  refused("tokenizer_config.json: field 'add_eos_token' = true is not supported");
  std::ofstream(dir / "tokenizer_config.json") << R"({"add_eos_token": false})";
  EXPECT_NO_THROW(open_checkpoint(dir.string()));
  json tj = read_json("tiny_sp_prepend.json");
  tj["post_processor"] = {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                      {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}}};
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  refused("tokenizer.json: post_processor appends special token </s> after the text");
  fs::remove_all(dir);
}

// The characters a token completes (completions' text_offset steps) add up to the length of the
// decoded text before the next token, for any split of the bytes: valid text, a character split
// across tokens, bytes that are invalid on their own (lone continuations, a lead byte followed by
// ASCII, 0xFF) and random byte pieces, against to_valid_utf8 of the whole.
TEST(Unicode, CharCounterAddsUpToTheDecodedText) {
  auto check = [](const std::vector<std::string>& pieces) {
    unicode::Utf8CharCounter counter;
    std::string so_far;
    size_t counted = 0;
    for (const std::string& p : pieces) {
      counted += counter.add(p);
      so_far += p;
      const std::string done = so_far.substr(0, unicode::complete_prefix_len(so_far));
      ASSERT_EQ(counted, unicode::code_points(unicode::to_valid_utf8(done)))
          << "after " << so_far.size() << " bytes";
    }
  };
  check({"h\xC3", "\xA9", "llo"});                           // é split across two tokens
  check({"\xE4\xB8", "\x96", "\xE7\x95\x8C"});                  // 世界
  check({"\x80", "\x80\x80", "a"});                             // lone continuation bytes: one U+FFFD each
  check({"\xE4\xB8", "A", "\xF0\x9F", "\x98\x80"});             // a cut sequence, then an emoji in two
  check({"\xFF", "b", "\xC3", "\xC3\xA9"});                     // an invalid byte, a lead followed by a lead
  std::mt19937 rng(5);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::string> pieces(1 + rng() % 12);
    for (std::string& p : pieces) {
      p.resize(rng() % 5);
      for (char& c : p) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : 0x80 + rng() % 0x40);
    }
    check(pieces);
  }
  // What the counts say in the end: every character but a held-back tail.
  unicode::Utf8CharCounter counter;
  EXPECT_EQ(counter.add("\xE4\xB8"), 0u);
  EXPECT_EQ(counter.add("\x96!"), 2u);
}
