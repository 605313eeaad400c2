#include "server/snapshot_service.h"

#include <atomic>
#include <utility>

#include "holdfast/proto/status_map.h"

namespace holdfast::smp {
namespace {

// Holds a client's session stream open until the client goes away (or the
// server shuts down), then closes the session on the loop.
class SessionReactor final : public grpc::ServerWriteReactor<v1::SessionEvent> {
 public:
  SessionReactor(SnapshotManager* manager, EventLoop* loop, v1::OpenSessionRequest req)
      : manager_(manager), loop_(loop) {
    loop_->Post([this, req = std::move(req)] {
      session_id_ = manager_->OpenSession(req);
      event_.set_session_id(session_id_);
      StartWrite(&event_);
    });
  }

  void OnWriteDone(bool /*ok*/) override {}  // stay open: the stream is the lease

  void OnCancel() override {
    // The client died or hung up (or the server is shutting down).
    loop_->Post([this] {
      manager_->CloseSession(session_id_);
      Finish(grpc::Status::CANCELLED);
    });
  }

  void OnDone() override { delete this; }

 private:
  SnapshotManager* const manager_;
  EventLoop* const loop_;
  uint64_t session_id_ = 0;  // loop only
  v1::SessionEvent event_;
};

}  // namespace

template <typename Fn>
grpc::ServerUnaryReactor* SnapshotService::OnLoop(grpc::CallbackServerContext* ctx, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  loop_->Post([reactor, fn = std::move(fn)]() mutable { reactor->Finish(proto::ToGrpc(fn())); });
  return reactor;
}

grpc::ServerUnaryReactor* SnapshotService::RegisterJob(grpc::CallbackServerContext* ctx,
                                                       const v1::RegisterJobRequest* req,
                                                       v1::RegisterJobResponse* resp) {
  return OnLoop(ctx, [=, this] { return manager_->RegisterJob(*req, resp); });
}

grpc::ServerWriteReactor<v1::SessionEvent>* SnapshotService::OpenSession(
    grpc::CallbackServerContext* /*ctx*/, const v1::OpenSessionRequest* req) {
  return new SessionReactor(manager_, loop_, *req);
}

grpc::ServerUnaryReactor* SnapshotService::BeginSnapshot(grpc::CallbackServerContext* ctx,
                                                         const v1::BeginSnapshotRequest* req,
                                                         v1::BeginSnapshotResponse* resp) {
  return OnLoop(ctx, [=, this] { return manager_->Begin(*req, resp); });
}

grpc::ServerUnaryReactor* SnapshotService::CommitSnapshot(grpc::CallbackServerContext* ctx,
                                                          const v1::CommitSnapshotRequest* req,
                                                          v1::CommitSnapshotResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  loop_->Post([=, this] {
    manager_->Commit(*req, [reactor, resp](Status s, v1::CommitSnapshotResponse r) {
      *resp = std::move(r);
      reactor->Finish(proto::ToGrpc(s));
    });
  });
  return reactor;
}

grpc::ServerUnaryReactor* SnapshotService::AbortSnapshot(grpc::CallbackServerContext* ctx,
                                                         const v1::AbortSnapshotRequest* req,
                                                         v1::AbortSnapshotResponse* /*resp*/) {
  return OnLoop(ctx, [=, this] { return manager_->Abort(*req); });
}

grpc::ServerUnaryReactor* SnapshotService::ListVersions(grpc::CallbackServerContext* ctx,
                                                        const v1::ListVersionsRequest* req,
                                                        v1::ListVersionsResponse* resp) {
  return OnLoop(ctx, [=, this] { return manager_->List(*req, resp); });
}

grpc::ServerUnaryReactor* SnapshotService::OpenRestore(grpc::CallbackServerContext* ctx,
                                                       const v1::OpenRestoreRequest* req,
                                                       v1::OpenRestoreResponse* resp) {
  return OnLoop(ctx, [=, this] { return manager_->OpenRestore(*req, resp); });
}

grpc::ServerUnaryReactor* SnapshotService::CloseRestore(grpc::CallbackServerContext* ctx,
                                                        const v1::CloseRestoreRequest* req,
                                                        v1::CloseRestoreResponse* /*resp*/) {
  return OnLoop(ctx, [=, this] { return manager_->CloseRestore(*req); });
}

grpc::ServerUnaryReactor* SnapshotService::DropVersions(grpc::CallbackServerContext* ctx,
                                                        const v1::DropVersionsRequest* req,
                                                        v1::DropVersionsResponse* resp) {
  return OnLoop(ctx, [=, this] { return manager_->Drop(*req, resp); });
}

grpc::ServerUnaryReactor* SnapshotService::GetStatus(grpc::CallbackServerContext* ctx,
                                                     const v1::GetStatusRequest* /*req*/,
                                                     v1::GetStatusResponse* resp) {
  return OnLoop(ctx, [=, this] {
    Status s = manager_->GetStatus(resp);
    if (s.ok() && status_hook_) status_hook_(resp);
    return s;
  });
}

}  // namespace holdfast::smp
