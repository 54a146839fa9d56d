// The server's request handling without a server: parse_request's field table (each field's
// validation, with an error whose param names the field) and request_spec (a parsed request to
// the scheduler's SequenceSpec), on the byte-level tokenizer of a random checkpoint.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "launch/openai_api.h"
#include "launch/openai_spec.h"
#include "runtime/block_rows.h"
#include "runtime/chat_template.h"
#include "runtime/random_model.h"
#include "runtime/tokenizer.h"

namespace cllm::openai {
namespace {

// The ApiError that parsing or mapping `fn` throws; fails the test when there is none.
template <typename Fn>
ApiError error_of(Fn fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no ApiError";
  return ApiError(0, "");
}

ApiError parse_error(const std::string& body, bool chat = false) {
  return error_of([&] { parse_request(body, chat); });
}

TEST(OpenAiParse, EveryFieldReachesTheRequest) {
  const ApiRequest r = parse_request(
      R"({"model": "m", "prompt": "hi", "max_tokens": 7, "stop": "x", "temperature": 0.5, "top_p": 0.9,
          "seed": 11, "stream": true, "stream_options": {"include_usage": true}, "cllm_decode": "ar",
          "cllm_block": 4, "cllm_candidates": 3, "cllm_ngram": 5, "cllm_ignore_eos": true, "user": "u", "n": 1,
          "logprobs": false})",
      false);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.temperature, 0.5);
  EXPECT_EQ(r.top_p, 0.9);
  // top_p 0 is OpenAI's smallest nucleus: the most likely token alone (the sampler keeps at least one).
  EXPECT_GT(parse_request(R"({"prompt": "x", "top_p": 0})", false).top_p, 0);
  EXPECT_EQ(r.seed, 11u);
  EXPECT_TRUE(r.stream && r.include_usage && r.ignore_eos);
  EXPECT_EQ(r.decode, "ar");
  EXPECT_EQ(r.block, 4);
  EXPECT_EQ(r.candidates, 3);
  EXPECT_EQ(r.ngram, 5);
  EXPECT_EQ(parse_request(R"({"prompt": [5, 6]})", false).prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(parse_request(R"({"prompt": "x", "max_completion_tokens": 3})", false).max_tokens, 3);
  const ApiRequest c = parse_request(R"({"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
                                          {"type": "text", "text": "b"}]}]})", true);
  ASSERT_EQ(c.messages.size(), 1u);
  EXPECT_EQ(c.messages[0].role, "system");
  EXPECT_EQ(c.messages[0].content, "ab");
}

// A body that nests deeper than any request needs is refused before anything copies or dumps it
// (both recurse once per level: a few hundred KB of brackets would overflow the thread's stack).
TEST(OpenAiParse, DeeplyNestedBodiesAreRefused) {
  auto nested = [](const std::string& field, int depth) {
    return R"({"prompt": "x", ")" + field + R"(": )" + std::string(depth, '[') + std::string(depth, ']') + "}";
  };
  for (const std::string field : {"stop", "user", "unknown_field"}) {
    const ApiError e = parse_error(nested(field, 200000));
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(std::string(e.what()).find("nests deeper than"), std::string::npos) << e.what();
  }
  EXPECT_NE(std::string(parse_error(nested("stop", 63)).what()).find("stop"), std::string::npos);  // parsed, then refused as a stop
  EXPECT_THROW(parse_body("[1]"), ApiError);  // not an object
  // A NUL byte ends nlohmann's input: what follows it would be ignored, so the body is refused.
  const ApiError nul = parse_error(std::string("{\"prompt\": \"x\"}\0garbage", 24));
  EXPECT_NE(std::string(nul.what()).find("NUL byte at offset 15"), std::string::npos) << nul.what();
}

