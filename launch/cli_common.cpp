#include "launch/cli_common.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "kernels/check.h"

namespace cllm::cli {

bool parse_flags(int argc, char** argv, const std::string& usage_line, po::options_description& opts,
                 po::variables_map& vm) {
  opts.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    CLLM_FAIL(e.what() << " (see --help)");
  }
  if (vm.count("help")) {
    std::cout << "usage: " << usage_line << "\n\n" << opts << "\n";
    return false;
  }
  return true;
}

std::string default_model_path() {
  // Relative to the working directory first (the README runs from the repo root), then to the
  // executable's source tree.
  const std::string rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::exists(rel)) return rel;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe");
  for (std::filesystem::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path(); dir = dir.parent_path())
    if (std::filesystem::exists(dir / rel)) return (dir / rel).string();
  return rel;
}

namespace {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), tty_(isatty(STDERR_FILENO)) {}
  void update(double done, double total) {
    const int pct = total > 0 ? static_cast<int>(100.0 * done / total) : 0;
    if (tty_) {
      const int width = 30, filled = pct * width / 100;
      std::fprintf(stderr, "\r%s [%.*s%*s] %3d%%", label_.c_str(), filled, "##############################",
                   width - filled, "", pct);
    } else if (pct / 10 > last_decile_) {
      std::fprintf(stderr, "%s %d%%\n", label_.c_str(), pct);
    }
    last_decile_ = pct / 10;
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  std::string label_;
  bool tty_;
  int last_decile_ = 0;
};

}  // namespace

LoadedModel load_model(const std::string& path, Device device) {
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel m;
  m.checkpoint = open_checkpoint(path);
  m.tokenizer = make_tokenizer(m.checkpoint->tokenizer());
  ProgressBar bar("loading " + std::filesystem::path(path).filename().string());
  m.model = make_model(*m.checkpoint, device, [&](double done, double total, const std::string&) {
    bar.update(done, total);
  });
  bar.finish();
  m.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

}  // namespace cllm::cli
