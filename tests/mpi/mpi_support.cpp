#include "mpi_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "loaders/checkpoint.h"
#include "parallel/coordinator.h"
#include "parallel/tp_model.h"

namespace cllm::test {

bool world_size_in(std::initializer_list<int> sizes) {
  return std::find(sizes.begin(), sizes.end(), world().size()) != sizes.end();
}

namespace {
// Stops the workers however rank 0's test body ends (a failed ASSERT returns early).
class Group {
 public:
  Group(Model& shard, Comm& comm) : coordinator_(shard, comm) {}
  ~Group() { coordinator_.stop(); }
  Model& model() { return coordinator_; }

 private:
  CoordinatorModel coordinator_;
};
}  // namespace

void compare_with_one_rank(const std::string& path, const std::function<void(Model& whole, Model& group)>& body) {
  Comm& comm = world();
  comm.set_deadline_seconds(60);
  auto ckpt = open_checkpoint(path);
  std::unique_ptr<Model> shard = make_sharded_model(*ckpt, Device::Cpu, comm);
  if (comm.rank() != 0) {
    worker_loop(*shard, comm);
    return;
  }
  std::unique_ptr<Model> whole = make_model(*ckpt, Device::Cpu);
  Group group(*shard, comm);
  body(*whole, group.model());
}

std::string mpi_model_dir(const std::string& name) {
  const std::string dir = std::string(CLLM_BINARY_DIR) + "/test_tmp/mpi_models/" + name;
  if (!std::filesystem::exists(dir + "/config.json"))
    ADD_FAILURE() << dir << " is missing: the ctest fixture mpi_models (tests/mpi/make_models.sh) writes it";
  return dir;
}

std::string smollm2_path() {
  const std::string p = std::string(CLLM_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p)) ADD_FAILURE() << p << " is missing: run launch/fetch_model.sh";
  return p;
}

double max_relative_row_error(const std::vector<float>& ref, const std::vector<float>& got, int rows, int cols) {
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    double diff = 0, scale = 0;
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      diff = std::max(diff, static_cast<double>(std::fabs(ref[i] - got[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(ref[i])));
    }
    worst = std::max(worst, scale > 0 ? diff / scale : diff);
  }
  return worst;
}

}  // namespace cllm::test
