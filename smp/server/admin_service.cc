#include "server/admin_service.h"

#include "holdfast/proto/status_map.h"

namespace holdfast::smp {
namespace {

template <typename Fn>
grpc::ServerUnaryReactor* FinishOnLoop(EventLoop* loop, grpc::CallbackServerContext* ctx, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  loop->Post([reactor, fn = std::move(fn)]() mutable { reactor->Finish(proto::ToGrpc(fn())); });
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* AdminService::GetStatus(grpc::CallbackServerContext* ctx,
                                                  const v1::GetStatusRequest* /*req*/,
                                                  v1::GetStatusResponse* resp) {
  return FinishOnLoop(loop_, ctx, [=, this] {
    Status s = manager_->GetStatus(resp);
    if (s.ok() && options_.status_hook) options_.status_hook(resp);
    return s;
  });
}

grpc::ServerUnaryReactor* AdminService::ListVersions(grpc::CallbackServerContext* ctx,
                                                     const v1::ListVersionsRequest* req,
                                                     v1::ListVersionsResponse* resp) {
  return FinishOnLoop(loop_, ctx, [=, this] { return manager_->List(*req, resp); });
}

grpc::ServerUnaryReactor* AdminService::DropVersions(grpc::CallbackServerContext* ctx,
                                                     const v1::DropVersionsRequest* req,
                                                     v1::DropVersionsResponse* resp) {
  if (!options_.local) {
    const std::string refusal = options_.operator_check
                                    ? options_.operator_check(*ctx)
                                    : "the control address is not authenticated";
    if (!refusal.empty()) {
      grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
      reactor->Finish(proto::ToGrpc(
          Status(StatusCode::kPermissionDenied,
                 "DropVersions is accepted only on the node's Unix socket (run holdfast drop on "
                 "that node) or from an operator certificate: " + refusal)));
      return reactor;
    }
  }
  return FinishOnLoop(loop_, ctx, [=, this] { return manager_->Drop(*req, resp); });
}

grpc::ServerUnaryReactor* AdminService::Verify(grpc::CallbackServerContext* ctx,
                                               const v1::VerifyRequest* req,
                                               v1::VerifyResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  Status started = verifier_->Start(*req, [reactor, resp](Result<v1::VerifyResponse> result) {
    if (result.ok()) *resp = std::move(result).value();
    reactor->Finish(proto::ToGrpc(result.status()));
  });
  if (!started.ok()) reactor->Finish(proto::ToGrpc(started));
  return reactor;
}

}  // namespace holdfast::smp
