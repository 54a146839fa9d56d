#include "launch/cli_common.h"

#include <unistd.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "core/check.h"
#include "kernels/cpu/ops.h"
#include "parallel/coordinator.h"
#include "parallel/tp_model.h"
#include "runtime/block_rows.h"
#ifdef CLLM_HAVE_NCCL
#include "parallel/cuda/cuda_tp_model.h"
#include "parallel/cuda/rank_stand_in.h"
#endif
#include "runtime/random_model.h"

namespace cllm::cli {

bool parse_flags(int argc, char** argv, const std::string& usage_line, po::options_description& opts,
                 po::variables_map& vm) {
  opts.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage_line << "\n\n" << opts << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    CLLM_FAIL(e.what() << " (see --help)");
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

// This rank's model: the whole one, or its shard of the group on comm.
std::unique_ptr<Model> load_shard(const CheckpointReader& ckpt, Device device, Comm& comm, const CommFlags& flags,
                                  const ModelOptions& numerics, const LoadProgress& progress) {
#ifdef CLLM_HAVE_NCCL
  if (device == Device::Cuda && comm.size() > 1) {
    CudaTpOptions tp;
    tp.all_reduce = parse_cuda_all_reduce(flags.all_reduce);
    tp.model = cuda::CudaModelOptions::with(numerics);
    return make_cuda_sharded_model(ckpt, comm, tp, progress);
  }
#else
  (void)flags;
#endif
  return make_sharded_model(ckpt, device, comm, progress, numerics);
}

// --tp-rank R/N: rank R's shard of a TP=N group, alone on this process's GPU.
std::unique_ptr<Model> load_rank_stand_in(const CheckpointReader& ckpt, Device device, const Comm& comm,
                                          const CommFlags& flags, const ModelOptions& numerics,
                                          const LoadProgress& progress) {
  CLLM_CHECK(device == Device::Cuda && comm.size() == 1,
             "--tp-rank times one rank of a group alone: it needs --device cuda and a single process");
#ifdef CLLM_HAVE_NCCL
  return make_cuda_rank_stand_in(ckpt, flags.stand_in_rank, flags.stand_in_size, cuda::CudaModelOptions::with(numerics),
                                 progress);
#else
  (void)ckpt, (void)flags, (void)numerics, (void)progress;
  CLLM_FAIL("--tp-rank needs a cllm built with CUDA and NCCL");
#endif
}

}  // namespace

LoadedModel load_model(const std::string& path, Device device) {
  const std::unique_ptr<Comm> one = make_single_comm();
  return load_model(path, device, *one, CommFlags{});
}

LoadedModel load_model(const std::string& path, Device device, Comm& comm, const CommFlags& flags) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool lead = comm.rank() == 0;
  ModelOptions numerics = parse_numerics(flags.numerics);  // refused before anything loads
  if (flags.numerics == "blocks")
    numerics.cuda_invariant_max_rows = std::max(numerics.cuda_invariant_max_rows, flags.lookahead_rows);
  numerics.cpu_native_weights = parse_weights(flags.weights, comm.size());
  numerics.cuda_overlap_launches = parse_cuda_launch(flags.cuda_launch);
  numerics.cuda_fuse_swiglu = parse_cuda_swiglu(flags.cuda_swiglu);
  numerics.cuda_gemm_ring = parse_cuda_gemm_loads(flags.cuda_gemm_loads);
  numerics.cuda_fused_layer_rows = parse_cuda_layer(flags.cuda_layer);
  numerics.cuda_graphs = parse_cuda_graphs(flags.cuda_graphs);
  LoadedModel m;
  // "random:7b": random weights of a named shape, computed while loading (no file).
  if (path.rfind("random:", 0) == 0)
    m.checkpoint = random_checkpoint(random_model_shape(path.substr(7)));
  else
    m.checkpoint = open_checkpoint(path);
  if (comm.size() > 1) agree_on_config(*m.checkpoint, comm);  // before the collective load
  if (lead) m.tokenizer = make_tokenizer(m.checkpoint->tokenizer(), m.checkpoint->config().vocab_size);
  if (lead && !m.checkpoint->tokenizer().note.empty())
    std::fprintf(stderr, "tokenizer: %s\n", m.checkpoint->tokenizer().note.c_str());
  std::string label = "loading " + std::filesystem::path(path).filename().string();
  if (comm.size() > 1) label += " (slowest of " + std::to_string(comm.size()) + " ranks)";
  ProgressBar bar(label);
  LoadProgress progress;
  if (comm.size() > 1) {
    // Rank 0 shows every rank's progress as the slowest one's. Every rank reads the same tensors in
    // the same order (its slices of them) and reports once per tensor, so one 8-byte all-gather per
    // tensor matches across ranks; it also keeps them in step, and the comm deadline bounds a rank
    // that stops loading. A 70B checkpoint has ~720 tensors: well under a second of collectives.
    std::vector<double> fractions(comm.size());
    progress = [&comm, &bar, lead, fractions](double done, double total, const std::string&) mutable {
      const double mine = total > 0 ? done / total : 1.0;
      comm.all_gather(&mine, sizeof mine, fractions.data(), {"load progress"});
      if (lead) bar.update(*std::min_element(fractions.begin(), fractions.end()), 1.0);
    };
  } else if (lead) {
    progress = [&](double done, double total, const std::string&) { bar.update(done, total); };
  }
  m.model = flags.stand_in_size > 0 ? load_rank_stand_in(*m.checkpoint, device, comm, flags, numerics, progress)
                                    : load_shard(*m.checkpoint, device, comm, flags, numerics, progress);
  if (lead) bar.finish();
  m.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.slowest_load_seconds = m.load_seconds;
  if (comm.size() > 1) {
    const std::vector<RankLoad> loads = gather_loads(comm, describe_load(*m.model, m.load_seconds));
    for (const RankLoad& l : loads) m.slowest_load_seconds = std::max(m.slowest_load_seconds, l.seconds);
    for (int r = 0; lead && r < comm.size(); ++r)
      std::fprintf(stderr, "rank %d: loaded %.1f MB of weights in %.2f s, peak memory %.1f MB\n", r,
                   loads[r].weight_bytes / 1e6, loads[r].seconds, loads[r].peak_rss_bytes / 1e6);
    agree_on_checkpoint(*m.checkpoint, comm);  // before the first forward
  }
  return m;
}

