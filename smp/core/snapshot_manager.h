// The snapshot state machine of one holdfastd: jobs, versions, segments, the
// memory budget, restore leases, checksum verification, and recovery after a
// daemon restart.
//
// Version lifecycle (per job and step):
//
//   Begin (per rank)     Commit (per rank)                last local rank commits
//   ---------> WRITING ------------> [verifying] --> PARTIAL ----------------> COMPLETE
//                | abort, timeout,      | mismatch (kCommit), |                    | retention,
//                | session closed       | catalog write fails | a newer version    | drop,
//                v                      v                     | completes; a part  | eviction,
//        segment back to the pool  segment back to the pool   | found damaged      | a part found
//                                                             v                    v damaged
//                                 RETIRED: out of the catalog and of every answer; its
//                                 segments go back to the pool once no holder is left
//
// Verification (ManagerOptions::verify) checks the committed bytes against
// the checksums the client computed while writing them:
//   kCommit      the [verifying] step: Commit waits for it; a mismatch fails
//                the commit with DATA_LOSS and nothing is recorded.
//   kBackground  Commit records the rank part at once (the version may become
//                COMPLETE and be served) and answers; the part is verified on
//                the workers afterwards. A mismatch retires the whole version
//                (deleted from the catalog, counted in damaged_versions) and
//                the previous one is served again.
//   kOff         no verification while running.
// A version is *verified* once every committed rank part has been checked
// (at once in kCommit and kOff, and for versions Recover() restores, which it
// verifies). The client checks every byte again on restore in every mode.
//
// Only COMPLETE versions are served. A version is committed in the catalog
// with one atomic batch per rank commit; the batch of the last rank also
// writes the version record and retires versions beyond `retain_versions`.
// Retention keeps the newest `retain_versions` complete versions and, when
// none of those is verified yet, also the newest verified one, so that a
// damaged new version cannot leave its job without a good one; when a
// version becomes verified, retention runs again and that extra version goes.
// PARTIAL versions older than the newest COMPLETE one are discarded.
// A rank that commits a step it already committed in a PARTIAL version (its
// job crashed and every rank resumed from an older step) replaces its part.
//
// Holders: a restore lease and a running background verification each pin a
// version's segments. Retiring a version (retention, Drop, damage) removes it
// from the catalog and from every answer at once; if it is held, its
// segments go back to the pool only when the last holder is done. Eviction
// never picks a held version.
//
// Memory: every segment (written, committed or pooled for reuse) counts
// against the budget. Space for a new snapshot comes, in order, from a pooled
// segment of the same size (preferring the one the same rank used last, so
// the client's cached mapping stays valid), from free budget, by freeing
// pooled segments, and by retiring complete versions that are neither the
// newest of their job nor held (eviction may take the newest verified
// version while a newer one is still being verified: under memory pressure
// room wins). Otherwise Begin fails RESOURCE_EXHAUSTED: the only complete
// version of a job is never evicted, and a segment a committed version uses
// is never handed to a writer.
//
// Threading: every method must be called on `loop` (the daemon posts gRPC
// work there). Checksum verification runs on `workers`; its result is posted
// back to the loop. No method blocks on I/O except catalog writes, which are
// small and unsynced. The destructor cancels verification still running on
// the workers and waits for it; destroy the manager on the loop or after the
// loop has stopped (so that no posted result runs concurrently).
#ifndef HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_H_
#define HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "catalog/catalog.h"
#include "core/event_loop.h"
#include "core/segment_store.h"
#include "holdfast/ec/status.h"
#include "holdfast/v1/catalog.pb.h"
#include "holdfast/v1/snapshot.pb.h"

