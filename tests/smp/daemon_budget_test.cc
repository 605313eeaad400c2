// holdfastd's memory budget: a snapshot that does not fit is refused with
// RESOURCE_EXHAUSTED and leaves every committed version as it was; snapshots
// that fit rotate within the budget; the newest complete version of a job is
// never evicted, not even for another job.
#include <thread>

#include "harness.h"

namespace holdfast::testing {
namespace {

constexpr int kItems = 4;
constexpr uint64_t kItemBytes = 256 << 10;
constexpr uint64_t kSegmentBytes = kItems * kItemBytes;              // 1 MiB
constexpr uint64_t kBudget = 2 * kSegmentBytes + kSegmentBytes / 2;  // ~2.5 versions

class DaemonBudgetTest : public ::testing::Test {
 protected:
  DaemonBudgetTest() : daemon_({.memory_budget = std::to_string(kBudget), .retain = 2}) {}

  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    raw_ = std::make_unique<RawClient>(daemon_.socket_path());
  }

  ToolOptions Tool(const std::string& job = "job", uint64_t item_bytes = kItemBytes) const {
    ToolOptions t;
    t.socket = daemon_.socket_path();
    t.job = job;
    t.items = kItems;
    t.item_bytes = item_bytes;
    return t;
  }

  void ExpectWithinBudget() {
    v1::GetStatusResponse status;
    ASSERT_TRUE(IsOk(raw_->GetStatus(&status)));
    EXPECT_EQ(status.memory_budget_bytes(), kBudget);
    EXPECT_LE(status.memory_used_bytes(), kBudget);
    uint64_t files = daemon_.SegmentFiles().size();
    EXPECT_EQ(status.memory_used_bytes(), files * kSegmentBytes) << "files and accounting disagree";
  }

  Daemon daemon_;
  std::unique_ptr<RawClient> raw_;
};

TEST_F(DaemonBudgetTest, SnapshotThatDoesNotFitIsRefusedAndVersionsSurvive) {
  const ToolRun saved = RunTool(Tool(), {"save", "--steps", "1:2"});
  ASSERT_TRUE(saved.ok()) << saved.Describe();
  ExpectWithinBudget();

  // 2 MiB fits the budget on its own, but only next to nothing: the newest
  // version (1 MiB) may not go, so the snapshot cannot be placed.
  const ToolRun big = RunTool(Tool("job", 2 * kItemBytes), {"save", "--steps", "3:3"});
  EXPECT_TRUE(big.exit.exited && big.exit.code == 1) << big.Describe();
  EXPECT_NE(big.err.find("RESOURCE_EXHAUSTED"), std::string::npos) << big.Describe();
  v1::BeginSnapshotRequest req;
  req.set_job_id("job");
  req.set_step(3);
  *req.add_items() = U8Item("all", 2 * kSegmentBytes);
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(req, &resp), grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "snapshot needs 2097152 bytes; memory budget 2621440"));

  // Both versions are still there, bit for bit: a refused snapshot touches
  // no committed version.
  EXPECT_TRUE(VerifiesAs(Tool(), std::nullopt, 2));
  EXPECT_TRUE(VerifiesAs(Tool(), 1, 1)) << "the older version did not survive a refused snapshot";
  v1::ListVersionsResponse list;
  ASSERT_TRUE(IsOk(raw_->List("job", &list)));
  EXPECT_EQ(list.versions_size(), 2);
  ExpectWithinBudget();
}

TEST_F(DaemonBudgetTest, SnapshotsThatFitRotateWithinTheBudget) {
  for (int64_t step = 1; step <= 8; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const ToolRun run =
        RunTool(Tool(), {"save", "--steps", std::to_string(step) + ":" + std::to_string(step)});
    ASSERT_TRUE(run.ok()) << run.Describe();
    ExpectWithinBudget();
    EXPECT_TRUE(VerifiesAs(Tool(), std::nullopt, step));
    // Room for two segments: while step N is written only N-1 stays, and
    // once N is committed N-1 is the older retained version.
    if (step > 1) {
      EXPECT_TRUE(VerifiesAs(Tool(), step - 1, step - 1));
    }
    EXPECT_LE(daemon_.SegmentFiles().size(), 2u);
  }
}