double startup_deadline(int argc, char** argv) {
  const std::string flag = "--comm-deadline";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string text;
    if (a == flag && i + 1 < argc)
      text = argv[i + 1];
    else if (a.rfind(flag + "=", 0) == 0)
      text = a.substr(flag.size() + 1);
    else
      continue;
    char* end = nullptr;
    const double s = std::strtod(text.c_str(), &end);
    if (end != text.c_str() && *end == '\0' && s > 0) return s;
  }
  return 60.0;
}

void add_comm_flags(po::options_description& opts, CommFlags& flags) {
  opts.add_options()("comm-deadline", po::value(&flags.deadline_s)->default_value(60.0),
                     "under mpirun: seconds any collective may wait for the other ranks before every rank stops")
      ("all-reduce", po::value(&flags.all_reduce)->default_value("auto"),
       "under mpirun with --device cuda: auto (NCCL + CUDA IPC when every rank has its own GPU, else host), nccl, "
       "ipc, or host (staged through host memory over MPI: ranks may share a GPU; no CUDA graphs)")
      ("weights", po::value(&flags.weights)->default_value("auto"),
       "with --device cpu: native (one rank: Q8_0, Q4_0 and Q4_1 matrices of a GGUF file stay in their blocks and are "
       "multiplied with int8-quantized activations, batch-invariant: ~5x fewer bytes per token), f32 (every "
       "weight converted to fp32 at load) or auto (native on one rank, f32 under mpirun)")
      ("numerics", po::value(&flags.numerics)->default_value("blocks"),
       "with --device cuda: which forwards run the batch-invariant kernels, so that a token's logits do not "
       "depend on what shares its forward: blocks (forwards of up to 16 rows, or of one sequence's iteration "
       "when --candidates or --blocks is on: greedy Jacobi with blocks of up to 16, lookahead and multi-block "
       "decoding equal greedy AR; "
       "0-13% of a 7B step), invariant (every forward: any block size, batches and prefill "
       "chunks; costs up to 3x on large forwards, docs/benchmarks.md) or fast (none)")
      ("cuda-launch", po::value(&flags.cuda_launch)->default_value("overlapped"),
       "with --device cuda: overlapped (each kernel is scheduled while the one before it finishes, and fetches its "
       "weights meanwhile) or serial (plain launches; for comparison)")
      ("cuda-swiglu", po::value(&flags.cuda_swiglu)->default_value("fused"),
       "with --device cuda: separate (silu(gate) * up in its own kernel) or fused (computed in the epilogue of "
       "the gate|up projection's small-M GEMM: one kernel fewer a layer, the same bits)")
      ("cuda-gemm-loads", po::value(&flags.cuda_gemm_loads)->default_value("registers"),
       "with --device cuda: registers (the small-M GEMM loads each round of weights into registers and waits "
       "for it) or ring (at up to 16 rows it copies them through a ring in shared memory, several rounds in "
       "flight; not yet timed against registers). The same bits either way")
      ("cuda-layer", po::value(&flags.cuda_layer)->default_value("fused"),
       "with --device cuda on one GPU: separate (residual add + RMSNorm and RoPE + KV write kernels) or fused "
       "(the o and down projections add into the residual, the qkv and gate|up projections normalise it as they "
       "load it, the qkv projection's epilogue does RoPE and the KV write: three kernels fewer a layer, the same "
       "bits) in forwards of up to 16384 / hidden rows (at most 16), where it pays (7B: 4, SmolLM2: 16), or "
       "fused:N in forwards of up to N rows (1..64)")
      ("cuda-graphs", po::value(&flags.cuda_graphs)->default_value("replay"),
       "with --device cuda: replay (each device forward is a CUDA graph, replayed while its launch shape is "
       "unchanged), recapture (captured and patched every step; for comparison) or off (kernels launched one by "
       "one; host-staged tensor parallelism always runs so)");
}

