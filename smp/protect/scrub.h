// The background scrub of one holdfastd (docs/reliability-scrub.md): a
// low-priority thread that re-reads every stored version at a bounded rate
// and checks it, so that damage in memory is found (and, in a cluster,
// repaired from the group) before a restore or a rebuild needs the bytes.
//
//   scrub thread (nice +10), a pass every `interval`
//     versions: complete here (SnapshotManager::Summaries) + protected here
//     protected (cluster)  ClusterNode::ScrubProtected: each of this node's
//                          data and parity chunks against the group manifest;
//                          a bad one rebuilt from k good chunks of the stripe
//                          (ReadChunks over UCX, Codec::Decode), checked,
//                          rewritten in place; data repaired: items re-checked
//     local only           every item's CRC-64 against its commit checksum;
//                          a mismatch retires the version (MarkDamaged)
//   every read passes Pace(): a token bucket of `rate` bytes/s
//
// A version whose damage cannot be repaired (more than m bad chunks in a
// stripe, or an unprotected version) is retired as background verification
// does: never served again, counted in GetStatus.damaged_versions and in
// ScrubStatus. Repairs touch only the chunk of the version found bad.
//
// Threading: the scrub thread holds no lock while it reads or writes bytes;
// versions are pinned on the loop (their segments stay mapped and unused)
// for the time they are read. FillStatus may be called from any thread.
#ifndef HOLDFAST_SMP_PROTECT_SCRUB_H_
#define HOLDFAST_SMP_PROTECT_SCRUB_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/event_loop.h"
#include "core/snapshot_manager.h"
#include "holdfast/v1/snapshot.pb.h"

namespace holdfast::smp {

class ClusterNode;

struct ScrubOptions {
  bool enabled = true;
  uint64_t rate_bytes_per_second = uint64_t{64} << 20;
  std::chrono::seconds interval{3600};  // between the starts of two passes
  std::string node_id;
};

// What the scrub of one version found and did.
struct ScrubTally {
  uint64_t bytes = 0;         // read
  uint64_t errors = 0;        // bad chunks or items found
  uint64_t repaired = 0;      // chunks rebuilt and rewritten
  uint64_t unrepairable = 0;  // bad chunks or items left bad
  uint64_t parity_checks = 0;      // stripes re-encoded and found consistent
  uint64_t parity_mismatches = 0;  // ... and found inconsistent
  bool version_damaged = false;  // the local version was retired
  std::vector<std::string> repairs;  // one line each
  std::vector<std::string> losses;   // one line each
};

// How a version's scrub reads: `pace(bytes)` before each window (blocks to
// keep the rate; counts progress), `cancel` to stop early.
struct ScrubHooks {
  std::function<void(uint64_t)> pace;
  const std::atomic<bool>* cancel = nullptr;
};

// Thread-safety: Start/Stop from one thread; FillStatus from any.
class Scrubber {
 public:
  // `manager` and `loop` must outlive the scrubber; `cluster` may be null
  // (a daemon alone) and must outlive it otherwise.
  Scrubber(ScrubOptions options, SnapshotManager* manager, EventLoop* loop, ClusterNode* cluster);
  ~Scrubber();  // Stop()s
  Scrubber(const Scrubber&) = delete;
  Scrubber& operator=(const Scrubber&) = delete;

  // Starts the thread (nothing when disabled). The first pass starts one
  // interval later: recovery has just checked every item.
  void Start();
  // Stops a running pass at its next window and joins the thread.
  void Stop();
  void FillStatus(v1::ScrubStatus* out) const;

 private:
  void Run();
  void RunPass();
  // Waits until `bytes` more may be read under the rate; false when stopping.
  void Pace(uint64_t bytes);
  // The items of a version no group protects here.
  ScrubTally ScrubLocal(const std::string& job_id, int64_t step);
  void Record(const ScrubTally& tally);

  const ScrubOptions options_;
  SnapshotManager* const manager_;
  EventLoop* const loop_;
  ClusterNode* const cluster_;

  mutable std::mutex mu_;
  v1::ScrubStatus status_;  // guarded by mu_

  std::chrono::steady_clock::time_point pace_next_;  // scrub thread only
  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread thread_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_PROTECT_SCRUB_H_
