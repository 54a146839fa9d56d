// Every GGUF metadata key the gguf package defines (spelled for a `llama` file and dumped by
// tests/reference/make_gguf_key_fixture.py) is honoured, has no effect, or is refused by name:
// - each is known to gguf_key_field (no key falls through as "unknown");
// - a Refused key holding a value other than its no-op value is refused naming the file and key;
// - a NoEffect key is accepted whatever its value.
// What the Used keys do is checked on whole files in test_loaders_checkpoints.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "loaders/gguf_keys.h"
#include "loader_test_util.h"
#include "test_support.h"

namespace cllm {
namespace {

std::vector<std::string> gguf_package_keys() {
  std::ifstream in(test::fixture_path("config/gguf_keys.json"));
  EXPECT_TRUE(in) << "missing tests/fixtures/config/gguf_keys.json";
  return nlohmann::json::parse(in)["keys"].get<std::vector<std::string>>();
}

// A file image holding only `key` = 7 (an integer no no-op value spells).
GgufFile file_with(const std::string& key) {
  GgufFile g;
  g.filename = "m.gguf";
  GgufValue v;
  v.type = GgufType::U32;
  v.i = 7;
  g.kv[key] = v;
  return g;
}

TEST(GgufKeys, EveryPackageKeyIsClassified) {
  const std::vector<std::string> keys = gguf_package_keys();
  ASSERT_GT(keys.size(), 200u);
  int used = 0, refused = 0;
  for (const std::string& k : keys) {
    const ConfigField f = gguf_key_field(k);
    EXPECT_NE(f, ConfigField::Unknown) << "GGUF key '" << k << "' is not classified in loaders/gguf_keys.cpp";
    used += f == ConfigField::Used;
    if (f == ConfigField::Refused) {
      ++refused;
      loader_test::expect_error([&] { check_gguf_keys(file_with(k)); }, {"m.gguf", "'" + k + "' = 7", "not supported"});
    } else {
      EXPECT_NO_THROW(check_gguf_keys(file_with(k))) << k;
    }
  }
  // The LLaMA shape, RoPE and tokenizer keys are read; most others describe other architectures.
  EXPECT_GE(used, 25);
  EXPECT_GT(refused, 100);
  EXPECT_EQ(gguf_key_field("mytool.note"), ConfigField::Unknown);
}

}  // namespace
}  // namespace cllm
