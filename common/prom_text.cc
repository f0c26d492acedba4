#include "common/prom_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fleetwes::prom {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }
bool IsLabelStart(char c) { return IsNameStart(c) && c != ':'; }
bool IsLabelChar(char c) { return IsNameChar(c) && c != ':'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

// A sample value or a bucket bound: a decimal float, or NaN / Inf / +Inf / -Inf in any case.
bool ParseFloat(std::string_view s, double* out) {
  if (s.empty()) return false;
  bool negative = false;
  std::string_view body = s;
  if (body.front() == '+' || body.front() == '-') {
    negative = body.front() == '-';
    body.remove_prefix(1);
  }
  if (EqualsIgnoreCase(body, "inf") || EqualsIgnoreCase(body, "infinity")) {
    *out = negative ? -kInf : kInf;
    return true;
  }
  if (EqualsIgnoreCase(body, "nan")) {
    if (s.front() == '+' || s.front() == '-') return false;
    *out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  // Only digits, '.', exponent and sign characters from here on (no "nan(...)", no hex).
  if (body.empty() || body.front() == '+' || body.front() == '-') return false;
  for (char c : body) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
      return false;
    }
  }
  double v = 0;
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (ptr != body.data() + body.size()) return false;
  if (ec == std::errc::result_out_of_range) {
    // Saturate like Go's ParseFloat: strtod yields +-HUGE_VAL on overflow, 0 or a denormal on
    // underflow.
    v = std::strtod(std::string(body).c_str(), nullptr);
  } else if (ec != std::errc()) {
    return false;
  }
  *out = negative ? -v : v;
  return true;
}

