#include "core/snapshot_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "core/failpoint.h"
#include "core/items.h"
#include "core/snapshot_manager_internal.h"

namespace holdfast::smp {

using manager_internal::kPage;
using manager_internal::MiB;
using manager_internal::MiBText;
using manager_internal::RanksToString;
using manager_internal::UnixMicros;
using manager_internal::VerifyItems;

SnapshotManager::SnapshotManager(ManagerOptions options, Catalog* catalog,
                                 const SegmentStore* segments, WorkerPool* workers, EventLoop* loop)
    : options_(std::move(options)),
      catalog_(catalog),
      segments_(segments),
      workers_(workers),
      loop_(loop),
      verify_tasks_(std::make_shared<VerifyTasks>()) {}

SnapshotManager::~SnapshotManager() {
  *alive_ = false;
  // A spare being made finishes (its file is removed: see PrepareSpares);
  // queued ones are skipped.
  stopping_spares_ = true;
  spare_maker_.reset();
  // The tasks read segments this manager maps (and unmaps on destruction).
  verify_tasks_->CancelAndWait();
}

// ---- jobs and sessions -----------------------------------------------------------

SnapshotManager::Job* SnapshotManager::FindJob(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

Status SnapshotManager::CheckRank(const Job& job, int rank) const {
  if (!job.local_ranks.count(rank)) {
    return Status::InvalidArgument("rank " + std::to_string(rank) + " is not a local rank of job " +
                                   job.record.job_id() + " on this node (local ranks " +
                                   RanksToString(job.local_ranks) + ")");
  }
  return Status::Ok();
}

Status SnapshotManager::RegisterJob(const v1::RegisterJobRequest& req,
                                    v1::RegisterJobResponse* resp,
                                    const std::string& secret_hash) {
  HOLDFAST_RETURN_IF_ERROR(ValidateJobId(req.job_id()));
  if (req.world_size() < 1) {
    return Status::InvalidArgument("world size must be >= 1, got " +
                                   std::to_string(req.world_size()));
  }
  if (req.local_ranks_size() > kMaxLocalRanks) {
    return Status::InvalidArgument(std::to_string(req.local_ranks_size()) +
                                   " local ranks, the limit is " + std::to_string(kMaxLocalRanks));
  }
  std::set<int> ranks;
  for (int r : req.local_ranks()) {
    if (r < 0 || r >= req.world_size()) {
      return Status::InvalidArgument("local rank " + std::to_string(r) +
                                     " is outside the world size " +
                                     std::to_string(req.world_size()));
    }
    if (!ranks.insert(r).second) {
      return Status::InvalidArgument("local rank " + std::to_string(r) + " is listed twice");
    }
  }
  if (ranks.empty()) return Status::InvalidArgument("a job needs at least one local rank");
  resp->set_retain_versions(options_.retain_versions);

  if (Job* job = FindJob(req.job_id())) {
    if (job->record.world_size() != req.world_size() || job->local_ranks != ranks) {
      return Status::FailedPrecondition("job " + req.job_id() + " is registered with world size " +
                                        std::to_string(job->record.world_size()) +
                                        " and local ranks " + RanksToString(job->local_ranks) +
                                        "; drop it to register it differently");
    }
    if (job->record.secret_hash().empty() && !secret_hash.empty()) {
      v1::JobRecord record = job->record;
      record.set_secret_hash(secret_hash);
      CatalogBatch batch;
      batch.put_jobs.push_back(record);
      HOLDFAST_RETURN_IF_ERROR(catalog_->Apply(batch).WithContext("catalog"));
      job->record = std::move(record);
      spdlog::info("job {}: secret recorded", req.job_id());
    }
    return Status::Ok();
  }
  if (static_cast<int64_t>(jobs_.size()) >= options_.max_jobs) {
    return Status::ResourceExhausted("the daemon holds " + std::to_string(jobs_.size()) +
                                     " jobs, its limit (jobs.max); drop finished jobs first");
  }
  auto job = std::make_unique<Job>();
  job->record.set_job_id(req.job_id());
  job->record.set_world_size(req.world_size());
  for (int r : ranks) job->record.add_local_ranks(r);
  job->record.set_secret_hash(secret_hash);
  job->local_ranks = ranks;
  CatalogBatch batch;
  batch.put_jobs.push_back(job->record);
  HOLDFAST_RETURN_IF_ERROR(catalog_->Apply(batch).WithContext("catalog"));
  spdlog::info("registered job {} (world size {}, local ranks {})", req.job_id(), req.world_size(),
               RanksToString(ranks));
  jobs_[req.job_id()] = std::move(job);
  return Status::Ok();
}

const std::string* SnapshotManager::JobSecretHash(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second->record.secret_hash();
}

std::string SnapshotManager::LeaseJob(uint64_t lease_id) const {
  auto it = leases_.find(lease_id);
  return it == leases_.end() ? std::string() : it->second.job_id;
}

Status SnapshotManager::CheckSessionLimit(const std::string& job_id) const {
  int64_t open = 0;
  for (const auto& [id, info] : sessions_) open += info.job_id == job_id;
  if (open >= options_.max_sessions_per_job) {
    return Status::ResourceExhausted("job " + job_id + " holds " + std::to_string(open) +
                                     " sessions, its limit (jobs.max_sessions)");
  }
  return Status::Ok();
}

uint64_t SnapshotManager::JobBytes(const Job& job) const {
  uint64_t bytes = 0;
  for (const auto& [step, v] : job.versions) {
    for (const auto& [rank, part] : v.parts) bytes += part.segment.bytes();
  }
  for (const auto& [id, w] : writes_) {
    if (w->job_id == job.record.job_id()) bytes += w->segment.bytes();
  }
  return bytes;
}

uint64_t SnapshotManager::OpenSession(const v1::OpenSessionRequest& req) {
  const uint64_t id = next_id_++;
  sessions_[id].job_id = req.job_id();
  sessions_[id].description = "job " + req.job_id() + " rank " + std::to_string(req.rank()) +
                              " pid " + std::to_string(req.pid());
  spdlog::debug("session {} opened: {}", id, sessions_[id].description);
  return id;
}

void SnapshotManager::CloseSession(uint64_t session_id) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  std::vector<uint64_t> writes;
  for (const auto& [id, w] : writes_) {
    if (w->session == session_id) writes.push_back(id);
  }
  for (uint64_t id : writes) AbortWrite(id, "client session closed");
  std::vector<uint64_t> leases;
  for (const auto& [id, l] : leases_) {
    if (l.session == session_id) leases.push_back(id);
  }
  for (uint64_t id : leases) {
    v1::CloseRestoreRequest req;
    req.set_lease_id(id);
    req.set_verified(true);
    (void)CloseRestore(req);
  }
  spdlog::debug("session {} closed ({}): {} writes aborted, {} leases released", session_id,
                it->second.description, writes.size(), leases.size());
  sessions_.erase(it);
}

// ---- writing -------------------------------------------------------------------------

Status SnapshotManager::Begin(const v1::BeginSnapshotRequest& req,
                              v1::BeginSnapshotResponse* resp) {
  Job* job = FindJob(req.job_id());
  if (job == nullptr) return Status::NotFound("job " + req.job_id() + " is not registered");
  HOLDFAST_RETURN_IF_ERROR(CheckRank(*job, req.rank()));
  if (req.step() < 0) {
    return Status::InvalidArgument("step must be >= 0, got " + std::to_string(req.step()));
  }
  int64_t newest = job->NewestComplete();
  if (req.step() <= newest && restore_point_) {
    // In a cluster a job resumes from its restore point, which may be older
    // than the newest local version: local versions from the restore point
    // on are from an abandoned run and make way (protected ones stay until
    // protection frees them, but no longer count as newer).
    const int64_t restore_point = restore_point_(req.job_id());
    if (req.step() > restore_point) {
      std::vector<int64_t> abandoned;
      for (const auto& [step, v] : job->versions) {
        if (step >= req.step() && v.complete && !v.retired) abandoned.push_back(step);
      }
      CatalogBatch batch;
      for (int64_t step : abandoned) batch.delete_versions.push_back({req.job_id(), step});
      HOLDFAST_RETURN_IF_ERROR(catalog_->Apply(batch).WithContext("catalog"));
      for (int64_t step : abandoned) {
        spdlog::info("job {} resumed before step {} (restore point {}): dropping it", req.job_id(),
                     step, restore_point);
        DropVersionNow(*job, step);
        if (auto it = job->versions.find(step); it != job->versions.end()) it->second.retired = true;
      }
      newest = job->NewestComplete();
    }
  }
  if (req.step() <= newest) {
    return Status::FailedPrecondition("step " + std::to_string(req.step()) +
                                      " is not newer than the latest complete step " +
                                      std::to_string(newest) + " of job " + req.job_id());
  }
  if (auto v = job->versions.find(req.step()); v != job->versions.end()) {
    // A retired version still held (read, or verified) keeps its step.
    if (v->second.retired) return RetiredStepError(*job, v->second);
    // A rank that committed this step in a version that never completed
    // (its job crashed, and the ranks resumed from an older step) redoes it:
    // its commit replaces the earlier part.
    if (v->second.parts.count(req.rank())) {
      if (v->second.complete) {
        return Status::AlreadyExists("rank " + std::to_string(req.rank()) +
                                     " already committed step " + std::to_string(req.step()) +
                                     " of job " + req.job_id());
      }
      if (v->second.Held()) {
        return Status::Unavailable("the earlier part of step " + std::to_string(req.step()) +
                                   " of job " + req.job_id() +
                                   " is still being verified; retry in a moment");
      }
    }
  }
  SessionInfo* session = nullptr;
  if (req.session_id() != 0) {
    auto s = sessions_.find(req.session_id());
    if (s == sessions_.end()) {
      return Status::NotFound("session " + std::to_string(req.session_id()) + " is not open");
    }
    session = &s->second;
  }
  // One write per rank at a time: a newer Begin replaces an unfinished one
  // (the client moved on, or restarted).
  for (auto& [id, w] : writes_) {
    if (w->job_id == req.job_id() && w->rank == req.rank()) {
      if (w->verifying) {
        return Status::FailedPrecondition("rank " + std::to_string(req.rank()) +
                                          " is committing step " + std::to_string(w->step));
      }
      AbortWrite(id, "superseded by a new snapshot of the same rank");
      break;
    }
  }

  HOLDFAST_ASSIGN_OR_RETURN(ItemPlacement placement, PlaceItems(req.items(), options_.max_items,
                                                                options_.memory_budget_bytes));
  const uint64_t bytes = std::max<uint64_t>(kPage, (placement.end + kPage - 1) & ~(kPage - 1));
  int64_t job_writes = 0;
  for (const auto& [id, w] : writes_) job_writes += w->job_id == req.job_id();
  if (job_writes >= options_.max_writes_per_job) {
    return Status::ResourceExhausted("job " + req.job_id() + " has " + std::to_string(job_writes) +
                                     " snapshots open for writing, its limit (jobs.max_writes)");
  }
  if (options_.job_quota_bytes != 0) {
    const uint64_t in_use = JobBytes(*job);
    if (in_use + bytes > options_.job_quota_bytes) {
      return Status::ResourceExhausted(
          "snapshot of step " + std::to_string(req.step()) + " needs " + MiBText(bytes) +
          " but job " + req.job_id() + " uses " + MiBText(in_use) + " of its quota " +
          MiBText(options_.job_quota_bytes) +
          " (jobs.quota); commit or abort open snapshots, or drop versions");
    }
  }
  bool created = false;
  HOLDFAST_ASSIGN_OR_RETURN(Segment seg, AcquireSegment(*job, req.rank(), bytes, &created));

  auto w = std::make_unique<Write>();
  w->id = next_id_++;
  w->job_id = req.job_id();
  w->rank = req.rank();
  w->step = req.step();
  w->session = req.session_id();
  if (session != nullptr) {
    session->wrote = true;
    w->resumed_at = session->resumed_at;
  }
  w->started = Clock::now();
  w->manifest.set_job_id(req.job_id());
  w->manifest.set_step(req.step());
  w->manifest.set_rank(req.rank());
  w->manifest.set_segment_name(seg.name());
  w->manifest.set_segment_bytes(seg.bytes());
  for (int i = 0; i < req.items_size(); ++i) {
    v1::Item* item = w->manifest.add_items();
    *item->mutable_spec() = req.items(i);
    item->set_offset(placement.offsets[i]);
    resp->add_offsets(placement.offsets[i]);
  }
  resp->set_write_id(w->id);
  resp->mutable_segment()->set_path(seg.path());
  resp->mutable_segment()->set_bytes(seg.bytes());
  spdlog::debug("begin job {} step {} rank {}: {} items, {:.1f} MiB in {}", req.job_id(),
                req.step(), req.rank(), req.items_size(), MiB(placement.end), seg.name());
  w->segment = std::move(seg);
  w->new_segment = created;
  writes_[w->id] = std::move(w);
  return Status::Ok();
}

void SnapshotManager::AbortWrite(uint64_t write_id, const char* why) {
  auto it = writes_.find(write_id);
  if (it == writes_.end()) return;
  Write& w = *it->second;
  if (w.verifying) {
    w.aborted = true;  // FinishCommit frees it when verification returns
    return;
  }
  spdlog::info("aborted snapshot of job {} step {} rank {}: {}", w.job_id, w.step, w.rank, why);
  ReleaseSegment(std::move(w.segment), w.job_id, w.rank);
  writes_.erase(it);
}

Status SnapshotManager::Abort(const v1::AbortSnapshotRequest& req) {
  auto it = writes_.find(req.write_id());
  if (it == writes_.end() || it->second->job_id != req.job_id() || it->second->rank != req.rank()) {
    return Status::NotFound("no snapshot in progress with write id " +
                            std::to_string(req.write_id()) + " for job " + req.job_id() + " rank " +
                            std::to_string(req.rank()));
  }
  AbortWrite(req.write_id(), "aborted by the client");
  return Status::Ok();
}

void SnapshotManager::Commit(const v1::CommitSnapshotRequest& req, CommitDone done) {
  auto fail = [&](Status s) { done(std::move(s), {}); };
  auto it = writes_.find(req.write_id());
  if (it == writes_.end()) {
    return fail(Status::NotFound("no snapshot in progress with write id " +
                                 std::to_string(req.write_id()) +
                                 " (aborted, expired or superseded)"));
  }
  Write& w = *it->second;
  if (w.job_id != req.job_id()) {
    // Another job's write: say nothing about it.
    return fail(Status::NotFound("no snapshot in progress with write id " +
                                 std::to_string(req.write_id()) + " for job " + req.job_id()));
  }
  if (w.rank != req.rank() || w.step != req.step()) {
    return fail(Status::InvalidArgument(
        "write id " + std::to_string(req.write_id()) + " belongs to job " + w.job_id + " rank " +
        std::to_string(w.rank) + " step " + std::to_string(w.step)));
  }
  if (w.verifying) return fail(Status::FailedPrecondition("commit already in progress"));
  if (req.checksums_size() != w.manifest.items_size()) {
    return fail(Status::InvalidArgument("commit carries " + std::to_string(req.checksums_size()) +
                                        " checksums for " +
                                        std::to_string(w.manifest.items_size()) + " items"));
  }
  for (int i = 0; i < req.checksums_size(); ++i) {
    w.manifest.mutable_items(i)->set_checksum(req.checksums(i));
  }
  if (options_.verify != VerifyMode::kCommit) {
    FinishCommit(w.id, Status::Ok(), 0, std::move(done));
    return;
  }

  // The write (and its mapping) cannot go away meanwhile: AbortWrite only
  // marks a verifying write.
  w.verifying = true;
  const uint64_t write_id = w.id;
  auto shared_done = std::make_shared<CommitDone>(std::move(done));
  VerifyOnWorkers(w.segment, w.manifest, [this, write_id, shared_done](Status s, int64_t micros) {
    FinishCommit(write_id, std::move(s), micros, std::move(*shared_done));
  });
}

void SnapshotManager::FinishCommit(uint64_t write_id, Status verified, int64_t verify_micros,
                                   CommitDone done) {
  auto it = writes_.find(write_id);
  if (it == writes_.end()) {
    done(Status::Aborted("snapshot was aborted during commit"), {});
    return;
  }
  Write& w = *it->second;
  w.verifying = false;
  if (w.aborted) {
    AbortWrite(write_id, "aborted while committing");
    done(Status::Aborted("snapshot was aborted during commit (client session closed?)"), {});
    return;
  }
  auto reject = [&](Status s) {
    spdlog::error("commit of job {} step {} rank {} failed: {}", w.job_id, w.step, w.rank,
                  s.ToString());
    AbortWrite(write_id, "commit failed");
    done(std::move(s), {});
  };
  if (!verified.ok()) {
    return reject(Status::DataLoss(verified.message() +
                                   ": the bytes in shared memory differ from what the client "
                                   "checksummed (written out of bounds or changed during commit)"));
  }
  HOLDFAST_FAILPOINT("commit.after_verify");
  Job* job = FindJob(w.job_id);
  if (job == nullptr) return reject(Status::NotFound("job " + w.job_id + " was dropped"));
  const int64_t newest = job->NewestComplete();
  if (w.step <= newest) {
    return reject(Status::FailedPrecondition("step " + std::to_string(w.step) +
                                             " is no longer newer than the latest complete "
                                             "step " +
                                             std::to_string(newest)));
  }
  Version& version = job->versions[w.step];
  version.step = w.step;
  if (version.retired) return reject(RetiredStepError(*job, version));
  // Redoing a step of a version that never completed replaces the rank's
  // earlier part (see Begin).
  const bool replacing = version.parts.count(w.rank) > 0;
  if (replacing && version.complete) {
    return reject(Status::AlreadyExists("rank " + std::to_string(w.rank) +
                                        " already committed step " + std::to_string(w.step)));
  }
  if (replacing && version.Held()) {
    return reject(Status::Unavailable("the earlier part of step " + std::to_string(w.step) +
                                      " is still being verified; retry in a moment"));
  }

  // Parts of this incomplete step that other ranks began before this rank
  // resumed from an older step belong to the abandoned run: completing the
  // version with them would mix two runs' states. They make way.
  std::vector<int> stale;
  if (w.resumed_at != 0) {
    for (const auto& [r, part] : version.parts) {
      if (r != w.rank && part.write_id < w.resumed_at) stale.push_back(r);
    }
  }
  if (!stale.empty() && version.Held()) {
    return reject(Status::Unavailable("a part of step " + std::to_string(w.step) +
                                      " from an earlier run is still being verified; retry in a "
                                      "moment"));
  }
  const size_t others = version.parts.size() - (replacing ? 1 : 0) - stale.size();
  const bool complete = others + 1 == job->local_ranks.size();
  // In kBackground this part is checked after the commit; otherwise it was
  // checked above, or is never checked while running (kOff).
  const bool part_verified = options_.verify != VerifyMode::kBackground;
  const int64_t now = UnixMicros();
  w.manifest.set_committed_unix_micros(now);
  CatalogBatch batch;
  batch.put_manifests.push_back(w.manifest);
  for (int r : stale) batch.delete_parts.push_back({w.job_id, w.step, r});
  std::vector<int64_t> to_drop;
  if (complete) {
    v1::VersionRecord rec;
    rec.set_job_id(w.job_id);
    rec.set_step(w.step);
    rec.set_completed_unix_micros(now);
    batch.put_versions.push_back(rec);
    PlanRetention(*job, w.step, part_verified && version.Verified(), &batch, &to_drop);
  }
  HOLDFAST_FAILPOINT("commit.before_catalog");
  const auto t_catalog = Clock::now();
  if (Status s = catalog_->Apply(batch); !s.ok()) {
    if (version.parts.empty()) job->versions.erase(w.step);
    return reject(Status::Unavailable("catalog write failed: " + s.ToString()));
  }
  const double catalog_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - t_catalog).count();
  HOLDFAST_FAILPOINT("commit.after_catalog");

