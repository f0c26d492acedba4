// SQL literal formatting for statements built by the store (values already validated: finite
// doubles, strings without control characters). Strings and bytes are quoted by the connection
// (libpq escaping); numbers and times are formatted here. Thread-safe (pure).
#ifndef FLEETWES_AGGREGATOR_STORE_SQL_TEXT_H_
#define FLEETWES_AGGREGATOR_STORE_SQL_TEXT_H_

#include <google/protobuf/timestamp.pb.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
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

// The data of one COPY ... FROM STDIN (FORMAT binary), built row by row: the header, then per row
// its field count and each field as a length and PostgreSQL's binary send format (network byte
// order), then the trailer. Each field's method must match its column's type exactly (Int16:
// smallint, Int32: integer, Int64: bigint, Double: double precision, Time: timestamptz, Text:
// text, Bytes: bytea); the server refuses the COPY otherwise. A value the column cannot hold (an
// integer out of its range, a time outside years 1..9999) is not written: the builder records
// the first such error instead (status()). Cheaper than text COPY for both sides: no number
// formatting here, no parsing and no hex decoding in the server. Not thread-safe (a value).
class BinaryCopy {
 public:
  BinaryCopy();
  // Starts a row of `fields` fields; exactly that many field calls must follow.
  BinaryCopy& Row(int16_t fields);
  BinaryCopy& Text(absl::string_view s);
  BinaryCopy& Bytes(absl::string_view bytes);
  BinaryCopy& Int16(int64_t v);
  BinaryCopy& Int32(int64_t v);
  BinaryCopy& OptionalInt32(bool has, int64_t v);
  BinaryCopy& Int64(int64_t v);
  BinaryCopy& Double(double v);  // non-finite values become NULL, as in CopyRow
  BinaryCopy& OptionalDouble(bool has, double v);
  BinaryCopy& Bool(bool v);
  BinaryCopy& Time(absl::Time t);
  BinaryCopy& Timestamp(const google::protobuf::Timestamp& ts);
  BinaryCopy& Null();

  size_t rows() const { return rows_; }
  // OK, or InvalidArgument naming the first value no column of its type can hold.
  const absl::Status& status() const { return status_; }
  // The whole COPY data with its trailer. Call once, after the last row.
  const std::string& Finish();

 private:
  void Put16(uint16_t v);
  void Put32(uint32_t v);
  void Put64(uint64_t v);
  std::string data_;
  size_t rows_ = 0;
  absl::Status status_;
};

}  // namespace fleetwes::aggregator::sql

#endif  // FLEETWES_AGGREGATOR_STORE_SQL_TEXT_H_
