// The agent opens the spool its config asks for, or refuses to start with a message that names
// the directory and the config key.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "agent/agent.h"
#include "agent/config.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

class AgentSpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleetwes-spoolcfg.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  AgentConfig Config(const std::string& yaml) {
    absl::StatusOr<AgentConfig> c = ParseConfig(yaml);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : AgentConfig();
  }
  fs::path dir_;
};

TEST_F(AgentSpoolTest, OpensTheConfiguredDirectory) {
  const fs::path spool_dir = dir_ / "a" / "spool";
  AgentConfig config = Config("node_id: n1\nspool: {dir: " + spool_dir.string() + "}\n");
  absl::StatusOr<std::unique_ptr<Spool>> spool = OpenSpool(config, "boot-1", RealClock());
  ASSERT_TRUE(spool.ok()) << spool.status();
  ASSERT_NE(*spool, nullptr);
  EXPECT_EQ((*spool)->dir(), spool_dir.string());
  EXPECT_TRUE(fs::is_directory(spool_dir));
}

TEST_F(AgentSpoolTest, DisabledMeansNoSpool) {
  AgentConfig config = Config("node_id: n1\nspool: {enabled: false, dir: /nonexistent/x}\n");
  absl::StatusOr<std::unique_ptr<Spool>> spool = OpenSpool(config, "boot-1", RealClock());
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ(*spool, nullptr);
  EXPECT_FALSE(fs::exists("/nonexistent/x"));
}

TEST_F(AgentSpoolTest, UnusableDirectoryRefusesToStart) {
  // A regular file where a directory must be created: fails for root too.
  const fs::path file = dir_ / "file";
  std::ofstream(file) << "x";
  const std::string spool_dir = (file / "spool").string();
  AgentConfig config = Config("node_id: n1\nspool: {dir: " + spool_dir + "}\n");
  absl::StatusOr<std::unique_ptr<Spool>> spool = OpenSpool(config, "boot-1", RealClock());
  ASSERT_FALSE(spool.ok());
  EXPECT_EQ(spool.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(spool.status().message(),
              AllOf(HasSubstr(spool_dir), HasSubstr("spool.dir"), HasSubstr("enabled: false")));

  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(config, RealClock());
  ASSERT_FALSE(agent.ok());
  EXPECT_THAT(agent.status().message(), AllOf(HasSubstr(spool_dir), HasSubstr("spool.dir")));
}

}  // namespace
}  // namespace fleetwes::agent
