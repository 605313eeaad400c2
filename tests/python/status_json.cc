// holdfast_status_json SOCKET: prints holdfastd's GetStatus answer (of the
// Admin service: every job, as operators see it) as one line of JSON (proto
// field names, defaults included), for the Python tests, which have no gRPC
// module. Exit codes: 0 ok, 1 no answer within 2 s (the
// message on stderr), 2 usage.
#include <grpcpp/grpcpp.h>

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "holdfast/v1/admin.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
    return 2;
  }
  auto channel = grpc::CreateChannel(std::string("unix:") + argv[1],
                                     grpc::InsecureChannelCredentials());
  auto stub = holdfast::v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  holdfast::v1::GetStatusResponse resp;
  const grpc::Status s = stub->GetStatus(&ctx, holdfast::v1::GetStatusRequest(), &resp);
  if (!s.ok()) {
    std::fprintf(stderr, "GetStatus: %d %s\n", static_cast<int>(s.error_code()),
                 s.error_message().c_str());
    return 1;
  }
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(resp, &json, options).ok()) {
    std::fprintf(stderr, "cannot print the answer as JSON\n");
    return 1;
  }
  std::printf("%s\n", json.c_str());
  return 0;
}
