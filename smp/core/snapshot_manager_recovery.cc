// SnapshotManager::Recover: the daemon's restart. See snapshot_manager.h.
#include <spdlog/spdlog.h>

#include "core/snapshot_manager.h"
#include "core/snapshot_manager_internal.h"

namespace holdfast::smp {

using manager_internal::MiB;
using manager_internal::VerifyItems;

std::string RecoveryReport::ToString() const {
  return std::to_string(versions_restored) + " versions restored (" +
         std::to_string(bytes_restored) + " bytes), " + std::to_string(partial_versions_kept) +
         " partial kept, " + std::to_string(versions_discarded) + " discarded, " +
         std::to_string(versions_retired) + " retired, " + std::to_string(segments_removed) +
         " stray segments removed, " + std::to_string(protections_restored) +
         " protections restored, " + std::to_string(protections_discarded) + " discarded";
}

// ---- recovery ----------------------------------------------------------------

Result<RecoveryReport> SnapshotManager::Recover() {
  HOLDFAST_ASSIGN_OR_RETURN(CatalogContents contents, catalog_->Load());
  RecoveryReport report;
  CatalogBatch cleanup;

  for (const v1::JobRecord& rec : contents.jobs) {
    auto job = std::make_unique<Job>();
    job->record = rec;
    job->local_ranks.insert(rec.local_ranks().begin(), rec.local_ranks().end());
    jobs_[rec.job_id()] = std::move(job);
  }

  std::set<std::pair<std::string, int64_t>> complete;
  for (const v1::VersionRecord& v : contents.versions) complete.insert({v.job_id(), v.step()});
  std::map<std::pair<std::string, int64_t>, std::vector<const v1::RankManifestRecord*>> manifests;
  for (const v1::RankManifestRecord& m : contents.manifests) {
    manifests[{m.job_id(), m.step()}].push_back(&m);
  }
  for (const auto& key : complete) {
    if (!manifests.count(key)) manifests[key];  // a version record without manifests
  }

  // Complete versions first: a PARTIAL one is kept only if it is newer than
  // the newest complete version that survives recovery (as while running,
  // where a newer complete version retires older partial ones).
  std::set<std::string> kept_segments;
  for (const bool want_complete : {true, false}) {
    for (auto& [key, parts] : manifests) {
      const auto& [job_id, step] = key;
      const bool is_complete = complete.count(key) > 0;
      if (is_complete != want_complete) continue;
      auto discard = [&, &job_id = job_id, &step = step](const std::string& why) {
        spdlog::error("recovery: discarding job {} step {}: {}", job_id, step, why);
        cleanup.delete_versions.push_back({job_id, step});
        ++report.versions_discarded;
      };
      Job* job = FindJob(job_id);
      if (job == nullptr) {
        discard("its job is not registered");
        continue;
      }
      if (!is_complete && step <= job->NewestComplete()) {
        discard("torn: not every local rank committed it before a newer version completed");
        continue;
      }
      Version version;
      version.step = step;
      version.complete = is_complete;
      Status bad;
      for (const v1::RankManifestRecord* m : parts) {
        if (!job->local_ranks.count(m->rank())) {
          bad = Status::DataLoss("manifest of rank " + std::to_string(m->rank()) +
                                 ", not a local rank");
          break;
        }
        auto seg = segments_->Open(m->segment_name(), m->segment_bytes());
        if (!seg.ok()) {
          bad = seg.status();
          break;
        }
        if (Status st = VerifyItems(seg->data(), seg->bytes(), *m, 0, 1); !st.ok()) {
          bad = st.WithContext("rank " + std::to_string(m->rank()));
          break;
        }
        version.parts[m->rank()] = RankPart{std::move(seg).value(), *m, /*verified=*/true};
      }
      if (bad.ok() && is_complete && version.parts.size() != job->local_ranks.size()) {
        bad = Status::DataLoss("has " + std::to_string(version.parts.size()) +
                               " rank manifests, the job has " +
                               std::to_string(job->local_ranks.size()) + " local ranks");
      }
      if (!bad.ok()) {
        discard(bad.ToString());
        continue;  // its mapped segments unmap here; the files go below
      }
      job->versions[step] = std::move(version);
    }
  }
  // Protection records: their parity segments are reattached, and the local
  // version of the same step (if any) is pinned for them, before retention.
  for (const v1::ProtectionRecord& rec : contents.protections) {
    RecoveredProtection rp;
    rp.record = rec;
    if (rec.parity_bytes() > 0) {
      auto seg = segments_->Open(rec.parity_segment(), rec.parity_bytes());
      if (!seg.ok()) {
        spdlog::error("recovery: discarding the protection of job {} step {}: parity segment: {}",
                      rec.job_id(), rec.step(), seg.status().ToString());
        cleanup.delete_protections.push_back({rec.job_id(), rec.step()});
        ++report.protections_discarded;
        continue;
      }
      rp.parity = std::move(seg).value();
      kept_segments.insert(rp.parity.name());
      used_bytes_ += rp.parity.bytes();
    }
    if (Job* job = FindJob(rec.job_id())) {
      auto it = job->versions.find(rec.step());
      if (it != job->versions.end() && it->second.complete) {
        ++it->second.pins;
        rp.pinned = true;
      }
    }
    ++report.protections_restored;
    recovered_protections_.push_back(std::move(rp));
  }
  // Every restored version is verified: an extra version that retention kept
  // while newer ones were being verified in the background is not needed.
  for (auto& [job_id, job] : jobs_) {
    const int64_t newest = job->NewestComplete();
    if (newest < 0) continue;
    std::vector<int64_t> retired;
    PlanRetention(*job, newest, /*newest_verified=*/true, &cleanup, &retired);
    for (int64_t step : retired) {
      spdlog::info("recovery: retiring job {} step {}: beyond the {} retained versions", job_id,
                   step, options_.retain_versions);
      job->versions.erase(step);  // its mapped segments unmap here; the files go below
      ++report.versions_retired;
    }
  }
  // Ascending steps: a rank's last segment is that of its newest part.
  for (auto& [job_id, job] : jobs_) {
    for (const auto& [step, version] : job->versions) {
      for (const auto& [rank, part] : version.parts) {
        kept_segments.insert(part.segment.name());
        used_bytes_ += part.segment.bytes();
        report.bytes_restored += part.segment.bytes();
        job->last_segment[rank] = part.segment.name();
      }
      ++(version.complete ? report.versions_restored : report.partial_versions_kept);
    }
  }
  if (!cleanup.empty()) {
    HOLDFAST_RETURN_IF_ERROR(catalog_->Apply(cleanup).WithContext("recovery cleanup"));
  }

  HOLDFAST_ASSIGN_OR_RETURN(std::vector<std::string> names, segments_->List());
  for (const std::string& name : names) {
    if (kept_segments.count(name)) continue;
    if (Status s = segments_->Remove(name); !s.ok()) {
      spdlog::warn("recovery: could not remove stray segment {}: {}", name, s.ToString());
      continue;
    }
    ++report.segments_removed;
  }
  if (used_bytes_ > options_.memory_budget_bytes) {
    spdlog::warn(
        "recovered {:.1f} MiB exceeds the memory budget of {:.1f} MiB; new snapshots "
        "will be refused until versions are dropped",
        MiB(used_bytes_), MiB(options_.memory_budget_bytes));
  }
  spdlog::info("recovery: {}", report.ToString());
  return report;
}

}  // namespace holdfast::smp
