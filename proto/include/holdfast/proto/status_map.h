// The one table between holdfast::Status and grpc::Status.
//
// holdfast's StatusCode values are gRPC's codes, so the mapping is one to one
// and lossless both ways; messages pass through unchanged.
#ifndef HOLDFAST_PROTO_STATUS_MAP_H_
#define HOLDFAST_PROTO_STATUS_MAP_H_

#include <grpcpp/support/status.h>

#include "holdfast/ec/status.h"

namespace holdfast::proto {

grpc::Status ToGrpc(const Status& status);
Status FromGrpc(const grpc::Status& status);

}  // namespace holdfast::proto

#endif  // HOLDFAST_PROTO_STATUS_MAP_H_