namespace holdfast::smp {

// When the daemon checks committed bytes against the client's checksums
// (see the top of this file).
enum class VerifyMode { kCommit, kBackground, kOff };

// "commit", "background", "off".
std::string_view VerifyModeName(VerifyMode mode);
// The inverse of VerifyModeName; INVALID_ARGUMENT naming the allowed values.
Result<VerifyMode> ParseVerifyMode(std::string_view name);

struct ManagerOptions {
  std::string node_id = "node0";
  uint64_t memory_budget_bytes = uint64_t{8} << 30;
  int retain_versions = 2;
  // Segments prepared ahead, in the background, for a rank whose Begin had
  // to create one (0-2; see PrepareSpares): its next Begins find them in
  // the pool instead of waiting for the kernel to zero new memory.
  int spare_segments = 2;
  uint64_t max_items = 1 << 20;
  std::chrono::seconds write_timeout{600};
  std::chrono::seconds lease_timeout{600};
  VerifyMode verify = VerifyMode::kBackground;
  // Per-job limits (docs/security.md, "Limits"). The quota counts a job's
  // versions (retired ones still held included) and its writes in flight;
  // 0 = none.
  uint64_t job_quota_bytes = 0;
  int max_writes_per_job = 64;
  int max_sessions_per_job = 256;
  int max_jobs = 4096;
};

// What Recover() found.
// A protection record found at recovery, with its parity segment mapped
// (docs/cluster.md). `pinned`: the local version of the same step is
// present and holds one pin for this record (see PinVersion), which the
// taker releases with UnpinVersion when it frees the protection.
struct RecoveredProtection {
  v1::ProtectionRecord record;
  Segment parity;  // invalid when record.parity_bytes() == 0
  bool pinned = false;
};

// A complete version's local bytes, for protection: its rank parts in rank
// order. The pointers stay valid while the version is pinned.
struct PinnedVersion {
  struct Part {
    const uint8_t* data = nullptr;
    uint64_t bytes = 0;  // the whole segment
  };
  std::vector<Part> parts;
  std::vector<v1::RankManifestRecord> manifests;  // same order
  uint64_t bytes = 0;                             // sum of parts' bytes
};

struct RecoveryReport {
  int versions_restored = 0;      // complete versions
  int partial_versions_kept = 0;  // newer than every complete one: may still complete
  int versions_discarded = 0;     // torn, missing segments or checksum mismatch
  // Complete versions beyond `retain_versions`: kept because newer ones were
  // still being verified in the background when the daemon stopped, or
  // because `retain_versions` is lower than in the previous run.
  int versions_retired = 0;
  int segments_removed = 0;  // files with our prefix that no version uses
  int protections_restored = 0;
  int protections_discarded = 0;  // parity segment missing or of the wrong size
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
  // Cancels verification still running on the workers and waits for it.
  ~SnapshotManager();
  SnapshotManager(const SnapshotManager&) = delete;
  SnapshotManager& operator=(const SnapshotManager&) = delete;

  // Loads the catalog, reattaches and verifies every committed rank part,
  // keeps complete versions and partial ones newer than the newest complete
  // one (their other ranks may still commit), discards torn or damaged
  // versions, removes segments nobody uses, and retires complete versions
  // beyond `retain_versions` (every restored version is verified). Call
  // once, before serving (on any thread, the loop not yet used).
  Result<RecoveryReport> Recover();

  // Starts the periodic expiry of abandoned writes and leases.
  void StartTimers();

  // `secret_hash` (SHA-256 of the job's secret, from the server layer) is
  // recorded with a new job, or with a registered one that has none yet.
  Status RegisterJob(const v1::RegisterJobRequest& req, v1::RegisterJobResponse* resp,
                     const std::string& secret_hash = {});
  // The job's recorded secret hash (empty: none yet); nullptr when the job
  // is not registered. Valid until the next call that changes jobs.
  const std::string* JobSecretHash(const std::string& job_id) const;
  // The job a restore lease belongs to; empty when no such lease.
  std::string LeaseJob(uint64_t lease_id) const;
  // RESOURCE_EXHAUSTED when `job_id` holds max_sessions_per_job sessions.
  Status CheckSessionLimit(const std::string& job_id) const;
  // Returns the session id. CloseSession aborts the session's writes and
  // releases its leases.
  uint64_t OpenSession(const v1::OpenSessionRequest& req);
  void CloseSession(uint64_t session_id);

  Status Begin(const v1::BeginSnapshotRequest& req, v1::BeginSnapshotResponse* resp);
  // `done` runs on the loop once recorded (or failed); in kCommit mode the
  // rank part is verified first, in kBackground it is verified afterwards.
  void Commit(const v1::CommitSnapshotRequest& req, CommitDone done);
  Status Abort(const v1::AbortSnapshotRequest& req);
  Status List(const v1::ListVersionsRequest& req, v1::ListVersionsResponse* resp) const;
  Status OpenRestore(const v1::OpenRestoreRequest& req, v1::OpenRestoreResponse* resp);
  Status CloseRestore(const v1::CloseRestoreRequest& req);
  Status Drop(const v1::DropVersionsRequest& req, v1::DropVersionsResponse* resp);
  Status GetStatus(v1::GetStatusResponse* resp) const;

  // ---- cluster protection (smp/protect, docs/cluster.md) ----

  // Pins a complete version against retention, eviction and reuse of its
  // segments until UnpinVersion; pins count. A pinned version is still
  // served and listed; Drop retires it, and its segments are freed when the
  // last pin (or lease) goes. NOT_FOUND when `step` is not complete locally.
  // `to_protect`: for a protection round, which must not protect a version
  // a resumed run abandoned (FAILED_PRECONDITION).
  Result<PinnedVersion> PinVersion(const std::string& job_id, int64_t step,
                                   bool to_protect = false);
  // Releases one pin; the version's retention is then planned again.
  void UnpinVersion(const std::string& job_id, int64_t step);

