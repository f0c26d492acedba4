#include "common/logging.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace fleetwes {
namespace {

TEST(LoggingTest, KnownLevels) {
  for (const char* level : {"trace", "debug", "info", "warn", "error", "off"}) {
    EXPECT_TRUE(InitLogging(level).ok()) << level;
  }
  EXPECT_TRUE(InitLogging("debug").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);
  EXPECT_TRUE(InitLogging("warn").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
}

TEST(LoggingTest, UnknownLevelIsRejected) {
  const absl::Status s = InitLogging("verbose");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("verbose"), absl::string_view::npos);
}

TEST(LoggingTest, LoggerIsNamedAndShared) {
  auto a = Logger("logging_test_store");
  auto b = Logger("logging_test_store");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a->name(), "logging_test_store");
  EXPECT_NE(Logger("logging_test_uplink"), a);
}

TEST(LoggingTest, LoggerFollowsGlobalLevel) {
  ASSERT_TRUE(InitLogging("error").ok());
  EXPECT_EQ(Logger("logging_test_level")->level(), spdlog::level::err);
  ASSERT_TRUE(InitLogging("info").ok());
  EXPECT_EQ(Logger("logging_test_level")->level(), spdlog::level::info);
}

TEST(LoggingTest, ConcurrentGetOrCreateYieldsOneLogger) {
  std::vector<std::shared_ptr<spdlog::logger>> got(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&got, i] { got[i] = Logger("logging_test_race"); });
  }
  for (auto& t : threads) t.join();
  for (const auto& l : got) EXPECT_EQ(l, got[0]);
}

}  // namespace
}  // namespace fleetwes
