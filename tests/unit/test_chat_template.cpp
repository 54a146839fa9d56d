// Chat templates against transformers' apply_chat_template (jinja2) on the conversations in
// tests/fixtures/tokenizer/chat_templates.json (tests/reference/make_tokenizer_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "loaders/checkpoint.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"

using namespace cllm;
using nlohmann::json;

namespace {

const std::string kFixtures = std::string(CLLM_SOURCE_DIR) + "/tests/fixtures/tokenizer/";

json fixture(const std::string& name = "chat_templates.json") {
  const std::string path = kFixtures + name;
  std::ifstream f(path);
  if (!f) throw std::runtime_error("missing fixture " + path);
  return json::parse(f);
}

std::vector<ChatMessage> messages(const json& j) {
  std::vector<ChatMessage> m;
  for (const json& x : j) m.push_back({x["role"].get<std::string>(), x["content"].get<std::string>()});
  return m;
}

TEST(ChatTemplate, MatchesTransformersForEachFamily) {
  const json fx = fixture();
  int n = 0;
  for (const json& c : fx["cases"]) {
    const std::string name = c["template"];
    const std::string jinja = fx["templates"][name];
    const auto msgs = messages(c["messages"]);
    const bool gen = c["add_generation_prompt"];
    const std::string want = c["expected"];
    EXPECT_EQ(apply_chat_template(jinja, msgs, gen), want) << name << " (jinja), case " << n;
    // By family name: the same output, except SmolLM2's default system prompt which only its
    // jinja text carries.
    if (name != "smollm2") {
      EXPECT_EQ(apply_chat_template(name, msgs, gen), want) << name << " (by name), case " << n;
    }
    ++n;
  }
  EXPECT_EQ(n, 5 * 3 * 2);
}

TEST(ChatTemplate, DetectsFamiliesAndSmolLMDefaultSystem) {
  const json fx = fixture();
  EXPECT_EQ(chat_template_family(fx["templates"]["smollm2"]), "chatml");
  EXPECT_EQ(chat_template_family(fx["templates"]["llama-2"]), "llama-2");
  EXPECT_EQ(chat_template_family(fx["templates"]["llama-3"]), "llama-3");
  EXPECT_EQ(chat_template_family(fx["templates"]["vicuna"]), "vicuna");
  const std::string out = apply_chat_template(fx["templates"]["smollm2"], {{"user", "hi"}}, true);
  EXPECT_EQ(out.rfind("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n", 0), 0u);
  // A family name overrides whatever the checkpoint carries.
  EXPECT_EQ(apply_chat_template("llama-3", {{"user", "hi"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
}

TEST(ChatTemplate, RefusesUnknownTemplatesAndBadRoleOrder) {
  try {
    apply_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}", {{"user", "hi"}}, true);
    ADD_FAILURE() << "unknown template accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* fam : {"chatml", "llama-2", "llama-3", "vicuna"}) EXPECT_NE(msg.find(fam), std::string::npos) << msg;
  }
  EXPECT_THROW(apply_chat_template("llama-2", {{"user", "a"}, {"user", "b"}}, true), Error);
}

// The ids a chat request feeds the model, against transformers' apply_chat_template(tokenize=True):
// SmolLM2 with the template its GGUF carries (its default system prompt included when the
// conversation has none) and LLaMA-3's template, which writes BOS itself, so BOS comes once.
TEST(ChatTemplate, PromptIdsMatchTransformers) {
  const std::string gguf = std::string(CLLM_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const TokenizerSpec smol = open_checkpoint(gguf)->tokenizer();
  TokenizerSpec llama3;
  llama3.kind = TokenizerSpec::Kind::HfJson;
  llama3.path = kFixtures + "llama3_tiny.json";
  llama3.bos_id = 0;  // <|begin_of_text|>
  llama3.add_bos = true;
  const auto smol_tok = make_tokenizer(smol);
  const auto llama3_tok = make_tokenizer(llama3);
  int n = 0;
  const json fx = fixture("chat_ids.json");
  for (const json& c : fx["cases"]) {
    const bool is_smol = c["tokenizer"] == "smollm2";
    const std::string tmpl = is_smol ? smol.chat_template : c["template"].get<std::string>();
    const auto got = encode_chat(is_smol ? *smol_tok : *llama3_tok, tmpl, messages(c["messages"]),
                                 is_smol ? smol.add_bos : llama3.add_bos);
    EXPECT_EQ(got, c["ids"].get<std::vector<int32_t>>()) << c["tokenizer"] << ", case " << n;
    ++n;
  }
  EXPECT_EQ(n, 2 * 4);
}

// Llama-2's template writes "<s>" before every user turn; the first must not get a second BOS.
TEST(ChatTemplate, Llama2PromptHasOneLeadingBos) {
  TokenizerSpec sp;
  sp.kind = TokenizerSpec::Kind::SentencePieceModel;
  sp.path = kFixtures + "tiny_sp.model";
  const auto tok = make_tokenizer(sp);
  const std::vector<ChatMessage> conv = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  const auto ids = encode_chat(*tok, "llama-2", conv, true);
  EXPECT_EQ(ids, tok->encode(apply_chat_template("llama-2", conv, true), false));
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], tok->bos_id());
  EXPECT_NE(ids[1], tok->bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok->bos_id()), 2);  // one per user turn
  // A template without BOS of its own (vicuna) gets the tokenizer's, once.
  const auto vicuna = encode_chat(*tok, "vicuna", {{"user", "Hi"}}, true);
  EXPECT_EQ(vicuna.front(), tok->bos_id());
  EXPECT_EQ(std::count(vicuna.begin(), vicuna.end(), tok->bos_id()), 1);
}

}  // namespace
