// Strict YAML config reading: typed values, errors that name the key path, the line and what is
// allowed, and unknown keys rejected. yaml-cpp throws; this adapter catches and returns Status.
// Not thread-safe (one reader per config load).
#ifndef FLEETWES_COMMON_YAML_CONFIG_H_
#define FLEETWES_COMMON_YAML_CONFIG_H_

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleetwes::config {

// Parses a YAML document. Errors: NotFound (no such file), InvalidArgument (syntax, with line).
// An empty document yields an empty map.
absl::StatusOr<YAML::Node> LoadFile(const std::string& path);
absl::StatusOr<YAML::Node> LoadString(std::string_view text);

// Reads one mapping node. Every Read* marks its key as known; Finish() then rejects the keys
// that were never asked for. Messages look like
//   "engines[0].interval (line 7): expected a duration such as 2s or 500ms, got \"fast\"".
class MapReader {
 public:
  // `path` is the dotted path of this node ("" for the root). A null node reads as empty;
  // a non-map node makes every call return an error.
  MapReader(YAML::Node node, std::string path);

  bool Has(std::string_view key) const;

  // Optional scalars: leave *out unchanged when the key is absent or its value is null (`key:`).
  absl::Status Read(std::string_view key, std::string* out);
  absl::Status Read(std::string_view key, double* out);
  absl::Status Read(std::string_view key, int64_t* out);
  absl::Status Read(std::string_view key, bool* out);
  absl::Status Read(std::string_view key, std::vector<std::string>* out);
  absl::Status Read(std::string_view key, std::map<std::string, std::string>* out);
  // "2s", "500ms", "1m", "1h" or a bare number of seconds.
  absl::Status ReadDuration(std::string_view key, absl::Duration* out);
  // A string that must be one of `allowed`.
  absl::Status ReadEnum(std::string_view key, const std::vector<std::string>& allowed,
                        std::string* out);

  // A nested mapping; nullopt when absent.
  absl::StatusOr<std::optional<MapReader>> Child(std::string_view key);
  // A sequence of mappings; empty when absent.
  absl::StatusOr<std::vector<MapReader>> ChildList(std::string_view key);

  // An InvalidArgument for `key` of this node, with its line (or this node's line if absent).
  absl::Status Error(std::string_view key, std::string_view what) const;

  // InvalidArgument naming the first unknown key, its line and the allowed keys; also the first
  // error of this node that a caller ignored. OK when all is well.
  absl::Status Finish() const;

  const std::string& path() const { return path_; }

 private:
  struct Entry {
    YAML::Node key;
    YAML::Node value;
  };
  std::string KeyPath(std::string_view key) const;
  // The entry for `key`, marking it known; nullopt when absent (or when this node is not a map).
  std::optional<Entry> Lookup(std::string_view key);
  const Entry* FindEntry(std::string_view key) const;
  // Keeps the first error for Finish() and returns `s`.
  absl::Status Record(absl::Status s);
  absl::Status ScalarText(std::string_view key, std::string_view expected, std::string* out,
                          bool* present);

  YAML::Node node_;
  std::string path_;
  std::vector<Entry> entries_;                // this node's keys in document order
  std::set<std::string, std::less<>> known_;  // keys asked for
  std::vector<std::string> known_order_;      // the same, in the order they were asked for
  absl::Status first_error_;                  // structural or ignored error of this node
};

}  // namespace fleetwes::config

#endif  // FLEETWES_COMMON_YAML_CONFIG_H_