  const uint64_t bytes = w.segment.bytes();
  const int items = w.manifest.items_size();
  job->last_segment[w.rank] = w.segment.name();
  if (replacing) {
    // The catalog batch overwrote the earlier manifest; its segment is free.
    spdlog::info("job {} step {} rank {}: replacing the part committed before a restart",
                 w.job_id, w.step, w.rank);
    ReleaseSegment(std::move(version.parts[w.rank].segment), w.job_id, w.rank);
  }
  for (int r : stale) {
    spdlog::warn("job {} step {}: discarding rank {}'s part, committed by an earlier run before "
                 "rank {} resumed from an older step",
                 w.job_id, w.step, r, w.rank);
    ReleaseSegment(std::move(version.parts[r].segment), w.job_id, r);
    version.parts.erase(r);
  }
  version.parts[w.rank] =
      RankPart{std::move(w.segment), std::move(w.manifest), part_verified, w.id};
  const int rank = w.rank;
  const int64_t step = w.step;
  const bool new_segment = w.new_segment;
  writes_.erase(it);
  if (complete) {
    version.complete = true;
    version.completed_micros = now;
    for (int64_t old : to_drop) DropVersionNow(*job, old);
  }
  if (!part_verified) StartBackgroundVerify(*job, step, rank);
  // After the commit, not at the Begin: made while the trainer computes its
  // next step instead of beside its copy, which they would slow.
  if (new_segment) PrepareSpares(*job, rank, bytes);
  spdlog::info(
      "commit job {} step {} rank {}: {} items, {:.1f} MiB, verify {}, catalog {:.2f} ms{}",
      job->record.job_id(), step, rank, items, MiB(bytes),
      options_.verify == VerifyMode::kCommit ? fmt::format("{:.2f} ms", verify_micros / 1000.0)
                                             : std::string(VerifyModeName(options_.verify)),
      catalog_ms, complete ? ", version complete" : "");
  v1::CommitSnapshotResponse resp;
  resp.set_version_complete(complete);
  resp.set_verify_micros(verify_micros);
  done(Status::Ok(), resp);
}

