#include "aggregator/proto_time.h"

#include <cstdint>

namespace fleetwes::aggregator {

absl::Time FromProtoTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  google::protobuf::Timestamp ts;
  const absl::Duration since_epoch = t - absl::UnixEpoch();
  absl::Duration rem;
  const int64_t seconds = absl::IDivDuration(since_epoch, absl::Seconds(1), &rem);
  int64_t nanos = absl::ToInt64Nanoseconds(rem);
  int64_t s = seconds;
  if (nanos < 0) {
    nanos += 1'000'000'000;
    --s;
  }
  ts.set_seconds(s);
  ts.set_nanos(static_cast<int32_t>(nanos));
  return ts;
}

}  // namespace fleetwes::aggregator
