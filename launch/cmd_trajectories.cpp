// cllm trajectories: collects Jacobi trajectories of a prompts file into HDF5 for consistency
// training (layout: loaders/trajectory_h5.h). Prompts file formats, decided by its first
// non-empty line:
//   JSONL (first line starts with '{'): one object per line, {"prompt": "text"} or
//     {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}; "messages"
//     always go through the model's chat template (ending with the assistant header), "prompt"
//     only with --chat;
//   plain text otherwise: one prompt per line (wrapped as a user message with --chat).
// Empty lines are skipped; prompt i is the i-th non-empty line. An existing --out file is resumed.
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kernels/check.h"
#include "kernels/cpu/thread_pool.h"
#include "launch/cli_common.h"
#include "runtime/chat_template.h"
#include "runtime/trajectory.h"

namespace cllm::cli {
namespace {

struct PromptLine {
  std::vector<ChatMessage> messages;  // non-empty: render with the chat template
  std::string text;                   // used as is otherwise
};

std::string json_string(const nlohmann::json& j, const char* key, const std::string& where) {
  CLLM_CHECK(j.contains(key) && j[key].is_string(), where << ": '" << key << "' must be a string");
  return j[key].get<std::string>();
}

PromptLine parse_jsonl_line(const std::string& line, bool chat, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    CLLM_FAIL(where << ": not valid JSON: " << e.what());
  }
  CLLM_CHECK(j.is_object(), where << ": expected a JSON object");
  CLLM_CHECK(j.contains("prompt") != j.contains("messages"), where << ": needs exactly one of 'prompt' or 'messages'");
  PromptLine p;
  if (j.contains("prompt")) {
    p.text = json_string(j, "prompt", where);
    if (chat) p.messages.push_back({"user", p.text});
    return p;
  }
  const nlohmann::json& ms = j["messages"];
  CLLM_CHECK(ms.is_array() && !ms.empty(), where << ": 'messages' must be a non-empty list");
  for (size_t k = 0; k < ms.size(); ++k) {
    const std::string mw = where + ": messages[" + std::to_string(k) + "]";
    CLLM_CHECK(ms[k].is_object(), mw << " must be an object with 'role' and 'content'");
    p.messages.push_back({json_string(ms[k], "role", mw), json_string(ms[k], "content", mw)});
  }
  return p;
}

std::vector<PromptLine> read_prompts(const std::string& path, bool chat) {
  std::ifstream in(path);
  CLLM_CHECK(in, "cannot read the prompts file " << path);
  std::vector<PromptLine> out;
  std::string line;
  int line_no = 0;
  int jsonl = -1;  // decided by the first non-empty line
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (jsonl < 0) jsonl = line[line.find_first_not_of(" \t")] == '{';
    const std::string where = path + ":" + std::to_string(line_no);
    if (jsonl) {
      out.push_back(parse_jsonl_line(line, chat, where));
    } else {
      PromptLine p{{}, line};
      if (chat) p.messages.push_back({"user", line});
      out.push_back(std::move(p));
    }
  }
  CLLM_CHECK(!out.empty(), path << " holds no prompts");
  return out;
}

}  // namespace