Status SnapshotManager::RetiredStepError(const Job& job, const Version& version) {
  return Status::FailedPrecondition(
      "step " + std::to_string(version.step) + " of job " + job.record.job_id() + " was " +
      (version.damaged ? "discarded: a rank's committed part failed checksum verification"
                       : "dropped") +
      " while its other ranks were still committing it; save a newer step");
}

void SnapshotManager::PlanRetention(const Job& job, int64_t newest, bool newest_verified,
                                    CatalogBatch* batch, std::vector<int64_t>* to_drop) const {
  int kept = 1;  // `newest`
  bool kept_verified = newest_verified;
  for (auto it = job.versions.rbegin(); it != job.versions.rend(); ++it) {
    const Version& v = it->second;
    if (it->first >= newest || v.retired) continue;
    // Pinned by cluster protection: kept outside the count (the protected
    // version a job falls back to after a node loss).
    if (v.pins > 0) continue;
    // Older complete versions beyond the retention count, and every partial
    // version older than the newest (it can no longer become the newest)...
    if (v.complete && kept < options_.retain_versions) {
      ++kept;
      kept_verified = kept_verified || v.Verified();
      continue;
    }
    // ...except the newest verified version while none of the kept ones is
    // verified: if they all turn out damaged, it is what the job has left.
    if (v.complete && !kept_verified && v.Verified()) {
      kept_verified = true;
      continue;
    }
    batch->delete_versions.push_back({job.record.job_id(), it->first});
    to_drop->push_back(it->first);
  }
}

