#include "aggregator/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"

namespace fleetwes::aggregator {
namespace {

TEST(ConfigTest, EmptyDocumentGivesTheDefaults) {
  absl::StatusOr<AggregatorConfig> c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc_listen, "0.0.0.0:7470");
  EXPECT_EQ(c->http_listen, "0.0.0.0:7471");
  EXPECT_EQ(c->writer.max_batch_frames, 500);
  EXPECT_EQ(c->writer.max_batch_delay, absl::Milliseconds(50));
  EXPECT_EQ(c->writer.queue_frames, 20000);
  EXPECT_EQ(c->writer.frames_copy, "direct");
  EXPECT_EQ(c->writer.connections, 2);
  EXPECT_DOUBLE_EQ(c->stale_after, 3.0);
  EXPECT_EQ(c->stale_after_min, absl::Seconds(10));
  EXPECT_DOUBLE_EQ(c->thermal_penalties.fair, 1.25);
  EXPECT_DOUBLE_EQ(c->thermal_penalties.critical, 2.0);
  EXPECT_EQ(c->max_frame_bytes, 65536);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->retention.frames_days, 30);
  EXPECT_EQ(c->retention.model_samples_days, 30);
  EXPECT_EQ(c->retention.device_samples_days, 14);
  EXPECT_EQ(c->retention.events_days, 30);
  EXPECT_EQ(c->retention.check_interval, absl::Hours(1));
  EXPECT_EQ(c->retention.days_ahead, 2);
  EXPECT_EQ(c->router.table_refresh, absl::Milliseconds(500));
  EXPECT_EQ(c->leaderboard.max_watchers, 64);
  EXPECT_EQ(c->router.threads, 1);
}

TEST(ConfigTest, ReadsEveryOption) {
  absl::StatusOr<AggregatorConfig> c = ParseConfig(R"(
grpc_listen: "127.0.0.1:0"
http_listen: "[::1]:9100"
database:
  url: postgresql://fleet@db/fleetwes
writer:
  max_batch_frames: 200
  max_batch_delay: 20ms
  queue_frames: 1000
  frames_copy: staged
  connections: 3
retention:
  frames_days: 90
  model_samples_days: 60
  device_samples_days: 7
  events_days: 45
  check_interval: 10m
  days_ahead: 3
stale_after: 5
stale_after_min: 30s
thermal_penalties:
  normal: 1.0
  fair: 1.5
  serious: 2.5
  critical: 4
leaderboard:
  rank_event_min_delta: 2
  rank_event_interval: 0s
  thermal_event_interval: 2m
  baseline_window: 12h
  baseline_min_samples: 100
  checkpoint_interval: 1m
  max_watchers: 8
router:
  table_refresh: 250ms
  threads: 4
max_frame_bytes: 131072
log_level: debug
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc_listen, "127.0.0.1:0");
  EXPECT_EQ(c->http_listen, "[::1]:9100");
  EXPECT_EQ(c->database_url, "postgresql://fleet@db/fleetwes");
  EXPECT_EQ(c->writer.max_batch_frames, 200);
  EXPECT_EQ(c->writer.max_batch_delay, absl::Milliseconds(20));
  EXPECT_EQ(c->writer.queue_frames, 1000);
  EXPECT_EQ(c->writer.frames_copy, "staged");
  EXPECT_EQ(c->writer.connections, 3);
  EXPECT_DOUBLE_EQ(c->stale_after, 5);
  EXPECT_EQ(c->stale_after_min, absl::Seconds(30));
  EXPECT_DOUBLE_EQ(c->thermal_penalties.serious, 2.5);
  EXPECT_DOUBLE_EQ(c->thermal_penalties.critical, 4);
  EXPECT_EQ(c->max_frame_bytes, 131072);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->retention.frames_days, 90);
  EXPECT_EQ(c->retention.model_samples_days, 60);
  EXPECT_EQ(c->retention.device_samples_days, 7);
  EXPECT_EQ(c->retention.events_days, 45);
  EXPECT_EQ(c->retention.check_interval, absl::Minutes(10));
  EXPECT_EQ(c->retention.days_ahead, 3);
  EXPECT_EQ(c->leaderboard.rank_event_min_delta, 2);
  EXPECT_EQ(c->leaderboard.rank_event_interval, absl::ZeroDuration());
  EXPECT_EQ(c->leaderboard.thermal_event_interval, absl::Minutes(2));
  EXPECT_EQ(c->leaderboard.baseline_window, absl::Hours(12));
  EXPECT_EQ(c->leaderboard.baseline_min_samples, 100);
  EXPECT_EQ(c->leaderboard.checkpoint_interval, absl::Minutes(1));
  EXPECT_EQ(c->leaderboard.max_watchers, 8);
  EXPECT_EQ(c->router.table_refresh, absl::Milliseconds(250));
  EXPECT_EQ(c->router.threads, 4);
}

