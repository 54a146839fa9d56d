// Shared pieces of the tensor-parallel tests: the process communicator (set up by
// mpi_test_main.cpp), the random checkpoints written by make_models.sh (the mpi_models ctest
// fixture), and TP=1-versus-TP=N comparisons.
#pragma once
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "runtime/model.h"

namespace cllm::test {

// This process's communicator: MPI under mpirun, the single-rank one otherwise.
Comm& world();

// True when the world size is one of `sizes`; tests GTEST_SKIP otherwise (below or beside the
// sizes their shapes split over).
bool world_size_in(std::initializer_list<int> sizes);

// <build>/test_tmp/mpi_models/<name>, written by tests/mpi/make_models.sh. Fails the test,
// naming the fixture, when it is missing.
std::string mpi_model_dir(const std::string& name);

// models/SmolLM2-135M-Instruct.Q4_1.gguf (fails the test when absent).
std::string smollm2_path();

// The TP=1-versus-TP=N harness: every rank loads its shard of `path` (CPU); rank 0 also loads the
// whole model and runs body(whole, group), where group is the tensor-parallel group led by rank 0;
// the other ranks serve its forwards until body returns (or fails an ASSERT), then all return.
void compare_with_one_rank(const std::string& path, const std::function<void(Model& whole, Model& group)>& body);

// Largest |a - b| over a row, divided by the largest |ref| of that row, maximised over rows.
double max_relative_row_error(const std::vector<float>& ref, const std::vector<float>& got, int rows, int cols);

}  // namespace cllm::test
