// The `cllm` subcommands. Each parses its own flags (Boost.ProgramOptions tables), prints
// --help, and returns a process exit code.
#pragma once

namespace cllm::cli {

int generate_main(int argc, char** argv);
int random_model_main(int argc, char** argv);
int bench_main(int argc, char** argv);
int convert_main(int argc, char** argv);
int trajectories_main(int argc, char** argv);
int serve_main(int argc, char** argv);

}  // namespace cllm::cli
