#include "test_support.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <algorithm>
#include <sstream>
#include <random>
#include <map>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "runtime/random_model.h"

namespace cllm::test {

std::string smollm2_path() {
  const std::string p = std::string(CLLM_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p))
    ADD_FAILURE() << p << " is missing: run launch/fetch_model.sh (tests/run does it)";
  return p;
}

std::string fixture_path(const std::string& rel) { return std::string(CLLM_SOURCE_DIR) + "/tests/fixtures/" + rel; }

std::filesystem::path temp_dir(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = tag;
  if (info) name += std::string("_") + info->test_suite_name() + "_" + info->name();
  for (char& c : name)
    if (c == '/') c = '_';
  const std::filesystem::path dir = std::filesystem::path(CLLM_BINARY_DIR) / "test_tmp" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::filesystem::path process_dir(const std::string& name) {
  struct Root {
    std::filesystem::path path =
        std::filesystem::path(CLLM_BINARY_DIR) / "test_tmp" / ("pid" + std::to_string(getpid()));
    ~Root() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Root root;
  const std::filesystem::path dir = root.path / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string random_model_dir(const std::string& shape, uint64_t seed) {
  static std::map<std::string, std::string> made;
  const std::string key = shape + "_seed" + std::to_string(seed);
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  const std::filesystem::path dir = process_dir("random_" + key);
  RandomModelOptions opts;
  opts.seed = seed;
  write_random_model(random_model_shape(shape), dir.string(), opts);
  return made[key] = dir.string();
}

std::string random_model_with_config(const std::string& shape, uint64_t seed, const std::string& name,
                                     const std::string& fields_json) {
  namespace fs = std::filesystem;
  const fs::path dir = process_dir(name);
  fs::create_directories(dir);
  for (const auto& f : fs::directory_iterator(random_model_dir(shape, seed)))
    fs::copy_file(f.path(), dir / f.path().filename(), fs::copy_options::overwrite_existing);
  nlohmann::json c = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  const nlohmann::json fields = nlohmann::json::parse(fields_json);
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    if (it->is_null()) c.erase(it.key());
    else c[it.key()] = *it;
  }
  std::ofstream(dir / "config.json") << c.dump(2);
  return dir.string();
}

FlipCounts bit_flip_trials(const std::string& bytes, const std::filesystem::path& path, int trials, size_t hot_window,
                           const std::function<void()>& use) {
  const std::string counts = run_in_child("bit-flipped copies of " + path.filename().string(), [&] {
    std::mt19937_64 rng(20261207);
    int used = 0, refused = 0;
    for (int trial = 0; trial < trials; ++trial) {
      std::string b = bytes;
      for (int k = 0, flips = 1 + static_cast<int>(rng() % 3); k < flips; ++k) {
        const size_t region = hot_window > 0 ? rng() % 5 : 4, window = std::min(hot_window, b.size());
        const size_t at = region < 2 ? rng() % window : region < 4 ? b.size() - 1 - rng() % window : rng() % b.size();
        b[at] = static_cast<char>(b[at] ^ (1 << (rng() % 8)));
      }
      std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
      try {
        use();
        ++used;
      } catch (const Error&) {
        ++refused;
      }
    }
    return std::to_string(used) + " " + std::to_string(refused);
  });
  FlipCounts c;
  std::istringstream(counts) >> c.used >> c.refused;
  EXPECT_EQ(c.used + c.refused, trials) << counts;
  return c;
}

std::string run_in_child(const std::string& what, const std::function<std::string()>& fn) {
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << what << ": pipe() failed";
    return "";
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    try {
      out = fn();
    } catch (const std::exception& e) {
      out = std::string("exception: ") + e.what();
    }
    for (size_t done = 0; done < out.size();) {
      const ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    _exit(0);  // not exit(): no atexit handlers (a library's teardown of state that fn damaged)
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) {
    ADD_FAILURE() << what << ": fork or waitpid failed";
    return "";
  }
  if (WIFSIGNALED(status)) ADD_FAILURE() << what << ": the child died of signal " << WTERMSIG(status);
  else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ADD_FAILURE() << what << ": the child exited abnormally";
  return out;
}

}  // namespace cllm::test
