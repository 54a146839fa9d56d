// Shared helpers for tests: where the default model and fixtures live, temp dirs, and a
// cached tiny random checkpoint.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace cllm::test {

// models/SmolLM2-135M-Instruct.Q4_1.gguf; tests that need it fail (not skip) when it is absent,
// naming the script that fetches it.
std::string smollm2_path();

// tests/fixtures/<rel>
std::string fixture_path(const std::string& rel);

// A fresh empty directory under the build tree, named after the running test.
std::filesystem::path temp_dir(const std::string& tag);

// <build>/test_tmp/pid<N>/<name>: a directory private to this test process (ctest runs tests as
// concurrent processes, so files shared across tests of one process must not be shared across
// processes). Removed when the process exits.
std::filesystem::path process_dir(const std::string& name);

// A random checkpoint of a named shape (see runtime/random_model.h), written once per process.
std::string random_model_dir(const std::string& shape, uint64_t seed);

// random_model_dir(shape, seed) copied to process_dir(name) with config.json fields set from
// `fields_json`, a JSON object (a null value removes the field); the tensors are unchanged.
std::string random_model_with_config(const std::string& shape, uint64_t seed, const std::string& name,
                                     const std::string& fields_json);

// Runs fn in a forked child process and returns what it returned; a child that dies (a signal, or
// no answer) fails the calling test with `what` and the way it died. For tests that feed a library
// damaged input: its global state (HDF5's open files) stays in the child, which leaves with _exit.
// fn must not need threads that exist only in the parent.
std::string run_in_child(const std::string& what, const std::function<std::string()>& fn);

// Damaged-file trials, in a child process (run_in_child): `trials` times, `bytes` with 1 to 3 random
// bit flips (seeded) is written to `path` and `use` opens and uses it. hot_window > 0: four flips in
// five land in the first or the last hot_window bytes (where formats keep their metadata). Returns
// how many uses ended normally and how many threw cllm::Error; a crash or another exception fails
// the calling test.
struct FlipCounts {
  int used = -1, refused = -1;
};
FlipCounts bit_flip_trials(const std::string& bytes, const std::filesystem::path& path, int trials, size_t hot_window,
                           const std::function<void()>& use);

}  // namespace cllm::test
