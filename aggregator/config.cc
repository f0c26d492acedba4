#include "aggregator/config.h"

#include <cmath>
#include <string_view>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/yaml_config.h"

namespace fleetwes::aggregator {

namespace {

using config::MapReader;

absl::Status CheckListen(MapReader& r, std::string_view key, const std::string& value) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(value);
  if (!parsed.ok()) return r.Error(key, std::string(parsed.status().message()));
  return absl::OkStatus();
}

absl::Status CheckIntRange(MapReader& r, std::string_view key, int64_t value, int64_t lo,
                           int64_t hi) {
  if (value < lo || value > hi) {
    return r.Error(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

absl::Status ReadWriter(MapReader& root, WriterConfig* out) {
  absl::StatusOr<std::optional<MapReader>> child = root.Child("writer");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  if (absl::Status s = r.Read("max_batch_frames", &out->max_batch_frames); !s.ok()) return s;
  if (absl::Status s = CheckIntRange(r, "max_batch_frames", out->max_batch_frames, 1, 100'000);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.ReadDuration("max_batch_delay", &out->max_batch_delay); !s.ok()) return s;
  if (out->max_batch_delay < absl::ZeroDuration() || out->max_batch_delay > absl::Seconds(10)) {
    return r.Error("max_batch_delay", "must be between 0 and 10s");
  }
  if (absl::Status s = r.Read("queue_frames", &out->queue_frames); !s.ok()) return s;
  if (absl::Status s =
          CheckIntRange(r, "queue_frames", out->queue_frames, out->max_batch_frames, 10'000'000);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.Read("frames_copy", &out->frames_copy); !s.ok()) return s;
  if (out->frames_copy != "direct" && out->frames_copy != "staged") {
    return r.Error("frames_copy", "must be \"direct\" or \"staged\"");
  }
  if (absl::Status s = r.Read("connections", &out->connections); !s.ok()) return s;
  if (absl::Status s = CheckIntRange(r, "connections", out->connections, 1, 16); !s.ok()) return s;
  return r.Finish();
}

absl::Status ReadRetention(MapReader& root, RetentionConfig* out) {
  absl::StatusOr<std::optional<MapReader>> child = root.Child("retention");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  for (auto [key, value] : {std::pair<const char*, int64_t*>{"frames_days", &out->frames_days},
                            {"model_samples_days", &out->model_samples_days},
                            {"device_samples_days", &out->device_samples_days},
                            {"events_days", &out->events_days}}) {
    if (absl::Status s = r.Read(key, value); !s.ok()) return s;
    if (absl::Status s = CheckIntRange(r, key, *value, 1, 3650); !s.ok()) return s;
  }
  if (absl::Status s = r.ReadDuration("check_interval", &out->check_interval); !s.ok()) return s;
  if (out->check_interval < absl::Seconds(1) || out->check_interval > absl::Hours(24)) {
    return r.Error("check_interval", "must be between 1s and 24h");
  }
  if (absl::Status s = r.Read("days_ahead", &out->days_ahead); !s.ok()) return s;
  if (absl::Status s = CheckIntRange(r, "days_ahead", out->days_ahead, 1, 30); !s.ok()) return s;
  return r.Finish();
}

absl::Status ReadPenalties(MapReader& root, ThermalPenalties* out) {
  absl::StatusOr<std::optional<MapReader>> child = root.Child("thermal_penalties");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  struct Entry {
    const char* key;
    double* value;
  };
  const Entry entries[] = {{"normal", &out->normal},
                           {"fair", &out->fair},
                           {"serious", &out->serious},
                           {"critical", &out->critical}};
  double previous = 1.0;
  for (const Entry& e : entries) {
    if (absl::Status s = r.Read(e.key, e.value); !s.ok()) return s;
    if (!std::isfinite(*e.value) || *e.value < 1.0 || *e.value > 100.0) {
      return r.Error(e.key, absl::StrCat("must be a number in [1, 100], got ", *e.value));
    }
    if (*e.value < previous) {
      return r.Error(e.key, "penalties must not decrease from normal to critical");
    }
    previous = *e.value;
  }
  return r.Finish();
}

absl::Status ReadLeaderboard(MapReader& root, LeaderboardConfig* out) {
  absl::StatusOr<std::optional<MapReader>> child = root.Child("leaderboard");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  if (absl::Status s = r.Read("rank_event_min_delta", &out->rank_event_min_delta); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckIntRange(r, "rank_event_min_delta", out->rank_event_min_delta, 1, 1'000'000);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.ReadDuration("rank_event_interval", &out->rank_event_interval); !s.ok()) {
    return s;
  }
  if (out->rank_event_interval < absl::ZeroDuration() ||
      out->rank_event_interval > absl::Hours(24)) {
    return r.Error("rank_event_interval", "must be between 0s and 24h");
  }
  if (absl::Status s = r.ReadDuration("thermal_event_interval", &out->thermal_event_interval);
      !s.ok()) {
    return s;
  }
  if (out->thermal_event_interval < absl::ZeroDuration() ||
      out->thermal_event_interval > absl::Hours(24)) {
    return r.Error("thermal_event_interval", "must be between 0s and 24h");
  }
  if (absl::Status s = r.ReadDuration("baseline_window", &out->baseline_window); !s.ok()) {
    return s;
  }
  if (out->baseline_window < absl::Hours(1) || out->baseline_window > absl::Hours(24 * 30)) {
    return r.Error("baseline_window", "must be between 1h and 720h");
  }
  if (absl::Status s = r.Read("baseline_min_samples", &out->baseline_min_samples); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckIntRange(r, "baseline_min_samples", out->baseline_min_samples, 1, 10'000'000);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.ReadDuration("checkpoint_interval", &out->checkpoint_interval); !s.ok()) {
    return s;
  }
  if (out->checkpoint_interval < absl::Seconds(10) || out->checkpoint_interval > absl::Hours(24)) {
    return r.Error("checkpoint_interval", "must be between 10s and 24h");
  }
  if (absl::Status s = r.Read("max_watchers", &out->max_watchers); !s.ok()) return s;
  if (absl::Status s = CheckIntRange(r, "max_watchers", out->max_watchers, 1, 10'000); !s.ok()) {
    return s;
  }
  return r.Finish();
}

absl::Status ReadRouter(MapReader& root, RouterConfig* out) {
  absl::StatusOr<std::optional<MapReader>> child = root.Child("router");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  if (absl::Status s = r.ReadDuration("table_refresh", &out->table_refresh); !s.ok()) return s;
  if (out->table_refresh < absl::ZeroDuration() || out->table_refresh > absl::Seconds(10)) {
    return r.Error("table_refresh", "must be between 0s and 10s");
  }
  if (absl::Status s = r.Read("threads", &out->threads); !s.ok()) return s;
  if (absl::Status s = CheckIntRange(r, "threads", out->threads, 0, 64); !s.ok()) return s;
  return r.Finish();
}

absl::Status ReadDatabase(MapReader& root, std::string* url) {
  absl::StatusOr<std::optional<MapReader>> child = root.Child("database");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  if (absl::Status s = r.Read("url", url); !s.ok()) return s;
  return r.Finish();
}

absl::StatusOr<AggregatorConfig> ParseDocument(const YAML::Node& doc) {
  AggregatorConfig c;
  MapReader r(doc, "");

  if (absl::Status s = r.Read("grpc_listen", &c.grpc_listen); !s.ok()) return s;
  if (absl::Status s = CheckListen(r, "grpc_listen", c.grpc_listen); !s.ok()) return s;
  if (absl::Status s = r.Read("http_listen", &c.http_listen); !s.ok()) return s;
  if (absl::Status s = CheckListen(r, "http_listen", c.http_listen); !s.ok()) return s;
  if (absl::Status s = ReadDatabase(r, &c.database_url); !s.ok()) return s;
  if (absl::Status s = ReadWriter(r, &c.writer); !s.ok()) return s;
  if (absl::Status s = ReadRetention(r, &c.retention); !s.ok()) return s;

  if (absl::Status s = r.Read("stale_after", &c.stale_after); !s.ok()) return s;
  if (!std::isfinite(c.stale_after) || c.stale_after < 1.0 || c.stale_after > 1000.0) {
    return r.Error(
        "stale_after",
        absl::StrCat("must be a multiple of the interval in [1, 1000], got ", c.stale_after));
  }
  if (absl::Status s = r.ReadDuration("stale_after_min", &c.stale_after_min); !s.ok()) return s;
  if (c.stale_after_min < absl::Seconds(1) || c.stale_after_min > absl::Hours(1)) {
    return r.Error("stale_after_min", "must be between 1s and 1h");
  }
  if (absl::Status s = ReadPenalties(r, &c.thermal_penalties); !s.ok()) return s;
  if (absl::Status s = ReadLeaderboard(r, &c.leaderboard); !s.ok()) return s;
  if (absl::Status s = ReadRouter(r, &c.router); !s.ok()) return s;

  if (absl::Status s = r.Read("max_frame_bytes", &c.max_frame_bytes); !s.ok()) return s;
  if (absl::Status s = CheckIntRange(r, "max_frame_bytes", c.max_frame_bytes, 1024, 4 << 20);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          r.ReadEnum("log_level", {"trace", "debug", "info", "warn", "error", "off"}, &c.log_level);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  return c;
}

}  // namespace

absl::StatusOr<AggregatorConfig> ParseConfig(absl::string_view yaml_text) {
  absl::StatusOr<YAML::Node> doc =
      config::LoadString(std::string_view(yaml_text.data(), yaml_text.size()));
  if (!doc.ok()) return doc.status();
  return ParseDocument(*doc);
}

absl::StatusOr<AggregatorConfig> LoadConfig(const std::string& path,
                                            std::optional<std::string> database_url_env) {
  AggregatorConfig c;
  if (!path.empty()) {
    absl::StatusOr<YAML::Node> doc = config::LoadFile(path);
    if (!doc.ok()) {
      return absl::Status(doc.status().code(), absl::StrCat(path, ": ", doc.status().message()));
    }
    absl::StatusOr<AggregatorConfig> parsed = ParseDocument(*doc);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          absl::StrCat(path, ": ", parsed.status().message()));
    }
    c = *std::move(parsed);
  }
  if (database_url_env.has_value() && !database_url_env->empty()) {
    c.database_url = *std::move(database_url_env);
  }
  if (c.database_url.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("database.url: required; set it in the config file or in ", kDatabaseUrlEnv));
  }
  return c;
}

std::string ListenAddress::ToString() const {
  if (ipv6) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view s) {
  ListenAddress a;
  absl::string_view port_text;
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == absl::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("expected \"[ipv6]:port\", got \"", s, "\""));
    }
    a.host = std::string(s.substr(1, close - 1));
    a.ipv6 = true;
    port_text = s.substr(close + 2);
    if (a.host.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("empty IPv6 host in \"", s, "\""));
    }
  } else {
    const size_t colon = s.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("expected \"host:port\", got \"", s, "\""));
    }
    a.host = std::string(s.substr(0, colon));
    if (a.host.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("IPv6 hosts need brackets (\"[::]:7470\"), got \"", s, "\""));
    }
    port_text = s.substr(colon + 1);
    if (a.host.empty()) a.host = "0.0.0.0";
  }
  int port = -1;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be a number in [0, 65535], got \"", port_text, "\""));
  }
  a.port = port;
  return a;
}

}  // namespace fleetwes::aggregator