// max_completion_tokens (OpenAI's newer name) wins over max_tokens in either order, and errors name
// the field the client used; stream_options is refused without stream: true.
TEST(OpenAiParse, MaxCompletionTokensWinsAndStreamOptionsNeedStream) {
  EXPECT_EQ(parse_request(R"({"prompt": "x", "max_tokens": 5, "max_completion_tokens": 3})", false).max_tokens, 3);
  EXPECT_EQ(parse_request(R"({"prompt": "x", "max_completion_tokens": 3, "max_tokens": 5})", false).max_tokens, 3);
  EXPECT_EQ(parse_error(R"({"prompt": "x", "max_completion_tokens": 0})").param, "max_completion_tokens");
  EXPECT_EQ(parse_request(R"({"prompt": "x", "max_tokens": 9223372036854775808})", false).max_tokens, INT32_MAX);
  EXPECT_EQ(parse_error(R"({"prompt": "x", "max_tokens": -1})").param, "max_tokens");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "stream_options": {"include_usage": true}})").param, "stream_options");
  EXPECT_TRUE(parse_request(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}})", false)
                  .include_usage);
}

// Fields cllm does not implement are accepted at their neutral values only: without tools, any
// parallel_tool_calls and a tool_choice of "none" or "auto". A prompt nested past one batch level is
// refused with the shape message, not as a bad integer.
TEST(OpenAiParse, NeutralToolFieldsAndPromptShapes) {
  EXPECT_NO_THROW(parse_request(R"({"prompt": "x", "parallel_tool_calls": true, "tool_choice": "none"})", false));
  EXPECT_NO_THROW(parse_request(R"({"prompt": "x", "parallel_tool_calls": false, "tool_choice": "auto"})", false));
  EXPECT_NO_THROW(parse_request(R"({"prompt": "x", "tool_choice": null})", false));
  EXPECT_EQ(parse_error(R"({"prompt": "x", "tool_choice": "required"})").param, "tool_choice");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "parallel_tool_calls": 1})").param, "parallel_tool_calls");
  for (const char* body : {R"({"prompt": [[["a"]]]})", R"({"prompt": [[[1]]]})", R"({"prompt": [["a"]]})",
                           R"({"prompt": ["a", [1]]})", R"({"prompt": [[1], ["a"]]})"})
    EXPECT_NE(std::string(parse_error(body).what()).find("a batch"), std::string::npos) << body;
  EXPECT_NE(std::string(parse_error(R"({"messages": [{"role": "x", "content": "y"}]})", true).what()).find("developer"),
            std::string::npos);
}

TEST(OpenAiParse, AssistantTurnsMayLeaveTheirContentOut) {
  const ApiRequest r = parse_request(R"({"messages": [{"role": "user", "content": "a"},
      {"role": "assistant", "content": null}, {"role": "assistant"}, {"role": "assistant", "tool_calls": []},
      {"role": "user", "content": "b"}]})", true);
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[1].content, "");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user"}]})", true).param, "messages[0].content");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "system", "content": null}]})", true).param, "messages[0].content");
  const ApiError tools = parse_error(R"({"messages": [{"role": "user", "content": "a"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
       "function": {"name": "f", "arguments": "{}"}}]}]})", true);
  EXPECT_EQ(tools.param, "messages[1].tool_calls");
  EXPECT_NE(std::string(tools.what()).find("not supported"), std::string::npos);
}

// A completions batch: several prompts, as text or as token ids, each its own entry; the first also
// in prompt / prompt_ids.
TEST(OpenAiParse, BatchedPrompts) {
  const ApiRequest text = parse_request(R"({"prompt": ["a", "bc", "d"]})", false);
  ASSERT_EQ(text.batch.size(), 3u);
  EXPECT_EQ(text.batch[1].text, "bc");
  EXPECT_EQ(text.prompt, "a");
  const ApiRequest ids = parse_request(R"({"prompt": [[1, 2], [3]]})", false);
  ASSERT_EQ(ids.batch.size(), 2u);
  EXPECT_EQ(ids.batch[1].ids, std::vector<int32_t>({3}));
  EXPECT_EQ(ids.prompt_ids, std::vector<int32_t>({1, 2}));
  EXPECT_TRUE(parse_request(R"({"prompt": ["a"]})", false).batch.empty());  // one prompt is not a batch
  EXPECT_EQ(parse_error(R"({"prompt": ["a", ""]})").param, "prompt[1]");
  std::string many = R"({"prompt": [)";
  for (int i = 0; i <= kMaxBatchPrompts; ++i) many += std::string(i ? "," : "") + "\"x\"";
  EXPECT_EQ(parse_error(many + "]}").param, "prompt");
}

