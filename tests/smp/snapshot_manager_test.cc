// SnapshotManager against the in-memory catalog (with injected failures) and
// real segments in a private tmpfs directory. Everything runs on the
// manager's event loop, as in the daemon. The manager verifies in the
// background (the default) unless a test says otherwise; Save() waits for
// that verification, SaveNoWait() does not, and BlockedWorkers holds it back
// so that a test can look at the state in between.
#include "core/snapshot_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "catalog/memory_catalog.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/testing/status_matchers.h"

namespace holdfast::smp {
namespace {

namespace fs = std::filesystem;
using ::holdfast::testing::HasCode;
using ::holdfast::testing::IsOk;
using namespace std::chrono_literals;

constexpr uint64_t kItemBytes = 64 << 10;
constexpr uint64_t kRankBytes = 2 * kItemBytes;  // Save()'s default: two items, back to back

// Occupies every worker of `pool` until Open() (or destruction): checksum
// work submitted meanwhile waits in the queue.
class BlockedWorkers {
 public:
  explicit BlockedWorkers(WorkerPool* pool) : gate_(open_.get_future().share()) {
    std::vector<std::future<void>> started;
    for (int i = 0; i < pool->size(); ++i) {
      auto running = std::make_shared<std::promise<void>>();
      started.push_back(running->get_future());
      pool->Submit([running, gate = gate_] {
        running->set_value();
        gate.wait();
      });
    }
    for (auto& f : started) f.wait();
  }
  ~BlockedWorkers() { Open(); }
  BlockedWorkers(const BlockedWorkers&) = delete;
  BlockedWorkers& operator=(const BlockedWorkers&) = delete;

  void Open() {
    if (opened_) return;
    opened_ = true;
    open_.set_value();
  }

 private:
  std::promise<void> open_;
  std::shared_future<void> gate_;
  bool opened_ = false;
};

class SnapshotManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::path("/dev/shm") /
           ("hf-mgr-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir_);
    auto store = SegmentStore::Create({.directory = dir_.string(), .prefix = "t"});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::make_unique<SegmentStore>(std::move(store).value());
    catalog_ = std::make_unique<MemoryCatalog>();
    // These tests count segments and pool bytes step by step; the spares'
    // own tests turn them on.
    options_.spare_segments = 0;
    NewManager();
  }

  void TearDown() override {
    DestroyManager();
    workers_.reset();
    fs::remove_all(dir_);
  }

  // As holdfastd stops: the loop first, so that no verification result runs
  // while the manager is destroyed.
  void DestroyManager() {
    if (loop_) loop_->Stop();
    manager_.reset();
    loop_.reset();
  }

  // A fresh manager (as after a daemon restart) over the same catalog and
  // segments.
  void NewManager(uint64_t budget = 64 << 20) {
    DestroyManager();
    workers_ = std::make_unique<WorkerPool>(2);
    loop_ = std::make_unique<EventLoop>();
    options_.memory_budget_bytes = budget;
    manager_ = std::make_unique<SnapshotManager>(options_, catalog_.get(), store_.get(),
                                                 workers_.get(), loop_.get());
  }

  template <typename Fn>
  auto OnLoop(Fn fn) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    loop_->Post([&task] { task(); });
    return result.get();
  }

  Status Register(const std::string& job, std::vector<int> ranks, int world = 4) {
    v1::RegisterJobRequest req;
    req.set_job_id(job);
    req.set_world_size(world);
    for (int r : ranks) req.add_local_ranks(r);
    v1::RegisterJobResponse resp;
    return OnLoop([&] { return manager_->RegisterJob(req, &resp); });
  }

  static uint8_t Byte(int64_t step, int rank, int item, uint64_t i) {
    return static_cast<uint8_t>(step * 31 + rank * 7 + item * 3 + i * 13);
  }

  // Waits until no background verification is pending (each has posted its
  // result to the loop, which handled it).
  Status WaitVerified() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (OnLoop([&] { return manager_->background_verifications(); }) > 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::DeadlineExceeded("background verification did not finish");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Status::Ok();
  }

  // SaveNoWait, then waits for the background verification of every commit.
  Status Save(const std::string& job, int rank, int64_t step, int items = 2, bool corrupt = false,
              uint64_t session = 0) {
    HOLDFAST_RETURN_IF_ERROR(SaveNoWait(job, rank, step, items, corrupt, session));
    return WaitVerified();
  }

  // Begin + write deterministic bytes + Commit, returning when the commit is
  // answered (its response in last_commit_). `corrupt` writes one wrong byte
  // after checksumming.
  Status SaveNoWait(const std::string& job, int rank, int64_t step, int items = 2,
                    bool corrupt = false, uint64_t session = 0) {
    v1::BeginSnapshotRequest begin;
    begin.set_job_id(job);
    begin.set_rank(rank);
    begin.set_step(step);
    begin.set_session_id(session);
    for (int i = 0; i < items; ++i) {
      v1::ItemSpec* spec = begin.add_items();
      spec->set_name("item" + std::to_string(i));
      spec->set_dtype(v1::DTYPE_FLOAT32);
      spec->add_shape(kItemBytes / 4);
      spec->set_nbytes(kItemBytes);
    }
    v1::BeginSnapshotResponse reserved;
    HOLDFAST_RETURN_IF_ERROR(OnLoop([&] { return manager_->Begin(begin, &reserved); }));
    auto seg = store_->Open(fs::path(reserved.segment().path()).filename().string(),
                            reserved.segment().bytes());
    HOLDFAST_RETURN_IF_ERROR(seg.status());
    v1::CommitSnapshotRequest commit;
    commit.set_job_id(job);
    commit.set_rank(rank);
    commit.set_step(step);
    commit.set_write_id(reserved.write_id());
    for (int i = 0; i < items; ++i) {
      uint8_t* p = seg->data() + reserved.offsets(i);
      for (uint64_t b = 0; b < kItemBytes; ++b) p[b] = Byte(step, rank, i, b);
      commit.add_checksums(ec::Checksum({p, kItemBytes}));
      if (corrupt) p[kItemBytes / 2] ^= 0xff;
    }
    std::promise<Status> done;
    loop_->Post([&] {
      manager_->Commit(commit, [&](Status s, v1::CommitSnapshotResponse resp) {
        last_commit_ = resp;
        done.set_value(s);
      });
    });
    return done.get_future().get();
  }

