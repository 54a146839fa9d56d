// Reads blocks as JSON (a list of {"tokens": [...], "y": [...], "pos": P, "rows": [[pos, base], ...]
// or null, optionally "guesses" and "frontier": the Jacobi guesses among the main run's rows and
// the frontier block's rows among them}) and prints the decoding core's decision for each (runtime/acceptance.h) as a JSON list
// of {"branch", "first_row", "root", "accepted", "final": [...], and with "guesses" also "sources":
// {"block", "later", "candidate"}}, or {"error": message} for a
// layout it refuses. training/tests/test_acceptance.py compares these with training/acceptance.py.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/acceptance.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: accept_verdicts BLOCKS.json\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) {
    std::cerr << "accept_verdicts: cannot open " << argv[1] << "\n";
    return 2;
  }
  const nlohmann::json cases = nlohmann::json::parse(in);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& c : cases) {
    const auto tokens = c.at("tokens").get<std::vector<int32_t>>();
    const auto y = c.at("y").get<std::vector<int32_t>>();
    std::vector<cllm::RowSpec> rows;
    if (!c.at("rows").is_null())
      for (const auto& r : c.at("rows")) rows.push_back({r.at(0).get<int32_t>(), r.at(1).get<int32_t>()});
    try {
      const cllm::Verdict v = cllm::verify_block(tokens.data(), y.data(), static_cast<int>(tokens.size()),
                                                 c.at("pos").get<int>(), rows.empty() ? nullptr : rows.data());
      nlohmann::json j = {{"branch", v.branch},
                          {"first_row", v.first_row},
                          {"root", v.root},
                          {"accepted", v.accepted},
                          {"final", cllm::verdict_tokens(v, tokens.data(), y.data())}};
      if (c.contains("guesses")) {
        const cllm::Sources s = cllm::accepted_sources(v, c.at("guesses").get<int>(), c.at("frontier").get<int>());
        j["sources"] = {{"block", s.block}, {"later", s.later}, {"candidate", s.candidate}};
      }
      out.push_back(j);
    } catch (const std::exception& e) {
      out.push_back({{"error", e.what()}});
    }
  }
  std::cout << out.dump() << "\n";
  return 0;
}