int trajectories_main(int argc, char** argv) {
  po::options_description opts("cllm trajectories");
  std::string model_path, prompts_path, out_path, device, init = "random";
  bool chat = false;
  int threads = 0;
  uint64_t seed = 0;
  TrajectoryOptions to;
  to.max_new_tokens = 256;
  opts.add_options()
      ("model", po::value(&model_path)->default_value(default_model_path()), "GGUF file, HF checkpoint directory or cllm .h5 checkpoint")
      ("prompts", po::value(&prompts_path)->required(),
       "JSONL ({\"prompt\": ...} or {\"messages\": [...]} per line) or plain text, one prompt per line")
      ("out", po::value(&out_path)->required(), "output .h5 file; an existing one is resumed (its settings must match)")
      ("block", po::value(&to.block)->default_value(16), "Jacobi block size n (1..64)")
      ("max-new-tokens", po::value(&to.max_new_tokens)->default_value(256),
       "tokens per prompt at most (rounded up to whole blocks); a block holding EOS is the last")
      ("augment", po::bool_switch(&to.augment), "also store states with half their wrong tokens set to the fixed point")
      ("max-repeat", po::value(&to.max_repeat)->default_value(10),
       "drop samples with this many identical consecutive tokens (0: keep all)")
      ("init", po::value(&init)->default_value(init), "initial guesses: random (from the prompt, seeded) | repeat | pad")
      ("seed", po::value(&seed)->default_value(0), "seed of the initial guesses and augmentation (per prompt)")
      ("chat", po::bool_switch(&chat), "wrap plain prompts in the model's chat template (as a user message)")
      ("device", po::value(&device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)");
  po::variables_map vm;
  if (!parse_flags(argc, argv,
                   "cllm trajectories --model PATH --prompts FILE --out FILE.h5 [--block N] [--max-new-tokens N] "
                   "[--augment] [--chat] [--seed S] [--device cpu|cuda]",
                   opts, vm))
    return 0;
  CLLM_CHECK(to.block >= 1 && to.block <= 64, "--block must be in 1..64, got " << to.block);
  CLLM_CHECK(to.max_new_tokens > 0, "--max-new-tokens must be positive, got " << to.max_new_tokens);
  CLLM_CHECK(to.max_repeat >= 0, "--max-repeat must be >= 0, got " << to.max_repeat);
  if (init == "random")
    to.init = InitialGuess::RandomFromContext;
  else if (init == "repeat")
    to.init = InitialGuess::RepeatLast;
  else if (init == "pad")
    to.init = InitialGuess::Pad;
  else
    CLLM_FAIL("--init must be random, repeat or pad, got '" << init << "'");
  if (threads > 0) cpu::set_pool_size(threads);

  // Read and tokenize every prompt before any work, so a malformed file fails at once.
  const std::vector<PromptLine> lines = read_prompts(prompts_path, chat);
  LoadedModel m = load_model(model_path, parse_device(device));
  const TokenizerSpec& spec = m.checkpoint->tokenizer();
  std::vector<std::vector<int32_t>> prompts;
  for (const PromptLine& p : lines) {
    const std::string text = p.messages.empty() ? p.text : apply_chat_template(spec.chat_template, p.messages, true);
    prompts.push_back(m.tokenizer->encode(text, spec.add_bos));
    CLLM_CHECK(!prompts.back().empty(), prompts_path << ": prompt " << prompts.size() - 1 << " encodes to no tokens");
  }
  to.stop_ids = m.model->config().eos_token_ids;

  TrajectoryWriter out(out_path, {model_path, to.block, seed, m.tokenizer->vocab_size(), to.max_new_tokens,
                                  to.augment, to.max_repeat});
  std::fprintf(stderr, "model loaded in %.2f s; %zu prompts, %zu already in %s\n", m.load_seconds, prompts.size(),
               out.done().size(), out_path.c_str());
  const CollectSummary s = collect_trajectories(
      *m.model, prompts, out, to, seed, [&](int64_t i, const Trajectory& t, bool dropped) {
        int iters = 0;
        for (int32_t it : t.iterations) iters += it;
        std::fprintf(stderr, "[%lld/%zu] %zu prompt tokens -> %d tokens, %d blocks, %d iterations (%.2f tokens/iteration)%s\n",
                     static_cast<long long>(i + 1), prompts.size(), t.prompt.size(), t.num_tokens, t.num_blocks(),
                     iters, iters ? static_cast<double>(t.num_tokens) / iters : 0.0,
                     dropped ? " DROPPED (repeated tokens)" : "");
      });
  std::printf("%d kept, %d dropped (runs of %d identical tokens), %d already present; kept: %lld tokens in %lld "
              "iterations (%.2f tokens/iteration); wrote %s\n",
              s.kept, s.dropped, to.max_repeat, s.skipped, static_cast<long long>(s.tokens),
              static_cast<long long>(s.iterations), s.iterations ? static_cast<double>(s.tokens) / s.iterations : 0.0,
              out_path.c_str());
  return 0;
}

}  // namespace cllm::cli