  // Restores every item of (job, rank, step or newest) and checks each byte.
  Result<int64_t> RestoreAndCheck(const std::string& job, int rank,
                                  std::optional<int64_t> step = std::nullopt,
                                  uint64_t session = 0, bool resume = false) {
    v1::OpenRestoreRequest req;
    req.set_job_id(job);
    req.set_rank(rank);
    req.set_session_id(session);
    req.set_resume(resume);
    req.set_latest(!step.has_value());
    req.set_step(step.value_or(0));
    v1::OpenRestoreResponse lease;
    HOLDFAST_RETURN_IF_ERROR(OnLoop([&] { return manager_->OpenRestore(req, &lease); }));
    auto seg =
        store_->Open(fs::path(lease.segment().path()).filename().string(), lease.segment().bytes());
    HOLDFAST_RETURN_IF_ERROR(seg.status());
    for (int i = 0; i < lease.items_size(); ++i) {
      const uint8_t* p = seg->data() + lease.items(i).offset();
      for (uint64_t b = 0; b < lease.items(i).spec().nbytes(); ++b) {
        if (p[b] != Byte(lease.step(), rank, i, b)) {
          return Status::DataLoss("byte " + std::to_string(b) + " of item " + std::to_string(i));
        }
      }
    }
    v1::CloseRestoreRequest close;
    close.set_lease_id(lease.lease_id());
    close.set_verified(true);
    HOLDFAST_RETURN_IF_ERROR(OnLoop([&] { return manager_->CloseRestore(close); }));
    return lease.step();
  }

  // The bytes of `job`'s versions' segments, the first version's.
  uint64_t VersionBytes(const std::string& job) {
    v1::ListVersionsRequest req;
    req.set_job_id(job);
    v1::ListVersionsResponse resp;
    EXPECT_TRUE(OnLoop([&] { return manager_->List(req, &resp); }).ok());
    return resp.versions_size() > 0 ? resp.versions(0).bytes() : 0;
  }

  std::vector<int64_t> Steps(const std::string& job) {
    v1::ListVersionsRequest req;
    req.set_job_id(job);
    v1::ListVersionsResponse resp;
    EXPECT_TRUE(OnLoop([&] { return manager_->List(req, &resp); }).ok());
    std::vector<int64_t> out;
    for (const auto& v : resp.versions()) {
      if (v.state() == v1::VERSION_STATE_COMPLETE) out.push_back(v.step());
    }
    return out;
  }

  size_t SegmentFiles() {
    auto names = store_->List();
    return names.ok() ? names->size() : 0;
  }

  v1::GetStatusResponse GetStatus() {
    v1::GetStatusResponse resp;
    EXPECT_TRUE(IsOk(OnLoop([&] { return manager_->GetStatus(&resp); })));
    return resp;
  }

  // Complete steps of `job` in the catalog.
  std::vector<int64_t> CatalogSteps(const std::string& job) {
    auto contents = catalog_->Load();
    EXPECT_TRUE(IsOk(contents));
    std::vector<int64_t> out;
    if (!contents.ok()) return out;
    for (const v1::VersionRecord& v : contents->versions) {
      if (v.job_id() == job) out.push_back(v.step());
    }
    return out;
  }

  Status DropStep(const std::string& job, int64_t step, v1::DropVersionsResponse* resp) {
    v1::DropVersionsRequest req;
    req.set_job_id(job);
    req.set_step(step);
    return OnLoop([&] { return manager_->Drop(req, resp); });
  }

  fs::path dir_;
  ManagerOptions options_;
  std::unique_ptr<SegmentStore> store_;
  std::unique_ptr<MemoryCatalog> catalog_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<SnapshotManager> manager_;
  v1::CommitSnapshotResponse last_commit_;
};

TEST_F(SnapshotManagerTest, RetainsNewestTwoAndReusesSegments) {
  ASSERT_TRUE(Register("j", {0}).ok());
  for (int64_t step = 1; step <= 6; ++step) ASSERT_TRUE(Save("j", 0, step).ok()) << step;
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{5, 6}));
  // retain (2) + the one being written: the pool recycles, nothing grows.
  EXPECT_EQ(SegmentFiles(), 3u);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 6);
  EXPECT_EQ(*RestoreAndCheck("j", 0, 5), 5);
  EXPECT_EQ(RestoreAndCheck("j", 0, 4).status().code(), StatusCode::kNotFound);
}

// A writer faster than the background checks: versions retired while their
// checks wait stay held, and go back to the pool all at once when the checks
// run. Two segments stay pooled for the rank's next snapshots; the rest are
// given back (their files go).
// A rank's first Begin creates its segment on the loop; the spares after
// it are made in the background, so its next Begins create nothing.
TEST_F(SnapshotManagerTest, SparesAreMadeAheadAndTakenByTheNextBegins) {
  options_.spare_segments = 2;
  NewManager();
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  const uint64_t seg_bytes = VersionBytes("j");
  ASSERT_GT(seg_bytes, 0u);
  // Two spares of the same size arrive in the pool.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (GetStatus().memory_pooled_bytes() < 2 * seg_bytes &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(GetStatus().memory_pooled_bytes(), 2 * seg_bytes);
  EXPECT_EQ(GetStatus().memory_used_bytes(), 3 * seg_bytes);
  EXPECT_EQ(SegmentFiles(), 3u);
  // Steps 2 and 3 take them; step 4 reuses step 1's segment (retain 2).
  for (int64_t step = 2; step <= 4; ++step) ASSERT_TRUE(IsOk(Save("j", 0, step)));
  EXPECT_EQ(SegmentFiles(), 3u);
  EXPECT_EQ(GetStatus().memory_used_bytes(), 3 * seg_bytes);
  for (int64_t step : {3, 4}) EXPECT_EQ(*RestoreAndCheck("j", 0, step), step);
}