void SnapshotManager::RunRetention(Job& job) {
  const int64_t newest = job.NewestComplete();
  if (newest < 0) return;
  CatalogBatch batch;
  std::vector<int64_t> to_drop;
  PlanRetention(job, newest, job.versions.at(newest).Verified(), &batch, &to_drop);
  if (batch.empty()) return;
  if (Status s = catalog_->Apply(batch); !s.ok()) {
    // Harmless: the next commit of the job plans retention again.
    spdlog::error("retention of job {} failed: {}", job.record.job_id(), s.ToString());
    return;
  }
  for (int64_t step : to_drop) DropVersionNow(job, step);
}

void SnapshotManager::DropVersionNow(Job& job, int64_t step) {
  auto it = job.versions.find(step);
  if (it == job.versions.end()) return;
  Version& v = it->second;
  if (v.Held()) {
    v.retired = true;  // freed when the last lease closes and verification ends
    return;
  }
  for (auto& [rank, part] : v.parts) {
    ReleaseSegment(std::move(part.segment), job.record.job_id(), rank);
  }
  job.versions.erase(it);
}

// ---- reading ---------------------------------------------------------------------------

void SnapshotManager::FillVersionInfo(const Job& job, const Version& v,
                                      v1::VersionInfo* out) const {
  out->set_job_id(job.record.job_id());
  out->set_step(v.step);
  out->set_state(v.complete ? v1::VERSION_STATE_COMPLETE : v1::VERSION_STATE_PARTIAL);
  if (v.complete && is_protected_ && is_protected_(job.record.job_id(), v.step)) {
    out->set_state(v1::VERSION_STATE_PROTECTED);
  }
  uint64_t bytes = 0;
  uint32_t items = 0;
  int64_t committed = v.completed_micros;
  for (const auto& [rank, part] : v.parts) {
    out->add_committed_ranks(rank);
    bytes += part.segment.bytes();
    items += part.manifest.items_size();
    committed = std::max(committed, part.manifest.committed_unix_micros());
  }
  out->set_bytes(bytes);
  out->set_items(items);
  out->set_committed_unix_micros(committed);
  out->set_leases(v.leases);
}

