#include "server/snapshot_service.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "holdfast/proto/job_credentials.h"
#include "holdfast/proto/status_map.h"

namespace holdfast::smp {
namespace {

// Holds a client's session stream open until the client goes away (or the
// server shuts down), then closes the session on the loop.
class SessionReactor final : public grpc::ServerWriteReactor<v1::SessionEvent> {
 public:
  // `admit` runs on the loop first; a failure ends the stream with it.
  SessionReactor(SnapshotManager* manager, EventLoop* loop, v1::OpenSessionRequest req,
                 std::function<Status()> admit)
      : manager_(manager), loop_(loop) {
    loop_->Post([this, req = std::move(req), admit = std::move(admit)] {
      if (Status s = admit(); !s.ok()) {
        finished_ = true;
        refused_ = true;
        Finish(proto::ToGrpc(s));
        return;
      }
      session_id_ = manager_->OpenSession(req);
      event_.set_session_id(session_id_);
      StartWrite(&event_);
    });
  }

  void OnWriteDone(bool /*ok*/) override {}  // stay open: the stream is the lease

  void OnCancel() override {
    // The client died or hung up (or the server is shutting down).
    loop_->Post([this] {
      if (finished_) return;
      finished_ = true;
      manager_->CloseSession(session_id_);
      Finish(grpc::Status::CANCELLED);
    });
  }

  void OnDone() override {
    // A refused stream may still see OnCancel (the client hung up while it
    // was refused), whose task is on the loop: delete after it. Otherwise
    // nothing of this reactor is pending on the loop.
    if (refused_) {
      loop_->Post([this] { delete this; });
    } else {
      delete this;
    }
  }

 private:
  SnapshotManager* const manager_;
  EventLoop* const loop_;
  uint64_t session_id_ = 0;  // loop only
  bool finished_ = false;    // loop only
  std::atomic<bool> refused_{false};
  v1::SessionEvent event_;
};

}  // namespace

template <typename Fn>
grpc::ServerUnaryReactor* SnapshotService::OnLoop(grpc::CallbackServerContext* ctx, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  loop_->Post([reactor, fn = std::move(fn)]() mutable { reactor->Finish(proto::ToGrpc(fn())); });
  return reactor;
}

SnapshotService::Caller SnapshotService::ReadCaller(const grpc::CallbackServerContext& ctx) {
  Caller caller;
  const auto& md = ctx.client_metadata();
  // Bounded by gRPC's metadata size limit; only exact-size values are used.
  if (auto it = md.find(proto::kJobIdMetadata); it != md.end() && it->second.size() <= 128) {
    caller.job_id.assign(it->second.data(), it->second.size());
  }
  if (auto it = md.find(proto::kJobSecretMetadata); it != md.end() && it->second.size() <= 64) {
    caller.secret.assign(it->second.data(), it->second.size());
  }
  return caller;
}

Status SnapshotService::Authorize(const Caller& caller, const std::string& job_id) const {
  const std::string* hash = manager_->JobSecretHash(job_id);
  if (hash == nullptr || hash->empty()) return Status::Ok();
  if (caller.secret.empty()) {
    return Status(StatusCode::kPermissionDenied, 
        "job " + job_id + " requires its secret (metadata " + proto::kJobSecretMetadata +
        "): the client library keeps it; set HOLDFAST_JOB_TOKEN for jobs whose ranks share one");
  }
  if (!proto::SecretMatches(caller.secret, *hash)) {
    return Status(StatusCode::kPermissionDenied, "wrong secret for job " + job_id);
  }
  return Status::Ok();
}

grpc::ServerUnaryReactor* SnapshotService::RegisterJob(grpc::CallbackServerContext* ctx,
                                                       const v1::RegisterJobRequest* req,
                                                       v1::RegisterJobResponse* resp) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)]() -> Status {
    const std::string* hash = manager_->JobSecretHash(req->job_id());
    if (hash != nullptr && !hash->empty()) {
      HOLDFAST_RETURN_IF_ERROR(Authorize(caller, req->job_id()));
      return manager_->RegisterJob(*req, resp);
    }
    // The job's first registration (or the first since it was rebuilt from
    // peers): the caller's secret (a token-derived one) or a new one.
    std::string issued;
    std::string secret = caller.secret;
    if (secret.empty()) {
      secret = issued = proto::NewJobSecret();
      if (secret.empty()) return Status::Internal("no randomness for a job secret");
    } else if (!proto::WellFormedSecret(secret)) {
      return Status::InvalidArgument(std::string("metadata ") + proto::kJobSecretMetadata +
                                     " must be 64 lowercase hex characters");
    }
    HOLDFAST_RETURN_IF_ERROR(manager_->RegisterJob(*req, resp, proto::HashSecret(secret)));
    resp->set_job_secret(issued);
    return Status::Ok();
  });
}

