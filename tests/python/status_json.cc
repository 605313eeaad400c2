// holdfast_status_json SOCKET: prints holdfastd's GetStatus answer (of the
// Admin service: every job, as operators see it) as one line of JSON (proto
// field names, defaults included), for the Python tests, which have no gRPC
// module. Exit codes: 0 ok, 1 no answer within 2 s (the
// message on stderr), 2 usage.
//
// holdfast_status_json --serve: the same for every socket path read from
// stdin, one per line, answered with one line each (the JSON, or
// {"error": "..."}), until stdin closes. Channels stay open between
// questions: a poller (the chaos suite asks every 50 ms) then costs a gRPC
// call, not a process start and a new channel each time.
#include <grpcpp/grpcpp.h>

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "holdfast/v1/admin.grpc.pb.h"

namespace {

// GetStatus of the daemon behind `stub` as JSON; false and the reason in
// `out` when there is no answer.
bool StatusJson(holdfast::v1::Admin::Stub& stub, std::string* out) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  holdfast::v1::GetStatusResponse resp;
  const grpc::Status s = stub.GetStatus(&ctx, holdfast::v1::GetStatusRequest(), &resp);
  if (!s.ok()) {
    *out = "GetStatus: " + std::to_string(static_cast<int>(s.error_code())) + " " +
           s.error_message();
    return false;
  }
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  out->clear();
  if (!google::protobuf::util::MessageToJsonString(resp, out, options).ok()) {
    *out = "cannot print the answer as JSON";
    return false;
  }
  return true;
}

std::unique_ptr<holdfast::v1::Admin::Stub> StubFor(const std::string& socket) {
  return holdfast::v1::Admin::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

// A JSON string literal of `text`.
std::string Quoted(const std::string& text) {
  std::string q = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      q += '\\';
      q += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      q += ' ';
    } else {
      q += c;
    }
  }
  return q + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SOCKET | --serve\n", argv[0]);
    return 2;
  }
  std::string out;
  if (std::string(argv[1]) != "--serve") {
    auto stub = StubFor(argv[1]);
    if (!StatusJson(*stub, &out)) {
      std::fprintf(stderr, "%s\n", out.c_str());
      return 1;
    }
    std::printf("%s\n", out.c_str());
    return 0;
  }
  std::map<std::string, std::unique_ptr<holdfast::v1::Admin::Stub>> stubs;
  std::string socket;
  while (std::getline(std::cin, socket)) {
    auto& stub = stubs[socket];
    if (!stub) stub = StubFor(socket);
    if (StatusJson(*stub, &out)) {
      std::cout << out << '\n';
    } else {
      std::cout << "{\"error\": " << Quoted(out) << "}\n";
      // A channel that failed to connect backs off (for up to minutes)
      // before it tries again; a restarted daemon gets a new one.
      stubs.erase(socket);
    }
    std::cout.flush();
  }
  return 0;
}