bool ParseInt64(std::string_view s, int64_t* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool ParseType(std::string_view s, MetricType* out) {
  if (s == "counter") {
    *out = MetricType::kCounter;
  } else if (s == "gauge") {
    *out = MetricType::kGauge;
  } else if (s == "histogram") {
    *out = MetricType::kHistogram;
  } else if (s == "summary") {
    *out = MetricType::kSummary;
  } else if (s == "untyped" || s == "unknown") {
    *out = MetricType::kUntyped;
  } else {
    return false;
  }
  return true;
}

// Strips a child suffix; the caller checks the family's type.
struct Child {
  std::string_view suffix;
  bool histogram;
  bool summary;
  bool counter;
};
constexpr Child kChildren[] = {
    {"_bucket", true, false, false}, {"_sum", true, true, false},    {"_count", true, true, false},
    {"_created", true, true, true},  {"_total", false, false, true},
};

class Parser {
 public:
  Parser(std::string_view text, const ParseLimits& limits) : text_(text), limits_(limits) {}

  absl::StatusOr<Exposition> Run() {
    if (text_.size() > limits_.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "exposition of ", text_.size(), " bytes exceeds the limit of ", limits_.max_bytes));
    }
    size_t pos = 0;
    while (pos < text_.size()) {
      ++line_no_;
      size_t end = text_.find('\n', pos);
      if (end == std::string_view::npos) end = text_.size();
      std::string_view line = text_.substr(pos, end - pos);
      pos = end + 1;
      if (line.size() > limits_.max_line_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "line ", line_no_, ": longer than the limit of ", limits_.max_line_bytes, " bytes"));
      }
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (absl::Status s = ParseLine(line); !s.ok()) return s;
    }
    return std::move(out_);
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line_no_, ": ", absl::string_view(what.data(), what.size())));
  }

  static void SkipBlanks(std::string_view& s) {
    while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  }
  static std::string_view TakeToken(std::string_view& s) {
    size_t n = 0;
    while (n < s.size() && !IsBlank(s[n])) ++n;
    std::string_view tok = s.substr(0, n);
    s.remove_prefix(n);
    return tok;
  }
  static std::string_view TakeName(std::string_view& s) {
    if (s.empty() || !IsNameStart(s.front())) return {};
    size_t n = 1;
    while (n < s.size() && IsNameChar(s[n])) ++n;
    std::string_view name = s.substr(0, n);
    s.remove_prefix(n);
    return name;
  }

  absl::Status ParseLine(std::string_view line) {
    SkipBlanks(line);
    while (!line.empty() && IsBlank(line.back())) line.remove_suffix(1);
    if (line.empty()) return absl::OkStatus();
    if (line.front() == '#') return ParseComment(line.substr(1));
    return ParseSample(line);
  }

  absl::Status ParseComment(std::string_view rest) {
    SkipBlanks(rest);
    std::string_view keyword = TakeToken(rest);
    const bool help = keyword == "HELP";
    const bool type = keyword == "TYPE";
    if (!help && !type) return absl::OkStatus();  // a plain comment
    SkipBlanks(rest);
    std::string_view name = TakeName(rest);
    if (name.empty()) {
      return Error(absl::StrCat(help ? "HELP" : "TYPE", " without a valid metric name"));
    }
    if (!rest.empty() && !IsBlank(rest.front())) {
      return Error(absl::StrCat("invalid character in metric name after \"",
                                absl::string_view(name.data(), name.size()), "\""));
    }
    SkipBlanks(rest);
    if (help) {
      std::string doc;
      doc.reserve(rest.size());
      for (size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size() && (rest[i + 1] == '\\' || rest[i + 1] == 'n')) {
          doc.push_back(rest[i + 1] == 'n' ? '\n' : '\\');
          ++i;
        } else {
          doc.push_back(rest[i]);
        }
      }
      if (!ValidUtf8(doc)) return Error("HELP text is not valid UTF-8");
      out_.help.emplace(std::string(name), std::move(doc));
      return absl::OkStatus();
    }
    std::string_view type_name = TakeToken(rest);
    SkipBlanks(rest);
    MetricType t;
    if (type_name.empty()) return Error("TYPE without a type");
    if (!rest.empty()) return Error("unexpected text after the TYPE");
    if (!ParseType(type_name, &t)) {
      return Error(absl::StrCat("unknown metric type \"",
                                absl::string_view(type_name.data(), type_name.size()),
                                "\"; allowed: counter, gauge, histogram, summary, untyped"));
    }
    auto [it, inserted] = out_.types.emplace(std::string(name), t);
    if (!inserted && it->second != t) {
      return Error(absl::StrCat("conflicting TYPE for \"",
                                absl::string_view(name.data(), name.size()), "\""));
    }
    return absl::OkStatus();
  }

  absl::Status ParseLabels(std::string_view& s, Labels* labels) {
    // Called after '{'.
    while (true) {
      SkipBlanks(s);
      if (s.empty()) return Error("unterminated label set: expected '}'");
      if (s.front() == '}') {
        s.remove_prefix(1);
        return absl::OkStatus();
      }
      if (!IsLabelStart(s.front())) {
        return Error(
            absl::StrCat("invalid label name starting at '", std::string(1, s.front()), "'"));
      }
      size_t n = 1;
      while (n < s.size() && IsLabelChar(s[n])) ++n;
      std::string_view key = s.substr(0, n);
      s.remove_prefix(n);
      SkipBlanks(s);
      if (s.empty() || s.front() != '=') {
        return Error(absl::StrCat("expected '=' after label name \"",
                                  absl::string_view(key.data(), key.size()), "\""));
      }
      s.remove_prefix(1);
      SkipBlanks(s);
      if (s.empty() || s.front() != '"') {
        return Error(absl::StrCat("expected '\"' to open the value of label \"",
                                  absl::string_view(key.data(), key.size()), "\""));
      }
      s.remove_prefix(1);
      std::string value;
      bool closed = false;
      while (!s.empty()) {
        const char c = s.front();
        s.remove_prefix(1);
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (s.empty()) break;
          const char e = s.front();
          s.remove_prefix(1);
          if (e == '\\') {
            value.push_back('\\');
          } else if (e == '"') {
            value.push_back('"');
          } else if (e == 'n') {
            value.push_back('\n');
          } else {
            return Error(absl::StrCat("invalid escape sequence '\\", std::string(1, e),
                                      "' in the value of label \"",
                                      absl::string_view(key.data(), key.size()), "\""));
          }
          continue;
        }
        value.push_back(c);
      }
      if (!closed) {
        return Error(absl::StrCat("unterminated value of label \"",
                                  absl::string_view(key.data(), key.size()), "\""));
      }
      if (!ValidUtf8(value)) {
        return Error(absl::StrCat("value of label \"", absl::string_view(key.data(), key.size()),
                                  "\" is not valid UTF-8"));
      }
      for (const auto& [k, v] : *labels) {
        if (k == key) {
          return Error(
              absl::StrCat("duplicate label \"", absl::string_view(key.data(), key.size()), "\""));
        }
      }
      if (labels->size() >= limits_.max_labels_per_sample) {
        return absl::ResourceExhaustedError(absl::StrCat("line ", line_no_, ": more than ",
                                                         limits_.max_labels_per_sample, " labels"));
      }
      labels->emplace_back(std::string(key), std::move(value));
      SkipBlanks(s);
      if (!s.empty() && s.front() == ',') {
        s.remove_prefix(1);
      } else if (s.empty() || s.front() != '}') {
        return Error("expected ',' or '}' after a label value");
      }
    }
  }

  absl::Status ParseSample(std::string_view s) {
    std::string_view name = TakeName(s);
    if (name.empty()) return Error("expected a metric name, a comment or a blank line");
    Sample sample;
    sample.name = std::string(name);
    const size_t before_blanks = s.size();
    SkipBlanks(s);
    bool separated = s.size() != before_blanks;
    if (!s.empty() && s.front() == '{') {
      s.remove_prefix(1);
      if (absl::Status st = ParseLabels(s, &sample.labels); !st.ok()) return st;
      separated = true;  // as in Prometheus, the value may follow '}' directly
    }
    if (s.empty()) return Error(absl::StrCat("missing value for \"", sample.name, "\""));
    if (!separated) {
      return Error(absl::StrCat("unexpected character '", std::string(1, s.front()), "' after \"",
                                sample.name, "\""));
    }
    SkipBlanks(s);
    std::string_view value = TakeToken(s);
    if (value.empty()) return Error(absl::StrCat("missing value for \"", sample.name, "\""));
    if (!ParseFloat(value, &sample.value)) {
      return Error(absl::StrCat("invalid value \"", absl::string_view(value.data(), value.size()),
                                "\" for \"", sample.name, "\""));
    }
    SkipBlanks(s);
    if (!s.empty()) {
      std::string_view ts = TakeToken(s);
      int64_t ms = 0;
      if (!ParseInt64(ts, &ms)) {
        return Error(absl::StrCat("invalid timestamp \"", absl::string_view(ts.data(), ts.size()),
                                  "\" (expected integer milliseconds)"));
      }
      sample.timestamp_ms = ms;
      SkipBlanks(s);
      if (!s.empty()) return Error("unexpected text after the timestamp");
    }
    if (absl::Status st = CheckFamily(sample); !st.ok()) return st;
    if (out_.samples.size() >= limits_.max_samples) {
      return absl::ResourceExhaustedError(
          absl::StrCat("line ", line_no_, ": more than ", limits_.max_samples, " samples"));
    }
    out_.samples.push_back(std::move(sample));
    return absl::OkStatus();
  }

  // Histogram buckets need a numeric `le`, summary quantiles a numeric `quantile`.
  absl::Status CheckFamily(const Sample& sample) const {
    const MetricType type = out_.TypeOf(sample.name);
    const char* label = nullptr;
    if (type == MetricType::kHistogram && EndsWith(sample.name, "_bucket") &&
        out_.types.count(sample.name) == 0) {
      label = "le";
    } else if (type == MetricType::kSummary && out_.types.count(sample.name) != 0) {
      label = "quantile";
    }
    if (label == nullptr) return absl::OkStatus();
    const std::string* v = sample.Label(label);
    double bound = 0;
    if (v == nullptr) {
      return Error(absl::StrCat("\"", sample.name, "\" has no \"", label, "\" label"));
    }
    if (!ParseFloat(*v, &bound) || std::isnan(bound)) {
      return Error(
          absl::StrCat("\"", sample.name, "\" has an invalid \"", label, "\" label \"", *v, "\""));
    }
    return absl::OkStatus();
  }

  std::string_view text_;
  const ParseLimits& limits_;
  size_t line_no_ = 0;
  Exposition out_;
};

}  // namespace

