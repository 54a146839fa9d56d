// cllm trajectories: collects Jacobi trajectories of a prompts file into HDF5 for consistency
// training (layout: loaders/trajectory_h5.h). Prompts file formats, decided by its first
// non-empty line:
//   JSONL (first line starts with '{'): one object per line, {"prompt": "text"} or
//     {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}; "messages"
//     always go through the model's chat template (ending with the assistant header), "prompt"
//     only with --chat;
//   plain text otherwise: one prompt per line (wrapped as a user message with --chat).
// Empty lines are skipped; prompt i is the i-th non-empty line (launch/prompts_file.h). An existing
// --out file is resumed. --shard I/K collects only the prompts with index % K == I, so K processes
// can share one GPU, each writing its own file (training reads them together). --batch B collects B
// prompts at once in one process (one KV slot each, one batched forward per step for all), which
// fills a GPU without K processes; samples are then written in completion order.
#include <cstdio>

#include "core/check.h"
#include "launch/cli_common.h"
#include "launch/prompts_file.h"
#include "runtime/chat_template.h"
#include "runtime/trajectory.h"

namespace cllm::cli {

int trajectories_main(int argc, char** argv) {
  po::options_description opts("cllm trajectories");
  std::string model_path, prompts_path, out_path, device, init = "random", shard = "0/1", chat_template;
  CollectPlan plan;
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
      ("block", po::value(&to.block)->default_value(16),
       "Jacobi block size n (1.." + std::to_string(kMaxBlockRows) + ")")
      ("blocks", po::value(&to.blocks)->default_value(to.blocks),
       "multi-block: blocks of n in flight (block x blocks <= " + std::to_string(kMaxBlockRows) +
           "); each block's states are recorded while it is in flight, as a later block too (1: one block)")
      ("max-new-tokens", po::value(&to.max_new_tokens)->default_value(256),
       "tokens per prompt at most (rounded up to whole blocks); a block holding EOS is the last")
      ("augment", po::bool_switch(&to.augment), "also store states with half their wrong tokens set to the fixed point")
      ("max-repeat", po::value(&to.max_repeat)->default_value(10),
       "drop samples with this many identical consecutive tokens (0: keep all)")
      ("init", po::value(&init)->default_value(init), "initial guesses: random (from the prompt, seeded) | repeat | pad")
      ("seed", po::value(&seed)->default_value(0), "seed of the initial guesses and augmentation (per prompt)")
      ("chat", po::bool_switch(&chat), "wrap plain prompts in the model's chat template (as a user message)")
      ("chat-template", po::value(&chat_template), kChatTemplateFlagHelp)
      ("shard", po::value(&shard)->default_value(shard),
       "I/K: collect only the prompts with index % K == I (K processes, one output file each)")
      ("batch", po::value(&plan.batch)->default_value(1),
       "prompts collected concurrently in one process, each in its own KV slot, one forward per step for all; "
       "use 32-128 on a GPU")
      ("max-seconds", po::value(&plan.max_seconds)->default_value(0),
       "start no prompt after this many seconds of collecting (0: no limit); rerun to resume")
      ("device", po::value(&device)->default_value("cpu"), "cpu | cuda")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)");
  po::variables_map vm;
  if (!parse_flags(argc, argv,
                   "cllm trajectories --model PATH --prompts FILE --out FILE.h5 [--block N] [--blocks K] [--max-new-tokens N] "
                   "[--augment] [--chat] [--seed S] [--shard I/K] [--batch B] [--max-seconds S] [--device cpu|cuda]",
                   opts, vm))
    return 0;
  // One process writes one --out file; ranks of an mpirun would all collect the same prompts into it.
  const int world = launcher_world_size();
  CLLM_CHECK(world <= 1, "cllm trajectories runs as one process, but it was started as one of "
                             << world << " ranks (mpirun or srun): every rank would write the same --out file. "
                                         "Run it without mpirun; for several processes give each --shard I/K and "
                                         "its own --out");
  check_block_flag(to.block);
  CLLM_CHECK(to.blocks >= 1 && to.block * to.blocks <= kMaxBlockRows,
             "--blocks must be >= 1 with --block x --blocks <= " << kMaxBlockRows << ", got --block " << to.block
                                                                 << " x --blocks " << to.blocks);
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
  set_cpu_threads(threads, *make_single_comm());
  const Shard sh = parse_shard(shard);
  plan.shard = sh.index;
  plan.num_shards = sh.count;
  CLLM_CHECK(plan.max_seconds >= 0, "--max-seconds must be >= 0, got " << plan.max_seconds);
  CLLM_CHECK(plan.batch >= 1, "--batch must be >= 1 (prompts collected at once), got " << plan.batch);

  if (!chat_template.empty()) chat_template = chat_template_family(chat_template);  // refused unless a family
  // Read and tokenize every prompt before any work, so a malformed file fails at once.
  const std::vector<PromptLine> lines = read_prompts(prompts_path, chat);
  LoadedModel m = load_model(model_path, parse_device(device));
  const TokenizerSpec& spec = m.checkpoint->tokenizer();
  const std::vector<std::vector<int32_t>> prompts =
      tokenize_prompts(lines, *m.tokenizer, chat_template.empty() ? spec.chat_template : chat_template, spec.add_bos,
                       prompts_path);
  to.stop_ids = m.model->config().eos_token_ids;

  TrajectoryWriter out(out_path, {model_path, to.block, seed, m.tokenizer->vocab_size(), to.max_new_tokens,
                                  to.augment, to.max_repeat, to.blocks, init, checkpoint_fingerprint(*m.checkpoint)});
  std::fprintf(stderr, "model loaded in %.2f s; %zu prompts (shard %d/%d), %zu already in %s\n", m.load_seconds,
               prompts.size(), plan.shard, plan.num_shards, out.done().size(), out_path.c_str());
  // Prompts finish in completion order with --batch > 1: count them, and name each by its index.
  const size_t in_shard = (prompts.size() + plan.num_shards - 1 - plan.shard) / plan.num_shards;
  // With several blocks in flight a forward records a state of each: count states, not forwards.
  const char* unit = to.blocks > 1 ? "block state" : "iteration";
  const CollectSummary s = collect_trajectories(
      *m.model, prompts, out, to, seed, [&](int64_t i, const Trajectory& t, bool dropped) {
        int iters = 0;
        for (int32_t it : t.iterations) iters += it;
        std::fprintf(stderr, "[%zu/%zu] prompt %lld: %zu prompt tokens -> %d tokens, %d blocks, %d %ss "
                     "(%.2f tokens/%s)%s\n",
                     out.done().size(), in_shard, static_cast<long long>(i), t.prompt.size(), t.num_tokens,
                     t.num_blocks(), iters, unit, iters ? static_cast<double>(t.num_tokens) / iters : 0.0, unit,
                     dropped ? " DROPPED (repeated tokens)" : "");
      },
      plan);
  std::printf("%d kept, %d dropped (runs of %d identical tokens), %d already present, %d left for a resumed run "
              "(--max-seconds); kept: %lld tokens in %lld %ss (%.2f tokens/%s); wrote %s\n",
              s.kept, s.dropped, to.max_repeat, s.skipped, s.remaining, static_cast<long long>(s.tokens),
              static_cast<long long>(s.iterations), unit,
              s.iterations ? static_cast<double>(s.tokens) / s.iterations : 0.0, unit, out_path.c_str());
  return 0;
}

}  // namespace cllm::cli