Status SnapshotManager::List(const v1::ListVersionsRequest& req,
                             v1::ListVersionsResponse* resp) const {
  if (!req.job_id().empty() && !jobs_.count(req.job_id())) {
    return Status::NotFound("job " + req.job_id() + " is not registered");
  }
  for (const auto& [id, job] : jobs_) {
    if (!req.job_id().empty() && id != req.job_id()) continue;
    for (const auto& [step, v] : job->versions) {
      if (!v.retired) FillVersionInfo(*job, v, resp->add_versions());
    }
    if (restore_point_) {
      auto* rp = resp->add_restore_points();
      rp->set_job_id(id);
      rp->set_step(restore_point_(id));
    }
  }
  return Status::Ok();
}

Status SnapshotManager::OpenRestore(const v1::OpenRestoreRequest& req,
                                    v1::OpenRestoreResponse* resp) {
  Job* job = FindJob(req.job_id());
  if (job == nullptr) return Status::NotFound("job " + req.job_id() + " is not registered");
  HOLDFAST_RETURN_IF_ERROR(CheckRank(*job, req.rank()));
  int64_t step = req.step();
  if (req.latest()) {
    step = job->NewestComplete();
    if (restore_point_) {
      // In a cluster: the restore point every node agrees on, not the newest
      // local version (which may not be protected yet).
      step = restore_point_(req.job_id());
      if (step < 0) {
        return Status::NotFound("job " + req.job_id() +
                                " has no restore point yet: no step is protected in every group");
      }
      auto it = job->versions.find(step);
      if (it == job->versions.end() || !it->second.complete || it->second.retired) {
        return Status::Unavailable("job " + req.job_id() + " restore point " +
                                   std::to_string(step) +
                                   " is not on this node yet (rebuilding); retry");
      }
    }
  }
  auto vit = job->versions.find(step);
  if (vit == job->versions.end() || !vit->second.complete || vit->second.retired) {
    return Status::NotFound(req.latest()
                                ? "job " + req.job_id() + " has no complete version"
                                : "job " + req.job_id() + " has no complete version at step " +
                                      std::to_string(step));
  }
  Version& v = vit->second;
  const RankPart& part = v.parts.at(req.rank());
  if (req.names_size() == 0) {
    *resp->mutable_items() = part.manifest.items();
  } else {
    std::map<std::string_view, const v1::Item*> by_name;
    for (const v1::Item& item : part.manifest.items()) by_name[item.spec().name()] = &item;
    for (const std::string& name : req.names()) {
      auto found = by_name.find(name);
      if (found == by_name.end()) {
        return Status::NotFound("no item '" + name + "' in job " + req.job_id() + " step " +
                                std::to_string(step) + " rank " + std::to_string(req.rank()));
      }
      *resp->add_items() = *found->second;
    }
  }
  const uint64_t id = next_id_++;
  leases_[id] = Lease{req.job_id(), step, req.rank(), req.session_id(), Clock::now()};
  if (auto s = sessions_.find(req.session_id()); s != sessions_.end()) {
    SessionInfo& session = s->second;
    if (!session.wrote && session.resumed_at == 0) {
      session.resumed_at = id;
      if (req.resume()) MarkAbandonedByResume(*job, step, req.session_id());
    }
  }
  ++v.leases;
  resp->set_lease_id(id);
  resp->set_step(step);
  resp->mutable_segment()->set_path(part.segment.path());
  resp->mutable_segment()->set_bytes(part.segment.bytes());
  spdlog::info("restore job {} step {} rank {}: {} items from {} (lease {})", req.job_id(), step,
               req.rank(), resp->items_size(), part.segment.name(), id);
  return Status::Ok();
}

