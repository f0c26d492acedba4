// google.protobuf.Timestamp <-> absl::Time. Pure; thread-safe.
#ifndef FLEETWES_AGGREGATOR_PROTO_TIME_H_
#define FLEETWES_AGGREGATOR_PROTO_TIME_H_

#include <google/protobuf/timestamp.pb.h>

#include "absl/time/time.h"

namespace fleetwes::aggregator {

// Precondition: `ts` is in Timestamp's valid range (validated input).
absl::Time FromProtoTime(const google::protobuf::Timestamp& ts);
google::protobuf::Timestamp ToProtoTime(absl::Time t);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_PROTO_TIME_H_
