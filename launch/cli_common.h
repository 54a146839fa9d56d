// Pieces shared by the subcommands: flag parsing with --help, model loading with progress, and
// the per-rank setup of commands that run under mpirun (tensor parallelism, cluster/README.md).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "launch/flags.h"

#include "loaders/checkpoint.h"
#include "parallel/comm.h"
#include "runtime/decoding.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace cllm::cli {

namespace po = cllm::flags;

// Parses argv against `opts` (adds --help). Returns false when --help was printed.
// Throws cllm::Error naming the bad flag.
bool parse_flags(int argc, char** argv, const std::string& usage_line, po::options_description& opts,
                 po::variables_map& vm);

// The default model location, as fetched by launch/fetch_model.sh.
std::string default_model_path();

struct LoadedModel {
  std::unique_ptr<CheckpointReader> checkpoint;
  std::unique_ptr<Tokenizer> tokenizer;  // rank 0 only
  std::unique_ptr<Model> model;          // this rank's model: the whole one, or its shard
  double load_seconds = 0;          // this rank's load
  double slowest_load_seconds = 0;  // the group's: the slowest rank's (= load_seconds on one rank)
};

// Opens the checkpoint, builds the tokenizer and loads the weights, drawing a progress bar on
// stderr when it is a terminal (a line per 10% otherwise). A path "random:SHAPE" (tiny, 135m,
// 7b, 13b, 70b) loads random weights of that shape with a byte-level tokenizer, from no file.
LoadedModel load_model(const std::string& path, Device device);

// --comm-deadline's value, read before the flags are parsed: the communicator and its start-up
// watchdog (init_comm_from_environment) come first, so that a flag error stops every rank alike.
// 60 when the flag is absent or malformed (parsing then reports it).
double startup_deadline(int argc, char** argv);

// The flags of commands that run under mpirun (add_comm_flags).
struct CommFlags {
  double deadline_s = 60;           // --comm-deadline: seconds a collective may wait before every rank stops
  std::string all_reduce = "auto";  // --all-reduce: how CUDA ranks sum activations (parse_cuda_all_reduce)
  std::string weights = "auto";    // --weights: CPU weights in the file's blocks or fp32 (parse_weights)
  std::string numerics = "blocks";  // --numerics: which CUDA forwards are batch-invariant (parse_numerics)
  // Rows of one sequence's lookahead or multi-block iteration (blocks + candidate rows; 0: neither),
  // set by the decoding commands: under --numerics blocks, forwards of that many rows are invariant too, so a
  // branch row computes as the plain row at its position and lookahead keeps AR's tokens.
  int lookahead_rows = 0;

  std::string cuda_launch = "overlapped";  // --cuda-launch (parse_cuda_launch)
  std::string cuda_swiglu = "fused";        // --cuda-swiglu (parse_cuda_swiglu)
  std::string cuda_gemm_loads = "registers";  // --cuda-gemm-loads (parse_cuda_gemm_loads)
  std::string cuda_layer = "fused";          // --cuda-layer (parse_cuda_layer)
  std::string cuda_graphs = "replay";      // --cuda-graphs (parse_cuda_graphs)
  // cllm bench --tp-rank R/N: load only rank R's shard of a TP=N group and run it alone on this
  // GPU (parallel/cuda/rank_stand_in.h). stand_in_size 0: off.
  int stand_in_rank = 0, stand_in_size = 0;
};
void add_comm_flags(po::options_description& opts, CommFlags& flags);

// The same on each rank of comm: every rank loads only its shard (CUDA ranks sum with
// flags.all_reduce). Rank 0 draws the progress of the slowest rank (one small all-gather per
// tensor), then prints one line per rank (time, bytes, peak memory) once every rank has finished;
// the other ranks print nothing.
LoadedModel load_model(const std::string& path, Device device, Comm& comm, const CommFlags& flags);

// Refuses a --block outside 1..kMaxBlockRows (runtime/block_rows.h), naming the flag and the value.
void check_block_flag(int block);
// --candidates >= 0, --ngram >= 2 with candidates, and the rows of one iteration within kMaxBlockRows.
void check_lookahead_flags(const JacobiOptions& jac);
// CommFlags::lookahead_rows for a decoding command: one sequence's rows per iteration when lookahead
// candidates or several blocks are on, else 0 (plain blocks keep --numerics blocks' 16 rows).
int invariant_decode_rows(const JacobiOptions& jac);

// The block flags of generate and serve, as draft-length options of other servers read:
//   --block auto   load-adaptive: each iteration picks 1..--max-block (runtime/block_policy.h)
//   --block N      a fixed block of N (1: greedy AR)
// Sets jac.block and jac.adaptive; refuses a bad value, --max-block with a fixed block, and
// auto with the blockwise window (its block is fixed by definition). Call after jac.window is set.
inline constexpr const char* kChatTemplateFlagHelp =
    "chat template family (chatml, llama-2, llama-3, vicuna) instead of the checkpoint's, for --chat and chat "
    "messages";
// --later-block-after, for generate and serve (JacobiOptions::later_after).
inline constexpr const char* kLaterBlockAfterHelp =
    "multi-block: a later block joins once an iteration settles (makes final, or leaves unchanged) this "
    "fraction of the frontier's guesses, and leaves when the frontier block is done (Jacobi Forcing's "
    "rule); 0: every block in flight from the start";
inline constexpr const char* kBlockFlagHelp =
    "Jacobi block: auto (picked each iteration from 1..--max-block to maximise tokens/s) or a fixed N";
void apply_block_flags(const std::string& block, int max_block, bool max_block_given, JacobiOptions& jac);

// CPU threads of this rank: `requested` if > 0, else the node's cores shared among its ranks.
// Refuses (naming --threads and the cores) a negative count or more threads than this machine's cores.
void set_cpu_threads(int requested, const Comm& comm);

// An output file a flag names (e.g. --json): `text` written whole, or throws naming the flag, the
// path and the system's reason (a missing directory, a full disk), so a lost result is never
// reported as written.
void write_output_file(const char* flag, const std::string& path, const std::string& text);
// Throws naming the flag and the path when an output file could not be written (its directory is
// missing or not writable, or the file exists read-only): checked before the work, not after it.
// Creates nothing.
void check_output_writable(const char* flag, const std::string& path);
// Throws when a flag's output file is one of the command's input files (it would overwrite it).
void check_output_is_not_input(const char* out_flag, const std::string& out, const char* in_flag, const std::string& in);
// True when an output path is "-" or names the file this process's stdout already writes to
// (/dev/stdout, or the file stdout is redirected into): what else the command prints must then go to
// stderr, or it would land between the output's lines.
bool output_is_stdout(const std::string& path);

// Rank 0 runs lead(model) where model is what decoders use: the local model with one rank, a
// CoordinatorModel over the group with several. The other ranks serve it (worker_loop) until
// lead returns. Returns lead's status on rank 0, 0 elsewhere.
int lead_or_serve(LoadedModel& m, Comm& comm, const std::function<int(Model&)>& lead);

}  // namespace cllm::cli
