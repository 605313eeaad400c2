// The snapshot state machine of one holdfastd: jobs, versions, segments, the
// memory budget, restore leases, and recovery after a daemon restart.
//
// Version lifecycle (per job and step):
//
//   Begin (per rank)        Commit (per rank)            last local rank commits
//   ------------> WRITING ----------------> verifying --> PARTIAL -------------> COMPLETE
//                   |  abort / timeout /        |  checksum mismatch,            |
//                   |  session closed           |  catalog write failed          | retention, drop
//                   v                           v                                v
//              segment back to the pool   segment back to the pool       segments to the pool
//
// Only COMPLETE versions are served. A version is committed in the catalog
// with one atomic batch per rank commit; the batch of the last rank also
// writes the version record and retires versions beyond `retain_versions`.
// PARTIAL versions older than the newest COMPLETE one are discarded.
//
// Memory: every segment (written, committed or pooled for reuse) counts
// against the budget. Space for a new snapshot comes, in order, from a pooled
// segment of the same size (preferring the one the same rank used last, so
// the client's cached mapping stays valid), from free budget, by freeing
// pooled segments, and by retiring complete versions that are neither the
// newest of their job nor leased. Otherwise Begin fails RESOURCE_EXHAUSTED:
// the only complete version of a job is never evicted, and a segment a
// committed version uses is never handed to a writer.
//
// Threading: every method must be called on `loop` (the daemon posts gRPC
// work there). Checksum verification runs on `workers`; its result is posted
// back to the loop. No method blocks on I/O except catalog writes, which are
// small and unsynced.
#ifndef HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_H_
#define HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "catalog/catalog.h"
#include "core/event_loop.h"
#include "core/segment_store.h"
#include "holdfast/ec/status.h"
#include "holdfast/v1/snapshot.pb.h"

namespace holdfast::smp {

struct ManagerOptions {
  std::string node_id = "node0";
  uint64_t memory_budget_bytes = uint64_t{8} << 30;
  int retain_versions = 2;
  uint64_t max_items = 1 << 20;
  std::chrono::seconds write_timeout{600};
  std::chrono::seconds lease_timeout{600};
  bool verify_on_commit = true;
};

// What Recover() found.
struct RecoveryReport {
  int versions_restored = 0;      // complete versions
  int partial_versions_kept = 0;  // newer than every complete one: may still complete
  int versions_discarded = 0;     // torn, missing segments or checksum mismatch
  int segments_removed = 0;       // files with our prefix that no version uses
  uint64_t bytes_restored = 0;
  std::string ToString() const;
};

class SnapshotManager {
 public:
  using CommitDone = std::function<void(Status, v1::CommitSnapshotResponse)>;
  using SessionSink = std::function<void(const v1::SessionEvent&)>;

  // `catalog`, `segments`, `workers` and `loop` must outlive the manager.
  SnapshotManager(ManagerOptions options, Catalog* catalog, const SegmentStore* segments,
                  WorkerPool* workers, EventLoop* loop);
  ~SnapshotManager();
  SnapshotManager(const SnapshotManager&) = delete;
  SnapshotManager& operator=(const SnapshotManager&) = delete;

  // Loads the catalog, reattaches and verifies every committed rank part,
  // keeps complete versions and partial ones newer than the newest complete
  // one (their other ranks may still commit), discards torn or damaged
  // versions, removes segments nobody uses. Call once, before serving (on any thread, the loop not
  // yet used).
  Result<RecoveryReport> Recover();

  // Starts the periodic expiry of abandoned writes and leases.
  void StartTimers();

  Status RegisterJob(const v1::RegisterJobRequest& req, v1::RegisterJobResponse* resp);
  // Returns the session id. CloseSession aborts the session's writes and
  // releases its leases.
  uint64_t OpenSession(const v1::OpenSessionRequest& req);
  void CloseSession(uint64_t session_id);

  Status Begin(const v1::BeginSnapshotRequest& req, v1::BeginSnapshotResponse* resp);
  // `done` runs on the loop once verified and recorded (or failed).
  void Commit(const v1::CommitSnapshotRequest& req, CommitDone done);
  Status Abort(const v1::AbortSnapshotRequest& req);
  Status List(const v1::ListVersionsRequest& req, v1::ListVersionsResponse* resp) const;
  Status OpenRestore(const v1::OpenRestoreRequest& req, v1::OpenRestoreResponse* resp);
  Status CloseRestore(const v1::CloseRestoreRequest& req);
  Status Drop(const v1::DropVersionsRequest& req, v1::DropVersionsResponse* resp);
  Status GetStatus(v1::GetStatusResponse* resp) const;

  // Expires writes and leases older than their timeouts; `now` for tests.
  void ExpireStale(std::chrono::steady_clock::time_point now);

  uint64_t memory_used() const { return used_bytes_; }

 private:
  struct RankPart;
  struct Version;
  struct Job;
  struct Write;
  struct Lease;

  Job* FindJob(const std::string& job_id);
  Status CheckRank(const Job& job, int rank) const;
  Result<Segment> AcquireSegment(Job& job, int rank, uint64_t bytes);
  void ReleaseSegment(Segment segment, const std::string& job_id, int rank);
  bool EvictOneVersion(const std::string& prefer_job);
  // Bytes EvictOneVersion could free: complete versions neither newest nor
  // leased.
  uint64_t EvictableBytes() const;
  void AbortWrite(uint64_t write_id, const char* why);
  void FinishCommit(uint64_t write_id, Status verified, int64_t verify_micros, CommitDone done);
  // Retention and cleanup after `job` gained a complete version: the batch
  // deletions are added to `batch`; the in-memory drop happens after the
  // batch is written (DropVersionNow).
  void PlanRetention(const Job& job, int64_t newest_complete, CatalogBatch* batch,
                     std::vector<int64_t>* to_drop) const;
  void DropVersionNow(Job& job, int64_t step);
  void TrimPool(uint64_t need);
  void FillVersionInfo(const Job& job, const Version& v, v1::VersionInfo* out) const;
  void ScheduleExpiry();

  const ManagerOptions options_;
  Catalog* const catalog_;
  const SegmentStore* const segments_;
  WorkerPool* const workers_;
  EventLoop* const loop_;

  std::map<std::string, std::unique_ptr<Job>> jobs_;
  std::map<uint64_t, std::unique_ptr<Write>> writes_;
  std::map<uint64_t, Lease> leases_;
  std::map<uint64_t, std::string> sessions_;  // id -> description for logs
  // Free segments kept mapped for reuse, by size.
  struct Pooled;
  std::multimap<uint64_t, Pooled> pool_;
  uint64_t pooled_bytes_ = 0;
  uint64_t used_bytes_ = 0;   // every mapped segment
  uint64_t next_id_ = 1;      // writes, leases, sessions
  uint64_t seg_id_next_ = 0;  // segment ids reserved from the catalog
  uint64_t seg_id_end_ = 0;
  bool timers_started_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_H_
