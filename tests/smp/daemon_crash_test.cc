// holdfastd itself is SIGKILLed (after commits, at random moments while a
// writer runs, and at the named failpoints inside a commit) and restarted on
// the same catalog and shared memory. Committed versions come back bit for
// bit, a commit cut short before its catalog write never does, one cut short
// after it does, and no segment survives that no version uses.
#include <signal.h>
#include <unistd.h>

#include <map>
#include <thread>

#include "harness.h"

namespace holdfast::testing {
namespace {

constexpr int kItems = 4;
constexpr uint64_t kItemBytes = 256 << 10;
constexpr uint64_t kSegmentBytes = kItems * kItemBytes;  // items back to back, 1 MiB

// A daemon restart costs ~0.1 s, several times that under ASan.
constexpr int kDefaultTrials = kSanitized ? 6 : 12;

ToolOptions Tool(const Daemon& daemon, uint64_t seed = 1) {
  ToolOptions t;
  t.socket = daemon.socket_path();
  t.items = kItems;
  t.item_bytes = kItemBytes;
  t.seed = seed;
  return t;
}

// After a restart: exactly `steps` are served (each bit for bit), the segment
// files are exactly theirs, nothing is pooled.
void ExpectRecovered(Daemon& daemon, const std::map<int64_t, uint64_t>& seed_of,
                     const std::vector<int64_t>& steps) {
  RawClient raw(daemon.socket_path());
  v1::ListVersionsResponse list;
  ASSERT_TRUE(IsOk(raw.List("job", &list)));
  std::vector<int64_t> listed;
  for (const v1::VersionInfo& v : list.versions()) {
    EXPECT_EQ(v.state(), v1::VERSION_STATE_COMPLETE) << "step " << v.step();
    listed.push_back(v.step());
  }
  EXPECT_EQ(listed, steps);
  for (int64_t step : steps) {
    EXPECT_TRUE(VerifiesAs(Tool(daemon, seed_of.at(step)), step, step));
  }
  if (!steps.empty()) {
    EXPECT_TRUE(VerifiesAs(Tool(daemon, seed_of.at(steps.back())), std::nullopt, steps.back()));
  }
  EXPECT_EQ(daemon.SegmentFiles().size(), steps.size()) << "stray segments after the restart";
  const auto memory = GetMemory(raw);
  ASSERT_TRUE(memory.has_value());
  EXPECT_EQ(memory->pooled, 0u);
  EXPECT_EQ(memory->used, steps.size() * kSegmentBytes);
}

TEST(DaemonCrashTest, SigkillAfterCommitsLosesNoRetainedVersion) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  std::map<int64_t, uint64_t> seed_of;
  for (int64_t s = 1; s <= 3; ++s) seed_of[s] = 100 + s;
  for (int64_t s = 1; s <= 3; ++s) {
    // One process per step, each with its own content.
    const ToolRun run = RunTool(Tool(daemon, seed_of[s]),
                                {"save", "--steps", std::to_string(s) + ":" + std::to_string(s)});
    ASSERT_TRUE(run.ok()) << run.Describe();
  }
  // Step 1 is retired (its segment pooled): three files before the crash.
  EXPECT_EQ(daemon.SegmentFiles().size(), 3u);

  daemon.Kill();
  ASSERT_TRUE(daemon.Start());
  ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, seed_of, {2, 3}));
  EXPECT_TRUE(NotServed(Tool(daemon, seed_of[1]), 1));

  // Twice in a row, and then the daemon takes new snapshots.
  daemon.Kill();
  ASSERT_TRUE(daemon.Start());
  ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, seed_of, {2, 3}));
  seed_of[4] = 104;
  const ToolRun run = RunTool(Tool(daemon, seed_of[4]), {"save", "--steps", "4:4"});
  ASSERT_TRUE(run.ok()) << run.Describe();
  daemon.Kill();
  ASSERT_TRUE(daemon.Start());
  ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, seed_of, {3, 4}));
}

