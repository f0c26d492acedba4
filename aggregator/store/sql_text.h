// SQL literal formatting for statements built by the store (values already validated: finite
// doubles, strings without control characters). Strings and bytes are quoted by the connection
// (libpq escaping); numbers and times are formatted here. Thread-safe (pure).
#ifndef FLEETWES_AGGREGATOR_STORE_SQL_TEXT_H_
#define FLEETWES_AGGREGATOR_STORE_SQL_TEXT_H_

#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleetwes::aggregator::sql {

// Full precision ("%.17g"); non-finite values become NULL.
std::string Double(double v);
// NULL when !has.
std::string OptionalDouble(bool has, double v);
std::string Int(int64_t v);
std::string OptionalInt(bool has, int64_t v);
std::string Bool(bool v);
// '2026-01-01 00:00:00.123456+00'::timestamptz (microseconds, UTC).
std::string Time(absl::Time t);
std::string Timestamp(const google::protobuf::Timestamp& ts);
// RFC 3339 with microseconds in UTC, for bound parameters cast to timestamptz.
std::string TimeParam(absl::Time t);

// One row of COPY ... FROM STDIN in text format, built field by field: fields separated by tabs,
// \N for NULL, backslash, tab, newline and carriage return escaped; times in UTC with
// microseconds; bytes as bytea hex. Not thread-safe (a value).
class CopyRow {
 public:
  CopyRow& Text(absl::string_view s);
  CopyRow& Double(double v);  // non-finite values become NULL
  CopyRow& OptionalDouble(bool has, double v);
  CopyRow& Int(int64_t v);
  CopyRow& OptionalInt(bool has, int64_t v);
  CopyRow& Bool(bool v);
  CopyRow& Time(absl::Time t);
  CopyRow& Timestamp(const google::protobuf::Timestamp& ts);
  CopyRow& Bytes(absl::string_view bytes);
  CopyRow& Null();
  // The row without a trailing newline.
  const std::string& line() const { return line_; }

 private:
  void Separate();
  std::string line_;
};

}  // namespace fleetwes::aggregator::sql

#endif  // FLEETWES_AGGREGATOR_STORE_SQL_TEXT_H_
