// Prompts files (launch/prompts_file.h) through the cllm executable: bytes that are not UTF-8 are
// refused naming the file and line, not dropped; a leading byte order mark is not part of a prompt.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "loaders/hf_config.h"
#include "test_support.h"

namespace cllm {
namespace {

TEST(PromptsFile, InvalidUtf8RefusedWithItsLine) {
  const std::filesystem::path dir = test::temp_dir("prompts_utf8");
  for (const bool jsonl : {false, true}) {
    const std::filesystem::path prompts = dir / (jsonl ? "p.jsonl" : "p.txt"), log = dir / "log";
    std::ofstream(prompts, std::ios::binary)
        << (jsonl ? "{\"prompt\": \"caf\xC3\xA9\"}\n\n{\"prompt\": \"bad \xE9t\xE9\"}\n" : "caf\xC3\xA9\n\nbad \xE9t\xE9\n");
    const std::string cmd = std::string(CLLM_BINARY_DIR) + "/cllm generate --model random:tiny --max-new-tokens 2 " +
                            "--prompts " + prompts.string() + " --json-out " + (dir / "out.json").string() + " > " +
                            log.string() + " 2>&1";
    EXPECT_NE(std::system(cmd.c_str()), 0) << cmd;
    const std::string out = read_text_file(log.string());
    EXPECT_NE(out.find(prompts.string() + ":3: invalid UTF-8 (byte 0xE9"), std::string::npos) << out;
  }
}

// A JSONL line nested thousands of levels deep is refused with its line, not a stack overflow.
TEST(PromptsFile, DeeplyNestedLineRefused) {
  const std::filesystem::path dir = test::temp_dir("prompts_deep");
  const std::filesystem::path prompts = dir / "p.jsonl", log = dir / "log";
  std::ofstream(prompts) << "{\"prompt\": \"a\"}\n{\"prompt\": " << std::string(300000, '[') << std::string(300000, ']')
                         << "}\n";
  const std::string cmd = std::string(CLLM_BINARY_DIR) + "/cllm generate --model random:tiny --max-new-tokens 2 " +
                          "--prompts " + prompts.string() + " > " + log.string() + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 256) << cmd;  // exit status 1, no signal
  const std::string out = read_text_file(log.string());
  EXPECT_NE(out.find(prompts.string() + ":2: JSON nests deeper than 64 levels"), std::string::npos) << out;
}

// A message's content may be OpenAI's text parts, as in a server request: the same prompt as the
// joined string; other part types are refused naming the line.
TEST(PromptsFile, ContentPartsAreTheirJoinedText) {
  const std::filesystem::path dir = test::temp_dir("prompts_parts");
  const std::filesystem::path prompts = dir / "p.jsonl", out = dir / "out.jsonl", bad = dir / "bad.jsonl";
  std::ofstream(prompts) << R"({"messages": [{"role": "user", "content": "hi"}]})" << "\n"
                         << R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "h"}, )"
                         << R"({"type": "text", "text": "i"}]}]})" << "\n";
  const std::string run = std::string(CLLM_BINARY_DIR) + "/cllm generate --model random:tiny --chat-template chatml " +
                          "--max-new-tokens 2 --decode ar --quiet --prompts ";
  const std::string cmd = run + prompts.string() + " --json-out " + out.string() + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  std::string lines[2];
  std::getline(in, lines[0]);
  std::getline(in, lines[1]);
  const auto ids = [](const std::string& line) {
    const size_t at = line.find("\"prompt_ids\":[");
    return at == std::string::npos ? std::string() : line.substr(at, line.find(']', at) - at);
  };
  ASSERT_FALSE(ids(lines[0]).empty()) << lines[0];
  EXPECT_EQ(ids(lines[0]), ids(lines[1]));
  std::ofstream(bad) << R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]})"
                     << "\n";
  const std::string refused = run + bad.string() + " > " + (dir / "err.txt").string() + " 2>&1";
  ASSERT_NE(std::system(refused.c_str()), 0);
  std::ifstream err(dir / "err.txt");
  const std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("bad.jsonl:1: messages[0]: 'content' must be a string or a list of"), std::string::npos) << text;
}

// A JSONL file that an editor started with a UTF-8 byte order mark is still JSONL: its first prompt
// is the JSON's text, not the raw line.
TEST(PromptsFile, ByteOrderMarkIsSkipped) {
  const std::filesystem::path dir = test::temp_dir("prompts_bom");
  const std::filesystem::path prompts = dir / "p.jsonl", out = dir / "out.jsonl";
  std::ofstream(prompts, std::ios::binary) << "\xEF\xBB\xBF{\"prompt\": \"bom\"}\n{\"prompt\": \"two\"}\n";
  const std::string cmd = std::string(CLLM_BINARY_DIR) + "/cllm generate --model random:tiny --max-new-tokens 2 " +
                          "--decode ar --quiet --prompts " + prompts.string() + " --json-out " + out.string() +
                          " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  std::string first;
  std::getline(in, first);
  // random:tiny tokenizes bytes: BOS, then "bom" is 3 ids; the raw line would be 20.
  const size_t ids = first.find("\"prompt_ids\":[");
  ASSERT_NE(ids, std::string::npos) << first;
  const std::string list = first.substr(ids + 14, first.find(']', ids) - ids - 14);
  EXPECT_EQ(std::count(list.begin(), list.end(), ',') + 1, 4) << first;
}

}  // namespace
}  // namespace cllm
