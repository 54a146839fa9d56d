// cllm bench: decode speed against the machine's own memory bandwidth, measured in the same run.
//   1. read and copy bandwidth (STREAM-like) -> the floor: bytes one step reads / read bandwidth
//   2. AR decode tokens/s over a real generation
//   3. one forward over a block of n tokens after a context of c tokens, for each n
//   4. with --batch-sizes: one batched step (Model::forward_batch, continuous batching) of B
//      sequences, each forwarding n tokens after its own context of --batch-context tokens
// On native (int8-block) CPU weights, also the int8 multiply-add rate, and for each n the floor of
// the block's int8 work at that rate: a multi-token step is compute-bound long before its bytes.
// Results print as a table and, with --json, go to a file for docs/plot_bench.py.
// Under mpirun, rank 0 times the tensor-parallel group and prints; the ranks of one node share
// its memory bandwidth, so the floor counts the bytes of all of them against it.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "kernels/cpu/int8_peak.h"
#include "kernels/cpu/membw.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "launch/cli_common.h"
#include "parallel/coordinator.h"
#include "runtime/generate.h"
#ifdef CLLM_HAVE_CUDA
#include "runtime/cuda/device_bandwidth.h"
#endif

namespace cllm::cli {
namespace {

// "1,16,64": every item a whole positive int (no sign, fraction, exponent or trailing text), at
// least one item.
std::vector<int> parse_list(const std::string& s, const char* flag) {
  std::vector<int> out;
  for (size_t begin = 0;;) {
    const size_t end = std::min(s.find(',', begin), s.size());
    const char *b = s.data() + begin, *e = s.data() + end;
    int v = 0;
    const auto [stop, ec] = std::from_chars(b, e, v);
    CLLM_CHECK(b != e && ec == std::errc() && stop == e,
               "--" << flag << " expects comma-separated positive integers, got '" << s << "'");
    CLLM_CHECK(v > 0, "--" << flag << " values must be positive, got " << v);
    out.push_back(v);
    if (end == s.size()) break;
    begin = end + 1;
  }
  // Ascending, each once: the tables compare every row with the smallest value's.
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// "R/N" -> (R, N) with 0 <= R < N and N >= 2.
std::pair<int, int> parse_tp_rank(const std::string& s) {
  int r = -1, n = 0;
  char slash = 0, extra = 0;
  std::istringstream in(s);
  const bool ok = static_cast<bool>(in >> r >> slash >> n) && slash == '/' && !(in >> extra);
  CLLM_CHECK(ok && n >= 2 && r >= 0 && r < n, "--tp-rank expects R/N with 0 <= R < N and N >= 2, got '" << s << "'");
  return {r, n};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Flags {
  std::string model_path, device, ns_text, contexts_text, json_path, batch_sizes_text, batch_ns_text, tp_rank_text;
  int threads = 0, tokens = 0, reps = 0, prefill = 0, batch_context = 0;
  CommFlags comm_flags;
  double load_seconds = 0;  // slowest rank's checkpoint load, measured before the benchmark
  bool json = false;
  // --json onto stdout ("-", /dev/stdout, or the file stdout is redirected into): the tables then go
  // to stderr, so stdout holds the JSON document alone.
  bool json_on_stdout = false;
  FILE* report() const { return json_on_stdout ? stderr : stdout; }
};

// FLOPs of one rank's forward (tensor parallel over `ranks`) of `rows` token rows whose attention
// covers `pairs` (query, key) pairs in all: every linear layer (and the LM head, which cllm applies
// to every row) at 2 FLOPs per weight per row, plus attention, 2 matmuls of 2 FLOPs per (query, key,
// head dim) per head.
double forward_flops(const ModelConfig& c, double rows, double pairs, int ranks) {
  const double q = static_cast<double>(c.num_heads) * c.head_dim, kv = static_cast<double>(c.num_kv_heads) * c.head_dim;
  const double d = c.hidden_size, f = c.intermediate_size;
  const double per_layer_weights = d * (q + 2 * kv) + q * d + 3 * d * f;
  const double weights = c.num_layers * per_layer_weights + static_cast<double>(c.vocab_size) * d;
  return (2.0 * weights * rows + c.num_layers * 4.0 * q * pairs) / ranks;
}

// A causal prefill of `tokens` tokens: query i sees keys 0..i.
double prefill_flops(const ModelConfig& c, int tokens, int ranks) {
  return forward_flops(c, tokens, tokens * (tokens + 1.0) / 2, ranks);
}

// 4. Batched steps: B sequences in KV slots 0..B-1, each with `batch_context` tokens of its own
// (different ids per slot, prefilled by batched forwards), each forwarding n tokens at positions
// context .. context+n-1 in one forward_batch. The floor counts the weights once and every
// sequence's KV, times `sharing` (the ranks reading one memory, as run_bench counts them). With
// matmul_tflops > 0 (a GPU's bf16 matmul rate, measured in the same run) it also prints the compute
// floor, the step's FLOPs (forward_flops) at that rate: large batches are bound by it, not by bytes,
// and "roofline x" is the step over the larger of the two floors. Returns the JSON rows.
nlohmann::json bench_batches(Model& model, const Flags& f, double read_gbs, int sharing, double matmul_tflops,
                             int ranks) {
  const std::vector<int> sizes = parse_list(f.batch_sizes_text, "batch-sizes");
  const std::vector<int> ns = parse_list(f.batch_ns_text, "batch-ns");
  const int max_b = *std::max_element(sizes.begin(), sizes.end());
  const int max_n = *std::max_element(ns.begin(), ns.end());
  const int ctx = f.batch_context, V = model.config().vocab_size;
  try {
    model.reset(ctx + max_n, max_b);
  } catch (const std::exception& e) {  // the KV cache beyond the machine's memory, named by these flags
    CLLM_FAIL("--batch-sizes " << max_b << " with --batch-context " << ctx << ": " << e.what());
  }
  std::vector<int32_t> tokens, out;
  std::vector<SeqBlock> blocks;
  auto fill = [&](int count, int pos, int n) {
    tokens.clear();
    blocks.clear();
    for (int b = 0; b < count; ++b) {
      for (int i = 0; i < n; ++i)
        tokens.push_back(static_cast<int32_t>((static_cast<int64_t>(pos + i) * 104729 + b * 7919 + 7) % V));
      blocks.push_back({b, pos, n});
    }
    out.resize(tokens.size());
  };
  if (ctx > 0) {
    fill(max_b, 0, ctx);
    model.forward_batch(tokens.data(), blocks.data(), max_b, out.data(), nullptr);
  }
  const double weights = model.step_bytes(0);
  nlohmann::json rows = nlohmann::json::array();
  const bool compute = matmul_tflops > 0;
  std::fprintf(f.report(), "\nbatched steps after a context of %d tokens per sequence\n%6s %4s %6s %10s %12s %12s %10s %9s%s\n", ctx,
                           "B", "n", "rows", "step ms", "rows/s", "seq-steps/s", "floor ms", "floor x",
                           compute ? "  compute ms  roofline x" : "");
  for (int count : sizes) {
    for (int n : ns) {
      fill(count, ctx, n);
      std::vector<double> times;
      for (int r = 0; r <= f.reps; ++r) {  // r == 0 warms up (and on CUDA captures the graph)
        const auto t0 = std::chrono::steady_clock::now();
        model.forward_batch(tokens.data(), blocks.data(), count, out.data(), nullptr);
        if (r > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      const double t = median(times);
      const double bytes = sharing * (weights + count * (model.step_bytes(ctx + n) - weights));
      const double floor_s = bytes / (read_gbs * 1e9);
      // Each sequence's query i (position ctx + i) sees keys 0 .. ctx + i.
      const double pairs = static_cast<double>(count) * (static_cast<double>(n) * ctx + n * (n + 1.0) / 2);
      const double compute_s = compute ? forward_flops(model.config(), count * n, pairs, ranks) / (matmul_tflops * 1e12) : 0;
      std::fprintf(f.report(), "%6d %4d %6d %10.3f %12.0f %12.1f %10.3f %8.2fx", count, n, count * n, t * 1e3, count * n / t,
                               count / t, floor_s * 1e3, t / floor_s);
      if (compute) std::fprintf(f.report(), "  %10.3f %10.2fx", compute_s * 1e3, t / std::max(floor_s, compute_s));
      std::fprintf(f.report(), "\n");
      nlohmann::json row = {{"batch", count},
                            {"n", n},
                            {"context", ctx},
                            {"rows", count * n},
                            {"step_ms", t * 1e3},
                            {"rows_per_s", count * n / t},
                            {"floor_ms", floor_s * 1e3}};
      if (compute) row["compute_floor_ms"] = compute_s * 1e3;
      rows.push_back(row);
    }
  }
  return rows;
}

// Every size the benchmark runs at, against the model's positions, before anything is timed: a
// refusal naming the flag, not a failure inside a forward or an allocation.
void check_sizes(const ModelConfig& cfg, const Flags& f) {
  const int64_t positions = cfg.max_position_embeddings;
  const auto fits = [&](int64_t rows, const std::string& what) {
    CLLM_CHECK(rows <= positions, what << " needs " << rows << " positions, beyond the model's " << positions
                                       << " (max_position_embeddings)");
  };
  const std::vector<int> ns = parse_list(f.ns_text, "ns"), contexts = parse_list(f.contexts_text, "contexts");
  const int64_t max_n = *std::max_element(ns.begin(), ns.end());
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());
  fits(max_ctx + max_n, "--contexts " + std::to_string(max_ctx) + " with --ns " + std::to_string(max_n));
  fits(f.prefill, "--prefill " + std::to_string(f.prefill));
  const std::string why = context_limit_error(cfg, 16, f.tokens, 1);  // the AR figure's 16-token prompt
  CLLM_CHECK(why.empty(), "--tokens: " << why);
  if (!f.batch_sizes_text.empty()) {
    const std::vector<int> bns = parse_list(f.batch_ns_text, "batch-ns");
    const int64_t max_bn = *std::max_element(bns.begin(), bns.end());
    fits(f.batch_context + max_bn,
         "--batch-context " + std::to_string(f.batch_context) + " with --batch-ns " + std::to_string(max_bn));
  }
}

// Rank 0's part: every measurement, through `model` (the whole model or the TP group).
int run_bench(Model& model, const Flags& f, const Comm& comm) {
  const std::vector<int> ns = parse_list(f.ns_text, "ns");
  const std::vector<int> contexts = parse_list(f.contexts_text, "contexts");
  const ModelConfig& cfg = model.config();
  check_sizes(cfg, f);
  const int tokens = f.tokens, reps = f.reps, prefill = f.prefill;
  // Bytes read per step from one memory: on the CPU every rank of the node reads its own shard from
  // the node's shared memory; on GPUs each rank reads its shard from its own HBM (the per-rank floor).
  const bool gpu = parse_device(f.device) == Device::Cuda;
  const int node_ranks = comm.local_size();
  const int sharing = gpu ? 1 : node_ranks;
  auto node_bytes = [&](int context) { return model.step_bytes(context) * sharing; };
  const int group = f.comm_flags.stand_in_size > 0 ? f.comm_flags.stand_in_size : comm.size();
  if (f.comm_flags.stand_in_size > 0)
    std::fprintf(f.report(), "rank %d of a tensor-parallel group of %d, alone on this GPU (all-reduces over local stand-ins); "
                             "floor = this rank's shard over its GPU's bandwidth\n", f.comm_flags.stand_in_rank, group);
  if (comm.size() > 1)
    std::fprintf(f.report(), "tensor parallel: %d ranks, %d on this node; floor = %s\n", comm.size(), node_ranks,
                             gpu ? "one rank's shard over its GPU's bandwidth" : "the node's shards over the node's bandwidth");

  std::fprintf(f.report(), "load: %.2f s (slowest of %d ranks)\n", f.load_seconds, comm.size());

  // 1. Bandwidth, with a buffer well past the last-level cache.
  double read_gbs = 0, copy_gbs = 0;
  if (gpu) {
#ifdef CLLM_HAVE_CUDA
    read_gbs = cuda::measure_device_read_bandwidth_gbs(size_t{2} << 30, 5);
    copy_gbs = cuda::measure_device_copy_bandwidth_gbs(size_t{1} << 30, 5);
#endif
    std::fprintf(f.report(), "device memory bandwidth: read %.1f GB/s, copy %.1f GB/s\n", read_gbs, copy_gbs);
  } else {
    // The node's bandwidth, with all its cores: the other ranks idle while rank 0 measures.
    const int rank_threads = cpu::pool_size();
    if (node_ranks > 1) cpu::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
    const size_t bw_bytes = size_t{1} << 30;
    read_gbs = cpu::measure_read_bandwidth_gbs(bw_bytes, 5);
    copy_gbs = cpu::measure_copy_bandwidth_gbs(bw_bytes / 2, 5);
    std::fprintf(f.report(), "memory bandwidth: read %.2f GB/s, copy %.2f GB/s (%d threads)\n", read_gbs, copy_gbs,
                             cpu::pool_size());
    if (node_ranks > 1) cpu::set_num_threads(rank_threads);
  }
  // A multi-token step on int8 blocks can be compute-bound: its floor is then its int8
  // multiply-adds over this CPU's dot-product rate, measured here.
  const double int8_macs = gpu ? 0 : model.step_int8_macs();
  const double int8_gmacs = int8_macs > 0 ? cpu::measure_int8_gmacs(cpu::quant_best_path(), 5) : 0;
  if (int8_gmacs > 0)
    std::fprintf(f.report(), "int8 multiply-add rate: %.1f GMAC/s (%s, %d threads); one token: %.1f M int8 multiply-adds\n",
                             int8_gmacs, cpu::quant_path_name(cpu::quant_best_path()), cpu::pool_size(), int8_macs / 1e6);

  // 2. AR decode after a short prompt of synthetic ids.
  std::vector<int32_t> prompt(16);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919 + 13) % cfg.vocab_size);
  GenerateOptions gen;
  gen.max_new_tokens = tokens;
  const int max_n = *std::max_element(ns.begin(), ns.end());
  const int max_ctx = *std::max_element(contexts.begin(), contexts.end());
  model.reset(std::max({static_cast<int>(kv_rows_needed(static_cast<int64_t>(prompt.size()), tokens, 1)),
                        max_ctx + max_n, prefill}));
  const GenerateResult ar = generate_ar(model, prompt, gen);
  const double ar_tps = (ar.stats.tokens - 1) / ar.stats.decode_seconds;  // first token comes from prefill
  const int ar_ctx = static_cast<int>(prompt.size()) + tokens / 2;
  const double floor_s = node_bytes(ar_ctx) / (read_gbs * 1e9);
  std::fprintf(f.report(), "AR decode: %.2f tokens/s (%.2f ms/token); floor %.2f ms/token (%.1f MB/step): %.0f%% of the bandwidth floor\n",
                           ar_tps, 1e3 / ar_tps, floor_s * 1e3, node_bytes(ar_ctx) / 1e6, 100.0 * floor_s * ar_tps);

  // 3. One forward over n tokens at positions context .. context+n-1.
  std::vector<int32_t> ids(std::max({max_ctx + max_n, prefill})), out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 104729 + 7) % cfg.vocab_size);
  nlohmann::json rows = nlohmann::json::array();
  const std::string vs_first = "vs n=" + std::to_string(ns.front());  // ns ascending: the smallest block
  std::fprintf(f.report(), "\n%8s %6s %12s %14s %10s %10s%s\n", "context", "n", "forward ms", "ms per token", vs_first.c_str(), "floor x",
                           int8_gmacs > 0 ? "  MAC floor x" : "");
  for (int context : contexts) {
    model.predict(ids.data(), context, 0, out.data());
    double t1 = 0;
    for (int n : ns) {
      std::vector<double> times;
      for (int r = 0; r <= reps; ++r) {  // r == 0 warms up (and on CUDA captures the graph)
        const auto t0 = std::chrono::steady_clock::now();
        model.predict(ids.data() + context, n, context, out.data());
        if (r > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      const double t = median(times);
      if (n == ns.front()) t1 = t;
      const double floor_n = node_bytes(context + n) / (read_gbs * 1e9);
      std::fprintf(f.report(), "%8d %6d %12.3f %14.3f %9.2fx %9.2fx", context, n, t * 1e3, t * 1e3 / n, t / t1, t / floor_n);
      nlohmann::json row = {{"context", context}, {"n", n}, {"forward_ms", t * 1e3}, {"floor_ms", floor_n * 1e3}};
      if (int8_gmacs > 0) {  // the int8 work alone, at the dot-product rate: no step of n tokens is faster
        const double mac_floor = n * int8_macs / (int8_gmacs * 1e9);
        std::fprintf(f.report(), "  %10.2fx", t / mac_floor);
        row["mac_floor_ms"] = mac_floor * 1e3;
      }
      std::fprintf(f.report(), "\n");
      rows.push_back(row);
    }
  }
  double prefill_ms = 0, prefill_floor_ms = 0, matmul_tflops = 0;
#ifdef CLLM_HAVE_CUDA
  // The bf16 matmul rate of this GPU: the compute floor of the prefill and of large batched steps.
  if (gpu && (prefill > 0 || !f.batch_sizes_text.empty())) matmul_tflops = cuda::measure_device_bf16_matmul_tflops(8192, 5);
#endif
  if (prefill > 0) {
    std::vector<double> times;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      model.predict(ids.data(), prefill, 0, out.data());
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    prefill_ms = median(times) * 1e3;
    std::fprintf(f.report(), "\nprefill of %d tokens: %.1f ms\n", prefill, prefill_ms);
#ifdef CLLM_HAVE_CUDA
    if (gpu) {  // prefill is compute-bound: its floor is its FLOPs over the bf16 matmul rate of this GPU
      prefill_floor_ms = prefill_flops(cfg, prefill, group) / (matmul_tflops * 1e12) * 1e3;
      std::fprintf(f.report(), "bf16 matmul rate: %.0f TFLOP/s; prefill compute floor %.1f ms: %.2fx the floor\n", matmul_tflops,
                               prefill_floor_ms, prefill_ms / prefill_floor_ms);
    }
#endif
  }

  const nlohmann::json batch =
      f.batch_sizes_text.empty() ? nlohmann::json::array() : bench_batches(model, f, read_gbs, sharing, matmul_tflops, group);

  if (f.json) {
    nlohmann::json j = {{"model", f.model_path},
                        {"device", f.device},
                        {"threads", cpu::pool_size()},
                        {"tp", group},
                        {"tp_rank_alone", f.comm_flags.stand_in_size > 0 ? f.comm_flags.stand_in_rank : -1},
                        {"load_seconds", f.load_seconds},
                        {"read_gbs", read_gbs},
                        {"copy_gbs", copy_gbs},
                        {"int8_gmacs", int8_gmacs},
                        {"int8_macs_per_token", int8_macs},
                        {"ar_tokens_per_s", ar_tps},
                        {"ar_floor_ms", floor_s * 1e3},
                        {"prefill_tokens", prefill},
                        {"prefill_ms", prefill_ms},
                        {"prefill_floor_ms", prefill_floor_ms},
                        {"matmul_tflops", matmul_tflops},
                        {"forward", rows},
                        {"batch", batch}};
    const std::string text = j.dump(2) + "\n";
    if (f.json_on_stdout) {
      CLLM_CHECK(std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0,
                 "cannot write --json " << f.json_path << ": " << std::strerror(errno));
    } else {
      write_output_file("--json", f.json_path, text);
      std::fprintf(stderr, "wrote %s\n", f.json_path.c_str());
    }
  }
  return 0;
}

int bench_on_rank(int argc, char** argv, Comm& comm) {
  po::options_description opts("cllm bench");
  Flags f;
  opts.add_options()
      ("model", po::value(&f.model_path)->default_value(default_model_path()), "GGUF file, HF checkpoint directory or cllm .h5 checkpoint")
      ("device", po::value(&f.device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&f.threads)->default_value(0), "CPU threads (0: all cores, shared among a node's ranks)")
      ("ns", po::value(&f.ns_text)->default_value("1,2,4,8,16,32,64"), "block sizes n to time (timed in ascending order, each once; \"vs n=\" compares with the smallest)")
      ("contexts", po::value(&f.contexts_text)->default_value("128"), "tokens already in the KV cache when timing a block")
      ("prefill", po::value(&f.prefill)->default_value(0), "also time the prefill of a prompt of this many tokens")
      ("tokens", po::value(&f.tokens)->default_value(64), "tokens generated for the AR decode figure")
      ("reps", po::value(&f.reps)->default_value(5), "repetitions per block size (median reported)")
      ("batch-sizes", po::value(&f.batch_sizes_text)->default_value(""), "also time batched steps of these many sequences (e.g. 1,4,16,64)")
      ("batch-ns", po::value(&f.batch_ns_text)->default_value("1,16"), "tokens per sequence in a batched step")
      ("batch-context", po::value(&f.batch_context)->default_value(512), "tokens already in each sequence's KV slot for the batched steps")
      ("json", po::value(&f.json_path), "also write the results to this JSON file ('-': onto stdout, the tables then on stderr)")
      ("tp-rank", po::value(&f.tp_rank_text), "R/N: time rank R of a tensor-parallel group of N alone on this GPU "
                                              "(its shard only, all-reduces over local stand-ins of the peers; e.g. "
                                              "--model random:70b --tp-rank 0/4)");
  add_comm_flags(opts, f.comm_flags);
  po::variables_map vm;
  if (!parse_flags(argc, argv, "cllm bench [--model PATH] [--ns 1,2,4] [--contexts 128,512] [--prefill N] [--batch-sizes 1,4,16,64] [--json FILE]", opts, vm))
    return 0;
  parse_list(f.ns_text, "ns");  // bad lists fail here, on every rank, before any loading
  parse_list(f.contexts_text, "contexts");
  if (!f.batch_sizes_text.empty()) parse_list(f.batch_sizes_text, "batch-sizes");
  parse_list(f.batch_ns_text, "batch-ns");  // refused even when unused, like every other bad value
  CLLM_CHECK(f.batch_context >= 0, "--batch-context must be >= 0");
  CLLM_CHECK(f.tokens >= 1 && f.reps >= 1 && f.prefill >= 0, "--tokens and --reps must be >= 1, --prefill >= 0");
  // Each size is timed reps + 1 times: past 1000 the median moves no more, and the run has no end in sight.
  CLLM_CHECK(f.reps <= 1000, "--reps must be at most 1000, got " << f.reps);
  f.json = vm.count("json") > 0;
  f.json_on_stdout = f.json && output_is_stdout(f.json_path);
  // A --json path that cannot be written is refused before the benchmark, not after it (and no
  // empty file is left behind when the benchmark then fails).
  if (f.json && !f.json_on_stdout && comm.rank() == 0) check_output_writable("--json", f.json_path);
  if (!f.tp_rank_text.empty()) {
    std::tie(f.comm_flags.stand_in_rank, f.comm_flags.stand_in_size) = parse_tp_rank(f.tp_rank_text);
    CLLM_CHECK(comm.size() == 1, "--tp-rank runs one process; started as " << comm.size() << " ranks");
  }
  comm.set_deadline_seconds(f.comm_flags.deadline_s);
  set_cpu_threads(f.threads, comm);

  LoadedModel m = load_model(f.model_path, parse_device(f.device), comm, f.comm_flags);
  f.load_seconds = m.slowest_load_seconds;  // the group is ready when its last shard is
  return lead_or_serve(m, comm, [&](Model& model) { return run_bench(model, f, comm); });
}

}  // namespace

int bench_main(int argc, char** argv) {
  const std::unique_ptr<Comm> comm = init_comm_from_environment(startup_deadline(argc, argv));
  return run_on_all_ranks(*comm, [&] { return bench_on_rank(argc, argv, *comm); });
}

}  // namespace cllm::cli