// Spares come out of free budget only: a quarter of it (and one more
// segment) stays free besides them, and a daemon that stops while one is
// being made leaves no file behind.
TEST_F(SnapshotManagerTest, SparesLeaveRoomAndNoFilesBehind) {
  options_.spare_segments = 2;
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  const uint64_t seg_bytes = VersionBytes("j");
  ASSERT_GT(seg_bytes, 0u);
  // A budget of three segments: one spare (a second would leave less than
  // a segment free).
  NewManager(3 * seg_bytes);
  ASSERT_TRUE(Register("k", {0}).ok());
  ASSERT_TRUE(IsOk(Save("k", 0, 1)));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (GetStatus().memory_pooled_bytes() < seg_bytes &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(100ms);
  const auto status = GetStatus();
  EXPECT_EQ(status.memory_pooled_bytes(), seg_bytes);
  EXPECT_LE(status.memory_used_bytes(), 3 * seg_bytes);
  // The spare is trimmed for room like any pooled segment: another job's
  // snapshot of two segments' size still fits.
  ASSERT_TRUE(Register("big", {0}).ok());
  v1::BeginSnapshotRequest begin;
  begin.set_job_id("big");
  begin.set_rank(0);
  begin.set_step(1);
  v1::ItemSpec* spec = begin.add_items();
  spec->set_name("blob");
  spec->set_dtype(v1::DTYPE_UINT8);
  spec->add_shape(seg_bytes);
  spec->set_nbytes(seg_bytes);
  v1::BeginSnapshotResponse reserved;
  EXPECT_TRUE(IsOk(OnLoop([&] { return manager_->Begin(begin, &reserved); })));
  // Stopped while its spares are being made: the destructor waits for the
  // one in the making, skips the rest, and a restart serves the version and
  // keeps only the versions' segments (spares, like pooled segments, go).
  options_.memory_budget_bytes = 64 << 20;
  NewManager();
  ASSERT_TRUE(Register("s", {0}).ok());
  ASSERT_TRUE(IsOk(Save("s", 0, 1)));
  NewManager();
  auto report = OnLoop([&] { return manager_->Recover(); });
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(*RestoreAndCheck("s", 0, 1), 1);
  EXPECT_EQ(SegmentFiles(), 3u);  // step 1 of j, k and s (same catalog and directory)
}

TEST_F(SnapshotManagerTest, PoolKeepsTwoSparesPerRank) {
  options_.verify = VerifyMode::kBackground;
  NewManager();
  ASSERT_TRUE(Register("j", {0}).ok());
  {
    BlockedWorkers blocked(workers_.get());
    for (int64_t step = 1; step <= 6; ++step) ASSERT_TRUE(IsOk(SaveNoWait("j", 0, step))) << step;
    EXPECT_EQ(Steps("j"), (std::vector<int64_t>{5, 6}));
    EXPECT_EQ(SegmentFiles(), 6u);  // the retired four are held by their pending checks
  }
  ASSERT_TRUE(IsOk(WaitVerified()));
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(SegmentFiles(), 2u + 2u);  // two versions, two spares
  const v1::GetStatusResponse status = GetStatus();
  EXPECT_EQ(status.memory_pooled_bytes() * 2, status.memory_used_bytes());

  // The spares serve the next snapshots: nothing new is created.
  for (int64_t step = 7; step <= 9; ++step) ASSERT_TRUE(IsOk(Save("j", 0, step))) << step;
  EXPECT_LE(SegmentFiles(), 4u);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 9);
}

TEST_F(SnapshotManagerTest, CatalogFailureLeavesPreviousVersion) {
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  catalog_->FailNextApplies(1, Status::Internal("injected"));
  Status s = Save("j", 0, 2);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("injected"), std::string::npos);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 1);
  // The failed write's segment went back to the pool, and the next step works.
  ASSERT_TRUE(Save("j", 0, 2).ok());
  EXPECT_EQ(*RestoreAndCheck("j", 0), 2);
}

TEST_F(SnapshotManagerTest, CorruptedBytesFailCommitWithDataLoss) {
  options_.verify = VerifyMode::kCommit;
  NewManager();
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  Status s = Save("j", 0, 2, 2, /*corrupt=*/true);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_EQ(*RestoreAndCheck("j", 0), 1);
  // Refused, not recorded: no version to discard.
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(GetStatus().damaged_versions(), 0u);
}

TEST_F(SnapshotManagerTest, VersionVisibleOnlyWhenEveryLocalRankCommitted) {
  ASSERT_TRUE(Register("j", {0, 1}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  EXPECT_TRUE(Steps("j").empty());
  EXPECT_EQ(RestoreAndCheck("j", 0).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(Save("j", 1, 1).ok());
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(*RestoreAndCheck("j", 1), 1);
  // A step only one rank committed is torn: a newer complete step discards it.
  ASSERT_TRUE(Save("j", 0, 2).ok());
  ASSERT_TRUE(Save("j", 0, 3).ok());
  ASSERT_TRUE(Save("j", 1, 3).ok());
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 3}));
}

TEST_F(SnapshotManagerTest, ResumedRunDiscardsTheAbandonedRunsPartsOfNewerSteps) {
  ASSERT_TRUE(Register("j", {0, 1}).ok());
  // Run 1: rank 0 committed step 5, then the job crashed before rank 1 did.
  ASSERT_TRUE(Save("j", 0, 4).ok());
  ASSERT_TRUE(Save("j", 1, 4).ok());
  ASSERT_TRUE(Save("j", 0, 5).ok());
  const auto catalog_ranks = [&](int64_t step) {
    std::vector<int> ranks;
    auto contents = catalog_->Load();
    EXPECT_TRUE(IsOk(contents));
    for (const auto& m : contents->manifests) {
      if (m.job_id() == "j" && m.step() == step) ranks.push_back(m.rank());
    }
    return ranks;
  };
  EXPECT_EQ(catalog_ranks(5), (std::vector<int>{0}));
  // Run 2 resumes both ranks from step 4 and redoes step 5, rank 1 first: its
  // commit must not complete step 5 with run 1's part of rank 0.
  const auto open_session = [&](int rank) {
    v1::OpenSessionRequest open;
    open.set_job_id("j");
    open.set_rank(rank);
    return OnLoop([&] { return manager_->OpenSession(open); });
  };
  const uint64_t s0 = open_session(0);
  const uint64_t s1 = open_session(1);
  ASSERT_EQ(*RestoreAndCheck("j", 0, std::nullopt, s0), 4);
  ASSERT_EQ(*RestoreAndCheck("j", 1, std::nullopt, s1), 4);
  ASSERT_TRUE(Save("j", 1, 5, 2, false, s1).ok());
  EXPECT_FALSE(last_commit_.version_complete());
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{4}));
  EXPECT_EQ(catalog_ranks(5), (std::vector<int>{1}));
  ASSERT_TRUE(Save("j", 0, 5, 2, false, s0).ok());
  EXPECT_TRUE(last_commit_.version_complete());
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(catalog_ranks(5), (std::vector<int>{0, 1}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 5);
  EXPECT_EQ(*RestoreAndCheck("j", 1), 5);
  // The resumed run's own parts always count, whichever rank commits first,
  // and a restore after a session's first write (an inspection, not a
  // resume) changes nothing.
  ASSERT_TRUE(Save("j", 0, 6, 2, false, s0).ok());
  ASSERT_EQ(*RestoreAndCheck("j", 0, 4, s0), 4);
  ASSERT_TRUE(Save("j", 1, 6, 2, false, s1).ok());
  EXPECT_TRUE(last_commit_.version_complete());
  ASSERT_TRUE(Save("j", 1, 7, 2, false, s1).ok());
  ASSERT_TRUE(Save("j", 0, 7, 2, false, s0).ok());
  EXPECT_TRUE(last_commit_.version_complete());
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{6, 7}));
}