void SnapshotManager::MarkAbandonedByResume(Job& job, int64_t step, uint64_t session_id) {
  // Only a trainer's restore resumes (OpenRestoreRequest.resume: a tool
  // that checks the restore point between two saves must not stop the next
  // step's protection, as the chaos suite's budget fault showed), and only
  // a restart of the job: beside a running trainer (one of the job's
  // sessions here has written) nothing is abandoned. And only in a cluster,
  // from the restore point, where Begin drops the newer steps as an
  // abandoned run's anyway.
  if (!restore_point_ || step != restore_point_(job.record.job_id())) return;
  for (const auto& [id, other] : sessions_) {
    if (id != session_id && other.job_id == job.record.job_id() && other.wrote) return;
  }
  // Marked now, not at the Begin: another member's rank of the resumed run
  // may commit step + 1 before this rank begins it (a collective in the
  // step orders every rank's restore before any commit), and the group must
  // not protect that with this node's step + 1 of the old run.
  for (auto it = job.versions.upper_bound(step); it != job.versions.end(); ++it) {
    Version& v = it->second;
    if (!v.complete || v.retired || v.abandoned) continue;
    v.abandoned = true;
    spdlog::info("job {} resumed from step {}: its step {} here is from the earlier run; it is "
                 "not protected, and goes when the job saves a step up to it",
                 job.record.job_id(), step, it->first);
  }
}

