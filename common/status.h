// absl::Status <-> grpc::Status at the RPC edge. The codes match one to one.
#ifndef FLEETWES_COMMON_STATUS_H_
#define FLEETWES_COMMON_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace fleetwes {

grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);

// True for the codes the protocol retries with backoff (docs/protocol.md): UNAVAILABLE,
// DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED.
bool IsRetryable(absl::StatusCode code);

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_STATUS_H_