TEST_F(SnapshotManagerTest, StepsMustMoveForward) {
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 5).ok());
  EXPECT_EQ(Save("j", 0, 5).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Save("j", 0, 4).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Save("j", 0, -1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Save("nope", 0, 6).code(), StatusCode::kNotFound);
  EXPECT_EQ(Save("j", 3, 6).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 5);
}

TEST_F(SnapshotManagerTest, BudgetNeverEvictsTheOnlyCompleteVersion) {
  // One rank snapshot is 2 x 64 KiB = 128 KiB: the budget holds two.
  NewManager(/*budget=*/300 << 10);
  ASSERT_TRUE(Register("a", {0}).ok());
  ASSERT_TRUE(Register("b", {0}).ok());
  ASSERT_TRUE(Save("a", 0, 1).ok());
  ASSERT_TRUE(Save("b", 0, 1).ok());
  // No room: a's and b's only versions must stay.
  EXPECT_EQ(Save("a", 0, 2).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(*RestoreAndCheck("a", 0), 1);
  EXPECT_EQ(*RestoreAndCheck("b", 0), 1);
  // Dropping b makes room for a's next version; then a's older one is
  // evicted (not its newest) to make room for the one after.
  v1::DropVersionsRequest drop;
  drop.set_job_id("b");
  drop.set_all(true);
  v1::DropVersionsResponse dropped;
  ASSERT_TRUE(OnLoop([&] { return manager_->Drop(drop, &dropped); }).ok());
  ASSERT_TRUE(Save("a", 0, 2).ok());
  ASSERT_TRUE(Save("a", 0, 3).ok());
  EXPECT_EQ(*RestoreAndCheck("a", 0), 3);
  EXPECT_LE(manager_->memory_used(), 300u << 10);
}

TEST_F(SnapshotManagerTest, LeasedVersionIsNeverReused) {
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  v1::OpenRestoreRequest req;
  req.set_job_id("j");
  req.set_latest(true);
  v1::OpenRestoreResponse lease;
  ASSERT_TRUE(OnLoop([&] { return manager_->OpenRestore(req, &lease); }).ok());
  // Steps 2..4 retire step 1 from the catalog while it is leased.
  for (int64_t step = 2; step <= 4; ++step) ASSERT_TRUE(Save("j", 0, step).ok());
  auto seg =
      store_->Open(fs::path(lease.segment().path()).filename().string(), lease.segment().bytes());
  ASSERT_TRUE(seg.ok());
  EXPECT_EQ(seg->data()[lease.items(0).offset() + 5], Byte(1, 0, 0, 5));
  v1::CloseRestoreRequest close;
  close.set_lease_id(lease.lease_id());
  close.set_verified(true);
  ASSERT_TRUE(OnLoop([&] { return manager_->CloseRestore(close); }).ok());
  EXPECT_EQ(OnLoop([&] { return manager_->CloseRestore(close); }).code(), StatusCode::kNotFound);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{3, 4}));
}

TEST_F(SnapshotManagerTest, ClosedSessionAbortsItsWrites) {
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  v1::OpenSessionRequest open;
  open.set_job_id("j");
  const uint64_t session = OnLoop([&] { return manager_->OpenSession(open); });
  v1::BeginSnapshotRequest begin;
  begin.set_job_id("j");
  begin.set_step(2);
  begin.set_session_id(session);
  v1::ItemSpec* spec = begin.add_items();
  spec->set_name("x");
  spec->set_dtype(v1::DTYPE_BYTES);
  spec->set_nbytes(100);
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(OnLoop([&] { return manager_->Begin(begin, &reserved); }).ok());
  OnLoop([&] {
    manager_->CloseSession(session);
    return 0;
  });
  v1::CommitSnapshotRequest commit;
  commit.set_job_id("j");
  commit.set_step(2);
  commit.set_write_id(reserved.write_id());
  commit.add_checksums(0);
  std::promise<Status> done;
  loop_->Post([&] {
    manager_->Commit(commit, [&](Status s, v1::CommitSnapshotResponse) { done.set_value(s); });
  });
  EXPECT_EQ(done.get_future().get().code(), StatusCode::kNotFound);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 1);
}

TEST_F(SnapshotManagerTest, StaleWritesExpire) {
  ASSERT_TRUE(Register("j", {0}).ok());
  v1::BeginSnapshotRequest begin;
  begin.set_job_id("j");
  begin.set_step(1);
  v1::ItemSpec* spec = begin.add_items();
  spec->set_name("x");
  spec->set_dtype(v1::DTYPE_BYTES);
  spec->set_nbytes(10);
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(OnLoop([&] { return manager_->Begin(begin, &reserved); }).ok());
  OnLoop([&] {
    manager_->ExpireStale(std::chrono::steady_clock::now() + options_.write_timeout +
                          std::chrono::seconds(1));
    return 0;
  });
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("j");
  abort.set_write_id(reserved.write_id());
  EXPECT_EQ(OnLoop([&] { return manager_->Abort(abort); }).code(), StatusCode::kNotFound);
}

