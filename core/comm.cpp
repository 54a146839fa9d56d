// The non-virtual parts of Comm (core/comm.h), shared by every implementation.
#include "core/comm.h"

#include <cstdlib>
#include <utility>

#include "core/check.h"

namespace cllm {

std::string CommPhase::str() const {
  return layer >= 0 ? "layer " + std::to_string(layer) + " " + what : std::string(what);
}

void Comm::abort(const std::string& message) {
  if (auto hook = std::exchange(abort_hook_, nullptr)) hook(message);
  stop_all_ranks(message);
  std::abort();
}

void Comm::set_deadline_seconds(double s) {
  CLLM_CHECK(s > 0, "--comm-deadline (the collective deadline) must be positive, got " << s << " s");
  deadline_s_ = s;
}

}  // namespace cllm
