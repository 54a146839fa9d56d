// `cllm SUBCOMMAND [flags]`: dispatches to the subcommand table below.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <exception>
#include <new>
#include <string>

#include "core/check.h"
#include "launch/commands.h"

namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  int (*main)(int, char**);
};

const Subcommand kSubcommands[] = {
    {"generate", "generate text from a prompt with AR and/or Jacobi decoding, with stats", cllm::cli::generate_main},
    {"bench", "measure decode speed, forward time per block size, and memory bandwidth", cllm::cli::bench_main},
    {"random-model", "write a randomly initialised HF-format checkpoint of a given shape", cllm::cli::random_model_main},
    {"convert", "convert a checkpoint (e.g. GGUF) to an HF safetensors directory or a cllm .h5 checkpoint",
     cllm::cli::convert_main},
    {"serve", "serve an OpenAI-compatible HTTP API (completions, chat, SSE streaming, metrics)", cllm::cli::serve_main},
    {"trajectories", "collect Jacobi trajectories of a prompts file into HDF5 for consistency training", cllm::cli::trajectories_main},
};

void usage(FILE* out) {
  std::fprintf(out,
               "cllm: a runtime for Consistency LLMs (greedy Jacobi decoding of LLaMA-family models)\n\n"
               "usage: cllm SUBCOMMAND [flags]    (cllm SUBCOMMAND --help for its flags)\n\nsubcommands:\n");
  for (const Subcommand& s : kSubcommands) std::fprintf(out, "  %-14s %s\n", s.name, s.summary);
}

// A run's output is its result: a failed write to stdout (a full disk, a closed descriptor) turns
// exit status 0 into 1 with a message, as coreutils do. Called once the subcommand has returned.
int checked_stdout(int rc, const char* name) {
  std::cout.flush();
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int why = errno;
  if ((flushed && !std::ferror(stdout) && std::cout.good()) || rc != 0) return rc;
  std::fprintf(stderr, "cllm%s%s: error: writing to standard output failed%s%s\n", *name ? " " : "", name,
               why != 0 ? ": " : "", why != 0 ? std::strerror(why) : "");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(stdout);
    return checked_stdout(0, "");
  }
  for (const Subcommand& s : kSubcommands) {
    if (name != s.name) continue;
    try {
      return checked_stdout(s.main(argc - 1, argv + 1), s.name);
    } catch (const std::bad_alloc&) {
      // Sizes the flags name are checked against memory where they are known (the KV cache); this is
      // what got past those checks.
      std::fprintf(stderr, "cllm %s: error: out of memory: an allocation failed (std::bad_alloc); a smaller "
                   "model, batch, context or KV cache may fit\n", s.name);
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cllm %s: error: %s\n", s.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "cllm: unknown subcommand '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}
