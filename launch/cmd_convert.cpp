// cllm convert: any checkpoint cllm reads (GGUF, HF dir, cllm .h5) ->
//   --to hf: an HF safetensors directory that both cllm and HF transformers load. GGUF weights are
//            dequantized; GGUF tokenizers are exported as tokenizer.json + tokenizer_config.json;
//   --to h5: cllm's HDF5 checkpoint (loaders/h5_checkpoint.h), chunked for tensor-parallel reads.
// --to defaults to h5 when --out ends in .h5, else hf.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "core/check.h"
#include "core/tensor_manifest.h"
#include "launch/cli_common.h"
#include "loaders/h5_checkpoint.h"
#include "loaders/hf_config.h"
#include "loaders/safetensors.h"
#include "runtime/tokenizer_export.h"

namespace cllm::cli {
namespace {

// Throws when export_tokenizer cannot write this kind; write_hf_dir calls it before writing anything.
void check_tokenizer_exportable(const TokenizerSpec& spec) {
  if (spec.kind == TokenizerSpec::Kind::GgufSpm)
    CLLM_FAIL("exporting a GGUF sentencepiece vocabulary to tokenizer.model is not supported; "
              "convert from the original HF directory instead");
  if (spec.kind == TokenizerSpec::Kind::None) CLLM_FAIL("the checkpoint has no tokenizer to export");
}

void export_tokenizer(const TokenizerSpec& spec, const std::string& out) {
  namespace fs = std::filesystem;
  switch (spec.kind) {
    case TokenizerSpec::Kind::GgufBpe:
      write_hf_tokenizer_json(spec, out + "/tokenizer.json");
      write_hf_tokenizer_config_json(spec, out + "/tokenizer_config.json");
      return;
    case TokenizerSpec::Kind::HfJson:
    case TokenizerSpec::Kind::SentencePieceModel: {
      const fs::path src_dir = fs::path(spec.path).parent_path();
      for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
        if (fs::exists(src_dir / f)) fs::copy_file(src_dir / f, fs::path(out) / f, fs::copy_options::overwrite_existing);
      return;
    }
    case TokenizerSpec::Kind::GgufSpm:
    case TokenizerSpec::Kind::None:
      break;  // refused by check_tokenizer_exportable before any file is written
  }
}

// Progress on stderr: a rewritten line on a terminal, a line per 10% otherwise.
void report_progress(double done, double total, const std::string& name) {
  static const bool tty = isatty(STDERR_FILENO);
  static int last_decile = 0;
  const int pct = total > 0 ? static_cast<int>(100.0 * done / total) : 100;
  if (tty) {
    std::fprintf(stderr, "\rconverting %3d%% (%.0f of %.0f MB fp32) %-48.48s", pct, done / 1e6, total / 1e6, name.c_str());
    if (done >= total) std::fprintf(stderr, "\n");
  } else if (pct / 10 > last_decile) {
    std::fprintf(stderr, "converting %d%% (%.0f of %.0f MB fp32)\n", pct, done / 1e6, total / 1e6);
  }
  last_decile = pct / 10;
}

// SIGINT or SIGTERM during an .h5 conversion: the temporary file (model-sized) is removed, a line
// says why the run ended, and the signal then ends the process as it would have.
char g_temp_path[4096];
extern "C" void remove_temp_and_reraise(int sig) {
  if (g_temp_path[0] != '\0') unlink(g_temp_path);
  static const char kMsg[] = "\ncllm convert: interrupted; the partial output was removed\n";
  (void)!write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// Weight files of an earlier checkpoint in the output directory (other shards, an index naming
// them, PyTorch weights) would sit beside the new model.safetensors and make the directory mean two
// models: removed, as transformers' save_pretrained removes stale shards. Other files stay.
void remove_stale_weights(const std::string& dir) {
  namespace fs = std::filesystem;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const bool weights = (name.rfind("model", 0) == 0 && name.size() > 12 &&
                          name.compare(name.size() - 12, 12, ".safetensors") == 0) ||
                         name == "model.safetensors.index.json" || name.rfind("pytorch_model", 0) == 0;
    if (!weights || !e.is_regular_file()) continue;
    fs::remove(e.path());
    std::fprintf(stderr, "removed %s (an earlier checkpoint's weights)\n", e.path().string().c_str());
  }
}

void write_hf_dir(const CheckpointReader& ckpt, const std::string& out, DType dt) {
  const ModelConfig& cfg = ckpt.config();
  check_tokenizer_exportable(ckpt.tokenizer());  // before the weights: no directory left without a tokenizer
  std::filesystem::create_directories(out);
  const TensorManifest manifest = make_tensor_manifest(cfg);
  const std::vector<const TensorSpec*> specs = manifest.all();
  std::vector<std::vector<float>> data(specs.size());
  std::vector<SafetensorsWriteTensor> tensors;
  const double total = static_cast<double>(manifest.bytes(sizeof(float)));
  double done = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& t = *specs[i];
    data[i].resize(static_cast<size_t>(t.elements()));
    ckpt.read_f32(t.name, TensorRange{}, data[i].data());
    tensors.push_back({t.name, dt, t.shape, data[i].data()});
    done += static_cast<double>(t.bytes(sizeof(float)));
    report_progress(done, total, t.name);
  }
  remove_stale_weights(out);
  write_safetensors(out + "/model.safetensors", tensors, {{"format", "pt"}});
  write_hf_config(cfg, out);
  export_tokenizer(ckpt.tokenizer(), out);
}

}  // namespace