Status SnapshotManager::CloseRestore(const v1::CloseRestoreRequest& req) {
  auto it = leases_.find(req.lease_id());
  if (it == leases_.end()) {
    return Status::NotFound("no restore lease " + std::to_string(req.lease_id()) +
                            " (closed or expired)");
  }
  const Lease lease = it->second;
  leases_.erase(it);
  Job* job = FindJob(lease.job_id);
  if (job == nullptr) return Status::Ok();
  auto vit = job->versions.find(lease.step);
  if (vit == job->versions.end()) return Status::Ok();
  Version& v = vit->second;
  --v.leases;
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - lease.started).count();
  spdlog::info("restore job {} step {} rank {} closed after {:.1f} ms{}", lease.job_id, lease.step,
               lease.rank, ms, req.verified() ? "" : ": CLIENT SAW A BAD CHECKSUM");
  if (!req.verified() && !v.retired) {
    // Check the claim; a damaged version must not be served again.
    const RankPart& part = v.parts.at(lease.rank);
    if (Status s = VerifyItems(part.segment.data(), part.segment.bytes(), part.manifest, 0, 1);
        !s.ok()) {
      spdlog::error("job {} step {} rank {} is damaged ({}); dropping the version", lease.job_id,
                    lease.step, lease.rank, s.ToString());
      RetireDamaged(*job, v);
    }
  }
  if (v.retired) DropVersionNow(*job, lease.step);  // unless still held
  return Status::Ok();
}

