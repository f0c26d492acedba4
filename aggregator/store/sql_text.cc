#include "aggregator/store/sql_text.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
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

namespace {

// timestamptz's binary form counts microseconds from 2000-01-01 00:00 UTC.
constexpr int64_t kPostgresEpochUnixMicros = 946'684'800'000'000;

}  // namespace

BinaryCopy::BinaryCopy() {
  // Signature, flags (no OIDs), header extension length.
  static constexpr char kSignature[] = "PGCOPY\n\377\r\n";
  data_.append(kSignature, sizeof(kSignature));  // with its final NUL byte
  Put32(0);
  Put32(0);
}

void BinaryCopy::Put16(uint16_t v) {
  const char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
  data_.append(b, 2);
}

void BinaryCopy::Put32(uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  data_.append(b, 4);
}

void BinaryCopy::Put64(uint64_t v) {
  Put32(static_cast<uint32_t>(v >> 32));
  Put32(static_cast<uint32_t>(v));
}

BinaryCopy& BinaryCopy::Row(int16_t fields) {
  ++rows_;
  Put16(static_cast<uint16_t>(fields));
  return *this;
}

BinaryCopy& BinaryCopy::Null() {
  Put32(0xffffffffu);  // length -1
  return *this;
}

BinaryCopy& BinaryCopy::Text(absl::string_view s) {
  Put32(static_cast<uint32_t>(s.size()));
  data_.append(s.data(), s.size());
  return *this;
}

BinaryCopy& BinaryCopy::Bytes(absl::string_view bytes) { return Text(bytes); }

BinaryCopy& BinaryCopy::Int16(int64_t v) {
  if (v < std::numeric_limits<int16_t>::min() || v > std::numeric_limits<int16_t>::max()) {
    if (status_.ok())
      status_ = absl::InvalidArgumentError(absl::StrCat(v, " is out of smallint range"));
    return Null();
  }
  Put32(2);
  Put16(static_cast<uint16_t>(static_cast<int16_t>(v)));
  return *this;
}

BinaryCopy& BinaryCopy::Int32(int64_t v) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
    if (status_.ok())
      status_ = absl::InvalidArgumentError(absl::StrCat(v, " is out of integer range"));
    return Null();
  }
  Put32(4);
  Put32(static_cast<uint32_t>(static_cast<int32_t>(v)));
  return *this;
}

BinaryCopy& BinaryCopy::OptionalInt32(bool has, int64_t v) { return has ? Int32(v) : Null(); }

BinaryCopy& BinaryCopy::Int64(int64_t v) {
  Put32(8);
  Put64(static_cast<uint64_t>(v));
  return *this;
}

BinaryCopy& BinaryCopy::Double(double v) {
  if (!std::isfinite(v)) return Null();
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  Put32(8);
  Put64(bits);
  return *this;
}

BinaryCopy& BinaryCopy::OptionalDouble(bool has, double v) { return has ? Double(v) : Null(); }

BinaryCopy& BinaryCopy::Bool(bool v) {
  Put32(1);
  data_.push_back(v ? 1 : 0);
  return *this;
}

BinaryCopy& BinaryCopy::Time(absl::Time t) {
  static const absl::Time kFirst = absl::FromCivil(absl::CivilSecond(1, 1, 1), absl::UTCTimeZone());
  static const absl::Time kEnd =
      absl::FromCivil(absl::CivilSecond(10000, 1, 1), absl::UTCTimeZone());
  if (t < kFirst || t >= kEnd) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("time ", absl::FormatTime(t, absl::UTCTimeZone()), " is out of range"));
    }
    return Null();
  }
  Put32(8);
  Put64(static_cast<uint64_t>(absl::ToUnixMicros(t) - kPostgresEpochUnixMicros));
  return *this;
}

BinaryCopy& BinaryCopy::Timestamp(const google::protobuf::Timestamp& ts) {
  return Time(FromProtoTime(ts));
}

const std::string& BinaryCopy::Finish() {
  Put16(0xffffu);  // trailer: field count -1
  return data_;
}

}  // namespace fleetwes::aggregator::sql
