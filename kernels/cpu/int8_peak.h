// The int8 multiply-add ceiling of this CPU for the quantized GEMM (kernels/cpu/gemm_quant.h): what
// a multi-token step on native weights cannot beat, measured in the same run as the benchmark it
// serves (absolute rates are meaningless on shared machines), like the bandwidth probes of membw.h.
#pragma once
#include "kernels/cpu/gemm_quant.h"

namespace cllm::cpu {

// Independent chains of the dot-product instruction that `path` multiplies with (vpdpbusd on
// AVX-512 VNNI and AVX-VNNI; vpmaddubsw + vpmaddwd + vpaddd on AVX2), operands in registers, on
// every thread of the pool at once; the best of `reps` runs. Counts 4 multiply-adds per int32 lane
// per dot instruction. Units: 1e9 multiply-adds/s. 0 for the scalar path (no ceiling measured).
double measure_int8_gmacs(QuantPath path, int reps);

}  // namespace cllm::cpu
