// Jacobi trajectories in HDF5: what `cllm trajectories` writes and training/ reads (h5py).
// Layout (format_version 1; all integer datasets int32 unless noted):
//   /                     attributes: format_version, model (string), block (n), seed (uint64),
//                         vocab_size, max_new_tokens, augment (0/1), max_repeat, blocks (K, multi-block
//                         collection; absent in older files: 1), init (the initial guesses: random,
//                         repeat or pad; absent in older files: random)
//   /samples/%08d         one group per kept prompt, named by its 0-based index in the prompts file:
//     prompt              [P]                 prompt token ids (chat template and BOS applied)
//     states              [num_states, n]     every block state before each Jacobi iteration, block
//                                             after block; block b owns iterations[b] consecutive rows
//                                             and its last row equals fixed_points[b]
//     fixed_points        [num_blocks, n]     the converged n tokens of each block
//     iterations          [num_blocks]        forwards until the block was fixed (= its state rows); with
//                                             K > 1 every forward while the block was in flight, as a
//                                             later block too
//     augmented           [num_augmented, n]  --augment: states with half their wrong tokens fixed
//     augmented_block     [num_augmented]     the block each augmented row belongs to
//     attributes: prompt_index (int64), num_tokens (valid generated tokens: fixed_points flattened,
//                 up to and including the stop token), stopped (1: a stop id ended it, 0: length)
//   /dropped/%08d         a prompt whose output had a run of max_repeat identical tokens: `prompt` only
// A sample is written under a temporary name and moved into place when complete, then the file is
// flushed (H5Fflush): an interrupted run keeps every sample finished before it, and reopening the
// file resumes after them.
#pragma once
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace cllm {

// One prompt's trajectory (shapes as in the layout above; 2-D arrays row-major).
struct Trajectory {
  int block = 0;                        // n
  std::vector<int32_t> prompt;          // [P]
  std::vector<int32_t> states;          // [num_states, n]
  std::vector<int32_t> fixed_points;    // [num_blocks, n]
  std::vector<int32_t> iterations;      // [num_blocks]
  std::vector<int32_t> augmented;       // [num_augmented, n]
  std::vector<int32_t> augmented_block; // [num_augmented]
  int32_t num_tokens = 0;
  bool stopped = false;

  int num_blocks() const { return static_cast<int>(iterations.size()); }
  int num_states() const { return block ? static_cast<int>(states.size()) / block : 0; }
  bool operator==(const Trajectory&) const = default;
};

// The root attributes: how the file was collected. A resumed run must ask for the same.
struct TrajectoryFileInfo {
  std::string model;  // the --model path, as given
  int block = 0;
  uint64_t seed = 0;
  int vocab_size = 0;
  int max_new_tokens = 0;
  bool augment = false;
  int max_repeat = 0;
  int blocks = 1;  // multi-block collection: blocks in flight
  std::string init = "random";  // the initial guesses (cllm trajectories --init)
  uint64_t model_fingerprint = 0;  // checkpoint_fingerprint of the weights (0: a file from before it was kept)
  bool operator==(const TrajectoryFileInfo&) const = default;
};

class TrajectoryWriter {
 public:
  // Creates `path`, or reopens an existing trajectory file to resume it. A resumed file's
  // attributes must equal `info`; otherwise throws naming the file and the first differing one.
  TrajectoryWriter(const std::string& path, const TrajectoryFileInfo& info);
  ~TrajectoryWriter();
  TrajectoryWriter(const TrajectoryWriter&) = delete;
  TrajectoryWriter& operator=(const TrajectoryWriter&) = delete;

  // Prompt indices already in the file, kept or dropped.
  const std::set<int64_t>& done() const { return done_; }
  // The stored prompt ids of a done index (to check that a resumed prompts file is the same).
  std::vector<int32_t> stored_prompt(int64_t index) const;

  // Each writes one complete group and flushes; an index already done throws.
  void write(int64_t index, const Trajectory& t);
  void write_dropped(int64_t index, const std::vector<int32_t>& prompt);

 private:
  struct File;
  std::unique_ptr<File> file_;
  std::string path_;
  std::set<int64_t> done_;
};

class TrajectoryReader {
 public:
  explicit TrajectoryReader(const std::string& path);
  ~TrajectoryReader();
  TrajectoryReader(const TrajectoryReader&) = delete;
  TrajectoryReader& operator=(const TrajectoryReader&) = delete;

  const TrajectoryFileInfo& info() const { return info_; }
  std::vector<int64_t> samples() const;  // kept prompt indices, ascending
  std::vector<int64_t> dropped() const;  // dropped prompt indices, ascending
  // Throws naming the file, the sample and the dataset on a missing or mis-shaped one.
  Trajectory read(int64_t index) const;

 private:
  struct File;
  std::unique_ptr<File> file_;
  std::string path_;
  TrajectoryFileInfo info_;
};

}  // namespace cllm
