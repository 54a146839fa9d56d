// See logit_fixture.h.
#include "logit_fixture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/generate.h"
#include "runtime/model.h"
#include "test_support.h"

namespace cllm::test {
namespace {

double logsumexp(const float* x, int n) {
  double m = x[0];
  for (int i = 1; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return m + std::log(s);
}

}  // namespace

void check_fixture(const std::string& fixture, const std::string& model_path, double atol) {
  std::ifstream in(test::fixture_path("logits/" + fixture));
  ASSERT_TRUE(in) << "missing fixture " << fixture;
  const nlohmann::json j = nlohmann::json::parse(in);
  auto ckpt = open_checkpoint(model_path);
  auto model = make_model(*ckpt, Device::Cpu);
  const int V = model->config().vocab_size;
  const int stride = j["sample_stride"];
  auto close = [&](double a, double b) { return std::abs(a - b) <= atol + 1e-4 * std::abs(b); };

  for (const auto& p : j["prompts"]) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    const int n = static_cast<int>(ids.size());
    std::vector<float> logits(static_cast<size_t>(n) * V);
    std::vector<int32_t> argmax(n);
    model->reset(n + 32);
    model->forward(ids.data(), n, 0, argmax.data(), logits.data());
    const std::string name = p["name"];
    for (size_t k = 0; k < p["positions"].size(); ++k) {
      const int pos = p["positions"][k];
      const auto& ref = p["logits"][k];
      const float* row = logits.data() + static_cast<size_t>(pos) * V;
      double worst = 0;
      for (const auto& t : ref["top"]) {
        const int id = t[0];
        const double want = t[1];
        worst = std::max(worst, std::abs(row[id] - want));
        EXPECT_TRUE(close(row[id], want)) << name << " pos " << pos << " id " << id << ": " << row[id] << " vs " << want;
      }
      for (size_t s = 0; s < ref["sampled"].size(); ++s) {
        const double want = ref["sampled"][s];
        EXPECT_TRUE(close(row[s * stride], want)) << name << " pos " << pos << " id " << s * stride << ": "
                                                  << row[s * stride] << " vs " << want;
      }
      EXPECT_TRUE(close(logsumexp(row, V), ref["logsumexp"].get<double>())) << name << " pos " << pos;
      const double gap = ref["top"][0][1].get<double>() - ref["top"][1][1].get<double>();
      if (gap > atol) EXPECT_EQ(argmax[pos], ref["argmax"].get<int>()) << name << " pos " << pos;
      ::testing::Test::RecordProperty(name + "_pos" + std::to_string(pos) + "_max_abs_diff_top", std::to_string(worst));
    }

    // Greedy continuation: equal up to the first near-tie step.
    GenerateOptions gen;
    gen.max_new_tokens = static_cast<int>(p["greedy"].size());
    model->reset(kv_rows_needed(n, gen.max_new_tokens, 1));
    const GenerateResult r = generate_ar(*model, ids, gen);
    for (size_t i = 0; i < p["greedy"].size(); ++i) {
      if (p["greedy_margin"][i].get<double>() < atol) break;
      ASSERT_EQ(r.tokens[i], p["greedy"][i].get<int32_t>()) << name << " greedy step " << i;
    }
  }
}

}  // namespace cllm::test
