// What the HDF5 checkpoint's writer and reader agree on (layout in h5_checkpoint.h): names,
// config attributes, dtype and tokenizer-kind spellings, stored element types, split axes.
// Internal to loaders/.
#pragma once
#include <string>

#include "core/check.h"
#include "loaders/checkpoint.h"
#include "loaders/dequant.h"
#include "loaders/h5_check.h"

namespace cllm::detail {

constexpr const char* kFormatName = "cllm-checkpoint";
constexpr int kFormatVersion = 1;
constexpr const char* kTensorGroup = "/tensors";

// The ModelConfig scalars stored as root attributes under their field names (int32 / float32);
// architecture, tie_word_embeddings, eos_token_ids and rope_scaling are written one by one.
struct IntField {
  const char* name;
  int ModelConfig::*field;
};
inline constexpr IntField kIntFields[] = {
    {"vocab_size", &ModelConfig::vocab_size},
    {"hidden_size", &ModelConfig::hidden_size},
    {"intermediate_size", &ModelConfig::intermediate_size},
    {"num_layers", &ModelConfig::num_layers},
    {"num_heads", &ModelConfig::num_heads},
    {"num_kv_heads", &ModelConfig::num_kv_heads},
    {"head_dim", &ModelConfig::head_dim},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings},
    {"bos_token_id", &ModelConfig::bos_token_id}};
struct FloatField {
  const char* name;
  float ModelConfig::*field;
};
inline constexpr FloatField kFloatFields[] = {{"rms_norm_eps", &ModelConfig::rms_norm_eps},
                                              {"rope_theta", &ModelConfig::rope_theta}};

inline const char* dtype_attr(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    default: CLLM_FAIL("the HDF5 checkpoint stores f32, f16 or bf16, not " << dtype_name(t));
  }
}

inline DType tensor_dtype(const std::string& attr, const std::string& where) {
  for (DType t : {DType::F32, DType::F16, DType::BF16})
    if (attr == dtype_attr(t)) return t;
  CLLM_FAIL(where << ": attribute dtype is '" << attr << "' (accepted: f32, f16, bf16)");
}

// The file type of each dtype: F32LE, IEEE binary16 (built as h5py builds its float16), U16LE.
inline hid_t stored_type(DType t) {
  static const hid_t f16 = [] {
    const hid_t h = CLLM_H5(H5Tcopy(H5T_IEEE_F32LE));
    CLLM_H5(H5Tset_fields(h, 15, 10, 5, 0, 10));  // sign bit, exponent at 10 (5 bits), mantissa at 0 (10)
    CLLM_H5(H5Tset_size(h, 2));
    CLLM_H5(H5Tset_ebias(h, 15));
    return h;
  }();
  return t == DType::F32 ? H5T_IEEE_F32LE : t == DType::F16 ? f16 : H5T_STD_U16LE;
}

inline std::string describe_type(hid_t type) {
  const H5T_class_t c = H5Tget_class(type);
  const std::string kind = c == H5T_FLOAT ? "float" : c == H5T_INTEGER ? "integer" : "non-numeric value";
  return "a " + std::to_string(H5Tget_size(type)) + "-byte " + kind;
}

inline const char* tokenizer_kind_name(TokenizerSpec::Kind k) {
  using K = TokenizerSpec::Kind;
  switch (k) {
    case K::None: return "none";
    case K::SentencePieceModel: return "sentencepiece_model";
    case K::HfJson: return "hf_json";
    case K::GgufBpe: return "gguf_bpe";
    case K::GgufSpm: return "gguf_spm";
  }
  return "?";
}

inline TokenizerSpec::Kind tokenizer_kind(const std::string& name, const std::string& where) {
  using K = TokenizerSpec::Kind;
  for (K k : {K::None, K::SentencePieceModel, K::HfJson, K::GgufBpe, K::GgufSpm})
    if (name == tokenizer_kind_name(k)) return k;
  CLLM_FAIL(where << ": attribute kind is '" << name
                  << "' (accepted: none, sentencepiece_model, hf_json, gguf_bpe, gguf_spm)");
}

}  // namespace cllm::detail