  // A new segment for parity or rebuilt bytes, counted against the memory
  // budget like snapshot segments (pooled segments are freed for room; no
  // version is evicted for it). RESOURCE_EXHAUSTED otherwise.
  Result<Segment> AllocateSegment(uint64_t bytes);
  // Removes the file of a segment AllocateSegment (or recovery) gave out and
  // returns its bytes to the budget; the caller's mapping stays valid until
  // it destroys the Segment (a reader may still hold it).
  void FreeSegment(const Segment& segment);
  // Gives a segment nobody else maps back to the pool, where
  // AllocateSegment finds it again (parity of the next protection round:
  // no new pages to fault in). Counted against the budget while pooled, like
  // spare snapshot segments, and freed first when room is needed.
  void RecycleSegment(Segment segment);

  // Records a version rebuilt from peers: registers the job with `job`'s
  // world size and local ranks when it is not registered, and records the
  // parts (segments from AllocateSegment, already written and checked by the
  // caller; manifests naming them) as a COMPLETE, verified version, pinned
  // once for the caller. On error the segments are freed. FAILED_PRECONDITION when the job is registered with
  // other ranks; ALREADY_EXISTS when the step exists locally.
  Status AdoptVersion(const v1::JobRecord& job, int64_t step,
                      std::vector<std::pair<v1::RankManifestRecord, Segment>> parts);

  // The scrub (smp/protect/scrub.h) found `step` damaged and could not
  // repair it: counted in damaged_versions and retired as background
  // verification does (deleted from the catalog at once, never served
  // again; its segments are freed when the last holder is done).
  // NOT_FOUND when it is not a live complete version.
  Status MarkDamaged(const std::string& job_id, int64_t step, const std::string& why);
  // The protection records Recover() found (once; later calls get none).
  std::vector<RecoveredProtection> TakeRecoveredProtections();

  // Steps complete locally, oldest first, with their bytes and ranks (for
  // the peer service's GroupState); every registered job, or only `job_id`.
  struct CompleteStep {
    int64_t step = 0;
    uint64_t bytes = 0;
    std::vector<int> ranks;
  };
  struct JobSummary {
    std::string job_id;
    int world_size = 0;
    std::vector<int> local_ranks;
    std::vector<CompleteStep> complete;
  };
  std::vector<JobSummary> Summaries(const std::string& job_id) const;

  // Set when the daemon is part of a cluster: OpenRestore(latest) and
  // LatestStep use the restore point the callback computes (-1: none yet)
  // instead of the newest local version. Runs on the loop; must not block.
  using RestorePointFn = std::function<int64_t(const std::string& job_id)>;
  void SetRestorePoint(RestorePointFn fn) { restore_point_ = std::move(fn); }
  // Whether (job, step) is protected by the group (List reports those
  // versions as VERSION_STATE_PROTECTED). Runs on the loop.
  using IsProtectedFn = std::function<bool(const std::string& job_id, int64_t step)>;
  void SetIsProtected(IsProtectedFn fn) { is_protected_ = std::move(fn); }

  // Expires writes and leases older than their timeouts; `now` for tests.
  void ExpireStale(std::chrono::steady_clock::time_point now);

  uint64_t memory_used() const { return used_bytes_; }
  // Committed rank parts whose background verification has not finished.
  int background_verifications() const { return background_verifications_; }

 private:
  struct Pooled;
  struct RankPart;
  struct Version;
  struct Job;
  struct Write;
  struct Lease;
  struct VerifyTasks;
  using VerifyDone = std::function<void(Status, int64_t micros)>;