const std::string* Sample::Label(std::string_view key) const {
  for (const auto& [k, v] : labels) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::vector<const Sample*> Exposition::Find(std::string_view name) const {
  std::vector<const Sample*> out;
  for (const Sample& s : samples) {
    if (s.name == name) out.push_back(&s);
  }
  return out;
}

std::optional<double> Exposition::Sum(std::string_view name) const {
  std::optional<double> sum;
  for (const Sample& s : samples) {
    if (s.name == name) sum = sum.value_or(0) + s.value;
  }
  return sum;
}

bool Exposition::Has(std::string_view name) const {
  for (const Sample& s : samples) {
    if (s.name == name) return true;
  }
  return false;
}

MetricType Exposition::TypeOf(std::string_view name) const {
  if (auto it = types.find(std::string(name)); it != types.end()) return it->second;
  for (const Child& child : kChildren) {
    if (!EndsWith(name, child.suffix)) continue;
    auto it = types.find(std::string(name.substr(0, name.size() - child.suffix.size())));
    if (it == types.end()) continue;
    if ((it->second == MetricType::kHistogram && child.histogram) ||
        (it->second == MetricType::kSummary && child.summary) ||
        (it->second == MetricType::kCounter && child.counter)) {
      return it->second;
    }
  }
  return MetricType::kUntyped;
}

absl::StatusOr<Exposition> Parse(std::string_view text, const ParseLimits& limits) {
  return Parser(text, limits).Run();
}

std::optional<Histogram> ExtractHistogram(const Exposition& e, std::string_view name,
                                          const Labels& match) {
  const std::string bucket_name =
      absl::StrCat(absl::string_view(name.data(), name.size()), "_bucket");
  const std::string sum_name = absl::StrCat(absl::string_view(name.data(), name.size()), "_sum");
  const std::string count_name =
      absl::StrCat(absl::string_view(name.data(), name.size()), "_count");
  auto matches = [&match](const Sample& s) {
    for (const auto& [k, v] : match) {
      const std::string* have = s.Label(k);
      if (have == nullptr || *have != v) return false;
    }
    return true;
  };

  std::map<double, double> buckets;  // le -> summed cumulative count; +Inf sorts last
  std::optional<double> sum;
  std::optional<double> count;
  for (const Sample& s : e.samples) {
    if (s.name == bucket_name) {
      if (!matches(s)) continue;
      const std::string* le = s.Label("le");
      double bound = 0;
      if (le == nullptr || !ParseFloat(*le, &bound) || std::isnan(bound)) continue;
      buckets[bound] += s.value;
    } else if (s.name == sum_name) {
      if (matches(s)) sum = sum.value_or(0) + s.value;
    } else if (s.name == count_name) {
      if (matches(s)) count = count.value_or(0) + s.value;
    }
  }
  if (buckets.empty()) return std::nullopt;
  Histogram h;
  h.buckets.assign(buckets.begin(), buckets.end());
  if (h.buckets.back().first != kInf) {
    // A histogram without its +Inf bucket: _count is the same number.
    h.buckets.emplace_back(kInf, count.value_or(h.buckets.back().second));
  }
  h.count = count.value_or(h.buckets.back().second);
  h.sum = sum.value_or(0);
  return h;
}

std::optional<Histogram> Delta(const Histogram& a, const Histogram& b) {
  if (a.buckets.size() != b.buckets.size()) return std::nullopt;
  Histogram d;
  d.buckets.reserve(b.buckets.size());
  for (size_t i = 0; i < b.buckets.size(); ++i) {
    if (a.buckets[i].first != b.buckets[i].first) return std::nullopt;
    const double diff = b.buckets[i].second - a.buckets[i].second;
    if (!(diff >= 0)) return std::nullopt;  // also rejects NaN
    d.buckets.emplace_back(b.buckets[i].first, diff);
  }
  d.count = b.count - a.count;
  d.sum = b.sum - a.sum;
  if (!(d.count >= 0) || !std::isfinite(d.sum)) return std::nullopt;
  return d;
}

namespace {

// histogram_quantile over repaired buckets that end in +Inf and hold observations.
double InterpolateQuantile(double q, const std::vector<std::pair<double, double>>& b) {
  double rank = q * b.back().second;
  size_t i = 0;
  while (i + 1 < b.size() && b[i].second < rank) ++i;
  if (i == b.size() - 1) return b[b.size() - 2].first;  // in the +Inf bucket
  if (i == 0 && b[0].first <= 0) return b[0].first;
  double start = 0;  // the first bucket's lower bound
  const double end = b[i].first;
  double in_bucket = b[i].second;
  if (i > 0) {
    start = b[i - 1].first;
    in_bucket -= b[i - 1].second;
    rank -= b[i - 1].second;
  }
  return in_bucket > 0 ? start + (end - start) * (rank / in_bucket) : start;  // 0/0 when q = 0
}

}  // namespace

std::optional<double> Quantile(double q, const Histogram& h) {
  if (!(q >= 0 && q <= 1)) return std::nullopt;
  if (h.buckets.size() < 2 || h.buckets.back().first != kInf) return std::nullopt;
  // Cumulative counts must not decrease; repair as Prometheus does (running maximum).
  std::vector<std::pair<double, double>> b = h.buckets;
  for (size_t i = 1; i < b.size(); ++i) b[i].second = std::max(b[i].second, b[i - 1].second);
  const double observations = b.back().second;
  if (!(observations > 0) || !std::isfinite(observations) || !(h.count > 0)) return std::nullopt;
  const double value = InterpolateQuantile(q, b);
  if (!std::isfinite(value)) return std::nullopt;  // absurd bounds such as le="-Inf"
  return value;
}

}  // namespace fleetwes::prom
