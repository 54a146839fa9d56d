// Trajectory collection and its HDF5 file: blockwise states end in their fixed points, the fixed
// points are the greedy AR continuation, the file round-trips, an interrupted run resumes
// without duplicates or losses, and collecting many prompts at once in one batched forward per
// step gives every prompt the trajectory it gets alone.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <numeric>
#include <set>
#include <thread>

#include "core/check.h"
#include "loaders/trajectory_h5.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/trajectory.h"
#include "test_support.h"

namespace cllm {
namespace {

struct Loaded {
  std::unique_ptr<CheckpointReader> ckpt;
  std::unique_ptr<Model> model;
};

Loaded& tiny() {
  static Loaded m = [] {
    Loaded l;
    l.ckpt = open_checkpoint(test::random_model_dir("tiny", 1));
    l.model = make_model(*l.ckpt, Device::Cpu);
    return l;
  }();
  return m;
}

std::vector<std::vector<int32_t>> test_prompts() {
  return {{0, 72, 101, 108, 108, 111}, {0, 200, 13, 77}, {0, 5, 6, 7, 8, 9, 10, 11}, {0, 300}, {0, 42, 42, 42, 99}};
}

TrajectoryOptions small_opts(int block) {
  TrajectoryOptions o;
  o.block = block;
  o.max_new_tokens = 36;  // rounded up to whole blocks
  o.max_repeat = 0;       // keep every sample: the resume test needs them all in /samples
  return o;
}

Trajectory collect(const std::vector<int32_t>& prompt, const TrajectoryOptions& o, uint64_t seed) {
  Model& m = *tiny().model;
  m.reset(trajectory_kv_rows(static_cast<int>(prompt.size()), o));
  return collect_trajectory(m, prompt, o, seed);
}

std::vector<int32_t> state_row(const Trajectory& t, int s) {
  return {t.states.begin() + s * t.block, t.states.begin() + (s + 1) * t.block};
}
std::vector<int32_t> fixed_row(const Trajectory& t, int b) {
  return {t.fixed_points.begin() + b * t.block, t.fixed_points.begin() + (b + 1) * t.block};
}

TEST(Trajectories, StatesEndInFixedPointsThatAreGreedyAR) {
  const std::vector<int32_t> prompt = test_prompts()[0];
  for (int n : {1, 4, 8}) {
    const TrajectoryOptions o = small_opts(n);
    const Trajectory t = collect(prompt, o, 7);
    const int blocks = (o.max_new_tokens + n - 1) / n;
    ASSERT_EQ(t.num_blocks(), blocks) << "n=" << n;
    EXPECT_FALSE(t.stopped);
    EXPECT_EQ(t.num_tokens, blocks * n);
    EXPECT_EQ(t.prompt, prompt);

    int s = 0;
    for (int b = 0; b < t.num_blocks(); ++b) {
      ASSERT_GE(t.iterations[b], 1);
      EXPECT_LE(t.iterations[b], n) << "a block of n needs at most n iterations";
      // g[0] of the first state is final: the argmax after the previous block.
      EXPECT_EQ(state_row(t, s)[0], fixed_row(t, b)[0]);
      s += t.iterations[b];
      EXPECT_EQ(state_row(t, s - 1), fixed_row(t, b)) << "n=" << n << " block " << b;
    }
    EXPECT_EQ(s, t.num_states());
    if (n == 1) {
      EXPECT_EQ(t.num_states(), t.num_blocks());
    }

    GenerateOptions gen;
    gen.max_new_tokens = t.num_tokens;
    Model& m = *tiny().model;
    m.reset(kv_rows_needed(static_cast<int>(prompt.size()), gen.max_new_tokens, 1));
    EXPECT_EQ(generate_ar(m, prompt, gen).tokens, t.fixed_points) << "n=" << n;
  }
}

// Multi-block collection: the same fixed points (greedy AR), each block's states consecutive and
// ending in its fixed point, the later blocks' states recorded while they drafted ahead.
TEST(Trajectories, MultiBlockRecordsEveryBlockInFlight) {
  const std::vector<int32_t> prompt = test_prompts()[2];
  for (int n : {1, 4}) {
    TrajectoryOptions o = small_opts(n);
    const Trajectory one = collect(prompt, o, 7);
    for (int k : {2, 3}) {
      o.blocks = k;
      o.augment = true;
      const Trajectory t = collect(prompt, o, 7);
      const std::string what = "n=" + std::to_string(n) + " K=" + std::to_string(k);
      EXPECT_EQ(t.fixed_points, one.fixed_points) << what;
      ASSERT_EQ(t.num_blocks(), one.num_blocks()) << what;
      int s = 0, longer = 0;
      for (int b = 0; b < t.num_blocks(); ++b) {
        ASSERT_GE(t.iterations[b], 1) << what;
        s += t.iterations[b];
        EXPECT_EQ(state_row(t, s - 1), fixed_row(t, b)) << what << " block " << b;
        longer += t.iterations[b] > one.iterations[b];
      }
      EXPECT_EQ(s, t.num_states()) << what;
      // A later block is in flight before it is the frontier: blocks after the first have more states.
      if (n > 1) EXPECT_GT(longer, 0) << what;
      for (int32_t b : t.augmented_block) EXPECT_LT(b, t.num_blocks());
    }
  }
  // A stop id in the second block ends it there, as with one block (later blocks' states dropped).
  TrajectoryOptions o = small_opts(4);
  o.stop_ids = {collect(prompt, o, 7).fixed_points[6]};
  const Trajectory one = collect(prompt, o, 7);
  o.blocks = 3;
  const Trajectory multi = collect(prompt, o, 7);
  EXPECT_TRUE(multi.stopped);
  EXPECT_EQ(multi.num_tokens, one.num_tokens);
  EXPECT_EQ(multi.fixed_points, one.fixed_points);
  EXPECT_EQ(multi.num_states(), std::accumulate(multi.iterations.begin(), multi.iterations.end(), 0));
}

TEST(Trajectories, StopsAtTheBlockHoldingAStopId) {
  const std::vector<int32_t> prompt = test_prompts()[1];
  TrajectoryOptions o = small_opts(4);
  const Trajectory full = collect(prompt, o, 3);
  // Make the 7th generated token (block 1) a stop id: the trajectory ends after block 1.
  const int32_t stop = full.fixed_points[6];
  int first = 0;
  while (full.fixed_points[first] != stop) ++first;
  o.stop_ids = {stop};
  const Trajectory t = collect(prompt, o, 3);
  EXPECT_TRUE(t.stopped);
  EXPECT_EQ(t.num_tokens, first + 1);
  EXPECT_EQ(t.num_blocks(), first / 4 + 1);
  EXPECT_EQ(t.fixed_points, std::vector<int32_t>(full.fixed_points.begin(), full.fixed_points.begin() + t.num_blocks() * 4));
}

TEST(Trajectories, AugmentFixesHalfOfTheWrongTokens) {
  TrajectoryOptions o = small_opts(8);
  o.augment = true;
  const Trajectory t = collect(test_prompts()[2], o, 11);
  o.augment = false;
  EXPECT_EQ(collect(test_prompts()[2], o, 11).states, t.states) << "augmenting must not change the trajectory";

  size_t a = 0;
  int s = 0;
  for (int b = 0; b < t.num_blocks(); ++b) {
    const std::vector<int32_t> fp = fixed_row(t, b);
    for (int k = 0; k < t.iterations[b]; ++k, ++s) {
      const std::vector<int32_t> st = state_row(t, s);
      std::set<int> wrong;
      for (int j = 0; j < t.block; ++j)
        if (st[j] != fp[j]) wrong.insert(j);
      if (wrong.size() < 2) continue;
      ASSERT_LT(a, t.augmented_block.size());
      EXPECT_EQ(t.augmented_block[a], b);
      const std::vector<int32_t> aug(t.augmented.begin() + a * t.block, t.augmented.begin() + (a + 1) * t.block);
      size_t still_wrong = 0;
      for (int j = 0; j < t.block; ++j) {
        if (aug[j] != fp[j]) {
          EXPECT_TRUE(wrong.count(j)) << "position " << j << " was right and became wrong";
          EXPECT_EQ(aug[j], st[j]);
          ++still_wrong;
        }
      }
      EXPECT_EQ(still_wrong, wrong.size() - wrong.size() / 2);
      ++a;
    }
  }
  EXPECT_EQ(a, t.augmented_block.size());
  EXPECT_GT(a, 0u) << "a random model from random guesses should leave several wrong tokens";
}

TEST(Trajectories, RepeatedRunDetection) {
  Trajectory t;
  t.block = 4;
  t.fixed_points = {5, 7, 7, 7, 7, 9, 1, 1};
  t.iterations = {1, 1};
  t.num_tokens = 8;
  EXPECT_TRUE(has_repeated_run(t, 4));
  EXPECT_FALSE(has_repeated_run(t, 5));
  EXPECT_FALSE(has_repeated_run(t, 0));
  t.num_tokens = 4;  // the run is cut by the stop token
  EXPECT_FALSE(has_repeated_run(t, 4));
  EXPECT_TRUE(has_repeated_run(t, 3));
}

TrajectoryFileInfo info_for(const TrajectoryOptions& o, uint64_t seed) {
  return {"tiny-random", o.block, seed, 320, o.max_new_tokens, o.augment, o.max_repeat, o.blocks};
}

TEST(Trajectories, FileRoundTrips) {
  const auto path = (test::temp_dir("traj") / "t.h5").string();
  TrajectoryOptions o = small_opts(4);
  o.augment = true;
  const TrajectoryFileInfo info = info_for(o, 5);
  const Trajectory a = collect(test_prompts()[0], o, 1), b = collect(test_prompts()[3], o, 2);
  ASSERT_GT(a.augmented_block.size(), 0u);
  {
    TrajectoryWriter w(path, info);
    w.write(3, b);
    w.write(0, a);
    w.write_dropped(1, test_prompts()[1]);
    EXPECT_THROW(w.write(0, a), Error);
  }
  TrajectoryReader r(path);
  EXPECT_EQ(r.info(), info);
  EXPECT_EQ(r.samples(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(r.dropped(), (std::vector<int64_t>{1}));
  EXPECT_EQ(r.read(0), a);
  EXPECT_EQ(r.read(3), b);
  EXPECT_THROW(r.read(1), Error);

  // A trajectory that stopped early, with no augmented rows: empty datasets round-trip too.
  Trajectory c = collect(test_prompts()[4], small_opts(4), 9);
  c.num_tokens -= 2;
  c.stopped = true;
  const auto path2 = (test::temp_dir("traj2") / "t.h5").string();
  { TrajectoryWriter(path2, info_for(small_opts(4), 0)).write(7, c); }
  EXPECT_EQ(TrajectoryReader(path2).read(7), c);
}

TEST(Trajectories, ResumeAfterInterruptionHasNoDuplicatesOrLosses) {
  const auto dir = test::temp_dir("traj_resume");
  const TrajectoryOptions o = small_opts(4);
  const std::vector<std::vector<int32_t>> all = test_prompts();
  const std::vector<std::vector<int32_t>> first3(all.begin(), all.begin() + 3);
  Model& m = *tiny().model;

  const std::string once = (dir / "once.h5").string(), resumed = (dir / "resumed.h5").string();
  {
    TrajectoryWriter w(once, info_for(o, 21));
    EXPECT_EQ(collect_trajectories(m, all, w, o, 21).kept, 5);
  }
  {
    TrajectoryWriter w(resumed, info_for(o, 21));  // "interrupted" after prompt 2
    EXPECT_EQ(collect_trajectories(m, first3, w, o, 21).kept, 3);
  }
  {
    TrajectoryWriter w(resumed, info_for(o, 21));
    EXPECT_EQ(w.done(), (std::set<int64_t>{0, 1, 2}));
    const CollectSummary s = collect_trajectories(m, all, w, o, 21);
    EXPECT_EQ(s.skipped, 3);
    EXPECT_EQ(s.kept, 2);
  }
  {
    TrajectoryReader a(once), b(resumed);
    ASSERT_EQ(b.samples(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
    EXPECT_TRUE(b.dropped().empty());
    for (int64_t i : b.samples()) {
      EXPECT_EQ(b.read(i), a.read(i)) << "prompt " << i;
      EXPECT_EQ(b.read(i).prompt, all[i]);
    }
  }
  // A third run finds nothing to do.
  {
    TrajectoryWriter w(resumed, info_for(o, 21));
    EXPECT_EQ(collect_trajectories(m, all, w, o, 21).skipped, 5);
  }
}

TEST(Trajectories, ResumeRefusesDifferentSettingsOrPrompts) {
  const auto path = (test::temp_dir("traj_refuse") / "t.h5").string();
  const TrajectoryOptions o = small_opts(4);
  {
    TrajectoryWriter w(path, info_for(o, 1));
    collect_trajectories(*tiny().model, {test_prompts()[0]}, w, o, 1);
  }
  // Opening the file again with one setting changed is refused with a message that names it.
  auto expect_refused = [&](const std::function<void(TrajectoryFileInfo&)>& change, const std::string& message) {
    TrajectoryFileInfo other = info_for(o, 1);
    change(other);
    try {
      TrajectoryWriter w(path, other);
      ADD_FAILURE() << "accepted a resume with another setting; expected: " << message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  expect_refused([](TrajectoryFileInfo& i) { i.block = 8; }, "block");
  expect_refused([](TrajectoryFileInfo& i) { i.blocks = 2; }, "blocks = 1");  // a multi-block collection's states differ
  expect_refused([](TrajectoryFileInfo& i) { i.init = "pad"; },                // states that start from other guesses
                 "init = random but this run asks for pad");
  TrajectoryWriter w(path, info_for(o, 1));
  EXPECT_THROW(collect_trajectories(*tiny().model, {test_prompts()[1]}, w, o, 1), Error);
}

// A resumed file whose sample claims more tokens than it stores (a damaged header) is refused
// before anything is allocated; random bit flips anywhere in the file end in a resumed run or an
// error, never in a crash or a hang (a flipped dimension once asked for an 8 GB vector).
TEST(Trajectories, DamagedFilesAreRefusedOnResume) {
  const auto path = (test::temp_dir("traj_damaged") / "t.h5").string();
  const TrajectoryOptions o = small_opts(4);
  const std::vector<std::vector<int32_t>> prompts = {test_prompts()[0], test_prompts()[1]};
  {
    TrajectoryWriter w(path, info_for(o, 1));
    collect_trajectories(*tiny().model, prompts, w, o, 1);
  }
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const auto damaged = (test::temp_dir("traj_damaged") / "d.h5").string();
  {
    std::ofstream(damaged, std::ios::binary) << bytes;
    const hid_t f = H5Fopen(damaged.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Ldelete(f, "/samples/00000001/prompt", H5P_DEFAULT), 0);
    const hsize_t dims[1] = {1u << 20};  // never written: nothing stored
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t ds = H5Dcreate2(f, "/samples/00000001/prompt", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds), H5Sclose(space), H5Fclose(f);
  }
  try {
    TrajectoryWriter w(damaged, info_for(o, 1));
    collect_trajectories(*tiny().model, prompts, w, o, 1);  // checks the stored prompts against these
    ADD_FAILURE() << "a sample that claims 2^20 tokens and stores none was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the file is damaged"), std::string::npos) << e.what();
  }
  // Resume every damaged copy: read what it holds, then write one more sample into it. In a child
  // process: HDF5 keeps files it failed to close open until exit.
  const Trajectory extra = collect(test_prompts()[2], o, 1);
  const test::FlipCounts c = test::bit_flip_trials(bytes, damaged, 600, 0, [&] {
    TrajectoryWriter w(damaged, info_for(o, 1));
    for (int64_t i : w.done()) w.stored_prompt(i);
    w.write(2, extra);
  });
  EXPECT_GT(c.refused, 0);
}

// A resumed file is matched on the weights' fingerprint when both sides have one: another path to
// the same weights resumes; other weights under the same path are refused. A file without one
// (written before) is matched on the path.
TEST(Trajectories, ResumeComparesTheWeightsNotThePath) {
  const auto path = (test::temp_dir("traj_fp") / "t.h5").string();
  const TrajectoryOptions o = small_opts(4);
  TrajectoryFileInfo info = info_for(o, 1);
  info.model = "models/a";
  info.model_fingerprint = 5;
  { TrajectoryWriter w(path, info); }
  TrajectoryFileInfo moved = info;
  moved.model = "./models/../models/a";
  EXPECT_NO_THROW(TrajectoryWriter(path, moved));
  TrajectoryFileInfo retrained = info;
  retrained.model_fingerprint = 6;
  try {
    TrajectoryWriter w(path, retrained);
    ADD_FAILURE() << "other weights under the same path were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("other model weights"), std::string::npos) << e.what();
  }
  const auto old = (test::temp_dir("traj_fp") / "old.h5").string();
  TrajectoryFileInfo before = info;
  before.model_fingerprint = 0;
  { TrajectoryWriter w(old, before); }
  EXPECT_NO_THROW(TrajectoryWriter(old, info));
  EXPECT_THROW(TrajectoryWriter(old, moved), Error);
}

TEST(Trajectories, DegenerateSamplesAreDroppedAndRemembered) {
  const auto path = (test::temp_dir("traj_drop") / "t.h5").string();
  TrajectoryOptions o = small_opts(4);
  o.max_repeat = 1;  // every token is a run of one: everything is dropped
  {
    TrajectoryWriter w(path, info_for(o, 1));
    const CollectSummary s = collect_trajectories(*tiny().model, test_prompts(), w, o, 1);
    EXPECT_EQ(s.dropped, 5);
    EXPECT_EQ(s.kept, 0);
  }
  TrajectoryWriter w(path, info_for(o, 1));
  EXPECT_EQ(collect_trajectories(*tiny().model, test_prompts(), w, o, 1).skipped, 5);
  EXPECT_EQ(w.stored_prompt(4), test_prompts()[4]);
}

TEST(Trajectories, ShardsPartitionThePromptsAndMergeIntoTheWholeRun) {
  const auto dir = test::temp_dir("traj_shard");
  const TrajectoryOptions o = small_opts(4);
  const std::vector<std::vector<int32_t>> all = test_prompts();
  Model& m = *tiny().model;
  const std::string whole = (dir / "whole.h5").string();
  {
    TrajectoryWriter w(whole, info_for(o, 4));
    collect_trajectories(m, all, w, o, 4);
  }
  TrajectoryReader ref(whole);
  std::set<int64_t> seen;
  for (int shard = 0; shard < 3; ++shard) {
    const std::string path = (dir / ("shard" + std::to_string(shard) + ".h5")).string();
    {
      TrajectoryWriter w(path, info_for(o, 4));
      const CollectSummary s = collect_trajectories(m, all, w, o, 4, {}, {shard, 3, 0});
      EXPECT_EQ(s.kept, shard < 2 ? 2 : 1);  // indices 0,3 | 1,4 | 2
    }
    {
      TrajectoryReader r(path);
      for (int64_t i : r.samples()) {
        EXPECT_EQ(i % 3, shard);
        EXPECT_TRUE(seen.insert(i).second) << "prompt " << i << " in two shards";
        EXPECT_EQ(r.read(i), ref.read(i)) << "prompt " << i;  // the per-prompt seed ignores the sharding
      }
    }
    // Resuming this file as another shard would mix shards in one file: refused.
    TrajectoryWriter w(path, info_for(o, 4));
    EXPECT_THROW(collect_trajectories(m, all, w, o, 4, {}, {(shard + 1) % 3, 3, 0}), Error);
    EXPECT_EQ(collect_trajectories(m, all, w, o, 4, {}, {shard, 3, 0}).skipped, shard < 2 ? 2 : 1);
  }
  EXPECT_EQ(seen.size(), all.size());
}

TEST(Trajectories, TimeLimitEndsWithAResumableFile) {
  const auto path = (test::temp_dir("traj_time") / "t.h5").string();
  const TrajectoryOptions o = small_opts(4);
  Model& m = *tiny().model;
  {
    TrajectoryWriter w(path, info_for(o, 2));
    // A limit that has passed by the first check: nothing (or next to nothing) is started.
    const CollectSummary s = collect_trajectories(m, test_prompts(), w, o, 2, {}, {0, 1, 1e-12});
    EXPECT_EQ(s.kept + s.remaining, 5);
    EXPECT_GE(s.remaining, 4);
  }
  TrajectoryWriter w(path, info_for(o, 2));
  const CollectSummary s = collect_trajectories(m, test_prompts(), w, o, 2, {}, {0, 1, 1e9});
  EXPECT_EQ(s.kept + s.skipped, 5);
  EXPECT_EQ(s.remaining, 0);
}

// Prompts of 1 to 150 tokens: the longer ones prefill in several chunks of kMaxBlockRows, and
// with more prompts than slots the slots are reused.
std::vector<std::vector<int32_t>> mixed_prompts() {
  std::vector<std::vector<int32_t>> p = test_prompts();
  p.push_back({0});
  for (int len : {150, 64, 65, 30}) {
    std::vector<int32_t> v{0};
    for (int i = 1; i < len; ++i) v.push_back((i * 37 + len) % 300 + 2);
    p.push_back(v);
  }
  return p;
}

int longest_run(const Trajectory& t) {
  int best = 0;
  for (int run = 1; run <= t.num_tokens; ++run)
    if (has_repeated_run(t, run)) best = run;
  return best;
}

// Collects `prompts` into a new file `name` under `dir` and returns its path.
std::string collect_file(const std::filesystem::path& dir, const std::string& name,
                         const std::vector<std::vector<int32_t>>& prompts, const TrajectoryOptions& o, uint64_t seed,
                         const CollectPlan& plan, CollectSummary* summary = nullptr) {
  const std::string path = (dir / name).string();
  TrajectoryWriter w(path, info_for(o, seed));
  const CollectSummary s = collect_trajectories(*tiny().model, prompts, w, o, seed, {}, plan);
  if (summary) *summary = s;
  return path;
}

TEST(Trajectories, CollectorPrefillsInChunksThenIteratesBlocks) {
  const std::vector<int32_t> prompt = mixed_prompts()[6];  // 150 tokens
  ASSERT_EQ(prompt.size(), 150u);
  TrajectoryCollector c(prompt, small_opts(4), 1);
  Model& m = *tiny().model;
  m.reset(trajectory_kv_rows(150, small_opts(4)));
  std::vector<int32_t> y;
  for (int pos : {0, 64, 128}) {
    ASSERT_TRUE(c.prefilling());
    const TrajectoryStep s = c.next_block();
    EXPECT_EQ(s.pos, pos);
    EXPECT_EQ(s.n, std::min(kMaxBlockRows, 150 - pos));
    EXPECT_EQ(s.tokens[0], prompt[pos]);
    y.resize(s.n);
    m.predict(s.tokens, s.n, s.pos, y.data());
    c.consume(s, y.data());
  }
  EXPECT_FALSE(c.prefilling());
  const TrajectoryStep s = c.next_block();
  EXPECT_EQ(s.pos, 150);
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(s.tokens[0], y.back()) << "the first guess is the argmax after the prompt";
  EXPECT_THROW(c.take(), Error) << "an unfinished trajectory was handed out";
}

// A step's row budget may cut a prefill chunk short (PrefillBudget): the trajectory is the same,
// and a block the collector is not at is refused before it changes anything.
TEST(Trajectories, CollectorTakesShortPrefillChunksAndRefusesOtherBlocks) {
  const std::vector<int32_t> prompt = mixed_prompts()[6];  // 150 tokens
  const TrajectoryOptions o = small_opts(4);
  Model& m = *tiny().model;
  m.reset(trajectory_kv_rows(150, o));
  const Trajectory whole = collect_trajectory(m, prompt, o, 5);

  TrajectoryCollector c(prompt, o, 5);
  std::vector<int32_t> y;
  int chunks = 0;
  for (int limit = 1; c.prefilling(); limit = limit % 37 + 1, ++chunks) {  // chunks of 1, 2, .., 37, 1, ..
    const TrajectoryStep s = c.next_block(limit);
    EXPECT_EQ(s.n, std::min(limit, c.prefill_left()));
    y.resize(s.n);
    m.predict(s.tokens, s.n, s.pos, y.data());
    if (chunks == 3) {
      const TrajectoryStep longer = c.next_block(limit + 1);
      EXPECT_THROW(c.consume({s.tokens, s.n, s.pos + 1}, y.data()), Error) << "a chunk at another position";
      EXPECT_THROW(c.consume({s.tokens + 1, s.n, s.pos}, y.data()), Error) << "a chunk of other tokens";
      EXPECT_EQ(c.next_block(limit + 1).n, longer.n) << "a refused chunk changed the collector";
    }
    c.consume(s, y.data());
  }
  EXPECT_GT(chunks, 10);
  while (!c.done()) {
    const TrajectoryStep s = c.next_block();
    y.resize(s.n);
    m.predict(s.tokens, s.n, s.pos, y.data());
    EXPECT_THROW(c.consume({s.tokens, s.n - 1, s.pos}, y.data()), Error) << "a Jacobi block cut short";
    c.consume(s, y.data());
  }
  EXPECT_EQ(c.take(), whole);
}

TEST(Trajectories, BatchedCollectionEqualsOnePromptAtATime) {
  const auto dir = test::temp_dir("traj_batch");
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  TrajectoryOptions o = small_opts(4);
  o.augment = true;
  // A stop id that ends prompt 1 in its second block, and the longest repeated run: the runs below
  // hold early stops, full-length samples, kept and dropped ones.
  const Trajectory probe = collect(prompts[1], o, trajectory_seed(3, 1));
  o.stop_ids = {probe.fixed_points[6]};
  std::vector<Trajectory> alone;
  for (size_t i = 0; i < prompts.size(); ++i) alone.push_back(collect(prompts[i], o, trajectory_seed(3, i)));
  int max_run = 0;
  for (const Trajectory& t : alone) max_run = std::max(max_run, longest_run(t));
  o.max_repeat = max_run;
  const auto stopped = std::count_if(alone.begin(), alone.end(), [](const Trajectory& t) { return t.stopped; });
  const auto dropped = std::count_if(alone.begin(), alone.end(), [&](const Trajectory& t) { return has_repeated_run(t, max_run); });
  ASSERT_GT(stopped, 0);
  ASSERT_LT(stopped, static_cast<long>(prompts.size()));
  ASSERT_GT(dropped, 0);
  ASSERT_LT(dropped, static_cast<long>(prompts.size()));

  const TrajectoryReader ref(collect_file(dir, "b1.h5", prompts, o, 3, {}));
  ASSERT_EQ(ref.samples().size() + ref.dropped().size(), prompts.size());
  for (int64_t i : ref.samples()) EXPECT_EQ(ref.read(i), alone[i]) << "prompt " << i << ": batch 1 != collect_trajectory";
  for (int64_t i : ref.dropped()) EXPECT_TRUE(has_repeated_run(alone[i], max_run)) << "prompt " << i;

  // max_step_rows 1: one prompt token per step (PrefillBudget cuts the chunks), and prefills wait
  // beside running blocks; 100: chunks cut to what the running blocks leave.
  for (const auto& [batch, step_rows] : std::vector<std::pair<int, int>>{{2, 1024}, {3, 1}, {8, 1024}, {64, 100}}) {
    CollectPlan plan;
    plan.batch = batch;
    plan.max_step_rows = step_rows;
    CollectSummary s;
    const TrajectoryReader r(collect_file(dir, "b" + std::to_string(batch) + ".h5", prompts, o, 3, plan, &s));
    EXPECT_EQ(r.samples(), ref.samples()) << "batch " << batch;
    EXPECT_EQ(r.dropped(), ref.dropped()) << "batch " << batch;
    for (int64_t i : r.samples()) EXPECT_EQ(r.read(i), ref.read(i)) << "batch " << batch << " prompt " << i;
    EXPECT_EQ(s.kept, static_cast<int>(ref.samples().size()));
    EXPECT_EQ(s.dropped, static_cast<int>(ref.dropped().size()));
    EXPECT_EQ(s.remaining + s.skipped, 0);
    int64_t tokens = 0, iterations = 0;
    for (int64_t i : ref.samples()) {
      tokens += alone[i].num_tokens;
      for (int32_t it : alone[i].iterations) iterations += it;
    }
    EXPECT_EQ(s.tokens, tokens);
    EXPECT_EQ(s.iterations, iterations);
  }
}

TEST(Trajectories, BatchedRunInterruptedByTheTimeLimitResumes) {
  const auto dir = test::temp_dir("traj_batch_resume");
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  const TrajectoryOptions o = small_opts(4);
  const TrajectoryReader ref(collect_file(dir, "once.h5", prompts, o, 8, {}));
  const std::string path = (dir / "resumed.h5").string();
  CollectPlan plan;
  plan.batch = 3;
  plan.max_seconds = 0.5;
  {
    // The first prompt to finish outlasts the limit: no prompt starts after it, the two others
    // still running finish, so the file holds exactly the first three.
    TrajectoryWriter w(path, info_for(o, 8));
    bool slept = false;
    const CollectSummary s = collect_trajectories(*tiny().model, prompts, w, o, 8, [&](int64_t, const Trajectory&, bool) {
      if (!slept) std::this_thread::sleep_for(std::chrono::milliseconds(600));
      slept = true;
    }, plan);
    EXPECT_EQ(s.kept, 3);
    EXPECT_EQ(s.remaining, static_cast<int>(prompts.size()) - 3);
    EXPECT_EQ(w.done(), (std::set<int64_t>{0, 1, 2}));
  }
  {
    TrajectoryWriter w(path, info_for(o, 8));
    plan.max_seconds = 0;
    const CollectSummary s = collect_trajectories(*tiny().model, prompts, w, o, 8, {}, plan);
    EXPECT_EQ(s.skipped, 3);
    EXPECT_EQ(s.kept, static_cast<int>(prompts.size()) - 3);
    EXPECT_EQ(s.remaining, 0);
  }
  const TrajectoryReader r(path);
  EXPECT_EQ(r.samples(), ref.samples());
  EXPECT_TRUE(r.dropped().empty());
  for (int64_t i : r.samples()) EXPECT_EQ(r.read(i), ref.read(i)) << "prompt " << i;
}

TEST(Trajectories, BatchedShardsPartitionThePrompts) {
  const auto dir = test::temp_dir("traj_batch_shard");
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  const TrajectoryOptions o = small_opts(4);
  const TrajectoryReader ref(collect_file(dir, "whole.h5", prompts, o, 5, {}));
  std::set<int64_t> seen;
  for (int shard = 0; shard < 3; ++shard) {
    CollectPlan plan{shard, 3, 0};
    plan.batch = 2;
    CollectSummary s;
    const TrajectoryReader r(collect_file(dir, "shard" + std::to_string(shard) + ".h5", prompts, o, 5, plan, &s));
    EXPECT_EQ(s.kept, static_cast<int>((prompts.size() + 2 - shard) / 3));
    for (int64_t i : r.samples()) {
      EXPECT_EQ(i % 3, shard);
      EXPECT_TRUE(seen.insert(i).second) << "prompt " << i << " in two shards";
      EXPECT_EQ(r.read(i), ref.read(i)) << "prompt " << i;
    }
  }
  EXPECT_EQ(seen.size(), prompts.size());
}

TEST(Trajectories, BadBatchIsRefusedBeforeAnyWork) {
  const auto path = (test::temp_dir("traj_bad_batch") / "t.h5").string();
  const TrajectoryOptions o = small_opts(4);
  TrajectoryWriter w(path, info_for(o, 1));
  for (int batch : {0, -3}) {
    CollectPlan plan;
    plan.batch = batch;
    try {
      collect_trajectories(*tiny().model, test_prompts(), w, o, 1, {}, plan);
      FAIL() << "batch " << batch << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("batch"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(w.done().empty());
}

TEST(Trajectories, NotATrajectoryFileIsRefused) {
  const auto dir = test::temp_dir("traj_bad");
  EXPECT_THROW(TrajectoryReader((dir / "missing.h5").string()), Error);
  const std::string text = (dir / "text.h5").string();
  { std::FILE* f = std::fopen(text.c_str(), "w"); std::fputs("not hdf5\n", f); std::fclose(f); }
  try {
    TrajectoryReader r(text);
    FAIL() << "a text file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not an HDF5 file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cllm
