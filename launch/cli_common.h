// Pieces shared by the subcommands: flag parsing with --help, and model loading with progress.
#pragma once
#include <memory>
#include <string>

#include <boost/program_options.hpp>

#include "loaders/checkpoint.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace cllm::cli {

namespace po = boost::program_options;

// Parses argv against `opts` (adds --help). Returns false when --help was printed.
// Throws cllm::Error naming the bad flag.
bool parse_flags(int argc, char** argv, const std::string& usage_line, po::options_description& opts,
                 po::variables_map& vm);

// The default model location, as fetched by launch/fetch_model.sh.
std::string default_model_path();

struct LoadedModel {
  std::unique_ptr<CheckpointReader> checkpoint;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Model> model;
  double load_seconds = 0;
};

// Opens the checkpoint, builds the tokenizer and loads the weights, drawing a progress bar on
// stderr when it is a terminal (a line per 10% otherwise).
LoadedModel load_model(const std::string& path, Device device);

}  // namespace cllm::cli
