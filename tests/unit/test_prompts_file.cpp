// Prompts files (launch/prompts_file.h) through the cllm executable: bytes that are not UTF-8 are
// refused naming the file and line, not dropped.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

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

}  // namespace
}  // namespace cllm
