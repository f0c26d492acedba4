#include "common/yaml_config.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fleetwes::config {

namespace {

// Debian's Abseil has its own string_view type; bridge from std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// 1-based line of a node, or 0 when it has none (a node built in code).
int LineOf(const YAML::Node& node) {
  if (!node.IsDefined()) return 0;
  const YAML::Mark mark = node.Mark();
  return mark.line < 0 ? 0 : mark.line + 1;
}

const char* KindName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
    default:
      return "nothing";
  }
}

// "engines[0].url (line 7)", "url" or "the top level".
std::string Where(std::string_view path, int line) {
  std::string out = path.empty() ? std::string("the top level") : std::string(path);
  if (line > 0) absl::StrAppend(&out, " (line ", line, ")");
  return out;
}

std::string Quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

absl::Status ParseError(std::string_view source, const YAML::Exception& e) {
  std::string where = source.empty() ? std::string() : absl::StrCat(Av(source), ": ");
  if (e.mark.line >= 0) {
    absl::StrAppend(&where, "line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ");
  }
  return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", where, e.msg));
}

absl::StatusOr<YAML::Node> Load(std::string_view text, std::string_view source) {
  try {
    YAML::Node node = YAML::Load(std::string(text));
    if (!node.IsDefined() || node.IsNull()) return YAML::Node(YAML::NodeType::Map);
    return node;
  } catch (const YAML::Exception& e) {
    return ParseError(source, e);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", e.what()));
  }
}

bool ParseDouble(std::string_view s, double* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool ParseInt(std::string_view s, int64_t* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return false;
  *out = v;
  return true;
}

bool ParseBool(std::string_view s, bool* out) {
  const std::string lower = absl::AsciiStrToLower(Av(s));
  if (lower == "true" || lower == "yes" || lower == "on") {
    *out = true;
    return true;
  }
  if (lower == "false" || lower == "no" || lower == "off") {
    *out = false;
    return true;
  }
  return false;
}

// "500ms", "2s", "1.5s", "1m", "1h", "1h30m" or a bare number of seconds; never negative.
bool ParseDurationText(std::string_view s, absl::Duration* out) {
  if (s.empty() || s.front() == '-') return false;
  double seconds = 0;
  if (ParseDouble(s, &seconds)) {
    if (seconds < 0) return false;
    *out = absl::Seconds(seconds);
    return true;
  }
  absl::Duration d;
  if (!absl::ParseDuration(Av(s), &d)) return false;
  if (d < absl::ZeroDuration() || d == absl::InfiniteDuration()) return false;
  *out = d;
  return true;
}

}  // namespace

absl::StatusOr<YAML::Node> LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("config file ", path, " not found"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read config file ", path, ": ", std::strerror(err)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read config file ", path));
  }
  return Load(text.str(), path);
}

absl::StatusOr<YAML::Node> LoadString(std::string_view text) { return Load(text, ""); }

MapReader::MapReader(YAML::Node node, std::string path) : node_(node), path_(std::move(path)) {
  try {
    if (!node_.IsDefined() || node_.IsNull()) return;
    if (!node_.IsMap()) {
      first_error_ = absl::InvalidArgumentError(
          absl::StrCat(Where(path_, LineOf(node_)), ": expected a mapping, got ", KindName(node_)));
      return;
    }
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      Entry entry{it->first, it->second};
      if (!entry.key.IsScalar()) {
        (void)Record(absl::InvalidArgumentError(
            absl::StrCat("key at ", Where(path_, LineOf(entry.key)), " must be a plain name, got ",
                         KindName(entry.key))));
        continue;
      }
      const std::string& name = entry.key.Scalar();
      if (FindEntry(name) != nullptr) {
        (void)Record(absl::InvalidArgumentError(
            absl::StrCat("duplicate key '", name, "' at ", Where(path_, LineOf(entry.key)))));
        continue;
      }
      entries_.push_back(std::move(entry));
    }
  } catch (const YAML::Exception& e) {
    (void)Record(absl::InvalidArgumentError(
        absl::StrCat(Where(path_, LineOf(node_)), ": unreadable node: ", e.msg)));
  }
}

const MapReader::Entry* MapReader::FindEntry(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key.Scalar() == key) return &e;
  }
  return nullptr;
}

