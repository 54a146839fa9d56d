// Whole-model logits against a fixture of tests/reference/make_logit_fixtures.py (HF transformers,
// fp32, eager). For every prompt of the fixture: |cllm - hf| <= atol + 1e-4 * |hf| on the top-32
// logits, the sampled logits and the logsumexp at its stored positions; argmax equal unless HF's
// top-2 gap is below atol; greedy tokens equal up to the first step whose margin is below atol.
#pragma once
#include <string>

namespace cllm::test {

// fixture: a file under tests/fixtures/logits/; model_path: a GGUF file or HF directory.
void check_fixture(const std::string& fixture, const std::string& model_path, double atol);

}  // namespace cllm::test
