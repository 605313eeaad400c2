// gRPC front of holdfastd for the `holdfast` operator CLI (proto
// holdfast.v1.Admin, docs/cli.md): status, listing, drop and verify.
//
// The daemon serves one instance on its Unix socket (`local`: every call)
// and, in a cluster, one on its control address, where calls that change
// state (DropVersions) are refused with PERMISSION_DENIED unless
// `operator_check` accepts the caller (with mutual TLS: a client certificate
// carrying the operator role, docs/security.md).
//
// Handlers never block: status, list and drop are posted to the loop;
// Verify runs on the VerifyRunner's thread.
// Thread-safety: gRPC calls handlers on its own threads; state is on the loop.
#ifndef HOLDFAST_SMP_SERVER_ADMIN_SERVICE_H_
#define HOLDFAST_SMP_SERVER_ADMIN_SERVICE_H_

#include <functional>

#include "core/event_loop.h"
#include "core/snapshot_manager.h"
#include "holdfast/v1/admin.grpc.pb.h"
#include "server/verify.h"

namespace holdfast::smp {

struct AdminServiceOptions {
  // True on the Unix socket: mutating calls are accepted.
  bool local = true;
  // Adds to every GetStatus answer, on the loop (the cluster's view).
  std::function<void(v1::GetStatusResponse*)> status_hook;
  // Not local: whether the caller may still drop (an authenticated
  // operator); returns "" to allow, else why not. Unset: never.
  std::function<std::string(const grpc::CallbackServerContext&)> operator_check;
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `manager`, `loop` and `verifier` must outlive the service.
  AdminService(SnapshotManager* manager, EventLoop* loop, VerifyRunner* verifier,
               AdminServiceOptions options)
      : manager_(manager), loop_(loop), verifier_(verifier), options_(std::move(options)) {}

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* req,
                                      v1::GetStatusResponse* resp) override;
  grpc::ServerUnaryReactor* ListVersions(grpc::CallbackServerContext* ctx,
                                         const v1::ListVersionsRequest* req,
                                         v1::ListVersionsResponse* resp) override;
  grpc::ServerUnaryReactor* DropVersions(grpc::CallbackServerContext* ctx,
                                         const v1::DropVersionsRequest* req,
                                         v1::DropVersionsResponse* resp) override;
  grpc::ServerUnaryReactor* Verify(grpc::CallbackServerContext* ctx, const v1::VerifyRequest* req,
                                   v1::VerifyResponse* resp) override;

 private:
  SnapshotManager* const manager_;
  EventLoop* const loop_;
  VerifyRunner* const verifier_;
  const AdminServiceOptions options_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_SERVER_ADMIN_SERVICE_H_
