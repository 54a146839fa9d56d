// cllm generate: one prompt, decoded with AR, Jacobi or both; streams text, then prints stats.
// Under mpirun every rank runs this: each loads its shard, rank 0 decodes and prints, and the
// other ranks serve its forwards (parallel/coordinator.h).
#include <cstdio>
#include <iostream>

#include "kernels/check.h"
#include "launch/cli_common.h"
#include "launch/decode_flags.h"
#include "parallel/coordinator.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"

namespace cllm::cli {
namespace {

struct Run {
  const char* name;
  GenerateResult result;
};

Run run_one(const char* name, bool jacobi, Model& model, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
            const GenerateOptions& gen, const JacobiOptions& jac, bool stream) {
  model.reset(kv_rows_needed(static_cast<int>(prompt.size()), gen.max_new_tokens, jac.block));
  StreamDecoder text(tokenizer);
  TokenSink sink = [&](const int32_t* ids, int n) {
    for (int i = 0; i < n; ++i) std::cout << text.push(ids[i]);
    std::cout << std::flush;
  };
  if (stream) std::cout << "--- " << name << " ---\n" << std::flush;
  Run r{name, jacobi ? generate_jacobi(model, prompt, gen, jac, stream ? sink : TokenSink{})
                     : generate_ar(model, prompt, gen, stream ? sink : TokenSink{})};
  if (stream) std::cout << text.flush() << "\n";
  return r;
}

void print_stats(const Run& r) {
  const DecodeStats& s = r.result.stats;
  std::printf("[%s] %d tokens in %.3f s (prefill %.3f s): %.2f tokens/s, %d iterations, %.2f tokens/iteration",
              r.name, s.tokens, s.prefill_seconds + s.decode_seconds, s.prefill_seconds, s.tokens_per_second(),
              s.iterations, s.tokens_per_iteration());
  if (std::string(r.name) == "jacobi")
    std::printf(", %d fast-forwarded, %d stationary", s.fast_forwarded, s.stationary);
  std::printf(", finish: %s\n", r.result.finish_reason.c_str());
}

struct Flags {
  std::string model_path, prompt_text, decode, device, system;
  bool chat = false, quiet = false, has_system = false;
  int threads = 0;
  double deadline_s = 0;
  GenerateOptions gen;
  JacobiOptions jac;
};

// Rank 0's part: tokenizes, decodes through `model` (the whole model or the TP group), prints.
int decode_and_print(Model& model, const LoadedModel& m, Flags f) {
  std::string text = f.prompt_text;
  if (f.chat) {
    std::vector<ChatMessage> messages;
    if (f.has_system) messages.push_back({"system", f.system});
    messages.push_back({"user", f.prompt_text});
    text = apply_chat_template(m.checkpoint->tokenizer().chat_template, messages, true);
  }
  const std::vector<int32_t> prompt = m.tokenizer->encode(text, m.checkpoint->tokenizer().add_bos);
  if (f.gen.stop_ids.empty()) f.gen.stop_ids = model.config().eos_token_ids;
  std::fprintf(stderr, "model loaded in %.2f s; prompt: %zu tokens\n", m.load_seconds, prompt.size());

  std::vector<Run> runs;
  if (f.decode != "jacobi") runs.push_back(run_one("ar", false, model, *m.tokenizer, prompt, f.gen, f.jac, !f.quiet));
  if (f.decode != "ar") runs.push_back(run_one("jacobi", true, model, *m.tokenizer, prompt, f.gen, f.jac, !f.quiet));
  std::printf("\n");
  for (const Run& r : runs) print_stats(r);
  if (runs.size() == 2) {
    const bool same = runs[0].result.tokens == runs[1].result.tokens;
    const double ar_s = runs[0].result.stats.decode_seconds, jac_s = runs[1].result.stats.decode_seconds;
    std::printf("jacobi vs ar: decode speedup %.2fx, outputs %s\n", jac_s > 0 ? ar_s / jac_s : 0.0,
                same ? "identical" : "DIFFERENT");
    // On the CPU the decode path is bit-exact, so a difference is a bug. In bf16 on the GPU a
    // block GEMM rounds differently from a 1-token one and can flip a near-tie argmax.
    if (!same && f.device == "cpu") return 3;
    if (!same)
      std::printf("(bf16 on %s: a near-tie argmax can differ between block and 1-token forwards; "
                  "tests/gpu_model checks the margin)\n", f.device.c_str());
  }
  return 0;
}

int generate_on_rank(int argc, char** argv, Comm& comm) {
  po::options_description opts("cllm generate");
  Flags f;
  opts.add_options()
      ("model", po::value(&f.model_path)->default_value(default_model_path()), "GGUF file, HF checkpoint directory or cllm .h5 checkpoint")
      ("prompt", po::value(&f.prompt_text)->default_value("Write a short poem about the sea."), "prompt text")
      ("chat", po::bool_switch(&f.chat), "wrap the prompt in the model's chat template (as a user message)")
      ("system", po::value(&f.system), "system message for --chat (default: the template's own)")
      ("decode", po::value(&f.decode)->default_value("both"), "ar | jacobi | both (both also checks they agree)")
      ("device", po::value(&f.device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&f.threads)->default_value(0), "CPU threads (0: all cores, shared among a node's ranks)")
      ("quiet", po::bool_switch(&f.quiet), "print only the stats, not the text");
  add_comm_flags(opts, f.deadline_s);
  DecodeFlags decode_flags(opts, f.gen, f.jac);
  po::variables_map vm;
  if (!parse_flags(argc, argv,
                   "cllm generate [--model PATH] [--prompt TEXT] [--chat] [--decode ar|jacobi|both] [--block N] "
                   "[--max-new-tokens N]",
                   opts, vm))
    return 0;
  decode_flags.finish();
  f.has_system = vm.count("system") > 0;
  CLLM_CHECK(f.decode == "ar" || f.decode == "jacobi" || f.decode == "both",
             "--decode must be ar, jacobi or both, got '" << f.decode << "'");
  comm.set_deadline_seconds(f.deadline_s);
  set_cpu_threads(f.threads, comm);

  LoadedModel m = load_model(f.model_path, parse_device(f.device), comm);
  return lead_or_serve(m, comm, [&](Model& model) { return decode_and_print(model, m, f); });
}

}  // namespace

int generate_main(int argc, char** argv) {
  const std::unique_ptr<Comm> comm = init_comm_from_environment();
  return run_on_all_ranks(*comm, [&] { return generate_on_rank(argc, argv, *comm); });
}

}  // namespace cllm::cli