Status SnapshotManager::Drop(const v1::DropVersionsRequest& req, v1::DropVersionsResponse* resp) {
  Job* job = FindJob(req.job_id());
  if (job == nullptr) return Status::NotFound("job " + req.job_id() + " is not registered");
  std::vector<int64_t> steps;
  for (const auto& [step, v] : job->versions) {
    if (v.retired || (!req.all() && step != req.step())) continue;
    // A version being verified is dropped all the same: DropVersionNow frees
    // it once its verification ends.
    if (v.leases > 0) {
      return Status::FailedPrecondition("step " + std::to_string(step) + " of job " + req.job_id() +
                                        " is being restored (" + std::to_string(v.leases) +
                                        " leases)");
    }
    steps.push_back(step);
  }
  if (!req.all() && steps.empty()) {
    return Status::NotFound("job " + req.job_id() + " has no version at step " +
                            std::to_string(req.step()));
  }
  // In a cluster the restore point is what the job restores after losing a
  // node; dropping it takes an explicit `force` (docs/cli.md).
  if (!req.force() && restore_point_) {
    const int64_t rp = restore_point_(req.job_id());
    if (rp >= 0 && std::find(steps.begin(), steps.end(), rp) != steps.end()) {
      return Status::FailedPrecondition("step " + std::to_string(rp) + " is the restore point of job " +
                                        req.job_id() +
                                        " (its newest protected version); dropping it needs force");
    }
  }
  CatalogBatch batch;
  for (int64_t s : steps) batch.delete_versions.push_back({req.job_id(), s});
  if (!batch.empty()) HOLDFAST_RETURN_IF_ERROR(catalog_->Apply(batch).WithContext("catalog"));
  for (int64_t s : steps) {
    DropVersionNow(*job, s);
    resp->add_dropped_steps(s);
  }
  // Explicit drops give the memory back rather than pooling it.
  for (auto it = pool_.begin(); it != pool_.end();) {
    if (it->second.job_id == req.job_id()) {
      RemovePooled(it++);
    } else {
      ++it;
    }
  }
  spdlog::info("dropped {} versions of job {}", steps.size(), req.job_id());
  return Status::Ok();
}

Status SnapshotManager::GetStatus(v1::GetStatusResponse* resp) const {
  resp->set_node_id(options_.node_id);
  resp->set_memory_budget_bytes(options_.memory_budget_bytes);
  resp->set_memory_used_bytes(used_bytes_);
  resp->set_memory_pooled_bytes(pooled_bytes_);
  resp->set_damaged_versions(damaged_versions_);
  resp->set_background_verifications(background_verifications_);
  resp->set_memory_preparing_bytes(spare_bytes_in_flight_);
  for (const auto& [id, job] : jobs_) {
    v1::JobStatus* js = resp->add_jobs();
    js->set_job_id(id);
    js->set_world_size(job->record.world_size());
    for (int r : job->local_ranks) js->add_local_ranks(r);
    js->set_latest_complete_step(job->NewestComplete());
    uint64_t bytes = 0;
    uint32_t count = 0;
    for (const auto& [step, v] : job->versions) {
      if (v.retired) continue;
      ++count;
      for (const auto& [rank, part] : v.parts) bytes += part.segment.bytes();
    }
    js->set_versions(count);
    js->set_bytes(bytes);
  }
  return Status::Ok();
}

// ---- timeouts --------------------------------------------------------------------------

void SnapshotManager::ExpireStale(Clock::time_point now) {
  std::vector<uint64_t> stale_writes;
  for (const auto& [id, w] : writes_) {
    if (!w->verifying && now - w->started > options_.write_timeout) stale_writes.push_back(id);
  }
  for (uint64_t id : stale_writes) AbortWrite(id, "write timeout");
  std::vector<uint64_t> stale_leases;
  for (const auto& [id, l] : leases_) {
    if (now - l.started > options_.lease_timeout) stale_leases.push_back(id);
  }
  for (uint64_t id : stale_leases) {
    spdlog::warn("restore lease {} expired", id);
    v1::CloseRestoreRequest req;
    req.set_lease_id(id);
    req.set_verified(true);
    (void)CloseRestore(req);
  }
}

void SnapshotManager::StartTimers() {
  if (timers_started_) return;
  timers_started_ = true;
  ScheduleExpiry();
}

void SnapshotManager::ScheduleExpiry() {
  std::weak_ptr<bool> alive = alive_;
  loop_->PostAfter(std::chrono::seconds(1), [this, alive] {
    if (alive.expired()) return;
    ExpireStale(Clock::now());
    ScheduleExpiry();
  });
}

}  // namespace holdfast::smp
