// Two local ranks of one job, each its own writer process: a step becomes
// visible only once both have committed it; a rank that dies in the middle
// of a step leaves that step unserved and the previous one served, through
// a daemon restart too.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "harness.h"

namespace holdfast::testing {
namespace {

constexpr int kItems = 4;
constexpr uint64_t kItemBytes = 256 << 10;

// Each trial runs two writers and several verifiers (~0.4 s, more under ASan).
constexpr int kDefaultTrials = kSanitized ? 6 : 15;

class DaemonRanksTest : public ::testing::Test {
 protected:
  // A rank that outlives its peer goes on committing partial versions, which
  // are not evicted; the budget leaves them room.
  DaemonRanksTest() : daemon_({.memory_budget = "256MiB", .retain = 2}) {}

  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    raw_ = std::make_unique<RawClient>(daemon_.socket_path());
  }

  // Rank `rank` of a job with world size 4, ranks 0 and 1 on this node.
  ToolOptions Rank(int rank) const {
    ToolOptions t;
    t.socket = daemon_.socket_path();
    t.rank = rank;
    t.world_size = 4;
    t.local_ranks = {0, 1};
    t.items = kItems;
    t.item_bytes = kItemBytes;
    t.seed = 7;
    return t;
  }

  static std::vector<std::string> Save(int64_t first, int64_t last, int pause_ms = 0) {
    return {"save", "--steps", std::to_string(first) + ":" + std::to_string(last), "--pause-ms",
            std::to_string(pause_ms)};
  }

  // Step `step` of the job as ListVersions reports it, or nullopt.
  std::optional<v1::VersionInfo> Version(int64_t step) {
    v1::ListVersionsResponse list;
    EXPECT_TRUE(IsOk(raw_->List("job", &list)));
    for (const v1::VersionInfo& v : list.versions()) {
      if (v.step() == step) return v;
    }
    return std::nullopt;
  }

  // Rank parts of every listed version: each has one segment.
  size_t CommittedParts() {
    v1::ListVersionsResponse list;
    EXPECT_TRUE(IsOk(raw_->List("job", &list)));
    size_t parts = 0;
    for (const v1::VersionInfo& v : list.versions()) parts += v.committed_ranks_size();
    return parts;
  }

  // Both ranks serve `step` bit for bit as the newest (-1: nothing); `step +
  // 1` nowhere.
  void ExpectNewest(int64_t step) {
    EXPECT_EQ(LatestStep(*raw_, "job"), step);
    if (step < 0) {
      const ToolRun none = RunTool(Rank(0), {"latest"});
      EXPECT_EQ(none.out, "none\n") << none.Describe();
      return;
    }
    for (int rank : {0, 1}) {
      SCOPED_TRACE("rank " + std::to_string(rank));
      EXPECT_TRUE(VerifiesAs(Rank(rank), std::nullopt, step));
      EXPECT_TRUE(NotServed(Rank(rank), step + 1));
    }
    const ToolRun latest = RunTool(Rank(0), {"latest"});
    EXPECT_EQ(latest.out, std::to_string(step) + "\n") << latest.Describe();
  }