TEST(ConfigTest, ErrorsNameTheKey) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  const Case cases[] = {
      {"grpc_port: 1\n", "grpc_port"},
      {"writer:\n  max_batch: 3\n", "max_batch'"},
      {"writer:\n  max_batch_frames: 0\n", "writer.max_batch_frames"},
      {"writer:\n  max_batch_frames: 600\n  queue_frames: 100\n", "writer.queue_frames"},
      {"writer:\n  max_batch_delay: soon\n", "writer.max_batch_delay"},
      {"writer:\n  frames_copy: binary\n", "writer.frames_copy"},
      {"writer:\n  connections: 0\n", "writer.connections"},
      {"writer:\n  connections: 17\n", "writer.connections"},
      {"retention:\n  frames_days: 0\n", "retention.frames_days"},
      {"retention:\n  device_samples_days: 4000\n", "retention.device_samples_days"},
      {"retention:\n  events_days: 0\n", "retention.events_days"},
      {"retention:\n  check_interval: 0s\n", "retention.check_interval"},
      {"retention:\n  keep: 3\n", "keep'"},
      {"stale_after: 0.5\n", "stale_after"},
      {"stale_after_min: 0s\n", "stale_after_min"},
      {"leaderboard:\n  rank_event_min_delta: 0\n", "leaderboard.rank_event_min_delta"},
      {"leaderboard:\n  baseline_window: 10m\n", "leaderboard.baseline_window"},
      {"leaderboard:\n  thermal_event_interval: -1s\n", "leaderboard.thermal_event_interval"},
      {"leaderboard:\n  baseline_min_samples: 0\n", "leaderboard.baseline_min_samples"},
      {"leaderboard:\n  checkpoint_interval: 1s\n", "leaderboard.checkpoint_interval"},
      {"leaderboard:\n  max_watchers: 0\n", "leaderboard.max_watchers"},
      {"leaderboard:\n  max_watchers: 10001\n", "leaderboard.max_watchers"},
      {"router:\n  table_refresh: 11s\n", "router.table_refresh"},
      {"router:\n  table_refresh: -1ms\n", "router.table_refresh"},
      {"router:\n  threads: -1\n", "router.threads"},
      {"router:\n  threads: 65\n", "router.threads"},
      {"router:\n  refresh: 1s\n", "refresh'"},
      {"thermal_penalties:\n  fair: 0.9\n", "thermal_penalties.fair"},
      {"thermal_penalties:\n  serious: 1.1\n", "thermal_penalties.serious"},
      {"max_frame_bytes: 10\n", "max_frame_bytes"},
      {"log_level: loud\n", "log_level"},
      {"grpc_listen: nohostport\n", "grpc_listen"},
      {"http_listen: \"127.0.0.1:70000\"\n", "http_listen"},
      {"database:\n  uri: x\n", "uri'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<AggregatorConfig> parsed = ParseConfig(c.yaml);
    ASSERT_FALSE(parsed.ok()) << c.yaml;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), c.expect))
        << c.yaml << " -> " << parsed.status().message();
  }
}

TEST(ConfigTest, EnvironmentOverridesTheDatabaseUrlAndOneIsRequired) {
  absl::StatusOr<AggregatorConfig> c = LoadConfig("", std::string("postgresql://env/db"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->database_url, "postgresql://env/db");

  absl::StatusOr<AggregatorConfig> none = LoadConfig("", std::nullopt);
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(absl::StrContains(none.status().message(), "database.url"));
  EXPECT_TRUE(absl::StrContains(none.status().message(), kDatabaseUrlEnv));

  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    ("aggregator_config_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "aggregator.yaml").string();
  std::ofstream(path) << "database:\n  url: postgresql://file/db\nlog_level: warn\n";
  c = LoadConfig(path, std::nullopt);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->database_url, "postgresql://file/db");
  EXPECT_EQ(c->log_level, "warn");
  c = LoadConfig(path, std::string("postgresql://env/db"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->database_url, "postgresql://env/db");

  std::ofstream(path) << "database:\n  url: x\nbogus: 1\n";
  c = LoadConfig(path, std::nullopt);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "bogus")) << c.status();
  EXPECT_TRUE(absl::StrContains(c.status().message(), "line 3")) << c.status();

  EXPECT_EQ(LoadConfig((dir / "missing.yaml").string(), std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(ListenAddressTest, Parses) {
  absl::StatusOr<ListenAddress> a = ParseListenAddress(":0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "0.0.0.0");
  EXPECT_EQ(a->port, 0);
  a = ParseListenAddress("[::]:7470");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->ipv6);
  EXPECT_EQ(a->ToString(), "[::]:7470");
  a = ParseListenAddress("localhost:7471");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->ToString(), "localhost:7471");
  EXPECT_FALSE(ParseListenAddress("::1:80").ok());
  EXPECT_FALSE(ParseListenAddress("host:").ok());
  EXPECT_FALSE(ParseListenAddress("host:-1").ok());
  EXPECT_FALSE(ParseListenAddress("[::1]").ok());
}

}  // namespace
}  // namespace fleetwes::aggregator
