// cllm generate: one prompt, decoded with AR, Jacobi or both; streams text, then prints stats.
// Batch mode (--prompts FILE): every prompt of a prompts file (launch/prompts_file.h) through the
// model loaded once, with --json-out writing one JSON line per prompt (ids, iterations, decode
// seconds of each decoding): what training/evaluate.py measures base and CLLM with.
// Under mpirun every rank runs this: each loads its shard, rank 0 decodes and prints, and the
// other ranks serve its forwards (parallel/coordinator.h).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "launch/cli_common.h"
#include "launch/decode_flags.h"
#include "launch/prompts_file.h"
#include "parallel/coordinator.h"
#include "runtime/block_rows.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/unicode_text.h"

namespace cllm::cli {
namespace {

struct Run {
  const char* name;
  GenerateResult result;
};

// --block auto: times forwards of 1..--max-block rows (a few seconds on a CPU) for the policy,
// once, before the first Jacobi decoding.
void calibrate(Model& model, const JacobiOptions& jac, StepCostModel& cost) {
  if (!jac.adaptive || cost.calibrated()) return;
  const auto t0 = std::chrono::steady_clock::now();
  const int capacity = std::min(1024 + kMaxBlockRows, std::max(model.config().max_position_embeddings, jac.block));
  cost = calibrate_step_cost(model, 1, capacity, jac.block);
  std::fprintf(stderr, "step cost (--block auto):");
  for (int n = 1; n <= jac.block; n *= 2) std::fprintf(stderr, " %d: %.2f ms", n, cost.seconds(n) * 1e3);
  std::fprintf(stderr, "; calibrated in %.2f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

Run run_one(const char* name, bool jacobi, Model& model, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
            const GenerateOptions& gen, const JacobiOptions& jac, bool stream, StepCostModel* cost) {
  const std::string why = context_limit_error(model.config(), static_cast<int64_t>(prompt.size()), gen.max_new_tokens,
                                              jacobi ? jac.rows() : 1);
  CLLM_CHECK(why.empty(), "cannot decode: " << why << " (shorten the prompt or lower --max-new-tokens)");
  CLLM_CHECK(jac.pad_id >= 0 && jac.pad_id < model.config().vocab_size,
             "--pad-id " << jac.pad_id << " is outside the vocabulary [0, " << model.config().vocab_size << ")");
  if (jacobi) calibrate(model, jac, *cost);
  model.reset(static_cast<int>(kv_rows_needed(static_cast<int64_t>(prompt.size()), gen.max_new_tokens, jacobi ? jac.rows() : 1)));
  StreamDecoder text(tokenizer);
  bool mid_line = false;  // the streamed text so far does not end with a newline
  TokenSink sink = [&](const int32_t* ids, int n) {
    for (int i = 0; i < n; ++i) {
      const std::string piece = text.push(ids[i]);
      std::cout << piece;
      if (!piece.empty()) mid_line = piece.back() != '\n';
    }
    std::cout << std::flush;
  };
  if (stream) std::cout << "--- " << name << " ---\n" << std::flush;
  try {
    Run r{name, jacobi ? generate_jacobi(model, prompt, gen, jac, stream ? sink : TokenSink{}, cost)
                       : generate_ar(model, prompt, gen, stream ? sink : TokenSink{})};
    if (stream) std::cout << text.flush() << "\n";
    return r;
  } catch (...) {
    // The error is printed next (stderr, often the same terminal): on a line of its own.
    if (mid_line) std::cout << std::endl;
    throw;
  }
}

void print_stats(const Run& r) {
  const DecodeStats& s = r.result.stats;
  std::printf("[%s] %d tokens in %.3f s (prefill %.3f s): %.2f tokens/s, %d iterations, %.2f tokens/iteration",
              r.name, s.tokens, s.prefill_seconds + s.decode_seconds, s.prefill_seconds, s.tokens_per_second(),
              s.iterations, s.tokens_per_iteration());
  if (std::string(r.name) == "jacobi") {
    std::printf(", %d fast-forwarded (block %d, later blocks %d, pool %d, recycled %d), %d stationary, blocks",
                s.fast_forwarded, s.accepted_block, s.accepted_later, s.accepted_pool, s.accepted_recycled,
                s.stationary);
    for (size_t n = 0; n < s.block_iterations.size(); ++n)
      if (s.block_iterations[n]) std::printf(" %zux%d", n, s.block_iterations[n]);
  }
  std::printf(", finish: %s\n", r.result.finish_reason.c_str());
}

const char* const kDefaultPrompt = "Write a short poem about the sea.";

struct Flags {
  std::string model_path, prompt_text, decode, device, system, prompts_path, json_out;
  std::string chat_template;  // --chat-template: a family name instead of the checkpoint's template
  bool chat = false, quiet = false, has_system = false;
  int threads = 0, limit = 0, warmup_tokens = 16;
  CommFlags comm_flags;
  GenerateOptions gen;
  JacobiOptions jac;
  StepCostModel cost;  // --block auto: calibrated before the first Jacobi decoding, refined by every run
};

// Rank 0's part: tokenizes, decodes through `model` (the whole model or the TP group), prints.
int decode_and_print(Model& model, const LoadedModel& m, Flags f) {
  const TokenizerSpec& ts = m.checkpoint->tokenizer();
  std::vector<int32_t> prompt;
  if (f.chat) {
    std::vector<ChatMessage> messages;
    if (f.has_system) messages.push_back({"system", f.system});
    messages.push_back({"user", f.prompt_text});
    prompt = encode_chat(*m.tokenizer, f.chat_template.empty() ? ts.chat_template : f.chat_template, messages,
                         ts.add_bos);
  } else {
    prompt = m.tokenizer->encode(f.prompt_text, ts.add_bos);
  }
  // Refused before any output: an empty prompt (no BOS) has nothing to condition on.
  CLLM_CHECK(!prompt.empty(), "--prompt is empty and the model adds no BOS token: nothing to condition on");
  if (f.gen.stop_ids.empty()) f.gen.stop_ids = model.config().eos_token_ids;
  std::fprintf(stderr, "model loaded in %.2f s; prompt: %zu tokens\n", m.load_seconds, prompt.size());

  std::vector<Run> runs;
  if (f.decode != "jacobi") runs.push_back(run_one("ar", false, model, *m.tokenizer, prompt, f.gen, f.jac, !f.quiet, &f.cost));
  if (f.decode != "ar") runs.push_back(run_one("jacobi", true, model, *m.tokenizer, prompt, f.gen, f.jac, !f.quiet, &f.cost));
  std::printf("\n");
  for (const Run& r : runs) print_stats(r);
  if (runs.size() == 2) {
    const bool same = runs[0].result.tokens == runs[1].result.tokens;
    std::printf("jacobi vs ar: decode speedup %.2fx, outputs %s\n",
                decode_speedup(runs[0].result.stats, runs[1].result.stats), same ? "identical" : "DIFFERENT");
    // On the CPU the decode path is bit-exact, so a difference is a bug. In bf16 on the GPU a
    // block GEMM rounds differently from a 1-token one and can flip a near-tie argmax.
    if (!same && f.device == "cpu") return 3;
    if (!same)
      std::printf("(bf16 on %s: a near-tie argmax can differ between block and 1-token forwards; "
                  "tests/gpu_model checks the margin)\n", f.device.c_str());
  }
  return 0;
}

nlohmann::json run_json(const Run& r, const Tokenizer& tokenizer) {
  const DecodeStats& s = r.result.stats;
  nlohmann::json j = {{"ids", r.result.tokens},
                      {"text", tokenizer.decode(r.result.tokens)},
                      {"tokens", s.tokens},
                      {"iterations", s.iterations},
                      {"tokens_per_iteration", s.tokens_per_iteration()},
                      {"prefill_seconds", s.prefill_seconds},
                      {"decode_seconds", s.decode_seconds},
                      {"finish", r.result.finish_reason}};
  if (std::string(r.name) == "jacobi") {
    j["fast_forwarded"] = s.fast_forwarded;
    j["stationary"] = s.stationary;
    j["block_iterations"] = s.block_iterations;
    j["accepted"] = {{"block", s.accepted_block},
                     {"later", s.accepted_later},
                     {"pool", s.accepted_pool},
                     {"recycled", s.accepted_recycled}};
  }
  return j;
}

// Batch mode: each prompt decoded by every requested method, one JSON line each, totals at the end.
int decode_batch(Model& model, const LoadedModel& m, Flags f) {
  const TokenizerSpec& spec = m.checkpoint->tokenizer();
  std::vector<std::vector<int32_t>> prompts =
      tokenize_prompts(read_prompts(f.prompts_path, f.chat), *m.tokenizer,
                       f.chat_template.empty() ? spec.chat_template : f.chat_template, spec.add_bos, f.prompts_path);
  if (f.limit > 0 && static_cast<size_t>(f.limit) < prompts.size()) prompts.resize(f.limit);
  if (f.gen.stop_ids.empty()) f.gen.stop_ids = model.config().eos_token_ids;
  std::fprintf(stderr, "model loaded in %.2f s; %zu prompts from %s\n", m.load_seconds, prompts.size(),
               f.prompts_path.c_str());
  // JSON lines into a file, or onto stdout ("-", /dev/stdout, or the file stdout goes to): the
  // summary lines then go to stderr, so stdout holds nothing but JSON lines.
  std::ofstream json_file;
  std::ostream* json = nullptr;
  const bool json_on_stdout = !f.json_out.empty() && output_is_stdout(f.json_out);
  FILE* const summary = json_on_stdout ? stderr : stdout;
  if (json_on_stdout) {
    json = &std::cout;
  } else if (!f.json_out.empty()) {
    check_output_is_not_input("--json-out", f.json_out, "--prompts", f.prompts_path);
    json_file.open(f.json_out);
    CLLM_CHECK(json_file, "cannot write --json-out " << f.json_out << ": " << std::strerror(errno));
    json = &json_file;
  }
  // The first decodes pay one-time costs (GPU graphs, allocator, caches): run them untimed.
  if (f.warmup_tokens > 0) {
    GenerateOptions warm = f.gen;
    warm.max_new_tokens = std::min(f.warmup_tokens, f.gen.max_new_tokens);
    if (f.decode != "jacobi") run_one("ar", false, model, *m.tokenizer, prompts[0], warm, f.jac, false, &f.cost);
    if (f.decode != "ar") run_one("jacobi", true, model, *m.tokenizer, prompts[0], warm, f.jac, false, &f.cost);
  }
  DecodeStats ar_sum, jac_sum;
  int identical = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    nlohmann::json line = {{"index", i}, {"prompt_ids", prompts[i]}};
    std::vector<Run> runs;
    if (f.decode != "jacobi") runs.push_back(run_one("ar", false, model, *m.tokenizer, prompts[i], f.gen, f.jac, false, &f.cost));
    if (f.decode != "ar") runs.push_back(run_one("jacobi", true, model, *m.tokenizer, prompts[i], f.gen, f.jac, false, &f.cost));
    for (const Run& r : runs) {
      line[r.name] = run_json(r, *m.tokenizer);
      DecodeStats& sum = std::string(r.name) == "ar" ? ar_sum : jac_sum;
      sum.tokens += r.result.stats.tokens;
      sum.iterations += r.result.stats.iterations;
      sum.decode_seconds += r.result.stats.decode_seconds;
      sum.accepted_block += r.result.stats.accepted_block;
      sum.accepted_later += r.result.stats.accepted_later;
      sum.accepted_pool += r.result.stats.accepted_pool;
      sum.accepted_recycled += r.result.stats.accepted_recycled;
    }
    if (runs.size() == 2) {
      const bool same = runs[0].result.tokens == runs[1].result.tokens;
      line["identical"] = same;
      identical += same;
    }
    // A text cut inside a UTF-8 sequence (at --max-new-tokens) gets U+FFFD instead of a throw.
    if (json != nullptr) {
      *json << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
      CLLM_CHECK(json->good(), "cannot write --json-out " << f.json_out << " (prompt " << i << "): " << std::strerror(errno));
    } else {  // no --json-out: the texts go to stdout, each after a header line naming its prompt and decoding
      for (const Run& r : runs)
        std::printf("--- prompt %zu, %s ---\n%s\n", i, r.name, unicode::to_valid_utf8(m.tokenizer->decode(r.result.tokens)).c_str());
    }
    if (!f.quiet) {
      std::fprintf(stderr, "[%zu/%zu] %zu prompt tokens", i + 1, prompts.size(), prompts[i].size());
      for (const Run& r : runs)
        std::fprintf(stderr, "; %s %d tokens, %d iterations, %.3f s", r.name, r.result.stats.tokens,
                     r.result.stats.iterations, r.result.stats.decode_seconds);
      std::fprintf(stderr, "\n");
    }
  }
  for (const auto& [name, s] : {std::pair<const char*, const DecodeStats&>{"ar", ar_sum}, {"jacobi", jac_sum}})
    if (s.iterations)
      std::fprintf(summary, "[%s] %zu prompts: %d tokens, %d iterations (%.3f tokens/iteration), decode %.3f s (%.1f tokens/s)\n",
                   name, prompts.size(), s.tokens, s.iterations, s.tokens_per_iteration(), s.decode_seconds,
                   s.decode_seconds > 0 ? s.tokens / s.decode_seconds : 0.0);
  if (jac_sum.iterations)
    std::fprintf(summary, "[jacobi] accepted beyond the first token of an iteration: block %d, later blocks %d, pool %d, "
                 "recycled %d\n", jac_sum.accepted_block, jac_sum.accepted_later, jac_sum.accepted_pool,
                 jac_sum.accepted_recycled);
  if (ar_sum.iterations && jac_sum.iterations) {
    std::fprintf(summary, "jacobi vs ar: decode speedup %.2fx (Jacobi / AR decode tokens per second), %d/%zu outputs identical\n",
                 decode_speedup(ar_sum, jac_sum), identical, prompts.size());
    // As in the single-prompt mode: on the CPU decoding is bit-exact, so a difference is a bug.
    if (identical != static_cast<int>(prompts.size()) && f.device == "cpu") return 3;
  }
  return 0;
}

int generate_on_rank(int argc, char** argv, Comm& comm) {
  po::options_description opts("cllm generate");
  Flags f;
  opts.add_options()
      ("model", po::value(&f.model_path)->default_value(default_model_path()), "GGUF file, HF checkpoint directory or cllm .h5 checkpoint")
      ("prompt", po::value(&f.prompt_text)->default_value(kDefaultPrompt), "prompt text")
      ("chat", po::bool_switch(&f.chat), "wrap the prompt in the model's chat template (as a user message)")
      ("chat-template", po::value(&f.chat_template), kChatTemplateFlagHelp)
      ("system", po::value(&f.system), "system message for --chat (default: the template's own)")
      ("decode", po::value(&f.decode)->default_value("both"), "ar | jacobi | both (both also checks they agree)")
      ("device", po::value(&f.device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&f.threads)->default_value(0), "CPU threads (0: all cores, shared among a node's ranks)")
      ("quiet", po::bool_switch(&f.quiet), "print only the stats, not the text (batch mode: no per-prompt lines)")
      ("prompts", po::value(&f.prompts_path),
       "batch mode: decode every prompt of this file (JSONL or plain text, as cllm trajectories reads) instead of --prompt")
      ("json-out", po::value(&f.json_out),
       "write one JSON line per prompt: prompt_ids and, per decoding, ids, text (decoded, special tokens skipped), tokens, iterations, tokens_per_iteration, "
       "prefill_seconds, decode_seconds, finish (with --decode both: identical); '-' (or stdout's own file): onto stdout, "
       "the summary then on stderr; without it, --prompts prints each prompt's texts on stdout")
      ("limit", po::value(&f.limit)->default_value(0), "batch mode: the first N prompts only (0: all)")
      ("warmup-tokens", po::value(&f.warmup_tokens)->default_value(16),
       "batch mode: first decode the first prompt untimed, this many tokens (0: no warm-up)");
  add_comm_flags(opts, f.comm_flags);
  DecodeFlags decode_flags(opts, f.gen, f.jac);
  po::variables_map vm;
  if (!parse_flags(argc, argv,
                   "cllm generate [--model PATH] [--prompt TEXT] [--chat] [--decode ar|jacobi|both] [--block auto|N] "
                   "[--max-new-tokens N] [--prompts FILE --json-out FILE]",
                   opts, vm))
    return 0;
  decode_flags.finish();
  f.has_system = vm.count("system") > 0;
  const bool batch = !f.prompts_path.empty();
  CLLM_CHECK(!batch || f.prompt_text == kDefaultPrompt, "give --prompt or --prompts, not both");
  CLLM_CHECK(!batch || !f.has_system, "--system applies to --prompt only; give system messages in the --prompts file");
  CLLM_CHECK(!f.has_system || f.chat, "--system needs --chat (it is a chat message)");
  check_utf8_text(f.prompt_text, "--prompt", "the text", "give the prompt as UTF-8 text");
  check_utf8_text(f.system, "--system", "the text", "give the system message as UTF-8 text");
  if (!f.chat_template.empty()) f.chat_template = chat_template_family(f.chat_template);  // refused unless a family
  CLLM_CHECK(batch || f.json_out.empty(), "--json-out needs --prompts (batch mode)");
  // Rank 0 writes it (the other ranks may run on hosts without that directory).
  if (comm.rank() == 0 && !f.json_out.empty() && !output_is_stdout(f.json_out))
    check_output_writable("--json-out", f.json_out);
  CLLM_CHECK(f.limit >= 0 && f.warmup_tokens >= 0, "--limit and --warmup-tokens must be >= 0");
  CLLM_CHECK(f.decode == "ar" || f.decode == "jacobi" || f.decode == "both",
             "--decode must be ar, jacobi or both, got '" << f.decode << "'");
  // A flag the run would not use is refused rather than silently ignored.
  if (f.decode == "ar")
    for (const char* flag : {"block", "max-block", "blocks", "later-block-after", "window", "init", "seed", "pad-id",
                             "candidates", "ngram", "pool"})
      CLLM_CHECK(!vm.given(flag), "--" << flag << " applies to Jacobi decoding, which --decode ar does not run");
  for (const char* flag : {"ngram", "pool"})
    CLLM_CHECK(!vm.given(flag) || f.jac.candidates > 0, "--" << flag << " applies to lookahead: give --candidates G > 0");
  CLLM_CHECK(!vm.given("pad-id") || f.jac.init == InitialGuess::Pad, "--pad-id applies to --init pad");
  for (const char* flag : {"limit", "warmup-tokens"})
    CLLM_CHECK(!vm.given(flag) || batch, "--" << flag << " applies to --prompts (batch mode)");
  CLLM_CHECK(!vm.given("chat-template") || f.chat || batch,
             "--chat-template applies to chat prompts: give --chat (or a --prompts file with messages)");
  comm.set_deadline_seconds(f.comm_flags.deadline_s);
  set_cpu_threads(f.threads, comm);
  f.comm_flags.lookahead_rows = invariant_decode_rows(f.jac);

  LoadedModel m = load_model(f.model_path, parse_device(f.device), comm, f.comm_flags);
  return lead_or_serve(m, comm,
                       [&](Model& model) { return batch ? decode_batch(model, m, f) : decode_and_print(model, m, f); });
}

}  // namespace

int generate_main(int argc, char** argv) {
  const std::unique_ptr<Comm> comm = init_comm_from_environment(startup_deadline(argc, argv));
  return run_on_all_ranks(*comm, [&] { return generate_on_rank(argc, argv, *comm); });
}

}  // namespace cllm::cli
