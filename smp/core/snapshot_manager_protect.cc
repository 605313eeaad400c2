// SnapshotManager's side of cluster protection (docs/cluster.md): pins,
// segments for parity and rebuilt bytes, adopting rebuilt versions, and the
// summaries the peer service reports. See snapshot_manager.h.
#include <spdlog/spdlog.h>

#include "core/snapshot_manager.h"
#include "core/snapshot_manager_internal.h"

namespace holdfast::smp {


namespace {
// The pool's owner of recycled protection segments (no job has rank -1).
constexpr int kProtectionRank = -1;
}  // namespace
using manager_internal::RanksToString;
using manager_internal::UnixMicros;

Result<PinnedVersion> SnapshotManager::PinVersion(const std::string& job_id, int64_t step,
                                                  bool to_protect) {
  Job* job = FindJob(job_id);
  if (job == nullptr) return Status::NotFound("job " + job_id + " is not registered");
  auto it = job->versions.find(step);
  if (it == job->versions.end() || !it->second.complete || it->second.retired) {
    return Status::NotFound("job " + job_id + " has no complete version at step " +
                            std::to_string(step));
  }
  Version& v = it->second;
  if (to_protect && v.abandoned) {
    // The group saw it complete here before the job's restart restored an
    // older step: with the other members' steps of the resumed run it would
    // make a version no single run wrote.
    return Status::FailedPrecondition("job " + job_id + " step " + std::to_string(step) +
                                      " here is from a run that resumed from an older step");
  }
  ++v.pins;
  PinnedVersion out;
  for (const auto& [rank, part] : v.parts) {
    out.parts.push_back({part.segment.data(), part.segment.bytes()});
    out.manifests.push_back(part.manifest);
    out.bytes += part.segment.bytes();
  }
  return out;
}

void SnapshotManager::UnpinVersion(const std::string& job_id, int64_t step) {
  Job* job = FindJob(job_id);
  if (job == nullptr) return;
  auto it = job->versions.find(step);
  if (it == job->versions.end() || it->second.pins == 0) return;
  --it->second.pins;
  if (it->second.retired) {
    DropVersionNow(*job, step);  // unless still held otherwise
    return;
  }
  if (it->second.pins == 0) RunRetention(*job);
}

Result<Segment> SnapshotManager::AllocateSegment(uint64_t bytes) {
  if (bytes == 0) return Status::InvalidArgument("a segment needs at least one byte");
  const uint64_t rounded = (bytes + manager_internal::kPage - 1) / manager_internal::kPage *
                           manager_internal::kPage;
  // A recycled segment of this size first: its pages are already in.
  if (auto [lo, hi] = pool_.equal_range(rounded); lo != hi) {
    for (auto it = lo; it != hi; ++it) {
      if (it->second.rank != kProtectionRank || !it->second.job_id.empty()) continue;
      Segment seg = std::move(it->second.segment);
      pool_.erase(it);
      pooled_bytes_ -= rounded;
      return seg;
    }
  }
  if (!MakeRoomFromPool(rounded)) {
    return Status::ResourceExhausted(
        "protection needs " + std::to_string(rounded) + " bytes; memory budget " +
        std::to_string(options_.memory_budget_bytes) + ", in use " + std::to_string(used_bytes_) +
        " (pooled " + std::to_string(pooled_bytes_) + ")");
  }
  HOLDFAST_ASSIGN_OR_RETURN(uint64_t id, NextSegmentId());
  HOLDFAST_ASSIGN_OR_RETURN(Segment seg, segments_->Create(id, rounded));
  used_bytes_ += seg.bytes();
  return seg;
}

void SnapshotManager::FreeSegment(const Segment& segment) {
  if (!segment.valid()) return;
  used_bytes_ -= segment.bytes();
  if (Status s = segments_->Remove(segment.name()); !s.ok()) {
    spdlog::warn("could not remove segment {}: {}", segment.name(), s.ToString());
  }
}

void SnapshotManager::RecycleSegment(Segment segment) {
  if (!segment.valid()) return;
  // Pooled under a pseudo rank: the pool keeps a couple of spares per rank.
  ReleaseSegment(std::move(segment), "", kProtectionRank);
}

Status SnapshotManager::AdoptVersion(const v1::JobRecord& record, int64_t step,
                                     std::vector<std::pair<v1::RankManifestRecord, Segment>> parts) {
  Status s = AdoptVersionImpl(record, step, parts);
  if (!s.ok()) {
    for (auto& [manifest, seg] : parts) FreeSegment(seg);  // never recorded: back to the system
  }
  return s;
}

Status SnapshotManager::AdoptVersionImpl(
    const v1::JobRecord& record, int64_t step,
    std::vector<std::pair<v1::RankManifestRecord, Segment>>& parts) {
  const std::set<int> ranks(record.local_ranks().begin(), record.local_ranks().end());
  CatalogBatch batch;
  Job* job = FindJob(record.job_id());
  if (job != nullptr) {
    if (job->record.world_size() != record.world_size() || job->local_ranks != ranks) {
      return Status::FailedPrecondition(
          "job " + record.job_id() + " is registered here with world size " +
          std::to_string(job->record.world_size()) + " and local ranks " +
          RanksToString(job->local_ranks) + ", its protected version has " +
          std::to_string(record.world_size()) + " and " + RanksToString(ranks));
    }
    if (job->versions.count(step)) {
      return Status::AlreadyExists("job " + record.job_id() + " step " + std::to_string(step) +
                                   " exists here");
    }
  } else {
    batch.put_jobs.push_back(record);
  }
  if (parts.size() != ranks.size()) {
    return Status::InvalidArgument("a rebuilt version needs one part per local rank");
  }
  for (const auto& [manifest, seg] : parts) batch.put_manifests.push_back(manifest);
  v1::VersionRecord vrec;
  vrec.set_job_id(record.job_id());
  vrec.set_step(step);
  vrec.set_completed_unix_micros(UnixMicros());
  batch.put_versions.push_back(vrec);
  HOLDFAST_RETURN_IF_ERROR(catalog_->Apply(batch).WithContext("catalog"));
  if (job == nullptr) {
    auto owned = std::make_unique<Job>();
    owned->record = record;
    owned->local_ranks = ranks;
    job = owned.get();
    jobs_[record.job_id()] = std::move(owned);
  }
  Version& v = job->versions[step];
  v.step = step;
  v.complete = true;
  v.completed_micros = vrec.completed_unix_micros();
  v.pins = 1;
  for (auto& [manifest, seg] : parts) {
    job->last_segment[manifest.rank()] = seg.name();
    v.parts[manifest.rank()] = RankPart{std::move(seg), manifest, /*verified=*/true};
  }
  spdlog::info("adopted rebuilt job {} step {} (ranks {})", record.job_id(), step,
               RanksToString(ranks));
  RunRetention(*job);
  return Status::Ok();
}

std::vector<RecoveredProtection> SnapshotManager::TakeRecoveredProtections() {
  return std::move(recovered_protections_);
}

std::vector<SnapshotManager::JobSummary> SnapshotManager::Summaries(
    const std::string& job_id) const {
  std::vector<JobSummary> out;
  for (const auto& [id, job] : jobs_) {
    if (!job_id.empty() && id != job_id) continue;
    JobSummary& s = out.emplace_back();
    s.job_id = id;
    s.world_size = job->record.world_size();
    s.local_ranks.assign(job->local_ranks.begin(), job->local_ranks.end());
    for (const auto& [step, v] : job->versions) {
      if (!v.complete || v.retired || v.abandoned) continue;
      CompleteStep& c = s.complete.emplace_back();
      c.step = step;
      for (const auto& [rank, part] : v.parts) {
        c.bytes += part.segment.bytes();
        c.ranks.push_back(rank);
      }
    }
  }
  return out;
}

}  // namespace holdfast::smp
