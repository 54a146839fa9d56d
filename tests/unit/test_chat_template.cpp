// Chat templates against transformers' apply_chat_template (jinja2) on the conversations in
// tests/fixtures/tokenizer/chat_templates.json (tests/reference/make_tokenizer_fixtures.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "runtime/chat_template.h"

using namespace cllm;
using nlohmann::json;

namespace {

json fixture() {
  const std::string path = std::string(CLLM_SOURCE_DIR) + "/tests/fixtures/tokenizer/chat_templates.json";
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

}  // namespace
