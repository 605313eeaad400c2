// gRPC front of holdfastd: translates holdfast.v1.Snapshot calls into
// SnapshotManager calls posted to the daemon's event loop.
//
// Handlers never block: each one posts its work to the loop and returns a
// reactor that the loop finishes. Requests and responses stay alive until
// Finish (gRPC's callback contract), so the loop may fill them in place.
//
// Job credentials (docs/security.md): every call naming a registered job
// must carry that job's secret (metadata holdfast-job-secret); the check runs
// on the loop, in constant time, before the manager sees the request. A
// wrong or missing secret is PERMISSION_DENIED and says nothing about other
// jobs. Calls for an unregistered job pass through (the manager answers
// NOT_FOUND). ListVersions and GetStatus show only the caller's job (the one
// its credentials are for); the Admin service is the operators' all-jobs view.
//
// Thread-safety: gRPC calls handlers on its own threads; all state access
// happens on the loop.
#ifndef HOLDFAST_SMP_SERVER_SNAPSHOT_SERVICE_H_
#define HOLDFAST_SMP_SERVER_SNAPSHOT_SERVICE_H_

#include <functional>
#include <string>

#include "core/event_loop.h"
#include "core/snapshot_manager.h"
#include "holdfast/v1/snapshot.grpc.pb.h"

namespace holdfast::smp {

class SnapshotService final : public v1::Snapshot::CallbackService {
 public:
  SnapshotService(SnapshotManager* manager, EventLoop* loop) : manager_(manager), loop_(loop) {}

  // What a call's metadata claims: the job it acts for and its secret.
  struct Caller {
    std::string job_id;
    std::string secret;
  };
  static Caller ReadCaller(const grpc::CallbackServerContext& ctx);

  // Adds to every GetStatus answer (on the loop; e.g. the cluster's view).
  // Set before serving.
  void SetStatusHook(std::function<void(v1::GetStatusResponse*)> hook) {
    status_hook_ = std::move(hook);
  }

  grpc::ServerUnaryReactor* RegisterJob(grpc::CallbackServerContext* ctx,
                                        const v1::RegisterJobRequest* req,
                                        v1::RegisterJobResponse* resp) override;
  grpc::ServerWriteReactor<v1::SessionEvent>* OpenSession(
      grpc::CallbackServerContext* ctx, const v1::OpenSessionRequest* req) override;
  grpc::ServerUnaryReactor* BeginSnapshot(grpc::CallbackServerContext* ctx,
                                          const v1::BeginSnapshotRequest* req,
                                          v1::BeginSnapshotResponse* resp) override;
  grpc::ServerUnaryReactor* CommitSnapshot(grpc::CallbackServerContext* ctx,
                                           const v1::CommitSnapshotRequest* req,
                                           v1::CommitSnapshotResponse* resp) override;
  grpc::ServerUnaryReactor* AbortSnapshot(grpc::CallbackServerContext* ctx,
                                          const v1::AbortSnapshotRequest* req,
                                          v1::AbortSnapshotResponse* resp) override;
  grpc::ServerUnaryReactor* ListVersions(grpc::CallbackServerContext* ctx,
                                         const v1::ListVersionsRequest* req,
                                         v1::ListVersionsResponse* resp) override;
  grpc::ServerUnaryReactor* OpenRestore(grpc::CallbackServerContext* ctx,
                                        const v1::OpenRestoreRequest* req,
                                        v1::OpenRestoreResponse* resp) override;
  grpc::ServerUnaryReactor* CloseRestore(grpc::CallbackServerContext* ctx,
                                         const v1::CloseRestoreRequest* req,
                                         v1::CloseRestoreResponse* resp) override;
  grpc::ServerUnaryReactor* DropVersions(grpc::CallbackServerContext* ctx,
                                         const v1::DropVersionsRequest* req,
                                         v1::DropVersionsResponse* resp) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* req,
                                      v1::GetStatusResponse* resp) override;

 private:
  // Posts `fn` (returning Status) to the loop and finishes the reactor with it.
  template <typename Fn>
  grpc::ServerUnaryReactor* OnLoop(grpc::CallbackServerContext* ctx, Fn fn);
  // On the loop: OK when `job_id` is not registered, has no secret yet, or
  // `caller` carries its secret; PERMISSION_DENIED otherwise.
  Status Authorize(const Caller& caller, const std::string& job_id) const;

  SnapshotManager* const manager_;
  EventLoop* const loop_;
  std::function<void(v1::GetStatusResponse*)> status_hook_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_SERVER_SNAPSHOT_SERVICE_H_