TEST_F(SnapshotManagerTest, RecoveryRestoresVerifiesAndCleans) {
  ASSERT_TRUE(Register("j", {0, 1}).ok());
  for (int64_t step = 1; step <= 3; ++step) {
    ASSERT_TRUE(Save("j", 0, step).ok());
    ASSERT_TRUE(Save("j", 1, step).ok());
  }
  ASSERT_TRUE(Save("j", 0, 4).ok());  // step 4: only rank 0 so far

  NewManager();
  auto report = OnLoop([&] { return manager_->Recover(); });
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->versions_restored, 2);
  EXPECT_EQ(report->partial_versions_kept, 1);  // step 4 may still complete
  EXPECT_EQ(report->versions_discarded, 0);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 3);
  EXPECT_EQ(*RestoreAndCheck("j", 1, 2), 2);
  EXPECT_EQ(SegmentFiles(), 5u);  // 2 versions x 2 ranks + step 4's rank 0; pooled removed

  // Damage step 3 in RAM: the next restart discards it and serves step 2.
  v1::OpenRestoreRequest req;
  req.set_job_id("j");
  req.set_rank(1);
  req.set_latest(true);
  v1::OpenRestoreResponse lease;
  ASSERT_TRUE(OnLoop([&] { return manager_->OpenRestore(req, &lease); }).ok());
  {
    auto seg =
        store_->Open(fs::path(lease.segment().path()).filename().string(), lease.segment().bytes());
    ASSERT_TRUE(seg.ok());
    seg->data()[lease.items(1).offset() + 77] ^= 1;
  }
  NewManager();
  report = OnLoop([&] { return manager_->Recover(); });
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->versions_restored, 1);
  EXPECT_EQ(report->versions_discarded, 1);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 2);
  EXPECT_EQ(SegmentFiles(), 3u);  // step 2 x 2 ranks + the partial step 4

  // Rank 1 completes step 4 after the restart.
  ASSERT_TRUE(Save("j", 1, 4).ok());
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(*RestoreAndCheck("j", 1), 4);
}

TEST_F(SnapshotManagerTest, RefusedSnapshotEvictsNothing) {
  NewManager(/*budget=*/300 << 10);  // two 128 KiB rank snapshots fit
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  ASSERT_TRUE(Save("j", 0, 2).ok());
  // Four items (256 KiB) can never fit beside the newest version.
  EXPECT_EQ(Save("j", 0, 3, 4).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*RestoreAndCheck("j", 0, 1), 1);
}

TEST_F(SnapshotManagerTest, VerifyModeNamesRoundTrip) {
  for (VerifyMode mode : {VerifyMode::kCommit, VerifyMode::kBackground, VerifyMode::kOff}) {
    Result<VerifyMode> parsed = ParseVerifyMode(VerifyModeName(mode));
    ASSERT_TRUE(IsOk(parsed)) << VerifyModeName(mode);
    EXPECT_EQ(*parsed, mode);
  }
  EXPECT_EQ(VerifyModeName(ManagerOptions{}.verify), "background");
  Result<VerifyMode> bad = ParseVerifyMode("Commit");
  EXPECT_TRUE(HasCode(bad, StatusCode::kInvalidArgument));
  EXPECT_NE(bad.status().message().find("commit, background, off"), std::string::npos)
      << bad.status().ToString();
}

// The commit is answered and the version served before its bytes are
// checked; once the check fails, the version is gone (memory, catalog) and
// the previous one is served again.
TEST_F(SnapshotManagerTest, BackgroundMismatchDiscardsTheCommittedVersion) {
  ASSERT_TRUE(IsOk(Register("j", {0})));
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  {
    BlockedWorkers blocked(workers_.get());
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 2, 2, /*corrupt=*/true)));
    EXPECT_TRUE(last_commit_.version_complete());
    EXPECT_EQ(last_commit_.verify_micros(), 0);
    EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(GetStatus().background_verifications(), 1u);
  }
  ASSERT_TRUE(IsOk(WaitVerified()));

  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 1);
  EXPECT_TRUE(HasCode(RestoreAndCheck("j", 0, 2), StatusCode::kNotFound));
  const v1::GetStatusResponse status = GetStatus();
  EXPECT_EQ(status.damaged_versions(), 1u);
  EXPECT_EQ(status.background_verifications(), 0u);
  ASSERT_EQ(status.jobs_size(), 1);
  EXPECT_EQ(status.jobs(0).latest_complete_step(), 1);
  EXPECT_EQ(status.jobs(0).bytes(), kRankBytes);
  // Step 2's segment went back to the pool, and the step can be saved again
  // in it.
  EXPECT_EQ(status.memory_pooled_bytes(), kRankBytes);
  EXPECT_EQ(status.memory_used_bytes(), 2 * kRankBytes);
  ASSERT_TRUE(IsOk(Save("j", 0, 2)));
  EXPECT_EQ(SegmentFiles(), 2u);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 2);
  EXPECT_EQ(GetStatus().damaged_versions(), 1u);
}

// retain_versions = 1: the only verified version stays until a newer one is
// verified, and goes as soon as one is.
TEST_F(SnapshotManagerTest, RetentionKeepsTheVerifiedVersionUntilANewerOneIsVerified) {
  options_.retain_versions = 1;
  NewManager();
  ASSERT_TRUE(IsOk(Register("j", {0})));
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));

  // A damaged step 2: step 1 survives its commit, and is the newest after.
  {
    BlockedWorkers blocked(workers_.get());
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 2, 2, /*corrupt=*/true)));
    EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(*RestoreAndCheck("j", 0, 1), 1);
  }
  ASSERT_TRUE(IsOk(WaitVerified()));
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 1);

  // A good step 3: step 1 stays until step 3 is verified, then retires.
  {
    BlockedWorkers blocked(workers_.get());
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 3)));
    EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 3}));
    EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1, 3}));
    EXPECT_EQ(*RestoreAndCheck("j", 0, 1), 1);
    EXPECT_EQ(*RestoreAndCheck("j", 0), 3);
  }
  ASSERT_TRUE(IsOk(WaitVerified()));
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{3}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{3}));
  EXPECT_TRUE(HasCode(RestoreAndCheck("j", 0, 1), StatusCode::kNotFound));
  // Step 3 reused step 2's segment; step 1's is pooled now.
  EXPECT_EQ(GetStatus().memory_pooled_bytes(), kRankBytes);
  EXPECT_EQ(GetStatus().damaged_versions(), 1u);

  // Two unverified steps in a row: the older one is beyond retention even
  // unverified (retired while its check runs); step 3, verified, stays.
  {
    BlockedWorkers blocked(workers_.get());
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 4)));
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 5)));
    EXPECT_EQ(Steps("j"), (std::vector<int64_t>{3, 5}));
    EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{3, 5}));
    EXPECT_EQ(GetStatus().background_verifications(), 2u);
    EXPECT_EQ(GetStatus().memory_pooled_bytes(), 0u) << "step 4 is still being read";
  }
  ASSERT_TRUE(IsOk(WaitVerified()));
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{5}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{5}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 5);
  EXPECT_EQ(GetStatus().memory_pooled_bytes(), 2 * kRankBytes) << "steps 3 and 4";
  EXPECT_EQ(SegmentFiles(), 3u);
}