  Daemon daemon_;
  std::unique_ptr<RawClient> raw_;
};

TEST_F(DaemonRanksTest, StepIsVisibleOnlyOnceEveryLocalRankCommitted) {
  const ToolRun r0 = RunTool(Rank(0), Save(1, 1));
  ASSERT_TRUE(r0.ok()) << r0.Describe();
  EXPECT_NE(r0.out.find("committed 1 "), std::string::npos);
  EXPECT_NE(r0.out.find("complete=false"), std::string::npos) << r0.Describe();

  // Rank 0 alone: a partial version, served to nobody.
  const auto partial = Version(1);
  ASSERT_TRUE(partial.has_value());
  EXPECT_EQ(partial->state(), v1::VERSION_STATE_PARTIAL);
  EXPECT_EQ(std::vector<int>(partial->committed_ranks().begin(), partial->committed_ranks().end()),
            std::vector<int>{0});
  EXPECT_EQ(LatestStep(*raw_, "job"), -1);
  const ToolRun none = RunTool(Rank(1), {"latest"});
  EXPECT_EQ(none.out, "none\n") << none.Describe();
  EXPECT_TRUE(NotServed(Rank(0), 1));
  EXPECT_TRUE(NotServed(Rank(1), 1));
  const ToolRun newest = Verify(Rank(0));
  EXPECT_TRUE(newest.exit.exited && newest.exit.code == 1 &&
              newest.err.find("has no complete version") != std::string::npos)
      << newest.Describe();

  const ToolRun r1 = RunTool(Rank(1), Save(1, 1));
  ASSERT_TRUE(r1.ok()) << r1.Describe();
  EXPECT_NE(r1.out.find("complete=true"), std::string::npos) << r1.Describe();
  const auto complete = Version(1);
  ASSERT_TRUE(complete.has_value());
  EXPECT_EQ(complete->state(), v1::VERSION_STATE_COMPLETE);
  EXPECT_EQ(complete->committed_ranks_size(), 2);
  ExpectNewest(1);

  // A rank that redoes a step of a version that never completed (its job
  // crashed and resumed from an older step) replaces its earlier part.
  const ToolRun again = RunTool(Rank(1), Save(2, 2));
  ASSERT_TRUE(again.ok()) << again.Describe();
  ToolOptions redo = Rank(1);
  redo.seed = 99;  // other bytes, to tell the parts apart
  const ToolRun twice = RunTool(redo, Save(2, 2));
  ASSERT_TRUE(twice.ok()) << twice.Describe();
  ExpectNewest(1);
  ASSERT_TRUE(RunTool(Rank(0), Save(2, 2)).ok());
  EXPECT_EQ(LatestStep(*raw_, "job"), 2);
  EXPECT_TRUE(VerifiesAs(redo, 2, 2));
  EXPECT_TRUE(VerifiesAs(Rank(0), 2, 2));
  const ToolRun first_bytes = Verify(Rank(1), 2);
  EXPECT_TRUE(first_bytes.exit.exited && first_bytes.exit.code == 3) << first_bytes.Describe();
  // The replaced part's segment went back to the pool: nothing in flight.
  EXPECT_TRUE(WaitSettled(*raw_));

  // A complete step is never committed again: it is no longer newer.
  const ToolRun late = RunTool(redo, Save(2, 2));
  EXPECT_TRUE(late.exit.exited && late.exit.code == 1) << late.Describe();
  EXPECT_NE(late.err.find("FAILED_PRECONDITION"), std::string::npos) << late.Describe();
  EXPECT_TRUE(VerifiesAs(redo, std::nullopt, 2));
}

TEST_F(DaemonRanksTest, RankDyingMidStepLeavesThePreviousStepServed) {
  const ToolRun r0 = RunTool(Rank(0), Save(1, 2));
  const ToolRun r1 = RunTool(Rank(1), Save(1, 2));
  ASSERT_TRUE(r0.ok() && r1.ok()) << r0.Describe() << r1.Describe();
  ExpectNewest(2);

  // Rank 0 commits step 3; rank 1 reserves it, writes half, and dies.
  ASSERT_TRUE(RunTool(Rank(0), Save(3, 3)).ok());
  {
    RawSession session(*raw_, "job", 1);
    ASSERT_NE(session.id(), 0u);
    v1::BeginSnapshotRequest req;
    req.set_job_id("job");
    req.set_rank(1);
    req.set_step(3);
    req.set_session_id(session.id());
    for (int i = 0; i < kItems; ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "layer%04d.weight", i);
      *req.add_items() = U8Item(name, kItemBytes);
    }
    v1::BeginSnapshotResponse reserved;
    ASSERT_TRUE(IsOk(raw_->Begin(req, &reserved)));
    MappedSegment seg(reserved.segment().path(), reserved.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memset(seg.data(), 0x5a, seg.bytes() / 2);
    session.Cancel();
  }
  ASSERT_TRUE(WaitSettled(*raw_));
  const auto torn = Version(3);
  ASSERT_TRUE(torn.has_value());
  EXPECT_EQ(torn->state(), v1::VERSION_STATE_PARTIAL);
  ExpectNewest(2);
  EXPECT_TRUE(VerifiesAs(Rank(0), 1, 1));
  EXPECT_TRUE(VerifiesAs(Rank(1), 1, 1));

  // Across a restart step 3 stays unserved, no segment is left without a
  // version, and the ranks go on with step 4. (Whether rank 0's part of step
  // 3 survives the restart is RankCommitSurvivesADaemonRestart's business.)
  raw_.reset();  // an idle connection holds up the daemon's shutdown for 2 s
  ASSERT_TRUE(daemon_.Restart());
  raw_ = std::make_unique<RawClient>(daemon_.socket_path());
  EXPECT_EQ(daemon_.SegmentFiles().size(), CommittedParts());
  ExpectNewest(2);
  const ToolRun a = RunTool(Rank(0), Save(4, 4));
  const ToolRun b = RunTool(Rank(1), Save(4, 4));
  ASSERT_TRUE(a.ok() && b.ok()) << a.Describe() << b.Describe();
  ExpectNewest(4);
  EXPECT_TRUE(VerifiesAs(Rank(0), 2, 2));
  EXPECT_TRUE(VerifiesAs(Rank(1), 2, 2));
  EXPECT_TRUE(NotServed(Rank(0), 3));
  EXPECT_TRUE(NotServed(Rank(1), 3));
}

// Rank 0's commit of step 3 was acknowledged and written to the catalog; the
// daemon restarts (an upgrade, say) before rank 1 commits. Both trainers are
// alive and do their part, so step 3 must complete: "a daemon restart loses
// no committed snapshot", and snapshot_manager.h discards a PARTIAL version
// only once a newer one is complete.
TEST_F(DaemonRanksTest, RankCommitSurvivesADaemonRestart) {
  ASSERT_TRUE(RunTool(Rank(0), Save(1, 2)).ok());
  ASSERT_TRUE(RunTool(Rank(1), Save(1, 2)).ok());
  const ToolRun r0 = RunTool(Rank(0), Save(3, 3));
  ASSERT_TRUE(r0.ok()) << r0.Describe();
  EXPECT_NE(r0.out.find("complete=false"), std::string::npos) << r0.Describe();

  raw_.reset();  // an idle connection holds up the daemon's shutdown for 2 s
  ASSERT_TRUE(daemon_.Restart());
  raw_ = std::make_unique<RawClient>(daemon_.socket_path());
  const auto partial = Version(3);
  ASSERT_TRUE(partial.has_value()) << "rank 0's committed part of step 3 was lost in the restart";
  EXPECT_EQ(partial->state(), v1::VERSION_STATE_PARTIAL);
  ExpectNewest(2);

  const ToolRun r1 = RunTool(Rank(1), Save(3, 3));
  ASSERT_TRUE(r1.ok()) << r1.Describe();
  EXPECT_NE(r1.out.find("complete=true"), std::string::npos) << r1.Describe();
  ExpectNewest(3);
}

TEST_F(DaemonRanksTest, RandomSigkillOfOneRankNeverServesItsStep) {
  std::mt19937_64 rng = TestRng();
  int64_t latest = -1;
  int64_t first = 0;
  const int trials = Trials(kDefaultTrials);
  for (int trial = 0; trial < trials; ++trial) {
    const int victim = static_cast<int>(rng() % 2);
    const int kill_after_ms = 5 + static_cast<int>(rng() % 146);
    const int other_after_ms = static_cast<int>(rng() % 41);
    SCOPED_TRACE(::testing::Message()
                 << "trial " << trial << ": steps from " << first << ", rank " << victim
                 << " killed " << kill_after_ms << " ms after both committed once, the other "
                 << other_after_ms << " ms later");
    ToolProcess w0(Rank(0), Save(first, first + 100000, static_cast<int>(rng() % 3)));
    ToolProcess w1(Rank(1), Save(first, first + 100000, static_cast<int>(rng() % 3)));
    ToolProcess& dying = victim == 0 ? w0 : w1;
    ToolProcess& survivor = victim == 0 ? w1 : w0;
    // The delay counts from the moment both save (starting takes ~50-100 ms).
    ASSERT_TRUE(w0.WaitForOutput("committed ")) << w0.Kill().Describe();
    ASSERT_TRUE(w1.WaitForOutput("committed ")) << w1.Kill().Describe();
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
    const ToolRun killed = dying.Kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(other_after_ms));
    const ToolRun other = survivor.Kill();
    ASSERT_TRUE(killed.exit.killed_by(SIGKILL)) << killed.Describe();
    ASSERT_TRUE(other.exit.killed_by(SIGKILL)) << other.Describe();
    const ToolRun& run0 = victim == 0 ? killed : other;
    const ToolRun& run1 = victim == 0 ? other : killed;
    const int64_t printed0 = run0.committed.empty() ? first - 1 : run0.committed.back();
    const int64_t printed1 = run1.committed.empty() ? first - 1 : run1.committed.back();

    ASSERT_TRUE(WaitSettled(*raw_));
    ASSERT_TRUE(daemon_.Running());
    const std::optional<int64_t> served = LatestStep(*raw_, "job");
    ASSERT_TRUE(served.has_value());
    // A step is complete once both ranks committed it; each rank may have
    // committed one step more than it printed.
    const int64_t both = std::min(printed0, printed1);
    if (both >= first) {
      ASSERT_TRUE(*served == both || *served == both + 1) << "served " << *served;
    } else if (*served >= first) {
      ASSERT_EQ(*served, first) << "only the trial's first step can be complete unprinted";
    } else {
      ASSERT_EQ(*served, latest);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectNewest(*served));
    latest = *served;
    // The next trial begins past every step either rank may have committed.
    first = std::max(printed0, printed1) + 2;
  }
  ASSERT_GE(latest, 0) << "no step was ever completed by both ranks";
  // A restart keeps every complete version, and no segment that no
  // committed part uses.
  v1::ListVersionsResponse before;
  ASSERT_TRUE(IsOk(raw_->List("job", &before)));
  raw_.reset();  // an idle connection holds up the daemon's shutdown for 2 s
  ASSERT_TRUE(daemon_.Restart());
  raw_ = std::make_unique<RawClient>(daemon_.socket_path());
  for (const v1::VersionInfo& v : before.versions()) {
    if (v.state() != v1::VERSION_STATE_COMPLETE) continue;
    const auto after = Version(v.step());
    ASSERT_TRUE(after.has_value()) << "complete step " << v.step() << " lost in the restart";
    EXPECT_EQ(after->state(), v1::VERSION_STATE_COMPLETE);
  }
  EXPECT_EQ(daemon_.SegmentFiles().size(), CommittedParts());
  ExpectNewest(latest);
}

}  // namespace
}  // namespace holdfast::testing
