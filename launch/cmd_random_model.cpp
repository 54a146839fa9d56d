// cllm random-model: a randomly initialised HF checkpoint of a named or custom LLaMA shape.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/check.h"
#include "launch/cli_common.h"
#include "runtime/random_model.h"

namespace cllm::cli {

int random_model_main(int argc, char** argv) {
  po::options_description opts("cllm random-model");
  std::string shape, out, dtype;
  RandomModelOptions ro;
  ModelConfig custom;
  bool tied = false;
  opts.add_options()
      ("shape", po::value(&shape)->default_value("tiny"), "tiny | 135m | 7b | 13b | 70b | custom")
      ("out", po::value(&out)->required(), "output directory")
      ("seed", po::value(&ro.seed)->default_value(1), "weights are a function of (seed, tensor name)")
      ("dtype", po::value(&dtype)->default_value("f32"), "f32 | f16 | bf16 on disk")
      ("vocab", po::value(&custom.vocab_size), "custom: vocabulary size")
      ("hidden", po::value(&custom.hidden_size), "custom: model width")
      ("ffn", po::value(&custom.intermediate_size), "custom: MLP width")
      ("layers", po::value(&custom.num_layers), "custom: layer count")
      ("heads", po::value(&custom.num_heads), "custom: attention heads")
      ("kv-heads", po::value(&custom.num_kv_heads), "custom: KV heads (default: heads)")
      ("ctx", po::value(&custom.max_position_embeddings)->default_value(4096), "custom: max positions")
      ("tied", po::bool_switch(&tied), "custom: tie the LM head to the embedding");
  po::variables_map vm;
  if (!parse_flags(argc, argv, "cllm random-model --shape tiny|135m|7b|13b|70b|custom --out DIR [--dtype bf16]", opts, vm))
    return 0;
  if (dtype == "f32")
    ro.dtype = DType::F32;
  else if (dtype == "f16")
    ro.dtype = DType::F16;
  else if (dtype == "bf16")
    ro.dtype = DType::BF16;
  else
    CLLM_FAIL("--dtype must be f32, f16 or bf16, got '" << dtype << "'");

  ModelConfig cfg;
  if (shape == "custom") {
    for (const char* f : {"vocab", "hidden", "ffn", "layers", "heads"})
      CLLM_CHECK(vm.count(f), "--shape custom needs --" << f);
    cfg = custom;
    if (!vm.count("kv-heads")) cfg.num_kv_heads = cfg.num_heads;
    CLLM_CHECK(cfg.num_heads > 0 && cfg.hidden_size % cfg.num_heads == 0,
               "--hidden " << cfg.hidden_size << " must be a multiple of --heads " << cfg.num_heads);
    cfg.head_dim = cfg.hidden_size / cfg.num_heads;
    cfg.tie_word_embeddings = tied;
    cfg.bos_token_id = random_model_shape("tiny").bos_token_id;
    cfg.eos_token_ids = random_model_shape("tiny").eos_token_ids;
  } else {
    for (const char* f : {"vocab", "hidden", "ffn", "layers", "heads", "kv-heads", "ctx", "tied"})
      CLLM_CHECK(!vm.given(f), "--" << f << " applies to --shape custom; --shape " << shape << " fixes it");
    cfg = random_model_shape(shape);
  }
  validate(cfg, "--shape " + shape);  // every size positive, heads dividing, before anything is written
  // The largest tensor is built in memory before it is written: refused by size, not by bad_alloc.
  const double h = cfg.hidden_size, biggest = std::max({double(cfg.vocab_size) * h, double(cfg.intermediate_size) * h,
                                                          double(cfg.num_heads) * cfg.head_dim * h});
  const double layer = h * (2.0 * cfg.num_heads * cfg.head_dim + 2.0 * cfg.num_kv_heads * cfg.head_dim) +
                       3.0 * h * cfg.intermediate_size;
  const double total = double(cfg.vocab_size) * h * (tied ? 1 : 2) + cfg.num_layers * layer;
  const double bytes = total * (ro.dtype == DType::F32 ? 4 : 2);
  const double machine = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  CLLM_CHECK(biggest * 4 <= machine && cfg.num_layers <= 100000,
             "a random model of " << total / 1e9 << " G parameters (" << bytes / 1e9 << " GB, --vocab " << cfg.vocab_size
                                  << " --hidden " << cfg.hidden_size << " --ffn " << cfg.intermediate_size << " --layers "
                                  << cfg.num_layers << ") has a tensor larger than this machine's " << machine / 1e9
                                  << " GB of memory, or more than 100000 layers");
  // The directory must not hold another checkpoint's files: a loader would read its tokenizer config
  // or weight shards beside the new model. (The files this writes, from an earlier run, are fine,
  // and their bytes count as free below: they are rewritten.)
  namespace fs = std::filesystem;
  double reusable = 0;
  if (fs::is_directory(out)) {
    std::string others;
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string name = e.path().filename().string();
      if (!is_random_model_file(name))
        others += (others.empty() ? "" : ", ") + name;
      else if (e.is_regular_file())
        reusable += static_cast<double>(e.file_size());
    }
    CLLM_CHECK(others.empty(), "--out " << out << " holds files of another checkpoint (" << others
                                        << "); give a new or empty directory");
  }
  // Refused up front rather than after filling the disk: the bytes against the free space where
  // the directory is (or will be).
  fs::path where = fs::absolute(out);
  while (!fs::exists(where) && where.has_parent_path() && where != where.parent_path()) where = where.parent_path();
  std::error_code ec;
  const fs::space_info space = fs::space(where, ec);
  if (!ec) {
    const double free_bytes = static_cast<double>(space.available) + reusable;
    CLLM_CHECK(bytes <= free_bytes, "a random " << shape << " model needs " << bytes / 1e9 << " GB on disk (--dtype "
                                                << dtype << "), but " << where.string() << " has "
                                                << free_bytes / 1e9 << " GB free");
  }
  write_random_model(cfg, out, ro, [](int done, int total) {
    if (done == total || done % 16 == 0) std::fprintf(stderr, "\rwriting tensors %d/%d", done, total);
    if (done == total) std::fprintf(stderr, "\n");
  });
  std::printf("wrote a random %s model (%d layers, hidden %d, %d heads / %d kv) to %s\n", shape.c_str(),
              cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, out.c_str());
  return 0;
}

}  // namespace cllm::cli
