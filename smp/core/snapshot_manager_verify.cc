// SnapshotManager: checksum verification, at commit (kCommit) and in the
// background after it (kBackground). See snapshot_manager.h.
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "core/snapshot_manager.h"
#include "core/snapshot_manager_internal.h"
#include "holdfast/ec/checksum.h"

namespace holdfast::smp {
namespace manager_internal {

Status VerifyItems(const uint8_t* data, uint64_t bytes, const v1::RankManifestRecord& manifest,
                   int first, int stride, const std::atomic<bool>* cancel) {
  for (int i = first; i < manifest.items_size(); i += stride) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      return Status::Aborted("verification cancelled: the daemon is stopping");
    }
    const v1::Item& item = manifest.items(i);
    const uint64_t off = item.offset();
    const uint64_t n = item.spec().nbytes();
    if (off > bytes || n > bytes - off) {
      return Status::DataLoss("item '" + item.spec().name() + "' lies outside its segment");
    }
    const uint64_t sum = ec::Checksum({data + off, n});
    if (sum != item.checksum()) {
      return Status::DataLoss("item '" + item.spec().name() + "' (" + std::to_string(n) +
                              " bytes at offset " + std::to_string(off) +
                              ") does not match its checksum");
    }
  }
  return Status::Ok();
}

}  // namespace manager_internal

using manager_internal::MiB;
using manager_internal::VerifyItems;

std::string_view VerifyModeName(VerifyMode mode) {
  switch (mode) {
    case VerifyMode::kCommit:
      return "commit";
    case VerifyMode::kBackground:
      return "background";
    case VerifyMode::kOff:
      return "off";
  }
  return "unknown";
}

Result<VerifyMode> ParseVerifyMode(std::string_view name) {
  for (VerifyMode mode : {VerifyMode::kCommit, VerifyMode::kBackground, VerifyMode::kOff}) {
    if (name == VerifyModeName(mode)) return mode;
  }
  return Status::InvalidArgument("verify mode \"" + std::string(name) +
                                 "\" is not one of commit, background, off");
}

void SnapshotManager::VerifyOnWorkers(const Segment& segment,
                                      const v1::RankManifestRecord& manifest, VerifyDone done) {
  // Items are spread across the workers; the last task to finish posts the
  // result back to the loop.
  struct Shared {
    std::atomic<int> remaining;
    std::mutex mu;
    Status first_error;  // guarded by mu
    Clock::time_point start = Clock::now();
    VerifyDone done;  // called on the loop only
  };
  const int tasks = std::max(1, std::min(workers_->size(), manifest.items_size()));
  auto shared = std::make_shared<Shared>();
  shared->remaining = tasks;
  shared->done = std::move(done);
  const uint8_t* data = segment.data();
  const uint64_t bytes = segment.bytes();
  const v1::RankManifestRecord* items = &manifest;
  std::shared_ptr<VerifyTasks> tracker = verify_tasks_;
  std::weak_ptr<bool> alive = alive_;
  tracker->Add(tasks);
  for (int t = 0; t < tasks; ++t) {
    workers_->Submit([=, this] {
      Status s = VerifyItems(data, bytes, *items, t, tasks, &tracker->cancel);
      if (!s.ok()) {
        std::lock_guard lock(shared->mu);
        if (shared->first_error.ok()) shared->first_error = s;
      }
      if (shared->remaining.fetch_sub(1) == 1) {
        const int64_t micros =
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - shared->start)
                .count();
        // `this` is still alive: its destructor waits for this task.
        loop_->Post([shared, micros, alive] {
          if (alive.expired()) return;
          Status result;
          {
            std::lock_guard lock(shared->mu);
            result = shared->first_error;
          }
          shared->done(std::move(result), micros);
        });
      }
      tracker->Done();
    });
  }
}

// ---- background verification -----------------------------------------------------------

void SnapshotManager::StartBackgroundVerify(Job& job, int64_t step, int rank) {
  Version& v = job.versions.at(step);
  const RankPart& part = v.parts.at(rank);
  ++v.verifying;  // pins the part: its segment stays mapped and unused, its manifest in place
  ++background_verifications_;
  VerifyOnWorkers(part.segment, part.manifest,
                  [this, job_id = job.record.job_id(), step, rank](Status s, int64_t micros) {
                    FinishBackgroundVerify(job_id, step, rank, std::move(s), micros);
                  });
}

void SnapshotManager::FinishBackgroundVerify(const std::string& job_id, int64_t step, int rank,
                                             Status result, int64_t micros) {
  --background_verifications_;
  Job* job = FindJob(job_id);
  auto vit = job != nullptr ? job->versions.find(step) : std::map<int64_t, Version>::iterator{};
  if (job == nullptr || vit == job->versions.end()) {
    // Jobs are never removed, and DropVersionNow keeps a version being verified.
    spdlog::critical("job {} step {} vanished while being verified", job_id, step);
    std::abort();
  }
  Version& v = vit->second;
  --v.verifying;
  RankPart& part = v.parts.at(rank);
  if (result.ok()) {
    part.verified = true;
    spdlog::info("verified job {} step {} rank {} in the background: {:.1f} MiB in {:.2f} ms",
                  job_id, step, rank, MiB(part.segment.bytes()), micros / 1000.0);
  } else {
    spdlog::error(
        "job {} step {} rank {} failed background verification: {}: the bytes in shared memory "
        "differ from what the client checksummed; discarding the version{}",
        job_id, step, rank, result.ToString(), v.retired ? " (already retired)" : "");
    RetireDamaged(*job, v);
  }
  if (v.retired) {
    DropVersionNow(*job, step);  // unless still held
  } else if (v.complete && v.Verified()) {
    RunRetention(*job);  // may free a version kept only because this one was unverified
  }
}

Status SnapshotManager::MarkDamaged(const std::string& job_id, int64_t step,
                                    const std::string& why) {
  Job* job = FindJob(job_id);
  auto vit = job != nullptr ? job->versions.find(step) : std::map<int64_t, Version>::iterator{};
  if (job == nullptr || vit == job->versions.end() || !vit->second.complete ||
      vit->second.retired) {
    return Status::NotFound("job " + job_id + " has no live complete version at step " +
                            std::to_string(step));
  }
  spdlog::error("job {} step {} is damaged ({}); discarding the version", job_id, step, why);
  RetireDamaged(*job, vit->second);
  DropVersionNow(*job, step);  // unless still held
  return Status::Ok();
}

void SnapshotManager::RetireDamaged(Job& job, Version& version) {
  if (!version.damaged) {
    version.damaged = true;
    ++damaged_versions_;
  }
  if (version.retired) return;
  CatalogBatch batch;
  batch.delete_versions.push_back({job.record.job_id(), version.step});
  if (Status s = catalog_->Apply(batch); !s.ok()) {
    // Still retired here; a restart verifies it again and discards it then.
    spdlog::error("could not delete damaged job {} step {} from the catalog: {}",
                  job.record.job_id(), version.step, s.ToString());
  }
  version.retired = true;
}

}  // namespace holdfast::smp
