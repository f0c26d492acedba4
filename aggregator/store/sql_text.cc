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

void CopyRow::Separate() {
  if (!line_.empty()) line_.push_back('\t');
}

CopyRow& CopyRow::Text(absl::string_view s) {
  Separate();
  for (char c : s) {
    switch (c) {
      case '\\':
        line_ += "\\\\";
        break;
      case '\t':
        line_ += "\\t";
        break;
      case '\n':
        line_ += "\\n";
        break;
      case '\r':
        line_ += "\\r";
        break;
      default:
        line_.push_back(c);
    }
  }
  return *this;
}

CopyRow& CopyRow::Null() {
  Separate();
  line_ += "\\N";
  return *this;
}

CopyRow& CopyRow::Double(double v) {
  if (!std::isfinite(v)) return Null();
  Separate();
  absl::StrAppendFormat(&line_, "%.17g", v);
  return *this;
}

CopyRow& CopyRow::OptionalDouble(bool has, double v) { return has ? Double(v) : Null(); }

CopyRow& CopyRow::Int(int64_t v) {
  Separate();
  absl::StrAppend(&line_, v);
  return *this;
}

CopyRow& CopyRow::OptionalInt(bool has, int64_t v) { return has ? Int(v) : Null(); }

CopyRow& CopyRow::Bool(bool v) {
  Separate();
  line_.push_back(v ? 't' : 'f');
  return *this;
}

CopyRow& CopyRow::Time(absl::Time t) {
  Separate();
  line_ += TimeParam(t);
  return *this;
}

CopyRow& CopyRow::Timestamp(const google::protobuf::Timestamp& ts) {
  return Time(FromProtoTime(ts));
}

CopyRow& CopyRow::Bytes(absl::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  Separate();
  line_ += "\\\\x";  // bytea's "\\x" hex prefix, its backslash escaped for COPY
  line_.reserve(line_.size() + 2 * bytes.size());
  for (unsigned char c : bytes) {
    line_.push_back(kHex[c >> 4]);
    line_.push_back(kHex[c & 15]);
  }
  return *this;
}

}  // namespace fleetwes::aggregator::sql