// A version dropped while its check runs leaves at once, but its segment is
// neither reused nor unmapped (Drop unmaps the job's pooled segments) until
// the check is done; then it is pooled.
TEST_F(SnapshotManagerTest, DropDuringBackgroundVerificationWaitsForTheVerifier) {
  ASSERT_TRUE(IsOk(Register("j", {0})));
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  {
    BlockedWorkers blocked(workers_.get());
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 2)));
    v1::DropVersionsResponse dropped;
    ASSERT_TRUE(IsOk(DropStep("j", 2, &dropped)));
    ASSERT_EQ(dropped.dropped_steps_size(), 1);
    EXPECT_EQ(dropped.dropped_steps(0), 2);
    EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1}));
    EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1}));
    EXPECT_EQ(*RestoreAndCheck("j", 0), 1);
    EXPECT_TRUE(HasCode(DropStep("j", 2, &dropped), StatusCode::kNotFound));
    // The step cannot be written again while its old bytes are being read.
    Status again = SaveNoWait("j", 0, 2);
    EXPECT_TRUE(HasCode(again, StatusCode::kFailedPrecondition));
    EXPECT_NE(again.message().find("was dropped"), std::string::npos) << again.ToString();
    // A new snapshot gets a new segment, not the one being checked.
    ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 3)));
    EXPECT_EQ(SegmentFiles(), 3u);
    const v1::GetStatusResponse status = GetStatus();
    EXPECT_EQ(status.memory_pooled_bytes(), 0u);
    EXPECT_EQ(status.memory_used_bytes(), 3 * kRankBytes);
    EXPECT_EQ(status.background_verifications(), 2u);
  }
  ASSERT_TRUE(IsOk(WaitVerified()));
  const v1::GetStatusResponse status = GetStatus();
  EXPECT_EQ(status.memory_pooled_bytes(), kRankBytes) << "step 2's segment";
  EXPECT_EQ(status.damaged_versions(), 0u);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(*RestoreAndCheck("j", 0), 3);
  EXPECT_EQ(*RestoreAndCheck("j", 0, 1), 1);
}

// A restore lease and a background check hold a version together: it is
// freed only when both are done, in either order.
TEST_F(SnapshotManagerTest, LeaseAndVerificationBothHoldARetiredVersion) {
  options_.retain_versions = 1;
  NewManager();
  ASSERT_TRUE(IsOk(Register("j", {0})));
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  BlockedWorkers blocked(workers_.get());
  ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 2)));
  v1::OpenRestoreRequest req;
  req.set_job_id("j");
  req.set_latest(true);
  v1::OpenRestoreResponse lease;
  ASSERT_TRUE(IsOk(OnLoop([&] { return manager_->OpenRestore(req, &lease); })));
  EXPECT_EQ(lease.step(), 2);
  // Steps 3 (unverified) retires step 2, held twice; step 1 stays, verified.
  ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 3)));
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 3}));
  v1::CloseRestoreRequest close;
  close.set_lease_id(lease.lease_id());
  close.set_verified(true);
  ASSERT_TRUE(IsOk(OnLoop([&] { return manager_->CloseRestore(close); })));
  EXPECT_EQ(GetStatus().memory_pooled_bytes(), 0u) << "step 2 is still being checked";
  blocked.Open();
  ASSERT_TRUE(IsOk(WaitVerified()));
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{3}));
  EXPECT_EQ(GetStatus().memory_pooled_bytes(), 2 * kRankBytes) << "steps 1 and 2";
}

// A restart while versions wait for their background check: recovery
// verifies them itself, and retention then needs no extra version.
TEST_F(SnapshotManagerTest, RecoveryRetiresTheVersionKeptForAnUnverifiedOne) {
  options_.retain_versions = 1;
  NewManager();
  ASSERT_TRUE(IsOk(Register("j", {0})));
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  BlockedWorkers blocked(workers_.get());
  ASSERT_TRUE(IsOk(SaveNoWait("j", 0, 2)));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1, 2}));
  // The daemon stops: its loop first, then the manager cancels the checks.
  loop_->Stop();
  blocked.Open();
  NewManager();
  auto report = OnLoop([&] { return manager_->Recover(); });
  ASSERT_TRUE(IsOk(report));
  EXPECT_EQ(report->versions_restored, 1);
  EXPECT_EQ(report->versions_retired, 1);
  EXPECT_EQ(report->versions_discarded, 0);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{2}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{2}));
  EXPECT_EQ(SegmentFiles(), 1u) << "step 1's segment was removed";
  EXPECT_EQ(manager_->memory_used(), kRankBytes);
  EXPECT_EQ(*RestoreAndCheck("j", 0), 2);
}

TEST_F(SnapshotManagerTest, VerifyOffLeavesTheChecksumToTheReader) {
  options_.verify = VerifyMode::kOff;
  NewManager();
  ASSERT_TRUE(IsOk(Register("j", {0})));
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  ASSERT_TRUE(IsOk(Save("j", 0, 2, 2, /*corrupt=*/true)));
  EXPECT_EQ(last_commit_.verify_micros(), 0);
  EXPECT_EQ(Steps("j"), (std::vector<int64_t>{1, 2}));
  const v1::GetStatusResponse status = GetStatus();
  EXPECT_EQ(status.damaged_versions(), 0u);
  EXPECT_EQ(status.background_verifications(), 0u);
  // The reader's check catches it.
  EXPECT_TRUE(HasCode(RestoreAndCheck("j", 0), StatusCode::kDataLoss));
}

// ---- cluster protection (snapshot_manager_protect.cc) ----------------------

// Steps listed as complete or protected.
std::vector<int64_t> AllSteps(SnapshotManager& manager, EventLoop& loop, const std::string& job) {
  std::promise<std::vector<int64_t>> out;
  loop.Post([&] {
    v1::ListVersionsRequest req;
    req.set_job_id(job);
    v1::ListVersionsResponse resp;
    std::vector<int64_t> steps;
    if (manager.List(req, &resp).ok()) {
      for (const auto& v : resp.versions()) {
        if (v.state() >= v1::VERSION_STATE_COMPLETE) steps.push_back(v.step());
      }
    }
    out.set_value(steps);
  });
  return out.get_future().get();
}