void check_block_flag(int block) {
  CLLM_CHECK(block >= 1 && block <= kMaxBlockRows, "--block must be in 1.." << kMaxBlockRows << ", got " << block);
}

void apply_block_flags(const std::string& block, int max_block, bool max_block_given, JacobiOptions& jac) {
  CLLM_CHECK(max_block >= 1 && max_block <= kMaxBlockRows,
             "--max-block must be in 1.." << kMaxBlockRows << " (0: " << kMaxBlockRows << "), got " << max_block);
  if (block == "auto") {
    CLLM_CHECK(jac.window == JacobiWindow::Sliding,
               "--block auto changes the block between iterations, which needs --window sliding; give --block N "
               "with --window blockwise");
    jac.adaptive = true;
    // Without --max-block, the largest block leaves the lookahead candidates their rows.
    jac.block = max_block_given ? max_block : std::max(1, max_block - (jac.ngram >= 2 ? jac.candidate_rows() : 0));
    return;
  }
  size_t used = 0;
  int n = 0;
  try {
    n = std::stoi(block, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  CLLM_CHECK(used > 0 && used == block.size(), "--block must be auto or a number, got '" << block << "'");
  check_block_flag(n);
  CLLM_CHECK(!max_block_given, "--max-block applies to --block auto; --block " << n << " is a fixed block");
  jac.adaptive = false;
  jac.block = n;
}

int invariant_decode_rows(const JacobiOptions& jac) { return jac.candidates > 0 || jac.blocks > 1 ? jac.rows() : 0; }

void check_lookahead_flags(const JacobiOptions& jac) {
  CLLM_CHECK(jac.blocks >= 1 && jac.blocks <= kMaxBlockRows,
             "--blocks must be in 1.." << kMaxBlockRows << ", got " << jac.blocks);
  CLLM_CHECK(jac.blocks == 1 || !jac.adaptive, "--blocks " << jac.blocks << " needs a fixed --block N: --block auto "
                                               "picks one block's size per step");
  CLLM_CHECK(jac.later_after >= 0 && jac.later_after <= 1,
             "--later-block-after must be in [0, 1], got " << jac.later_after);
  CLLM_CHECK(jac.candidates >= 0, "--candidates must be >= 0, got " << jac.candidates);
  CLLM_CHECK(jac.ngram >= 2, "--ngram must be >= 2 (a key token and a continuation), got " << jac.ngram);
  const std::string blocks = jac.blocks > 1 ? " x --blocks (" + std::to_string(jac.blocks) + ")" : "";
  CLLM_CHECK(jac.rows() <= kMaxBlockRows, "--block (" << jac.block << ")" << blocks << " + --candidates ("
                                                      << jac.candidates << ") x (--ngram " << jac.ngram
                                                      << " - 1) = " << jac.rows() << " rows per iteration, over "
                                                      << kMaxBlockRows);
}

void write_output_file(const char* flag, const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  CLLM_CHECK(out, "cannot write " << flag << " " << path << ": " << std::strerror(errno));
  out << text;
  out.close();  // flushes: a full disk shows here
  CLLM_CHECK(!out.fail(), "cannot write " << flag << " " << path << ": " << std::strerror(errno));
}

void check_output_is_not_input(const char* out_flag, const std::string& out, const char* in_flag, const std::string& in) {
  std::error_code ec;
  CLLM_CHECK(out.empty() || in.empty() || !std::filesystem::equivalent(out, in, ec),
             out_flag << " " << out << " is the " << in_flag << " input: writing it would overwrite the input");
}

void check_output_writable(const char* flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CLLM_CHECK(!fs::is_directory(path, ec), "cannot write " << flag << " " << path << ": it is a directory");
  if (fs::exists(path, ec)) {
    CLLM_CHECK(::access(path.c_str(), W_OK) == 0, "cannot write " << flag << " " << path << ": " << std::strerror(errno));
    return;
  }
  const fs::path parent = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
  CLLM_CHECK(fs::is_directory(parent, ec), "cannot write " << flag << " " << path << ": no directory " << parent.string());
  CLLM_CHECK(::access(parent.c_str(), W_OK) == 0,
             "cannot write " << flag << " " << path << " in " << parent.string() << ": " << std::strerror(errno));
}

bool output_is_stdout(const std::string& path) {
  if (path == "-") return true;
  struct stat out {}, file {};
  return ::fstat(STDOUT_FILENO, &out) == 0 && ::stat(path.c_str(), &file) == 0 && out.st_dev == file.st_dev &&
         out.st_ino == file.st_ino;
}

void set_cpu_threads(int requested, const Comm& comm) {
  // Checked before anything is allocated: a pool of a million threads takes gigabytes and seconds
  // before it fails, and more threads than cores only contend.
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  CLLM_CHECK(requested >= 0 && requested <= cores, "--threads must be 0 (automatic) or 1.." << cores
                                                       << " (the cores of this machine), got " << requested);
  if (requested > 0) {
    cpu::set_num_threads(requested);
  } else if (comm.local_size() > 1) {
    cpu::set_num_threads(std::max(1, cores / comm.local_size()));
  }
}

int lead_or_serve(LoadedModel& m, Comm& comm, const std::function<int(Model&)>& lead) {
  if (comm.size() == 1) return lead(*m.model);
  if (comm.rank() != 0) {
    worker_loop(*m.model, comm);
    return 0;
  }
  CoordinatorModel group(*m.model, comm);
  const int status = lead(group);
  group.stop();
  return status;
}

}  // namespace cllm::cli