  Job* FindJob(const std::string& job_id);
  Status CheckRank(const Job& job, int rank) const;
  // `created`: the segment is new (none of this size was pooled).
  Result<Segment> AcquireSegment(Job& job, int rank, uint64_t bytes, bool* created);
  // After the commit of a snapshot whose Begin had to create its segment of
  // `bytes`: creates up to options_.spare_segments more of that size for the
  // rank on spare_maker_ (off the loop) and pools them, while the budget
  // keeps room for one more such segment (and at least a quarter of the
  // budget) besides them. snapshot_manager_memory.cc.
  void PrepareSpares(const Job& job, int rank, uint64_t bytes);
  void FinishSpare(const std::string& job_id, int rank, uint64_t bytes, Result<Segment> made,
                   double millis);
  // Makes room for `bytes` more by freeing pooled segments; false if even
  // that is not enough.
  bool MakeRoomFromPool(uint64_t bytes);
  // Bytes counted against the job's quota: its versions' segments and its
  // writes in flight.
  uint64_t JobBytes(const Job& job) const;
  // AdoptVersion; on success the segments are moved out of `parts`.
  Status AdoptVersionImpl(const v1::JobRecord& job, int64_t step,
                          std::vector<std::pair<v1::RankManifestRecord, Segment>>& parts);
  Result<uint64_t> NextSegmentId();
  void ReleaseSegment(Segment segment, const std::string& job_id, int rank);
  bool EvictOneVersion(const std::string& prefer_job);
  // Bytes EvictOneVersion could free: complete versions neither newest nor
  // held.
  uint64_t EvictableBytes() const;
  void AbortWrite(uint64_t write_id, const char* why);
  void FinishCommit(uint64_t write_id, Status verified, int64_t verify_micros, CommitDone done);
  // Why a rank cannot write or commit `step` of `job`, a retired version.
  static Status RetiredStepError(const Job& job, const Version& version);
  // A session that had not written restored `step`: marks the job's newer
  // complete versions abandoned (Version::abandoned) when that is a resume.
  void MarkAbandonedByResume(Job& job, int64_t step, uint64_t session_id);

  // Checksums every item of `manifest` in `segment` on the workers, items
  // spread across them; `done` runs on the loop unless the manager is gone by
  // then. The caller keeps the mapping and the manifest alive, in place and
  // unchanged until `done` runs.
  void VerifyOnWorkers(const Segment& segment, const v1::RankManifestRecord& manifest,
                       VerifyDone done);
  // kBackground: verifies a committed rank part, pinning its version.
  void StartBackgroundVerify(Job& job, int64_t step, int rank);
  void FinishBackgroundVerify(const std::string& job_id, int64_t step, int rank, Status result,
                              int64_t micros);
  // Counts `version` as damaged and retires it (catalog deletion, logged on
  // failure: a restart would discard it anyway). The caller frees it with
  // DropVersionNow.
  void RetireDamaged(Job& job, Version& version);

  // Retention after `job` gained a complete version `newest` (verified or
  // not: a version completing now is not in `job` as complete yet): the
  // deletions are added to `batch`, the steps to `to_drop`, to be dropped in
  // memory after the batch is written (DropVersionNow).
  void PlanRetention(const Job& job, int64_t newest, bool newest_verified, CatalogBatch* batch,
                     std::vector<int64_t>* to_drop) const;
  // PlanRetention for the job's newest complete version, written and applied
  // (after a version became verified).
  void RunRetention(Job& job);
  // Frees a version, or retires it until its holders are done.
  void DropVersionNow(Job& job, int64_t step);
  void TrimPool(uint64_t need);
  // Deletes a pooled segment's file and its accounting.
  void RemovePooled(std::multimap<uint64_t, Pooled>::iterator it);
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
  struct SessionInfo {
    std::string description;  // for logs
    std::string job_id;
    // The lease id of the session's first restore before its first write
    // (0: none). Ids come from one counter, so a part of an incomplete
    // version begun before it (a smaller write id) was written by an earlier
    // run of the job, which this one resumed from before that step: the
    // session's commits discard such parts (see FinishCommit).
    uint64_t resumed_at = 0;
    bool wrote = false;
  };
  std::map<uint64_t, SessionInfo> sessions_;
  // Free segments kept mapped for reuse, by size.
  std::multimap<uint64_t, Pooled> pool_;
  uint64_t pooled_bytes_ = 0;
  uint64_t used_bytes_ = 0;   // every mapped segment
  uint64_t next_id_ = 1;      // writes, leases, sessions
  uint64_t seg_id_next_ = 0;  // segment ids reserved from the catalog
  uint64_t seg_id_end_ = 0;
  bool timers_started_ = false;
  int background_verifications_ = 0;  // rank parts
  uint64_t damaged_versions_ = 0;
  // Verification tasks on the workers, for the destructor to cancel and
  // await; shared with the tasks, which touch it last.
  std::shared_ptr<VerifyTasks> verify_tasks_;
  // Spare segments being made (PrepareSpares): their bytes are in
  // used_bytes_ already; per (job, rank), how many.
  uint64_t spare_bytes_in_flight_ = 0;
  std::map<std::pair<std::string, int>, int> spares_in_flight_;
  std::atomic<bool> stopping_spares_{false};
  std::unique_ptr<WorkerPool> spare_maker_;  // one thread; made on first use
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::vector<RecoveredProtection> recovered_protections_;
  RestorePointFn restore_point_;
  IsProtectedFn is_protected_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_H_