TEST(DaemonCrashTest, SigkillWhileAWriterRunsServesTheLastCommitOnly) {
  std::mt19937_64 rng = TestRng();
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  std::map<int64_t, uint64_t> seed_of;
  std::vector<int64_t> complete;  // oldest first
  int64_t latest = -1;
  int served_unprinted = 0;  // trials where the daemon died between commit and answer
  const int trials = Trials(kDefaultTrials);
  for (int trial = 0; trial < trials; ++trial) {
    const int64_t first = latest + 1;
    const uint64_t seed = rng();
    const int kill_after_ms = 5 + static_cast<int>(rng() % 146);
    // Mostly counted from the writer's first commit, so that the kill lands
    // among Begin, copy, verification and catalog write rather than while
    // the tool starts (~50-100 ms).
    const bool from_start = rng() % 5 == 0;
    SCOPED_TRACE(::testing::Message()
                 << "trial " << trial << ": steps from " << first << ", seed " << seed
                 << ", daemon killed " << kill_after_ms << " ms after the writer's "
                 << (from_start ? "start" : "first commit"));
    ToolProcess writer(
        Tool(daemon, seed),
        {"save", "--steps", std::to_string(first) + ":" + std::to_string(first + 100000),
         "--pause-ms", std::to_string(rng() % 3)});
    if (!from_start) {
      ASSERT_TRUE(writer.WaitForOutput("committed "))
          << "the writer committed nothing: " << writer.Kill().Describe();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
    daemon.Kill();
    // The writer fails (its daemon is gone) and ends by itself.
    const ToolRun run = writer.Wait(Scaled(60s));
    EXPECT_TRUE(run.exit.exited && run.exit.code == 1) << run.Describe();
    for (int64_t s : run.committed) {
      seed_of[s] = seed;
      complete.push_back(s);
    }
    const int64_t printed = run.committed.empty() ? latest : run.committed.back();

    ASSERT_TRUE(daemon.Start());
    RawClient raw(daemon.socket_path());
    const std::optional<int64_t> served = LatestStep(raw, "job");
    ASSERT_TRUE(served.has_value());
    if (*served == printed + 1) {
      ASSERT_GE(*served, first);
      seed_of[*served] = seed;  // committed, then the daemon died before answering
      complete.push_back(*served);
      ++served_unprinted;
    } else {
      ASSERT_EQ(*served, printed);
      if (printed + 1 >= first) {
        EXPECT_TRUE(NotServed(Tool(daemon, seed), printed + 1));
      }
    }
    latest = *served;
    std::vector<int64_t> retained(complete.end() - std::min<size_t>(2, complete.size()),
                                  complete.end());
    ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, seed_of, retained));
  }
  std::printf("[   INFO   ] %d trials, %d killed between the commit and its answer\n", trials,
              served_unprinted);
}

// Kills holdfastd at `failpoint` during the commit of step 3 (steps 1 and 2
// committed normally), restarts it without the failpoint and checks what is
// served: the torn step 3 if and only if `catalog_written`.
void KillAtFailpoint(const std::string& failpoint, bool catalog_written) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  const std::map<int64_t, uint64_t> seed_of = {{1, 11}, {2, 22}, {3, 33}, {4, 44}};
  for (int64_t s = 1; s <= 2; ++s) {
    const ToolRun run = RunTool(Tool(daemon, seed_of.at(s)),
                                {"save", "--steps", std::to_string(s) + ":" + std::to_string(s)});
    ASSERT_TRUE(run.ok()) << run.Describe();
  }

  // Armed from the next start: the next commit reaching the point kills it.
  daemon.options().env["HOLDFAST_FAILPOINTS"] = failpoint + "=kill";
  ASSERT_TRUE(daemon.Restart());
  EXPECT_TRUE(VerifiesAs(Tool(daemon, seed_of.at(2)), std::nullopt, 2)) << "reads pass the point";
  const ToolRun torn = RunTool(Tool(daemon, seed_of.at(3)), {"save", "--steps", "3:3"});
  EXPECT_FALSE(torn.ok()) << torn.Describe();
  EXPECT_TRUE(torn.committed.empty()) << torn.Describe();
  const std::optional<ExitInfo> exit = daemon.WaitExit(Scaled(10s));
  ASSERT_TRUE(exit.has_value()) << "holdfastd survived the failpoint " << failpoint;
  EXPECT_TRUE(exit->killed_by(SIGKILL)) << exit->ToString();
  EXPECT_NE(daemon.Log().find("failpoint hit"), std::string::npos);
  // Steps 1, 2 and the torn step 3 each have a segment in /dev/shm.
  EXPECT_EQ(daemon.SegmentFiles().size(), 3u);

  daemon.options().env.erase("HOLDFAST_FAILPOINTS");
  ASSERT_TRUE(daemon.Start());
  if (catalog_written) {
    // The catalog batch (step 3 complete, step 1 retired) is durable: step 3
    // is served although the writer never heard back.
    ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, seed_of, {2, 3}));
    EXPECT_TRUE(NotServed(Tool(daemon, seed_of.at(1)), 1));
  } else {
    ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, seed_of, {1, 2}));
    EXPECT_TRUE(NotServed(Tool(daemon, seed_of.at(3)), 3));
  }
  // The daemon takes the next snapshot as usual.
  const int64_t next = catalog_written ? 4 : 3;
  const ToolRun run =
      RunTool(Tool(daemon, seed_of.at(next)),
              {"save", "--steps", std::to_string(next) + ":" + std::to_string(next)});
  ASSERT_TRUE(run.ok()) << run.Describe();
  EXPECT_TRUE(VerifiesAs(Tool(daemon, seed_of.at(next)), std::nullopt, next));
}

TEST(DaemonCrashTest, KilledAfterVerifyServesThePreviousVersion) {
  if (!kFailpoints) GTEST_SKIP() << "holdfastd built without failpoints (HOLDFAST_FAILPOINTS=OFF)";
  KillAtFailpoint("commit.after_verify", /*catalog_written=*/false);
}