TEST_F(DaemonBudgetTest, NewestVersionOfEveryJobIsNeverEvicted) {
  ASSERT_TRUE(RunTool(Tool("a"), {"save", "--steps", "1:2"}).ok());
  // Job b's first snapshot takes the room of a's older version.
  const ToolRun b1 = RunTool(Tool("b"), {"save", "--steps", "1:1"});
  ASSERT_TRUE(b1.ok()) << b1.Describe();
  EXPECT_TRUE(NotServed(Tool("a"), 1));
  ExpectWithinBudget();

  // Now each job holds only its newest version: nothing may be evicted.
  for (const char* job : {"a", "b"}) {
    SCOPED_TRACE(job);
    v1::BeginSnapshotRequest req;
    req.set_job_id(job);
    req.set_step(5);
    *req.add_items() = U8Item("all", kSegmentBytes);
    v1::BeginSnapshotResponse resp;
    EXPECT_TRUE(HasStatus(raw_->Begin(req, &resp), grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "cannot be evicted"));
    const ToolRun refused = RunTool(Tool(job), {"save", "--steps", "6:6"});
    EXPECT_TRUE(refused.exit.exited && refused.exit.code == 1) << refused.Describe();
    EXPECT_NE(refused.err.find("RESOURCE_EXHAUSTED"), std::string::npos) << refused.Describe();
  }
  EXPECT_TRUE(VerifiesAs(Tool("a"), std::nullopt, 2));
  EXPECT_TRUE(VerifiesAs(Tool("b"), std::nullopt, 1));
  ExpectWithinBudget();

  // Dropping job b's versions gives the room back to a.
  v1::DropVersionsRequest drop;
  drop.set_job_id("b");
  drop.set_all(true);
  v1::DropVersionsResponse dropped;
  ASSERT_TRUE(IsOk(raw_->stub().DropVersions(raw_->ContextFor("b").get(), drop, &dropped)));
  ASSERT_EQ(dropped.dropped_steps_size(), 1);
  const ToolRun a3 = RunTool(Tool("a"), {"save", "--steps", "3:3"});
  ASSERT_TRUE(a3.ok()) << a3.Describe();
  EXPECT_TRUE(VerifiesAs(Tool("a"), std::nullopt, 3));
  EXPECT_TRUE(VerifiesAs(Tool("a"), 2, 2));
  ExpectWithinBudget();
}

TEST_F(DaemonBudgetTest, RestartWithTheSameBudgetServesEverything) {
  ASSERT_TRUE(RunTool(Tool(), {"save", "--steps", "1:2"}).ok());
  ASSERT_TRUE(daemon_.Restart(/*hard=*/true));
  raw_ = std::make_unique<RawClient>(daemon_.socket_path());
  EXPECT_TRUE(VerifiesAs(Tool(), std::nullopt, 2));
  EXPECT_TRUE(VerifiesAs(Tool(), 1, 1));
  ExpectWithinBudget();
  // And the budget still holds after recovery.
  const ToolRun run = RunTool(Tool(), {"save", "--steps", "3:3"});
  ASSERT_TRUE(run.ok()) << run.Describe();
  ExpectWithinBudget();
  EXPECT_TRUE(VerifiesAs(Tool(), 2, 2));
}

// Spare segments (snapshots.spares, docs/smp.md) in a real holdfastd: a
// rank's first snapshot makes two more segments in the background, the
// next snapshots take them, and steady state holds retain + 1 segments.
TEST(DaemonSparesTest, TheFirstSnapshotPreparesTheNextOnesSegments) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2, .spares = 2});
  ASSERT_TRUE(daemon.Start());
  ToolOptions tool;
  tool.socket = daemon.socket_path();
  tool.job = "job";
  tool.items = kItems;
  tool.item_bytes = kItemBytes;
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:1"}).ok());
  const auto deadline = std::chrono::steady_clock::now() + Scaled(10s);
  while (daemon.SegmentFiles().size() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(daemon.SegmentFiles().size(), 3u);
  RawClient raw(daemon.socket_path());
  v1::GetStatusResponse status;
  ASSERT_TRUE(IsOk(raw.GetStatus(&status)));
  EXPECT_EQ(status.memory_used_bytes(), 3 * kSegmentBytes);
  EXPECT_EQ(status.memory_pooled_bytes(), 2 * kSegmentBytes);
  for (int64_t step = 2; step <= 6; ++step) {
    const ToolRun run =
        RunTool(tool, {"save", "--steps", std::to_string(step) + ":" + std::to_string(step)});
    ASSERT_TRUE(run.ok()) << run.Describe();
    EXPECT_EQ(daemon.SegmentFiles().size(), 3u) << "step " << step << " made a segment";
  }
  EXPECT_TRUE(VerifiesAs(tool, std::nullopt, 6));
  EXPECT_TRUE(VerifiesAs(tool, 5, 5));
  size_t prepared = 0;
  const std::string log = daemon.Log();
  for (size_t at = log.find("prepared spare segment"); at != std::string::npos;
       at = log.find("prepared spare segment", at + 1)) {
    ++prepared;
  }
  EXPECT_EQ(prepared, 2u);
  // A restart leaves the versions' segments only; the next snapshot makes
  // its spares again.
  ASSERT_TRUE(daemon.Restart());
  EXPECT_EQ(daemon.SegmentFiles().size(), 2u);
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "7:7"}).ok());
  EXPECT_TRUE(VerifiesAs(tool, std::nullopt, 7));
}

}  // namespace
}  // namespace holdfast::testing
