// Checking stored versions again (`holdfast verify`, docs/cli.md): the pieces
// both a lone daemon and a cluster member use.
//
// Everything here blocks (it reads every byte of a version): call it from a
// worker thread, never from the daemon's loop. The version is pinned on the
// loop for the duration of the check, so its segments are neither freed nor
// reused meanwhile; no lock is held while bytes are read.
#ifndef HOLDFAST_SMP_SERVER_VERIFY_H_
#define HOLDFAST_SMP_SERVER_VERIFY_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/event_loop.h"
#include "core/snapshot_manager.h"
#include "holdfast/v1/admin.pb.h"

namespace holdfast::smp {

// Runs `fn` on `loop` and returns its result. Never call it on the loop.
template <typename Fn>
auto RunOnLoop(EventLoop* loop, Fn fn) -> decltype(fn()) {
  using R = decltype(fn());
  std::packaged_task<R()> task(std::move(fn));
  std::future<R> result = task.get_future();
  loop->Post([&task] { task(); });
  return result.get();
}

// A version to check: (job, step).
using VerifyKey = std::pair<std::string, int64_t>;

// The versions `req` names among `available` (sorted, unique): every one,
// those of req.job_id, or the one step. NOT_FOUND naming the job or step
// when `req` names something `known_jobs` / `available` lacks.
Result<std::vector<VerifyKey>> SelectVersions(const v1::VerifyRequest& req,
                                               const std::vector<std::string>& known_jobs,
                                               const std::vector<VerifyKey>& available);

// Checks every item of a pinned version against its commit checksum;
// counts into `report` and appends a KIND_ITEM problem per mismatch.
// Returns false if `cancel` was set before the end.
bool CheckItems(const std::string& node_id, const std::string& job_id, int64_t step,
                const PinnedVersion& version, v1::NodeVerifyReport* report,
                const std::atomic<bool>& cancel);

// Pins (job, step) on `loop`, CheckItems, unpins. NOT_FOUND when the version
// is not complete here.
Status VerifyLocalItems(SnapshotManager* manager, EventLoop* loop, const std::string& node_id,
                        const std::string& job_id, int64_t step, v1::NodeVerifyReport* report,
                        const std::atomic<bool>& cancel);

// The Verify of a daemon without a cluster: items of its local versions.
Result<v1::VerifyResponse> VerifyStandalone(SnapshotManager* manager, EventLoop* loop,
                                            const std::string& node_id,
                                            const v1::VerifyRequest& req,
                                            const std::atomic<bool>& cancel);

// Runs verifications one at a time on a thread of its own.
// Thread-safety: every method may be called from any thread.
class VerifyRunner {
 public:
  using VerifyFn =
      std::function<Result<v1::VerifyResponse>(const v1::VerifyRequest&, const std::atomic<bool>&)>;
  using Done = std::function<void(Result<v1::VerifyResponse>)>;

  explicit VerifyRunner(VerifyFn fn) : fn_(std::move(fn)) {}
  ~VerifyRunner();  // Stop()s
  VerifyRunner(const VerifyRunner&) = delete;
  VerifyRunner& operator=(const VerifyRunner&) = delete;

  // Starts `req`; `done` runs on the runner's thread with the outcome.
  // ABORTED when a verification is already running, UNAVAILABLE after Stop.
  Status Start(v1::VerifyRequest req, Done done);
  // Makes a running verification stop early (its `done` gets CANCELLED) and
  // waits for its `done`; later Starts are refused. Call before shutting
  // down the gRPC server whose calls `done` finishes.
  void Stop();

 private:
  const VerifyFn fn_;
  std::mutex mu_;
  bool running_ = false;  // guarded by mu_
  bool stopped_ = false;  // guarded by mu_
  std::thread thread_;    // guarded by mu_
  std::atomic<bool> cancel_{false};
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_SERVER_VERIFY_H_
