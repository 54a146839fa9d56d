// Trajectory collection and its HDF5 file: blockwise states end in their fixed points, the fixed
// points are the greedy AR continuation, the file round-trips, and an interrupted run resumes
// without duplicates or losses.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <set>

#include "kernels/check.h"
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
  return {"tiny-random", o.block, seed, 320, o.max_new_tokens, o.augment, o.max_repeat};
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
  TrajectoryFileInfo other = info_for(o, 1);
  other.block = 8;
  try {
    TrajectoryWriter w(path, other);
    FAIL() << "a different block size was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block"), std::string::npos) << e.what();
  }
  TrajectoryWriter w(path, info_for(o, 1));
  EXPECT_THROW(collect_trajectories(*tiny().model, {test_prompts()[1]}, w, o, 1), Error);
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
