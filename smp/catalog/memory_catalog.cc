#include "catalog/memory_catalog.h"

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "catalog/batch_validation.h"

namespace holdfast::smp {

namespace {

using ManifestKey = std::tuple<std::string, int64_t, int32_t>;
using VersionMapKey = std::pair<std::string, int64_t>;

constexpr int64_t kMinStep = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxStep = std::numeric_limits<int64_t>::max();
constexpr int32_t kMinRank = std::numeric_limits<int32_t>::min();
constexpr int32_t kMaxRank = std::numeric_limits<int32_t>::max();

// Erases the keys of `map` in [lo, hi] (both inclusive).
template <typename Map>
void EraseClosedRange(Map& map, const typename Map::key_type& lo,
                      const typename Map::key_type& hi) {
  map.erase(map.lower_bound(lo), map.upper_bound(hi));
}

}  // namespace

// std::string compares bytes as unsigned char, so these maps iterate in the
// same order as the RocksDB key space (job bytes, then step, then rank).
struct MemoryCatalog::State {
  mutable std::mutex mu;
  std::map<std::string, v1::JobRecord> jobs;                  // guarded by mu
  std::map<ManifestKey, v1::RankManifestRecord> manifests;    // guarded by mu
  std::map<VersionMapKey, v1::VersionRecord> versions;        // guarded by mu
  std::map<VersionMapKey, v1::ProtectionRecord> protections;  // guarded by mu
  uint64_t next_segment_id = 1;                               // guarded by mu
  int failures_left = 0;                                      // guarded by mu
  Status failure;                                             // guarded by mu
  int applies = 0;                                            // guarded by mu
};

MemoryCatalog::MemoryCatalog() : state_(std::make_unique<State>()) {}
MemoryCatalog::~MemoryCatalog() = default;

Result<CatalogContents> MemoryCatalog::Load() {
  std::lock_guard<std::mutex> lock(state_->mu);
  CatalogContents out;
  out.jobs.reserve(state_->jobs.size());
  for (const auto& [key, job] : state_->jobs) out.jobs.push_back(job);
  out.manifests.reserve(state_->manifests.size());
  for (const auto& [key, manifest] : state_->manifests) out.manifests.push_back(manifest);
  out.versions.reserve(state_->versions.size());
  for (const auto& [key, version] : state_->versions) out.versions.push_back(version);
  out.protections.reserve(state_->protections.size());
  for (const auto& [key, protection] : state_->protections) out.protections.push_back(protection);
  out.next_segment_id = state_->next_segment_id;
  return out;
}

Status MemoryCatalog::Apply(const CatalogBatch& batch) {
  std::lock_guard<std::mutex> lock(state_->mu);
  // A malformed batch is rejected as RocksDbCatalog would reject it, before
  // (and without using up) an injected failure.
  HOLDFAST_RETURN_IF_ERROR(catalog_internal::ValidateBatch(batch));
  if (state_->failures_left > 0) {
    --state_->failures_left;
    return state_->failure;
  }
  // Nothing below can fail (short of running out of memory), so the batch is
  // all or nothing without a copy of the state.
  for (const v1::JobRecord& job : batch.put_jobs) state_->jobs[job.job_id()] = job;
  for (const v1::RankManifestRecord& m : batch.put_manifests) {
    state_->manifests[ManifestKey(m.job_id(), m.step(), m.rank())] = m;
  }
  for (const v1::VersionRecord& v : batch.put_versions) {
    state_->versions[VersionMapKey(v.job_id(), v.step())] = v;
  }
  for (const v1::ProtectionRecord& p : batch.put_protections) {
    state_->protections[VersionMapKey(p.job_id(), p.step())] = p;
  }
  for (const VersionKey& v : batch.delete_versions) {
    state_->versions.erase(VersionMapKey(v.job_id, v.step));
    EraseClosedRange(state_->manifests, ManifestKey(v.job_id, v.step, kMinRank),
                     ManifestKey(v.job_id, v.step, kMaxRank));
  }
  for (const PartKey& p : batch.delete_parts) {
    state_->manifests.erase(ManifestKey(p.job_id, p.step, p.rank));
  }
  for (const VersionKey& p : batch.delete_protections) {
    state_->protections.erase(VersionMapKey(p.job_id, p.step));
  }
  for (const std::string& job_id : batch.delete_jobs) {
    state_->jobs.erase(job_id);
    EraseClosedRange(state_->manifests, ManifestKey(job_id, kMinStep, kMinRank),
                     ManifestKey(job_id, kMaxStep, kMaxRank));
    EraseClosedRange(state_->versions, VersionMapKey(job_id, kMinStep),
                     VersionMapKey(job_id, kMaxStep));
    EraseClosedRange(state_->protections, VersionMapKey(job_id, kMinStep),
                     VersionMapKey(job_id, kMaxStep));
  }
  ++state_->applies;
  return Status::Ok();
}

Result<uint64_t> MemoryCatalog::AllocateSegmentIds(uint64_t count) {
  if (count == 0) return Status::InvalidArgument("cannot allocate 0 segment ids");
  std::lock_guard<std::mutex> lock(state_->mu);
  const uint64_t first = state_->next_segment_id;
  if (count > std::numeric_limits<uint64_t>::max() - first) {
    return Status::ResourceExhausted("segment ids exhausted");
  }
  state_->next_segment_id = first + count;
  return first;
}

void MemoryCatalog::FailNextApplies(int count, Status status) {
  if (count > 0 && status.ok()) {
    // An "injected failure" that reports success would be a broken test.
    std::fprintf(stderr, "MemoryCatalog::FailNextApplies: the injected status must not be OK\n");
    std::abort();
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->failures_left = count > 0 ? count : 0;
  state_->failure = std::move(status);
}

int MemoryCatalog::applies() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->applies;
}

}  // namespace holdfast::smp
