#include "aggregator/store/sql_text.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aggregator/proto_time.h"

namespace fleetwes::aggregator::sql {

std::string Double(double v) {
  if (!std::isfinite(v)) return "NULL";
  return absl::StrFormat("%.17g", v);
}

std::string OptionalDouble(bool has, double v) { return has ? Double(v) : "NULL"; }

std::string Int(int64_t v) { return absl::StrCat(v); }

std::string OptionalInt(bool has, int64_t v) { return has ? Int(v) : "NULL"; }

std::string Bool(bool v) { return v ? "true" : "false"; }

std::string TimeParam(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6S+00:00", t, absl::UTCTimeZone());
}

std::string Time(absl::Time t) { return absl::StrCat("'", TimeParam(t), "'::timestamptz"); }

std::string Timestamp(const google::protobuf::Timestamp& ts) { return Time(FromProtoTime(ts)); }

}  // namespace fleetwes::aggregator::sql
