// SnapshotManager against the in-memory catalog (with injected failures) and
// real segments in a private tmpfs directory. Everything runs on the
// manager's event loop, as in the daemon.
#include "core/snapshot_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <random>

#include "catalog/memory_catalog.h"
#include "holdfast/ec/checksum.h"

namespace holdfast::smp {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kItemBytes = 64 << 10;

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
    NewManager();
  }

  void TearDown() override {
    manager_.reset();
    loop_.reset();
    workers_.reset();
    fs::remove_all(dir_);
  }

  // A fresh manager (as after a daemon restart) over the same catalog and
  // segments.
  void NewManager(uint64_t budget = 64 << 20) {
    manager_.reset();
    loop_.reset();
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

  // Begin + write deterministic bytes + Commit. `corrupt` writes one wrong
  // byte after checksumming.
  Status Save(const std::string& job, int rank, int64_t step, int items = 2, bool corrupt = false,
              uint64_t session = 0) {
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
      manager_->Commit(commit, [&](Status s, v1::CommitSnapshotResponse) { done.set_value(s); });
    });
    return done.get_future().get();
  }

  // Restores every item of (job, rank, step or newest) and checks each byte.
  Result<int64_t> RestoreAndCheck(const std::string& job, int rank,
                                  std::optional<int64_t> step = std::nullopt) {
    v1::OpenRestoreRequest req;
    req.set_job_id(job);
    req.set_rank(rank);
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

  fs::path dir_;
  ManagerOptions options_;
  std::unique_ptr<SegmentStore> store_;
  std::unique_ptr<MemoryCatalog> catalog_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<SnapshotManager> manager_;
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
  ASSERT_TRUE(Register("j", {0}).ok());
  ASSERT_TRUE(Save("j", 0, 1).ok());
  Status s = Save("j", 0, 2, 2, /*corrupt=*/true);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_EQ(*RestoreAndCheck("j", 0), 1);
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

}  // namespace
}  // namespace holdfast::smp
