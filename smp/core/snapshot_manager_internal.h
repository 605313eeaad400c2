// Internals of SnapshotManager shared by its implementation files
// (snapshot_manager.cc: jobs, memory, writing, reading, timeouts;
// snapshot_manager_verify.cc: checksum verification; snapshot_manager_recovery.cc:
// Recover). Not for other users.
//
// Thread-safety: as SnapshotManager: everything here lives on its loop, except
// VerifyTasks (shared with the workers, guarded by its mutex) and
// VerifyItems (a pure function).
#ifndef HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_INTERNAL_H_
#define HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_INTERNAL_H_

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "core/snapshot_manager.h"

namespace holdfast::smp {
namespace manager_internal {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSegmentIdBlock = 64;
// Free segments kept per (job, rank) for its next snapshots.
constexpr int kMaxSparesPerRank = 2;

inline int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline double MiB(uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }
// "1048576 bytes (1.0 MiB)", for messages that quote limits.
inline std::string MiBText(uint64_t bytes) {
  return fmt::format("{} bytes ({:.1f} MiB)", bytes, MiB(bytes));
}

inline std::string RanksToString(const std::set<int>& ranks) {
  std::string out = "[";
  for (int r : ranks) out += (out.size() > 1 ? "," : "") + std::to_string(r);
  return out + "]";
}

// Checksums items first, first + stride, ... of `manifest` in `data`; the
// first mismatch is an error. Stops between items once `*cancel` is set.
Status VerifyItems(const uint8_t* data, uint64_t bytes, const v1::RankManifestRecord& manifest,
                   int first, int stride, const std::atomic<bool>* cancel = nullptr);

}  // namespace manager_internal

using manager_internal::Clock;

struct SnapshotManager::RankPart {
  Segment segment;
  v1::RankManifestRecord manifest;
  bool verified = false;  // its checksums were checked (see VerifyMode)
  // The write id it was begun with; 0 for parts recovered from the catalog
  // (older than anything this daemon instance started).
  uint64_t write_id = 0;
};

struct SnapshotManager::Version {
  int64_t step = 0;
  std::map<int, RankPart> parts;  // committed ranks
  bool complete = false;
  int64_t completed_micros = 0;
  int leases = 0;
  int verifying = 0;     // parts being verified in the background; they pin it like leases
  int pins = 0;          // cluster protection (PinVersion): kept by retention and eviction
  bool retired = false;  // dropped from the catalog; freed when the last holder is done
  bool damaged = false;  // a part failed verification (then also retired)
  // Newer than the step a resumed run restored (see OpenRestore): the run
  // that committed it is gone. Never offered for protection; the resumed
  // run's Begin of a step up to it drops it. Not in the catalog: a restart
  // forgets it, and the Begin still drops the version.
  bool abandoned = false;

  bool Held() const { return leases > 0 || verifying > 0 || pins > 0; }
  // Every committed part verified. Retention asks this of complete versions.
  bool Verified() const {
    return std::all_of(parts.begin(), parts.end(),
                       [](const auto& entry) { return entry.second.verified; });
  }
};

struct SnapshotManager::Job {
  v1::JobRecord record;
  std::set<int> local_ranks;
  std::map<int64_t, Version> versions;
  std::map<int, std::string> last_segment;  // rank -> segment its last write used

  // -1 when the job has no complete version.
  int64_t NewestComplete() const {
    for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
      if (it->second.complete && !it->second.retired) return it->first;
    }
    return -1;
  }
};

struct SnapshotManager::Write {
  uint64_t id = 0;
  std::string job_id;
  int rank = 0;
  int64_t step = 0;
  uint64_t session = 0;
  uint64_t resumed_at = 0;  // its session's SessionInfo::resumed_at
  Segment segment;
  v1::RankManifestRecord manifest;
  Clock::time_point started;
  bool verifying = false;
  bool aborted = false;  // while verifying: drop the result
  bool new_segment = false;  // its Begin created the segment: spares follow the commit
};

struct SnapshotManager::Lease {
  std::string job_id;
  int64_t step = 0;
  int rank = 0;
  uint64_t session = 0;
  Clock::time_point started;
};

struct SnapshotManager::VerifyTasks {
  std::mutex mu;
  std::condition_variable idle;
  int running = 0;  // guarded by mu
  std::atomic<bool> cancel{false};

  void Add(int n) {
    std::lock_guard lock(mu);
    running += n;
  }
  // The task's last touch of shared state.
  void Done() {
    std::lock_guard lock(mu);
    if (--running == 0) idle.notify_all();
  }
  void CancelAndWait() {
    cancel = true;
    std::unique_lock lock(mu);
    idle.wait(lock, [this] { return running == 0; });
  }
};

struct SnapshotManager::Pooled {
  Segment segment;
  std::string job_id;
  int rank = 0;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CORE_SNAPSHOT_MANAGER_INTERNAL_H_
