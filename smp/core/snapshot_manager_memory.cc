// SnapshotManager's memory (docs/smp.md, "Budget" and "Spare segments"): the
// pool of free segments, eviction, acquiring a segment for a Begin, spares
// made ahead off the loop, and segment ids. See snapshot_manager.h.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/snapshot_manager.h"
#include "core/snapshot_manager_internal.h"

namespace holdfast::smp {

using manager_internal::kMaxSparesPerRank;
using manager_internal::kSegmentIdBlock;
using manager_internal::MiBText;

void SnapshotManager::ReleaseSegment(Segment segment, const std::string& job_id, int rank) {
  if (!segment.valid()) return;
  const uint64_t bytes = segment.bytes();
  pooled_bytes_ += bytes;
  const auto added = pool_.emplace(bytes, Pooled{std::move(segment), job_id, rank});
  // A rank writes one snapshot at a time, so a spare or two covers its next
  // Begin. More pile up only after a burst (background checks lagging behind
  // a fast writer keep retired versions held); give those back to the system.
  int others = 0;  // spares of this rank besides the one just added
  for (auto it = pool_.begin(); it != pool_.end();) {
    const bool same = it != added && it->second.rank == rank && it->second.job_id == job_id;
    if (same && ++others >= kMaxSparesPerRank) {
      RemovePooled(it++);
    } else {
      ++it;
    }
  }
}

void SnapshotManager::RemovePooled(std::multimap<uint64_t, Pooled>::iterator it) {
  const uint64_t bytes = it->first;
  const std::string name = it->second.segment.name();
  if (Status s = segments_->Remove(name); !s.ok()) {
    spdlog::warn("could not remove pooled segment {}: {}", name, s.ToString());
  }
  pool_.erase(it);  // unmaps
  pooled_bytes_ -= bytes;
  used_bytes_ -= bytes;
}

void SnapshotManager::TrimPool(uint64_t need) {
  // Free the largest pooled segments first: fewest files for the room.
  while (!pool_.empty() && need > 0) {
    auto it = std::prev(pool_.end());
    const uint64_t bytes = it->first;
    RemovePooled(it);
    need = need > bytes ? need - bytes : 0;
  }
}

uint64_t SnapshotManager::EvictableBytes() const {
  uint64_t bytes = 0;
  for (const auto& [id, job] : jobs_) {
    const int64_t newest = job->NewestComplete();
    for (const auto& [step, v] : job->versions) {
      if (!v.complete || v.retired || v.Held() || step == newest) continue;
      for (const auto& [rank, part] : v.parts) bytes += part.segment.bytes();
    }
  }
  return bytes;
}

bool SnapshotManager::EvictOneVersion(const std::string& prefer_job) {
  // The oldest complete version that is not its job's newest and not held
  // (leased or being verified), preferring the job that needs the room.
  Job* victim_job = nullptr;
  int64_t victim_step = 0;
  for (int pass = 0; pass < 2 && victim_job == nullptr; ++pass) {
    for (auto& [id, job] : jobs_) {
      if ((pass == 0) != (id == prefer_job)) continue;
      const int64_t newest = job->NewestComplete();
      for (auto& [step, v] : job->versions) {
        if (!v.complete || v.retired || v.Held() || step == newest) continue;
        victim_job = job.get();
        victim_step = step;
        break;
      }
      if (victim_job != nullptr) break;
    }
  }
  if (victim_job == nullptr) return false;
  CatalogBatch batch;
  batch.delete_versions.push_back({victim_job->record.job_id(), victim_step});
  if (Status s = catalog_->Apply(batch); !s.ok()) {
    spdlog::error("could not evict job {} step {}: {}", victim_job->record.job_id(), victim_step,
                  s.ToString());
    return false;
  }
  spdlog::info("evicted job {} step {} to make room", victim_job->record.job_id(), victim_step);
  DropVersionNow(*victim_job, victim_step);
  return true;
}

Result<Segment> SnapshotManager::AcquireSegment(Job& job, int rank, uint64_t bytes,
                                                bool* created) {
  const std::string& job_id = job.record.job_id();
  *created = false;
  for (;;) {
    // A pooled segment of exactly this size; the one this rank used last
    // first, since its client still has it mapped.
    auto [lo, hi] = pool_.equal_range(bytes);
    if (lo != hi) {
      auto pick = lo;
      const auto last = job.last_segment.find(rank);
      for (auto it = lo; it != hi; ++it) {
        if (last != job.last_segment.end() && it->second.segment.name() == last->second) {
          pick = it;
          break;
        }
        if (it->second.job_id == job_id && it->second.rank == rank) pick = it;
      }
      Segment seg = std::move(pick->second.segment);
      pool_.erase(pick);
      pooled_bytes_ -= bytes;
      return seg;
    }
    if (used_bytes_ + bytes <= options_.memory_budget_bytes) break;
    // Free nothing unless freeing can make enough room: a refused snapshot
    // must leave every version (and the pool) as it was.
    if (used_bytes_ + bytes - options_.memory_budget_bytes > pooled_bytes_ + EvictableBytes()) {
      return Status::ResourceExhausted(
          "snapshot needs " + std::to_string(bytes) + " bytes; memory budget " +
          std::to_string(options_.memory_budget_bytes) + ", in use " + std::to_string(used_bytes_) +
          ", of which only " + std::to_string(pooled_bytes_ + EvictableBytes()) +
          " can be freed (a job's newest complete version, versions being restored or verified "
          "and snapshots being written cannot be evicted)");
    }
    if (!pool_.empty()) {
      TrimPool(used_bytes_ + bytes - options_.memory_budget_bytes);
      continue;
    }
    if (!EvictOneVersion(job_id)) {
      return Status::ResourceExhausted(
          "snapshot needs " + std::to_string(bytes) + " bytes; memory budget " +
          std::to_string(options_.memory_budget_bytes) + ", in use " + std::to_string(used_bytes_) +
          " by versions that cannot be evicted (a job's newest complete version, versions "
          "being restored or verified, snapshots being written)");
    }
  }
  HOLDFAST_ASSIGN_OR_RETURN(const uint64_t id, NextSegmentId());
  HOLDFAST_ASSIGN_OR_RETURN(Segment seg, segments_->Create(id, bytes));
  used_bytes_ += seg.bytes();
  *created = true;
  return seg;
}

void SnapshotManager::PrepareSpares(const Job& job, int rank, uint64_t bytes) {
  const std::string& job_id = job.record.job_id();
  const int want = std::clamp(options_.spare_segments, 0, kMaxSparesPerRank);
  int have = 0;
  if (auto it = spares_in_flight_.find({job_id, rank}); it != spares_in_flight_.end()) {
    have = it->second;
  }
  auto [lo, hi] = pool_.equal_range(bytes);
  for (auto it = lo; it != hi; ++it) {
    have += it->second.job_id == job_id && it->second.rank == rank ? 1 : 0;
  }
  // Spares come out of free budget only, leaving room for one more segment
  // of this size (and a quarter of the budget): a spare in the making
  // cannot be trimmed for room, so another job's Begin must not need it.
  const uint64_t keep_free = std::max(bytes, options_.memory_budget_bytes / 4);
  for (; have < want; ++have) {
    if (used_bytes_ + bytes + keep_free > options_.memory_budget_bytes) return;
    Result<uint64_t> id = NextSegmentId();
    if (!id.ok()) return;
    if (spare_maker_ == nullptr) spare_maker_ = std::make_unique<WorkerPool>(1);
    used_bytes_ += bytes;
    spare_bytes_in_flight_ += bytes;
    ++spares_in_flight_[{job_id, rank}];
    std::weak_ptr<bool> alive = alive_;
    spare_maker_->Submit([this, alive, job_id, rank, bytes, id = *id] {
      if (stopping_spares_) return;
      const auto start = Clock::now();
      auto made = std::make_shared<Result<Segment>>(segments_->Create(id, bytes));
      const double millis =
          std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (stopping_spares_ && made->ok()) {
        // The manager is going; its store is still here (the destructor
        // waits for this task). Leave no file behind.
        (void)segments_->Remove((*made)->name());
        return;
      }
      loop_->Post([this, alive, job_id, rank, bytes, made, millis] {
        if (alive.expired()) return;  // the next start removes the stray file
        FinishSpare(job_id, rank, bytes, std::move(*made), millis);
      });
    });
  }
}

void SnapshotManager::FinishSpare(const std::string& job_id, int rank, uint64_t bytes,
                                  Result<Segment> made, double millis) {
  spare_bytes_in_flight_ -= bytes;
  if (auto it = spares_in_flight_.find({job_id, rank}); it != spares_in_flight_.end()) {
    if (--it->second == 0) spares_in_flight_.erase(it);
  }
  if (!made.ok()) {
    used_bytes_ -= bytes;
    spdlog::warn("could not prepare a spare segment for job {} rank {}: {}", job_id, rank,
                 made.status().ToString());
    return;
  }
  spdlog::debug("prepared spare segment {} ({}) for job {} rank {} in {:.0f} ms",
                made->name(), MiBText(bytes), job_id, rank, millis);
  pooled_bytes_ += bytes;
  pool_.emplace(bytes, Pooled{std::move(made).value(), job_id, rank});
}

Result<uint64_t> SnapshotManager::NextSegmentId() {
  if (seg_id_next_ == seg_id_end_) {
    HOLDFAST_ASSIGN_OR_RETURN(seg_id_next_, catalog_->AllocateSegmentIds(kSegmentIdBlock));
    seg_id_end_ = seg_id_next_ + kSegmentIdBlock;
  }
  return seg_id_next_++;
}

bool SnapshotManager::MakeRoomFromPool(uint64_t bytes) {
  if (used_bytes_ + bytes <= options_.memory_budget_bytes) return true;
  const uint64_t need = used_bytes_ + bytes - options_.memory_budget_bytes;
  if (need > pooled_bytes_) return false;
  TrimPool(need);
  return used_bytes_ + bytes <= options_.memory_budget_bytes;
}

}  // namespace holdfast::smp
