// cllm generate: one prompt, decoded with AR, Jacobi or both; streams text, then prints stats.
#include <cstdio>
#include <iostream>

#include "kernels/check.h"
#include "kernels/cpu/thread_pool.h"
#include "launch/cli_common.h"
#include "launch/decode_flags.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"

namespace cllm::cli {
namespace {

struct Run {
  const char* name;
  GenerateResult result;
};

Run run_one(const char* name, bool jacobi, LoadedModel& m, const std::vector<int32_t>& prompt,
            const GenerateOptions& gen, const JacobiOptions& jac, bool stream) {
  m.model->reset(kv_rows_needed(static_cast<int>(prompt.size()), gen.max_new_tokens, jac.block));
  StreamDecoder text(*m.tokenizer);
  TokenSink sink = [&](const int32_t* ids, int n) {
    for (int i = 0; i < n; ++i) std::cout << text.push(ids[i]);
    std::cout << std::flush;
  };
  if (stream) std::cout << "--- " << name << " ---\n" << std::flush;
  Run r{name, jacobi ? generate_jacobi(*m.model, prompt, gen, jac, stream ? sink : TokenSink{})
                     : generate_ar(*m.model, prompt, gen, stream ? sink : TokenSink{})};
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

}  // namespace

int generate_main(int argc, char** argv) {
  po::options_description opts("cllm generate");
  std::string model_path, prompt_text, decode, device, system;
  bool chat = false, quiet = false;
  int threads = 0;
  GenerateOptions gen;
  JacobiOptions jac;
  opts.add_options()
      ("model", po::value(&model_path)->default_value(default_model_path()), "GGUF file or HF checkpoint directory")
      ("prompt", po::value(&prompt_text)->default_value("Write a short poem about the sea."), "prompt text")
      ("chat", po::bool_switch(&chat), "wrap the prompt in the model's chat template (as a user message)")
      ("system", po::value(&system), "system message for --chat (default: the template's own)")
      ("decode", po::value(&decode)->default_value("both"), "ar | jacobi | both (both also checks they agree)")
      ("device", po::value(&device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)")
      ("quiet", po::bool_switch(&quiet), "print only the stats, not the text");
  DecodeFlags decode_flags(opts, gen, jac);
  po::variables_map vm;
  if (!parse_flags(argc, argv,
                   "cllm generate [--model PATH] [--prompt TEXT] [--chat] [--decode ar|jacobi|both] [--block N] "
                   "[--max-new-tokens N]",
                   opts, vm))
    return 0;
  decode_flags.finish();
  CLLM_CHECK(decode == "ar" || decode == "jacobi" || decode == "both",
             "--decode must be ar, jacobi or both, got '" << decode << "'");
  if (threads > 0) cpu::set_pool_size(threads);

  LoadedModel m = load_model(model_path, parse_device(device));
  std::string text = prompt_text;
  if (chat) {
    std::vector<ChatMessage> messages;
    if (vm.count("system")) messages.push_back({"system", system});
    messages.push_back({"user", prompt_text});
    text = apply_chat_template(m.checkpoint->tokenizer().chat_template, messages, true);
  }
  const std::vector<int32_t> prompt = m.tokenizer->encode(text, m.checkpoint->tokenizer().add_bos);
  if (gen.stop_ids.empty()) gen.stop_ids = m.model->config().eos_token_ids;
  std::fprintf(stderr, "model loaded in %.2f s; prompt: %zu tokens\n", m.load_seconds, prompt.size());

  std::vector<Run> runs;
  if (decode != "jacobi") runs.push_back(run_one("ar", false, m, prompt, gen, jac, !quiet));
  if (decode != "ar") runs.push_back(run_one("jacobi", true, m, prompt, gen, jac, !quiet));
  std::printf("\n");
  for (const Run& r : runs) print_stats(r);
  if (runs.size() == 2) {
    const bool same = runs[0].result.tokens == runs[1].result.tokens;
    const double ar_s = runs[0].result.stats.decode_seconds, jac_s = runs[1].result.stats.decode_seconds;
    std::printf("jacobi vs ar: decode speedup %.2fx, outputs %s\n", jac_s > 0 ? ar_s / jac_s : 0.0,
                same ? "identical" : "DIFFERENT");
    if (!same) return 3;
  }
  return 0;
}

}  // namespace cllm::cli