grpc::ServerWriteReactor<v1::SessionEvent>* SnapshotService::OpenSession(
    grpc::CallbackServerContext* ctx, const v1::OpenSessionRequest* req) {
  return new SessionReactor(manager_, loop_, *req,
                            [this, caller = ReadCaller(*ctx), job = req->job_id()]() -> Status {
                              HOLDFAST_RETURN_IF_ERROR(Authorize(caller, job));
                              return manager_->CheckSessionLimit(job);
                            });
}

grpc::ServerUnaryReactor* SnapshotService::BeginSnapshot(grpc::CallbackServerContext* ctx,
                                                         const v1::BeginSnapshotRequest* req,
                                                         v1::BeginSnapshotResponse* resp) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)] {
    HOLDFAST_RETURN_IF_ERROR(Authorize(caller, req->job_id()));
    return manager_->Begin(*req, resp);
  });
}

grpc::ServerUnaryReactor* SnapshotService::CommitSnapshot(grpc::CallbackServerContext* ctx,
                                                          const v1::CommitSnapshotRequest* req,
                                                          v1::CommitSnapshotResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  loop_->Post([=, this, caller = ReadCaller(*ctx)] {
    if (Status s = Authorize(caller, req->job_id()); !s.ok()) {
      reactor->Finish(proto::ToGrpc(s));
      return;
    }
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
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)] {
    HOLDFAST_RETURN_IF_ERROR(Authorize(caller, req->job_id()));
    return manager_->Abort(*req);
  });
}

grpc::ServerUnaryReactor* SnapshotService::ListVersions(grpc::CallbackServerContext* ctx,
                                                        const v1::ListVersionsRequest* req,
                                                        v1::ListVersionsResponse* resp) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)]() -> Status {
    // Only the caller's job: "every job" is the operators' call (Admin).
    v1::ListVersionsRequest own = *req;
    if (own.job_id().empty()) {
      if (caller.job_id.empty()) {
        return Status(StatusCode::kPermissionDenied, 
            "listing every job is an operator call (holdfast list); name a job");
      }
      own.set_job_id(caller.job_id);
    }
    HOLDFAST_RETURN_IF_ERROR(Authorize(caller, own.job_id()));
    return manager_->List(own, resp);
  });
}

grpc::ServerUnaryReactor* SnapshotService::OpenRestore(grpc::CallbackServerContext* ctx,
                                                       const v1::OpenRestoreRequest* req,
                                                       v1::OpenRestoreResponse* resp) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)] {
    HOLDFAST_RETURN_IF_ERROR(Authorize(caller, req->job_id()));
    return manager_->OpenRestore(*req, resp);
  });
}

grpc::ServerUnaryReactor* SnapshotService::CloseRestore(grpc::CallbackServerContext* ctx,
                                                        const v1::CloseRestoreRequest* req,
                                                        v1::CloseRestoreResponse* /*resp*/) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)]() -> Status {
    // The lease names its job; an unknown lease goes to the manager (NOT_FOUND).
    const std::string job = manager_->LeaseJob(req->lease_id());
    if (!job.empty()) {
      if (Status s = Authorize(caller, job); !s.ok()) {
        return Status::NotFound("no restore lease " + std::to_string(req->lease_id()) +
                                " of this caller's job");
      }
    }
    return manager_->CloseRestore(*req);
  });
}

grpc::ServerUnaryReactor* SnapshotService::DropVersions(grpc::CallbackServerContext* ctx,
                                                        const v1::DropVersionsRequest* req,
                                                        v1::DropVersionsResponse* resp) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)] {
    HOLDFAST_RETURN_IF_ERROR(Authorize(caller, req->job_id()));
    return manager_->Drop(*req, resp);
  });
}

grpc::ServerUnaryReactor* SnapshotService::GetStatus(grpc::CallbackServerContext* ctx,
                                                     const v1::GetStatusRequest* /*req*/,
                                                     v1::GetStatusResponse* resp) {
  return OnLoop(ctx, [=, this, caller = ReadCaller(*ctx)] {
    Status s = manager_->GetStatus(resp);
    if (s.ok() && status_hook_) status_hook_(resp);
    // Node figures for everyone; of the jobs, only the caller's (when its
    // credentials hold).
    const bool own = !caller.job_id.empty() && Authorize(caller, caller.job_id).ok();
    auto keep = [&](const std::string& job) { return own && job == caller.job_id; };
    auto* jobs = resp->mutable_jobs();
    jobs->erase(std::remove_if(jobs->begin(), jobs->end(),
                               [&](const v1::JobStatus& j) { return !keep(j.job_id()); }),
                jobs->end());
    if (resp->has_cluster()) {
      auto* prot = resp->mutable_cluster()->mutable_jobs();
      prot->erase(std::remove_if(prot->begin(), prot->end(),
                                 [&](const v1::JobProtection& j) { return !keep(j.job_id()); }),
                  prot->end());
      v1::RebuildStatus* rebuild = resp->mutable_cluster()->mutable_rebuild();
      if (!keep(rebuild->job_id())) {
        rebuild->clear_job_id();
        rebuild->clear_unrecoverable();
      }
    }
    return s;
  });
}

}  // namespace holdfast::smp