std::optional<MapReader::Entry> MapReader::Lookup(std::string_view key) {
  if (known_.find(key) == known_.end()) {
    known_.emplace(key);
    known_order_.emplace_back(key);
  }
  const Entry* e = FindEntry(key);
  if (e == nullptr) return std::nullopt;
  return *e;
}

bool MapReader::Has(std::string_view key) const { return FindEntry(key) != nullptr; }

std::string MapReader::KeyPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", Av(key));
}

absl::Status MapReader::Record(absl::Status s) {
  if (!s.ok() && first_error_.ok()) first_error_ = s;
  return s;
}

absl::Status MapReader::Error(std::string_view key, std::string_view what) const {
  const Entry* e = FindEntry(key);
  const int line = e != nullptr ? LineOf(e->value.IsNull() ? e->key : e->value) : LineOf(node_);
  return absl::InvalidArgumentError(absl::StrCat(Where(KeyPath(key), line), ": ", Av(what)));
}

// The scalar text of `key`. *present is false when the key is absent or null.
absl::Status MapReader::ScalarText(std::string_view key, std::string_view expected,
                                   std::string* out, bool* present) {
  *present = false;
  if (!first_error_.ok() && !node_.IsMap()) return first_error_;
  std::optional<Entry> e = Lookup(key);
  if (!e.has_value() || e->value.IsNull()) return absl::OkStatus();
  if (!e->value.IsScalar()) {
    return Record(
        Error(key, absl::StrCat("expected ", std::string(expected), ", got ", KindName(e->value))));
  }
  *out = e->value.Scalar();
  *present = true;
  return absl::OkStatus();
}