TEST(OpenAiParse, NullMeansAbsentOnlyWhereADefaultExists) {
  const ApiRequest r = parse_request(R"({"prompt": "x", "max_tokens": null, "temperature": null, "stop": null,
                                         "n": null, "user": null})", false);
  EXPECT_EQ(r.max_tokens, 0);
  EXPECT_EQ(r.temperature, 0);
  EXPECT_EQ(parse_request(R"({"prompt": "x", "model": null})", false).model, "");  // the served model, as vLLM
  EXPECT_EQ(parse_error(R"({"prompt": "x", "model": 3})").param, "model");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "cllm_block": null})").param, "cllm_block");
}

// Fields cllm does not implement pass at the values that turn them off, as clients send them by
// default (vLLM's top_k -1, min_p 0, repetition_penalty 1; a logit_bias of zeros; best_of = n).
TEST(OpenAiParse, NeutralValuesOfUnsupportedFieldsPass) {
  for (const char* body :
       {R"({"prompt": "x", "top_k": -1, "min_p": 0, "repetition_penalty": 1.0})", R"({"prompt": "x", "top_k": 0})",
        R"({"prompt": "x", "logit_bias": {"1": 0, "50": 0.0}})", R"({"prompt": "x", "best_of": 2, "n": 2})",
        R"({"prompt": "x", "n": 3, "best_of": 3})", R"({"prompt": "x", "best_of": 1})"})
    EXPECT_NO_THROW(parse_request(body, false)) << body;
  const std::vector<std::pair<const char*, const char*>> refused = {
      {R"({"prompt": "x", "top_k": 40})", "top_k"},
      {R"({"prompt": "x", "min_p": 0.1})", "min_p"},
      {R"({"prompt": "x", "repetition_penalty": 1.1})", "repetition_penalty"},
      {R"({"prompt": "x", "logit_bias": {"1": 5}})", "logit_bias"},
      {R"({"prompt": "x", "best_of": 3, "n": 2})", "best_of"},
      {R"({"prompt": "x", "best_of": 2})", "best_of"}};
  for (const auto& [body, field] : refused) EXPECT_EQ(parse_error(body).param, field) << body;
}

// Each bad value is refused with 400, and both the message and error.param name its field.
// Integers past int32 (and past int64) are shown as the client sent them in errors, not clamped
// or wrapped (max_tokens is held at INT32_MAX, beyond any context, and refused with its value as sent).
TEST(OpenAiParse, HugeIntegersAreShownAsSent) {
  EXPECT_EQ(parse_request(R"({"prompt": "x", "max_tokens": 1000000000000})", false).max_tokens_sent, "1000000000000");
  const ApiError id = parse_error(R"({"prompt": [18446744073709551615]})");
  EXPECT_EQ(id.param, "prompt");
  EXPECT_NE(std::string(id.what()).find("got 18446744073709551615"), std::string::npos) << id.what();
}