TEST(DaemonCrashTest, KilledBeforeCatalogWriteServesThePreviousVersion) {
  if (!kFailpoints) GTEST_SKIP() << "holdfastd built without failpoints (HOLDFAST_FAILPOINTS=OFF)";
  KillAtFailpoint("commit.before_catalog", /*catalog_written=*/false);
}

TEST(DaemonCrashTest, KilledAfterCatalogWriteServesTheNewVersion) {
  if (!kFailpoints) GTEST_SKIP() << "holdfastd built without failpoints (HOLDFAST_FAILPOINTS=OFF)";
  KillAtFailpoint("commit.after_catalog", /*catalog_written=*/true);
}

// Where step `step` of job "job" rank 0 lives: its segment and first item.
struct Placement {
  std::string path;
  uint64_t item_offset = 0;
};
Placement Locate(Daemon& daemon, int64_t step) {
  RawClient raw(daemon.socket_path());
  v1::OpenRestoreRequest open;
  open.set_job_id("job");
  open.set_step(step);
  v1::OpenRestoreResponse lease;
  EXPECT_TRUE(IsOk(raw.OpenRestore(open, &lease)));
  EXPECT_TRUE(IsOk(raw.CloseRestore(lease.lease_id(), true)));
  if (lease.items_size() == 0) return {};
  return {lease.segment().path(), lease.items(0).offset()};
}

// Flips one byte of a file in place, as a stray write into shared memory.
void FlipByte(const std::string& path, uint64_t offset) {
  MappedSegment seg(path, offset + 1);
  ASSERT_NE(seg.data(), nullptr);
  seg.data()[offset] ^= 0x40;
}

TEST(DaemonDamageTest, CorruptedVersionIsNeverServedAgain) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  const ToolOptions tool = Tool(daemon);
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:2"}).ok());
  {
    // Damage after the daemon's own check of the commit, as in RAM later on.
    RawClient settle(daemon.socket_path());
    ASSERT_TRUE(WaitSettled(settle));
  }
  const Placement newest = Locate(daemon, 2);
  ASSERT_FALSE(newest.path.empty());
  ASSERT_NO_FATAL_FAILURE(FlipByte(newest.path, newest.item_offset + 12345));

  // The reader sees the damage (exit 3) and tells the daemon, which checks
  // and drops the version: the previous one is served from then on.
  const ToolRun damaged = Verify(tool);
  EXPECT_TRUE(damaged.exit.exited && damaged.exit.code == 3) << damaged.Describe();
  EXPECT_NE(damaged.err.find("DATA_LOSS"), std::string::npos) << damaged.Describe();
  EXPECT_TRUE(NotServed(tool, 2));
  EXPECT_TRUE(VerifiesAs(tool, std::nullopt, 1));
  RawClient raw(daemon.socket_path());
  EXPECT_EQ(LatestStep(raw, "job"), 1);
  // And it stays dropped across a restart.
  daemon.Kill();
  ASSERT_TRUE(daemon.Start());
  ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, {{1, 1}}, {1}));
}

TEST(DaemonDamageTest, VersionCorruptedWhileTheDaemonWasDownIsDiscarded) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  const ToolOptions tool = Tool(daemon);
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:2"}).ok());
  const Placement newest = Locate(daemon, 2);
  ASSERT_FALSE(newest.path.empty());
  daemon.Kill();
  ASSERT_NO_FATAL_FAILURE(FlipByte(newest.path, newest.item_offset));
  ASSERT_TRUE(daemon.Start());
  // Recovery verified the checksums and discarded step 2 with its segment.
  ASSERT_NO_FATAL_FAILURE(ExpectRecovered(daemon, {{1, 1}}, {1}));
  EXPECT_TRUE(NotServed(tool, 2));
  EXPECT_NE(daemon.Log().find("discarding job job step 2"), std::string::npos);
  // The job goes on from the surviving version.
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "2:3"}).ok());
  EXPECT_TRUE(VerifiesAs(tool, std::nullopt, 3));
  EXPECT_TRUE(VerifiesAs(tool, 2, 2));
}

TEST(DaemonDamageTest, WipedSharedMemoryLeavesNothingToServeButKeepsServing) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  const ToolOptions tool = Tool(daemon);
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:2"}).ok());
  daemon.Kill();
  // A reboot, or someone cleaning /dev/shm: the catalog outlives the bytes.
  for (const std::string& name : daemon.SegmentFiles()) {
    ASSERT_EQ(unlink((daemon.shm_dir() + "/" + name).c_str()), 0) << name;
  }
  ASSERT_TRUE(daemon.Start());
  RawClient raw(daemon.socket_path());
  EXPECT_EQ(LatestStep(raw, "job"), -1);
  EXPECT_TRUE(NotServed(tool, 1));
  EXPECT_TRUE(NotServed(tool, 2));
  const auto memory = GetMemory(raw);
  ASSERT_TRUE(memory.has_value());
  EXPECT_EQ(memory->used, 0u);
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:1"}).ok());
  EXPECT_TRUE(VerifiesAs(tool, std::nullopt, 1));
}

}  // namespace
}  // namespace holdfast::testing