absl::Status MapReader::Read(std::string_view key, std::string* out) {
  try {
    std::string text;
    bool present = false;
    if (absl::Status s = ScalarText(key, "a string", &text, &present); !s.ok()) return s;
    if (present) *out = std::move(text);
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::Read(std::string_view key, double* out) {
  try {
    std::string text;
    bool present = false;
    if (absl::Status s = ScalarText(key, "a number", &text, &present); !s.ok()) return s;
    if (!present) return absl::OkStatus();
    double v = 0;
    if (!ParseDouble(text, &v)) {
      return Record(Error(key, absl::StrCat("expected a finite number, got ", Quoted(text))));
    }
    *out = v;
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::Read(std::string_view key, int64_t* out) {
  try {
    std::string text;
    bool present = false;
    if (absl::Status s = ScalarText(key, "an integer", &text, &present); !s.ok()) return s;
    if (!present) return absl::OkStatus();
    int64_t v = 0;
    if (!ParseInt(text, &v)) {
      return Record(Error(key, absl::StrCat("expected an integer, got ", Quoted(text))));
    }
    *out = v;
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::Read(std::string_view key, bool* out) {
  try {
    std::string text;
    bool present = false;
    if (absl::Status s = ScalarText(key, "true or false", &text, &present); !s.ok()) return s;
    if (!present) return absl::OkStatus();
    bool v = false;
    if (!ParseBool(text, &v)) {
      return Record(Error(key, absl::StrCat("expected true or false, got ", Quoted(text))));
    }
    *out = v;
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::Read(std::string_view key, std::vector<std::string>* out) {
  try {
    if (!first_error_.ok() && !node_.IsMap()) return first_error_;
    std::optional<Entry> e = Lookup(key);
    if (!e.has_value() || e->value.IsNull()) return absl::OkStatus();
    if (!e->value.IsSequence()) {
      return Record(
          Error(key, absl::StrCat("expected a list of strings, got ", KindName(e->value))));
    }
    std::vector<std::string> items;
    for (size_t i = 0; i < e->value.size(); ++i) {
      const YAML::Node item = e->value[i];
      if (!item.IsScalar()) {
        return Record(absl::InvalidArgumentError(
            absl::StrCat(Where(absl::StrCat(KeyPath(key), "[", i, "]"), LineOf(item)),
                         ": expected a string, got ", KindName(item))));
      }
      items.push_back(item.Scalar());
    }
    *out = std::move(items);
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::Read(std::string_view key, std::map<std::string, std::string>* out) {
  try {
    if (!first_error_.ok() && !node_.IsMap()) return first_error_;
    std::optional<Entry> e = Lookup(key);
    if (!e.has_value() || e->value.IsNull()) return absl::OkStatus();
    if (!e->value.IsMap()) {
      return Record(Error(
          key, absl::StrCat("expected a mapping of strings to strings, got ", KindName(e->value))));
    }
    std::map<std::string, std::string> items;
    for (auto it = e->value.begin(); it != e->value.end(); ++it) {
      if (!it->first.IsScalar()) {
        return Record(absl::InvalidArgumentError(
            absl::StrCat("key at ", Where(KeyPath(key), LineOf(it->first)),
                         " must be a plain name, got ", KindName(it->first))));
      }
      const std::string& name = it->first.Scalar();
      const std::string path = absl::StrCat(KeyPath(key), ".", name);
      if (!it->second.IsScalar()) {
        return Record(absl::InvalidArgumentError(
            absl::StrCat(Where(path, LineOf(it->second.IsNull() ? it->first : it->second)),
                         ": expected a string, got ", KindName(it->second))));
      }
      if (!items.emplace(name, it->second.Scalar()).second) {
        return Record(absl::InvalidArgumentError(absl::StrCat(
            "duplicate key '", name, "' at ", Where(KeyPath(key), LineOf(it->first)))));
      }
    }
    *out = std::move(items);
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::ReadDuration(std::string_view key, absl::Duration* out) {
  try {
    std::string text;
    bool present = false;
    if (absl::Status s = ScalarText(key, "a duration such as 2s or 500ms", &text, &present);
        !s.ok()) {
      return s;
    }
    if (!present) return absl::OkStatus();
    absl::Duration d;
    const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
    if (!ParseDurationText(std::string_view(trimmed.data(), trimmed.size()), &d)) {
      const bool negative = !trimmed.empty() && trimmed.front() == '-';
      return Record(Error(
          key, absl::StrCat(negative ? "expected a non-negative duration" : "expected a duration",
                            " such as 2s or 500ms, got ", Quoted(text),
                            " (units: ms, s, m, h; a bare number is seconds)")));
    }
    *out = d;
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::ReadEnum(std::string_view key, const std::vector<std::string>& allowed,
                                 std::string* out) {
  try {
    std::string text;
    bool present = false;
    const std::string expected = absl::StrCat("one of ", absl::StrJoin(allowed, ", "));
    if (absl::Status s = ScalarText(key, expected, &text, &present); !s.ok()) return s;
    if (!present) return absl::OkStatus();
    for (const std::string& a : allowed) {
      if (a == text) {
        *out = text;
        return absl::OkStatus();
      }
    }
    return Record(Error(key, absl::StrCat("expected ", expected, "; got ", Quoted(text))));
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::StatusOr<std::optional<MapReader>> MapReader::Child(std::string_view key) {
  try {
    if (!first_error_.ok() && !node_.IsMap()) return first_error_;
    std::optional<Entry> e = Lookup(key);
    if (!e.has_value() || e->value.IsNull()) return std::optional<MapReader>();
    if (!e->value.IsMap()) {
      return Record(Error(key, absl::StrCat("expected a mapping, got ", KindName(e->value))));
    }
    return std::optional<MapReader>(MapReader(e->value, KeyPath(key)));
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::StatusOr<std::vector<MapReader>> MapReader::ChildList(std::string_view key) {
  try {
    if (!first_error_.ok() && !node_.IsMap()) return first_error_;
    std::optional<Entry> e = Lookup(key);
    std::vector<MapReader> out;
    if (!e.has_value() || e->value.IsNull()) return out;
    if (!e->value.IsSequence()) {
      return Record(
          Error(key, absl::StrCat("expected a list of mappings, got ", KindName(e->value))));
    }
    for (size_t i = 0; i < e->value.size(); ++i) {
      const YAML::Node item = e->value[i];
      const std::string path = absl::StrCat(KeyPath(key), "[", i, "]");
      if (!item.IsMap()) {
        return Record(absl::InvalidArgumentError(
            absl::StrCat(Where(path, LineOf(item)), ": expected a mapping, got ", KindName(item))));
      }
      out.emplace_back(item, path);
    }
    return out;
  } catch (const YAML::Exception& e) {
    return Record(Error(key, absl::StrCat("unreadable value: ", e.msg)));
  }
}

absl::Status MapReader::Finish() const {
  if (!first_error_.ok()) return first_error_;
  for (const Entry& e : entries_) {
    const std::string& name = e.key.Scalar();
    if (known_.find(name) != known_.end()) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown key '", name, "' at ", Where(path_, LineOf(e.key)), "; allowed: ",
        known_order_.empty() ? std::string("none") : absl::StrJoin(known_order_, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace fleetwes::config