TEST(OpenAiParse, ErrorsNameTheirField) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"prompt": 5})", "prompt"},
      {R"({"prompt": ""})", "prompt"},
      {R"({"prompt": [1, -2]})", "prompt"},
      {R"({"prompt": "x", "model": 3})", "model"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "x", "max_completion_tokens": "8"})", "max_completion_tokens"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {R"({"prompt": "x", "stop": [""]})", "stop"},
      {R"({"prompt": "x", "temperature": 7})", "temperature"},
      {R"({"prompt": "x", "top_p": -0.1})", "top_p"},
      {R"({"prompt": "x", "top_p": 1.5})", "top_p"},
      {R"({"prompt": "x", "seed": 1.5})", "seed"},
      {R"({"prompt": "x", "stream": "yes"})", "stream"},
      {R"({"prompt": "x", "stream_options": {"other": 1}})", "stream_options"},
      {R"({"prompt": "x", "cllm_decode": "fast"})", "cllm_decode"},
      {R"({"prompt": "x", "cllm_block": 0})", "cllm_block"},
      {R"({"prompt": "x", "cllm_ignore_eos": 1})", "cllm_ignore_eos"},
      {R"({"prompt": "x", "n": 0})", "n"},
      {R"({"prompt": "x", "n": 17})", "n"},
      {R"({"prompt": "x", "logprobs": 21})", "logprobs"},
      {R"({"prompt": "x", "logprobs": -1})", "logprobs"},
      {R"({"prompt": "x", "max_tokens": 0, "logprobs": 1})", "max_tokens"},
      {R"({"prompt": "x", "best_of": 3})", "best_of"},
      {R"({"prompt": "x", "frequency_penalty": 0.5})", "frequency_penalty"},
      {R"({"prompt": "x", "logit_bias": {"1": 2}})", "logit_bias"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}})", "response_format"},
      {R"({"prompt": "x", "top_logprobs": 2})", "top_logprobs"},
      {R"({"prompt": "x", "frobnicate": 1})", "frobnicate"},
      {R"({"prompt": "x", "messages": []})", "messages"},  // a chat field on /v1/completions
      {R"({"prompt": "x", "cllm_decode": "jacobi", "temperature": 0.5})", "cllm_decode"},
      {R"({})", "prompt"},
  };
  for (const auto& [body, field] : cases) {
    const ApiError e = parse_error(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, field) << body;
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << body << ": " << e.what();
  }
  const std::string block_limit = R"({"prompt": "x", "cllm_block": )" + std::to_string(kMaxBlockRows + 1) + "}";
  EXPECT_EQ(parse_error(block_limit).param, "cllm_block");
  EXPECT_EQ(parse_request(R"({"prompt": "x", "cllm_block": )" + std::to_string(kMaxBlockRows) + "}", false).block,
            kMaxBlockRows);
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "robot", "content": "x"}]})", true).param, "messages[0]");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user", "content": 3}]})", true).param, "messages[0].content");
  EXPECT_EQ(parse_error(R"({"prompt": "x"})", true).param, "prompt");  // a completions field on chat
  EXPECT_EQ(parse_error(R"({})", true).param, "messages");
  const std::string hi = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(parse_error("{" + hi + R"(, "top_logprobs": 2})", true).param, "top_logprobs");  // needs logprobs
  EXPECT_EQ(parse_error("{" + hi + R"(, "logprobs": true, "top_logprobs": 21})", true).param, "top_logprobs");
  EXPECT_EQ(parse_error("{" + hi + R"(, "logprobs": 3})", true).param, "logprobs");  // a boolean on chat
  EXPECT_EQ(parse_error("{" + hi + R"(, "echo": true})", true).param, "echo");
  EXPECT_EQ(parse_error("{bad json").param, "");
  // OpenAI's neutral value, which clients send by default.
  EXPECT_NO_THROW(parse_request(R"({"prompt": "x", "top_logprobs": 0})", false));
  EXPECT_NO_THROW(parse_request(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 0})", true));
}

TEST(OpenAiParse, LogprobsEchoAndChoices) {
  const std::string hi = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(parse_request("{" + hi + "}", true).logprobs, -1);
  EXPECT_EQ(parse_request("{" + hi + R"(, "logprobs": true})", true).logprobs, 0);
  EXPECT_EQ(parse_request("{" + hi + R"(, "logprobs": true, "top_logprobs": 20})", true).logprobs, 20);
  EXPECT_EQ(parse_request("{" + hi + R"(, "logprobs": false, "top_logprobs": 0})", true).logprobs, -1);
  EXPECT_EQ(parse_request(R"({"prompt": "x", "logprobs": 5})", false).logprobs, 5);
  EXPECT_EQ(parse_request(R"({"prompt": "x", "logprobs": null})", false).logprobs, -1);
  const ApiRequest e = parse_request(R"({"prompt": [[3, 4, 5]], "echo": true, "max_tokens": 0, "logprobs": 1})", false);
  EXPECT_TRUE(e.echo && e.echo_only);
  EXPECT_EQ(e.prompt_ids, (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(parse_request(R"({"prompt": "x", "n": 16})", false).n, 16);
}

class OpenAiSpec : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = make_tokenizer(random_checkpoint(random_model_shape("tiny"))->tokenizer());
    cfg_.model_name = "tiny";
    cfg_.eos_ids = {2};
    cfg_.jacobi.block = 8;
    cfg_.max_context = 100;
    cfg_.default_chat_max_tokens = 50;
  }
  SequenceSpec spec(const std::string& body, bool chat = false) {
    return request_spec(parse_request(body, chat), cfg_, *tok_);
  }
  ApiError spec_error(const std::string& body, bool chat = false) {
    return error_of([&] { spec(body, chat); });
  }

  std::unique_ptr<Tokenizer> tok_;
  RouteConfig cfg_;
};