int convert_main(int argc, char** argv) {
  po::options_description opts("cllm convert");
  std::string in, out, dtype, to;
  int tp_chunks = 8;
  opts.add_options()
      ("model", po::value(&in)->required(), "input: GGUF file, HF checkpoint directory or cllm .h5 checkpoint")
      ("out", po::value(&out)->required(), "output: HF directory (--to hf) or .h5 file (--to h5)")
      ("to", po::value(&to), "hf | h5 (default: h5 when --out ends in .h5, else hf)")
      ("dtype", po::value(&dtype)->default_value("f32"), "f32 | f16 | bf16 on disk")
      ("tp-chunks", po::value(&tp_chunks), "h5: chunks along each tensor's split axis, gcd(N, dim); every TP "
                                           "dividing it reads whole chunks (default 8: TP 1, 2, 4, 8)");
  po::variables_map vm;
  if (!parse_flags(argc, argv, "cllm convert --model IN --out OUT [--to hf|h5] [--dtype f32|f16|bf16] [--tp-chunks N]",
                   opts, vm))
    return 0;
  const DType dt = dtype == "f32" ? DType::F32 : dtype == "f16" ? DType::F16 : dtype == "bf16" ? DType::BF16 : DType::Q8_0;
  CLLM_CHECK(dt != DType::Q8_0, "--dtype must be f32, f16 or bf16, got '" << dtype << "'");
  if (to.empty()) to = std::filesystem::path(out).extension() == ".h5" ? "h5" : "hf";
  CLLM_CHECK(to == "hf" || to == "h5", "--to must be hf or h5, got '" << to << "'");
  check_output_is_not_input("--out", out, "--model", in);  // it would be rewritten while it is read
  CLLM_CHECK(to == "h5" || !vm.count("tp-chunks"), "--tp-chunks applies to --to h5 only");
  CLLM_CHECK(to == "hf" || std::filesystem::path(out).extension() == ".h5",
             "--to h5 writes a file whose name ends in .h5 (open_checkpoint picks the reader by it), got '" << out << "'");

  const auto t0 = std::chrono::steady_clock::now();
  auto ckpt = open_checkpoint(in);
  const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (to == "h5") {
    H5WriteOptions wo;
    wo.dtype = dt;
    wo.tp_chunks = tp_chunks;
    wo.progress = report_progress;
    const std::string temp = h5_checkpoint_temp_path(out);
    CLLM_CHECK(temp.size() < sizeof g_temp_path, "--out path too long: " << out);
    std::snprintf(g_temp_path, sizeof g_temp_path, "%s", temp.c_str());
    std::signal(SIGINT, remove_temp_and_reraise);
    std::signal(SIGTERM, remove_temp_and_reraise);
    write_h5_checkpoint(*ckpt, out, wo);
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  } else {
    write_hf_dir(*ckpt, out, dt);
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const TensorManifest manifest = make_tensor_manifest(ckpt->config());
  std::printf("wrote %s (%s, %s, %zu tensors) in %.2f s (opening the input %.2f s)\n", out.c_str(), to.c_str(),
              dtype.c_str(), manifest.all().size(), total_s, open_s);
  return 0;
}

}  // namespace cllm::cli
