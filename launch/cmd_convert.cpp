// cllm convert: any checkpoint cllm reads (GGUF, HF dir) -> an HF safetensors directory that
// both cllm and HF transformers load. GGUF weights are dequantized; GGUF tokenizers are exported
// as tokenizer.json + tokenizer_config.json (with the chat template).
#include <cstdio>
#include <filesystem>

#include "kernels/check.h"
#include "launch/cli_common.h"
#include "loaders/hf_config.h"
#include "loaders/safetensors.h"
#include "runtime/tokenizer_export.h"

namespace cllm::cli {
namespace {

std::vector<std::string> tensor_names(const ModelConfig& c) {
  std::vector<std::string> names = {"model.embed_tokens.weight"};
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* t : {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                          "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"})
      names.push_back(p + t);
  }
  names.push_back("model.norm.weight");
  if (!c.tie_word_embeddings) names.push_back("lm_head.weight");
  return names;
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
      CLLM_FAIL("exporting a GGUF sentencepiece vocabulary to tokenizer.model is not supported; "
                "convert from the original HF directory instead");
    case TokenizerSpec::Kind::None:
      CLLM_FAIL("the checkpoint has no tokenizer to export");
  }
}

}  // namespace

int convert_main(int argc, char** argv) {
  po::options_description opts("cllm convert");
  std::string in, out, dtype;
  opts.add_options()
      ("model", po::value(&in)->required(), "input: GGUF file or HF checkpoint directory")
      ("out", po::value(&out)->required(), "output HF directory")
      ("dtype", po::value(&dtype)->default_value("f32"), "f32 | f16 | bf16 on disk");
  po::variables_map vm;
  if (!parse_flags(argc, argv, "cllm convert --model IN --out DIR [--dtype f32|f16|bf16]", opts, vm)) return 0;
  const DType dt = dtype == "f32" ? DType::F32 : dtype == "f16" ? DType::F16 : dtype == "bf16" ? DType::BF16 : DType::Q8_0;
  CLLM_CHECK(dt != DType::Q8_0, "--dtype must be f32, f16 or bf16, got '" << dtype << "'");

  auto ckpt = open_checkpoint(in);
  const ModelConfig& cfg = ckpt->config();
  std::filesystem::create_directories(out);
  const std::vector<std::string> names = tensor_names(cfg);
  std::vector<std::vector<float>> data(names.size());
  std::vector<SafetensorsWriteTensor> tensors;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::vector<int64_t> shape = ckpt->shape(names[i]);
    size_t numel = 1;
    for (int64_t s : shape) numel *= static_cast<size_t>(s);
    data[i].resize(numel);
    ckpt->read_f32(names[i], TensorRange{}, data[i].data());
    tensors.push_back({names[i], dt, shape, data[i].data()});
    std::fprintf(stderr, "\rconverting %zu/%zu", i + 1, names.size());
  }
  std::fprintf(stderr, "\n");
  write_safetensors(out + "/model.safetensors", tensors, {{"format", "pt"}});
  write_hf_config(cfg, out);
  export_tokenizer(ckpt->tokenizer(), out);
  std::printf("wrote %s (%zu tensors, %s)\n", out.c_str(), names.size(), dtype.c_str());
  return 0;
}

}  // namespace cllm::cli