TEST_F(OpenAiSpec, CompletionPromptAndDefaults) {
  const SequenceSpec s = spec(R"({"prompt": "hello", "seed": 3})");
  EXPECT_EQ(s.prompt, tok_->encode("hello", false));
  EXPECT_EQ(s.gen.max_new_tokens, 16);  // OpenAI's completions default
  EXPECT_EQ(s.gen.stop_ids, cfg_.eos_ids);
  EXPECT_EQ(s.jacobi.block, 8);
  EXPECT_EQ(s.jacobi.seed, 3u);
  EXPECT_EQ(s.sampling.temperature, 0.0f);  // greedy
  cfg_.add_bos = true;
  EXPECT_EQ(spec(R"({"prompt": "hello"})").prompt, tok_->encode("hello", true));
  EXPECT_EQ(spec(R"({"prompt": [4, 5, 6]})").prompt, (std::vector<int32_t>{4, 5, 6}));  // ids as given
}

TEST_F(OpenAiSpec, DecodingChoices) {
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_block": 5})").jacobi.block, 5);
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_block": 5, "cllm_decode": "ar"})").jacobi.block, 1);
  const SequenceSpec sampled = spec(R"({"prompt": "x", "temperature": 0.7, "top_p": 0.5, "seed": 9})");
  EXPECT_EQ(sampled.jacobi.block, 1);  // sampling is one token per iteration
  EXPECT_FLOAT_EQ(sampled.sampling.temperature, 0.7f);
  EXPECT_FLOAT_EQ(sampled.sampling.top_p, 0.5f);
  EXPECT_EQ(sampled.sampling.seed, 9u);
  EXPECT_TRUE(spec(R"({"prompt": "x", "cllm_ignore_eos": true})").gen.stop_ids.empty());
  EXPECT_EQ(spec(R"({"prompt": "x", "max_tokens": 33})").gen.max_new_tokens, 33);
  // Multi-block: blocks in flight with a fixed block; AR and sampling take one block of 1.
  const SequenceSpec multi = spec(R"({"prompt": "x", "cllm_block": 4, "cllm_blocks": 3})");
  EXPECT_EQ(multi.jacobi.blocks, 3);
  EXPECT_EQ(multi.jacobi.rows(), 12);
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_blocks": 3, "cllm_decode": "ar"})").jacobi.blocks, 1);
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_blocks": 3, "temperature": 0.5})").jacobi.blocks, 1);
  EXPECT_EQ(spec_error(R"({"prompt": "x", "cllm_blocks": 0})").param, "cllm_blocks");
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_block": 4, "cllm_blocks": 3, "cllm_later_block_after": 0.5})").jacobi.later_after,
            0.5);
  EXPECT_EQ(spec(R"({"prompt": "x"})").jacobi.later_after, 0);
  for (const char* bad : {R"({"prompt": "x", "cllm_later_block_after": 1.5})", R"({"prompt": "x", "cllm_later_block_after": -0.1})",
                          R"({"prompt": "x", "cllm_later_block_after": "half"})"})
    EXPECT_EQ(spec_error(bad).param, "cllm_later_block_after") << bad;
  EXPECT_EQ(spec_error(R"({"prompt": "x", "cllm_block": 32, "cllm_blocks": 3})").param, "cllm_blocks");
  cfg_.jacobi.adaptive = true;  // the server's --block auto: a request's blocks need its own block
  EXPECT_EQ(spec_error(R"({"prompt": "x", "cllm_blocks": 2})").param, "cllm_blocks");
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_blocks": 2, "cllm_block": 4})").jacobi.blocks, 2);
}