TEST_F(SnapshotManagerTest, PinnedVersionOutlivesRetentionUntilUnpinned) {
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(IsOk(Save("j", 0, 1)));
  auto pin = OnLoop([&] { return manager_->PinVersion("j", 1); });
  ASSERT_TRUE(IsOk(pin));
  ASSERT_EQ(pin->parts.size(), 1u);
  EXPECT_EQ(pin->bytes, pin->parts[0].bytes);
  EXPECT_EQ(pin->manifests[0].rank(), 0);
  for (int64_t step = 2; step <= 4; ++step) ASSERT_TRUE(IsOk(Save("j", 0, step)));
  // Retention keeps two versions besides the pinned one, which stays in the
  // catalog (it must survive a restart) and readable.
  EXPECT_EQ(AllSteps(*manager_, *loop_, "j"), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(*RestoreAndCheck("j", 0, 1), 1);
  OnLoop([&] {
    manager_->UnpinVersion("j", 1);
    return 0;
  });
  EXPECT_EQ(AllSteps(*manager_, *loop_, "j"), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(CatalogSteps("j"), (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(HasCode(OnLoop([&] { return manager_->PinVersion("j", 1); }).status(), StatusCode::kNotFound));
}

// A job restarted from its restore point (4) while this node held its
// newer step 5 of the run that crashed: another member's rank of the resumed
// run may commit 5 before this rank begins it, and the group must not
// protect that with this node's old step 5 (python.demo failed that way:
// the round pinned the old step, and the rank's Begin of 5 was refused).
TEST_F(SnapshotManagerTest, ARunResumedFromTheRestorePointAbandonsNewerStepsForProtection) {
  int64_t restore_point = 4;
  OnLoop([&] {
    manager_->SetRestorePoint([&](const std::string&) { return restore_point; });
    return 0;
  });
  ASSERT_TRUE(Register("j", {0}, 2).ok());
  const auto open_session = [&] {
    v1::OpenSessionRequest open;
    open.set_job_id("j");
    open.set_rank(0);
    return OnLoop([&] { return manager_->OpenSession(open); });
  };
  const auto offered = [&] {
    std::vector<int64_t> steps;
    for (const auto& js : OnLoop([&] { return manager_->Summaries("j"); })) {
      for (const auto& c : js.complete) steps.push_back(c.step);
    }
    return steps;
  };
  const auto pin = [&](int64_t step, bool to_protect) {
    auto pinned = OnLoop([&] { return manager_->PinVersion("j", step, to_protect); });
    if (pinned.ok()) {
      OnLoop([&] {
        manager_->UnpinVersion("j", step);
        return 0;
      });
    }
    return pinned.status();
  };
  const uint64_t run1 = open_session();
  ASSERT_TRUE(Save("j", 0, 4, 2, false, run1).ok());
  ASSERT_TRUE(Save("j", 0, 5, 2, false, run1).ok());
  EXPECT_EQ(offered(), (std::vector<int64_t>{4, 5}));

  // A resume beside the running trainer (whose session has written) is
  // none: step 5 is still offered.
  const uint64_t beside = open_session();
  ASSERT_EQ(*RestoreAndCheck("j", 0, std::nullopt, beside, /*resume=*/true), 4);
  EXPECT_EQ(offered(), (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(IsOk(pin(5, /*to_protect=*/true)));
  OnLoop([&] {
    manager_->CloseSession(run1);
    manager_->CloseSession(beside);
    return 0;
  });
  // Nor is a reader's restore (a tool checking the restore point between
  // two saves: the chaos suite's budget fault) while no trainer is here.
  const uint64_t reader = open_session();
  ASSERT_EQ(*RestoreAndCheck("j", 0, std::nullopt, reader, /*resume=*/false), 4);
  EXPECT_EQ(offered(), (std::vector<int64_t>{4, 5}));
  OnLoop([&] {
    manager_->CloseSession(reader);
    return 0;
  });

  // The trainer's new process resumes from the restore point: step 5 stays
  // readable, but is no longer offered, and a round that saw it before
  // cannot pin it.
  const uint64_t run2 = open_session();
  ASSERT_EQ(*RestoreAndCheck("j", 0, std::nullopt, run2, /*resume=*/true), 4);
  EXPECT_EQ(offered(), (std::vector<int64_t>{4}));
  EXPECT_TRUE(HasCode(pin(5, /*to_protect=*/true), StatusCode::kFailedPrecondition));
  EXPECT_TRUE(IsOk(pin(5, /*to_protect=*/false)));
  EXPECT_EQ(*RestoreAndCheck("j", 0, 5), 5);
  // The resumed run saves step 5 again: it replaces the old one, and is
  // offered.
  ASSERT_TRUE(Save("j", 0, 5, 2, false, run2).ok());
  EXPECT_EQ(offered(), (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(IsOk(pin(5, /*to_protect=*/true)));
}

TEST_F(SnapshotManagerTest, ProtectionSegmentsCountAgainstTheBudget) {
  NewManager(4 << 20);
  const uint64_t before = GetStatus().memory_used_bytes();
  auto seg = OnLoop([&] { return manager_->AllocateSegment(1 << 20); });
  ASSERT_TRUE(IsOk(seg));
  EXPECT_EQ(GetStatus().memory_used_bytes(), before + (1 << 20));
  EXPECT_TRUE(HasCode(OnLoop([&] { return manager_->AllocateSegment(4 << 20); }).status(), StatusCode::kResourceExhausted));
  const std::string name = seg->name();
  OnLoop([&] {
    manager_->FreeSegment(*seg);
    return 0;
  });
  EXPECT_EQ(GetStatus().memory_used_bytes(), before);
  EXPECT_FALSE(fs::exists(dir_ / name));
  // A recycled segment stays pooled (and counted) and is handed out again.
  auto first = OnLoop([&] { return manager_->AllocateSegment(1 << 20); });
  ASSERT_TRUE(IsOk(first));
  const std::string first_name = first->name();
  OnLoop([&] {
    manager_->RecycleSegment(std::move(*first));
    return 0;
  });
  EXPECT_EQ(GetStatus().memory_used_bytes(), before + (1 << 20));
  EXPECT_EQ(GetStatus().memory_pooled_bytes(), 1u << 20);
  auto again = OnLoop([&] { return manager_->AllocateSegment(1 << 20); });
  ASSERT_TRUE(IsOk(again));
  EXPECT_EQ(again->name(), first_name);
  EXPECT_EQ(GetStatus().memory_used_bytes(), before + (1 << 20));
}

// A rebuilt version: segments written by the caller, recorded COMPLETE and
// verified, served like a committed one, and it survives a restart.
TEST_F(SnapshotManagerTest, AdoptedVersionIsServedAndRecovered) {
  auto make_part = [&](int rank, int64_t step) {
    auto seg = OnLoop([&] { return manager_->AllocateSegment(kRankBytes); });
    EXPECT_TRUE(IsOk(seg));
    v1::RankManifestRecord m;
    m.set_job_id("j");
    m.set_step(step);
    m.set_rank(rank);
    m.set_segment_name(seg->name());
    m.set_segment_bytes(seg->bytes());
    for (int i = 0; i < 2; ++i) {
      uint8_t* p = seg->data() + i * kItemBytes;
      for (uint64_t b = 0; b < kItemBytes; ++b) p[b] = Byte(step, rank, i, b);
      v1::Item* item = m.add_items();
      item->mutable_spec()->set_name("item" + std::to_string(i));
      item->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
      item->mutable_spec()->add_shape(kItemBytes / 4);
      item->mutable_spec()->set_nbytes(kItemBytes);
      item->set_offset(i * kItemBytes);
      item->set_checksum(ec::Checksum({p, kItemBytes}));
    }
    return std::make_pair(m, std::move(seg).value());
  };
  v1::JobRecord job;
  job.set_job_id("j");
  job.set_world_size(4);
  job.add_local_ranks(0);
  job.add_local_ranks(1);
  {
    std::vector<std::pair<v1::RankManifestRecord, Segment>> parts;
    parts.push_back(make_part(0, 7));
    parts.push_back(make_part(1, 7));
    ASSERT_TRUE(IsOk(OnLoop([&] { return manager_->AdoptVersion(job, 7, std::move(parts)); })));
  }
  EXPECT_EQ(*RestoreAndCheck("j", 0), 7);
  EXPECT_EQ(*RestoreAndCheck("j", 1), 7);
  // The same step again, or another rank layout: refused, segments freed.
  const size_t files = SegmentFiles();
  {
    std::vector<std::pair<v1::RankManifestRecord, Segment>> parts;
    parts.push_back(make_part(0, 7));
    parts.push_back(make_part(1, 7));
    EXPECT_TRUE(HasCode(OnLoop([&] { return manager_->AdoptVersion(job, 7, std::move(parts)); }), StatusCode::kAlreadyExists));
  }
  {
    v1::JobRecord other = job;
    other.clear_local_ranks();
    other.add_local_ranks(2);
    std::vector<std::pair<v1::RankManifestRecord, Segment>> parts;
    parts.push_back(make_part(2, 8));
    EXPECT_TRUE(HasCode(OnLoop([&] { return manager_->AdoptVersion(other, 8, std::move(parts)); }), StatusCode::kFailedPrecondition));
  }
  EXPECT_EQ(SegmentFiles(), files);
  // The trainer registers the same layout and saves on.
  ASSERT_TRUE(IsOk(Register("j", {0, 1})));
  ASSERT_TRUE(IsOk(Save("j", 0, 8)));
  ASSERT_TRUE(IsOk(Save("j", 1, 8)));
  NewManager();
  ASSERT_TRUE(IsOk(OnLoop([&] { return manager_->Recover(); })));
  EXPECT_EQ(AllSteps(*manager_, *loop_, "j"), (std::vector<int64_t>{7, 8}));
  EXPECT_EQ(*RestoreAndCheck("j", 1, 7), 7);
}

// Protection records survive a restart: the parity segment is reattached
// (and kept by the stray-segment sweep), the version of the same step is
// pinned again before retention runs; a record whose parity is gone is
// discarded.
TEST_F(SnapshotManagerTest, RecoveryKeepsProtectionsAndPinsTheirVersions) {
  ASSERT_TRUE(Register("j", {0}).ok());
  for (int64_t step = 1; step <= 2; ++step) ASSERT_TRUE(IsOk(Save("j", 0, step)));
  auto parity = OnLoop([&] { return manager_->AllocateSegment(1 << 20); });
  ASSERT_TRUE(IsOk(parity));
  std::memset(parity->data(), 0x5a, parity->bytes());
  CatalogBatch batch;
  for (int64_t step : {1, 2}) {
    v1::ProtectionRecord rec;
    rec.set_job_id("j");
    rec.set_step(step);
    rec.set_k(2);
    rec.set_m(1);
    rec.set_parity_segment(step == 1 ? parity->name() : "t-00000000deadbeef");
    rec.set_parity_bytes(parity->bytes());
    batch.put_protections.push_back(rec);
  }
  ASSERT_TRUE(IsOk(catalog_->Apply(batch)));
  // Step 1 is pinned by its protection: saving 3 and 4 does not retire it
  // after the restart.
  NewManager();
  auto report = OnLoop([&] { return manager_->Recover(); });
  ASSERT_TRUE(IsOk(report));
  EXPECT_EQ(report->protections_restored, 1);
  EXPECT_EQ(report->protections_discarded, 1);
  auto recovered = OnLoop([&] { return manager_->TakeRecoveredProtections(); });
  ASSERT_EQ(recovered.size(), 1u);
  EXPECT_EQ(recovered[0].record.step(), 1);
  EXPECT_TRUE(recovered[0].pinned);
  ASSERT_TRUE(recovered[0].parity.valid());
  EXPECT_EQ(recovered[0].parity.data()[12345], 0x5a);
  auto contents = catalog_->Load();
  ASSERT_TRUE(IsOk(contents));
  ASSERT_EQ(contents->protections.size(), 1u);
  EXPECT_EQ(contents->protections[0].step(), 1);
  for (int64_t step = 3; step <= 4; ++step) ASSERT_TRUE(IsOk(Save("j", 0, step)));
  EXPECT_EQ(AllSteps(*manager_, *loop_, "j"), (std::vector<int64_t>{1, 3, 4}));
}

}  // namespace
}  // namespace holdfast::smp
