// Shared helpers for tests: where the default model and fixtures live, temp dirs, and a
// cached tiny random checkpoint.
#pragma once
#include <filesystem>
#include <string>

namespace cllm::test {

// models/SmolLM2-135M-Instruct.Q4_1.gguf; tests that need it fail (not skip) when it is absent,
// naming the script that fetches it.
std::string smollm2_path();

// tests/fixtures/<rel>
std::string fixture_path(const std::string& rel);

// A fresh empty directory under the build tree, named after the running test.
std::filesystem::path temp_dir(const std::string& tag);

// A random checkpoint of a named shape (see runtime/random_model.h), written once per process.
std::string random_model_dir(const std::string& shape, uint64_t seed);

}  // namespace cllm::test