TEST_F(OpenAiSpec, WindowPerRequest) {
  EXPECT_EQ(spec(R"({"prompt": "x"})").jacobi.window, cfg_.jacobi.window);  // the server's --window
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_block": 8, "cllm_window": "blockwise"})").jacobi.window,
            JacobiWindow::Blockwise);
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_window": "sliding"})").jacobi.window, JacobiWindow::Sliding);
  EXPECT_EQ(parse_error(R"({"prompt": "x", "cllm_window": "diagonal"})").param, "cllm_window");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "cllm_window": 1})").param, "cllm_window");
  cfg_.jacobi.adaptive = true;  // the server's --block auto: blockwise needs the request's own block
  EXPECT_EQ(spec_error(R"({"prompt": "x", "cllm_window": "blockwise"})").param, "cllm_window");
  EXPECT_EQ(spec(R"({"prompt": "x", "cllm_window": "blockwise", "cllm_decode": "ar"})").jacobi.block, 1);
}

TEST_F(OpenAiSpec, LogprobsAndEcho) {
  EXPECT_EQ(spec(R"({"prompt": "x"})").logprobs, -1);
  const SequenceSpec lp = spec(R"({"prompt": "x", "logprobs": 3})");
  EXPECT_EQ(lp.logprobs, 3);
  EXPECT_FALSE(lp.prompt_logprobs);
  const SequenceSpec echo = spec(R"({"prompt": "x", "logprobs": 1, "echo": true, "max_tokens": 0})");
  EXPECT_TRUE(echo.prompt_logprobs);
  EXPECT_EQ(echo.gen.max_new_tokens, 1);  // one runs, the answer drops it
  EXPECT_FALSE(spec(R"({"prompt": "x", "echo": true})").prompt_logprobs);  // echo without logprobs: text only
}

TEST_F(OpenAiSpec, ChatUsesTheTemplateAndWhatFits) {
  const std::string body = R"({"messages": [{"role": "user", "content": "hi"}]})";
  const ApiError no_template = spec_error(body, true);
  EXPECT_EQ(no_template.status, 400);
  EXPECT_EQ(no_template.param, "messages");
  cfg_.chat_template = "chatml";
  const SequenceSpec s = spec(body, true);
  EXPECT_EQ(s.prompt, tok_->encode(apply_chat_template("chatml", {{"user", "hi"}}, true), false));
  // Without max_tokens chat gets what fits in the context beside the prompt and one block, capped.
  const int fits = cfg_.max_context - static_cast<int>(s.prompt.size()) - cfg_.jacobi.block;
  EXPECT_EQ(s.gen.max_new_tokens, std::min(cfg_.default_chat_max_tokens, fits));
  cfg_.default_chat_max_tokens = 1000;
  EXPECT_EQ(spec(body, true).gen.max_new_tokens, fits);
}

TEST_F(OpenAiSpec, RefusalsNameTheField) {
  const ApiError other_model = spec_error(R"({"prompt": "x", "model": "llama"})");
  EXPECT_EQ(other_model.status, 404);
  EXPECT_EQ(other_model.param, "model");
  EXPECT_NO_THROW(spec(R"({"prompt": "x", "model": "tiny"})"));
  const ApiError id = spec_error(R"({"prompt": [1, )" + std::to_string(tok_->vocab_size()) + "]}");
  EXPECT_EQ(id.param, "prompt");
  const ApiError too_long = spec_error(R"({"prompt": "x", "max_tokens": 101})");
  EXPECT_EQ(too_long.param, "max_tokens");
  EXPECT_EQ(too_long.code, "context_length_exceeded");
}

}  // namespace
}  // namespace cllm::openai
