#include "common/yaml_config.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::config {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

MapReader Root(std::string_view text) {
  absl::StatusOr<YAML::Node> node = LoadString(text);
  EXPECT_TRUE(node.ok()) << node.status();
  return MapReader(node.ok() ? *node : YAML::Node(), "");
}

constexpr char kAgentConfig[] = R"(node_id: studio-01
pue: 1.2
spool_bytes: 1048576
tls: true
interval: 2s
labels:
  rack: r1
  site: "lab"
aggregators:
  - grpc://a:7070
  - grpc://b:7070
engines:
  - kind: vllm
    name: main
    url: http://127.0.0.1:8000
    timeout: 500ms
  - kind: llamacpp
    name: small
    url: http://127.0.0.1:8080
)";

TEST(MapReaderTest, ReadsEveryType) {
  MapReader root = Root(kAgentConfig);
  std::string node_id;
  double pue = 1.0;
  int64_t spool = 0;
  bool tls = false;
  absl::Duration interval;
  std::map<std::string, std::string> labels;
  std::vector<std::string> aggregators;
  ASSERT_TRUE(root.Read("node_id", &node_id).ok());
  ASSERT_TRUE(root.Read("pue", &pue).ok());
  ASSERT_TRUE(root.Read("spool_bytes", &spool).ok());
  ASSERT_TRUE(root.Read("tls", &tls).ok());
  ASSERT_TRUE(root.ReadDuration("interval", &interval).ok());
  ASSERT_TRUE(root.Read("labels", &labels).ok());
  ASSERT_TRUE(root.Read("aggregators", &aggregators).ok());
  EXPECT_EQ(node_id, "studio-01");
  EXPECT_EQ(pue, 1.2);
  EXPECT_EQ(spool, 1048576);
  EXPECT_TRUE(tls);
  EXPECT_EQ(interval, absl::Seconds(2));
  EXPECT_EQ(labels, (std::map<std::string, std::string>{{"rack", "r1"}, {"site", "lab"}}));
  EXPECT_EQ(aggregators, (std::vector<std::string>{"grpc://a:7070", "grpc://b:7070"}));

  absl::StatusOr<std::vector<MapReader>> engines = root.ChildList("engines");
  ASSERT_TRUE(engines.ok()) << engines.status();
  ASSERT_EQ(engines->size(), 2u);
  MapReader& e0 = (*engines)[0];
  EXPECT_EQ(e0.path(), "engines[0]");
  std::string kind;
  ASSERT_TRUE(e0.ReadEnum("kind", {"vllm", "llamacpp", "ollama"}, &kind).ok());
  EXPECT_EQ(kind, "vllm");
  absl::Duration timeout = absl::Seconds(1);
  ASSERT_TRUE(e0.ReadDuration("timeout", &timeout).ok());
  EXPECT_EQ(timeout, absl::Milliseconds(500));
  std::string name, url;
  ASSERT_TRUE(e0.Read("name", &name).ok());
  ASSERT_TRUE(e0.Read("url", &url).ok());
  EXPECT_TRUE(e0.Finish().ok()) << e0.Finish();
  EXPECT_TRUE(root.Finish().ok()) << root.Finish();
}

TEST(MapReaderTest, AbsentKeysLeaveDefaults) {
  MapReader root = Root("a: 1\nempty:\n");
  std::string s = "keep";
  double d = 3.5;
  absl::Duration dur = absl::Seconds(9);
  EXPECT_TRUE(root.Read("missing", &s).ok());
  EXPECT_TRUE(root.Read("empty", &d).ok());
  EXPECT_TRUE(root.ReadDuration("missing2", &dur).ok());
  EXPECT_EQ(s, "keep");
  EXPECT_EQ(d, 3.5);
  EXPECT_EQ(dur, absl::Seconds(9));
  EXPECT_TRUE(root.Has("a"));
  EXPECT_FALSE(root.Has("missing"));
  auto child = root.Child("nope");
  ASSERT_TRUE(child.ok());
  EXPECT_FALSE(child->has_value());
  auto list = root.ChildList("nothing");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  int64_t a = 0;
  ASSERT_TRUE(root.Read("a", &a).ok());
  EXPECT_TRUE(root.Finish().ok());
}

TEST(MapReaderTest, UnknownKeyNamesPathLineAndAllowed) {
  constexpr char kText[] = R"(engines:
  - kind: vllm
    name: main
    url: http://x:8000
    timeout: 2s
  - kind: llamacpp
    intervall: 2s
    name: small
)";
  MapReader root = Root(kText);
  auto engines = root.ChildList("engines");
  ASSERT_TRUE(engines.ok());
  for (MapReader& e : *engines) {
    std::string kind, name, url;
    absl::Duration timeout;
    ASSERT_TRUE(e.Read("kind", &kind).ok());
    ASSERT_TRUE(e.Read("name", &name).ok());
    ASSERT_TRUE(e.Read("url", &url).ok());
    ASSERT_TRUE(e.ReadDuration("timeout", &timeout).ok());
  }
  EXPECT_TRUE((*engines)[0].Finish().ok());
  const absl::Status s = (*engines)[1].Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Msg(s),
            "unknown key 'intervall' at engines[1] (line 7); allowed: kind, name, url, timeout");
  EXPECT_TRUE(root.Finish().ok());
}

TEST(MapReaderTest, UnknownTopLevelKey) {
  MapReader root = Root("node_id: a\nnode_idd: b\n");
  std::string id;
  ASSERT_TRUE(root.Read("node_id", &id).ok());
  EXPECT_EQ(Msg(root.Finish()),
            "unknown key 'node_idd' at the top level (line 2); allowed: node_id");
}

TEST(MapReaderTest, DurationErrorNamesPathAndLine) {
  MapReader root = Root("engines:\n  - kind: vllm\n\n    interval: fast\n");
  auto engines = root.ChildList("engines");
  ASSERT_TRUE(engines.ok());
  absl::Duration d;
  const absl::Status s = (*engines)[0].ReadDuration("interval", &d);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), StartsWith("engines[0].interval (line 4): expected a duration such as 2s "
                                 "or 500ms, got \"fast\""));
  // The ignored error is reported again by Finish().
  EXPECT_EQ((*engines)[0].Finish(), s);
}

TEST(MapReaderTest, Durations) {
  MapReader root = Root(
      "a: 500ms\nb: 2s\nc: 1m\nd: 1h\ne: 1.5s\nf: 3\ng: 0.25\nh: -1s\ni: -2\nj: 2 s\nk: 1h30m\n"
      "l: 0\n");
  auto read = [&root](std::string_view key) -> absl::StatusOr<absl::Duration> {
    absl::Duration d = absl::ZeroDuration();
    if (absl::Status s = root.ReadDuration(key, &d); !s.ok()) return s;
    return d;
  };
  EXPECT_EQ(*read("a"), absl::Milliseconds(500));
  EXPECT_EQ(*read("b"), absl::Seconds(2));
  EXPECT_EQ(*read("c"), absl::Minutes(1));
  EXPECT_EQ(*read("d"), absl::Hours(1));
  EXPECT_EQ(*read("e"), absl::Milliseconds(1500));
  EXPECT_EQ(*read("f"), absl::Seconds(3));
  EXPECT_EQ(*read("g"), absl::Milliseconds(250));
  EXPECT_THAT(Msg(read("h").status()),
              StartsWith("h (line 8): expected a non-negative duration such as 2s or 500ms, got "
                         "\"-1s\""));
  EXPECT_THAT(Msg(read("i").status()), HasSubstr("i (line 9)"));
  EXPECT_THAT(Msg(read("j").status()), HasSubstr("j (line 10)"));
  EXPECT_EQ(*read("k"), absl::Minutes(90));
  EXPECT_EQ(*read("l"), absl::ZeroDuration());
}

TEST(MapReaderTest, TypeErrors) {
  MapReader root = Root(R"(name:
  nested: 1
pue: high
count: 1.5
big: 99999999999999999999
flag: maybe
list: just-one
labels: [a, b]
items:
  - ok
  - [nested]
ratio: .nan
)");
  std::string s;
  double d;
  int64_t i;
  bool b;
  std::vector<std::string> v;
  std::map<std::string, std::string> m;
  EXPECT_EQ(Msg(root.Read("name", &s)), "name (line 2): expected a string, got a mapping");
  EXPECT_EQ(Msg(root.Read("pue", &d)), "pue (line 3): expected a finite number, got \"high\"");
  EXPECT_EQ(Msg(root.Read("count", &i)), "count (line 4): expected an integer, got \"1.5\"");
  EXPECT_EQ(Msg(root.Read("big", &i)),
            "big (line 5): expected an integer, got \"99999999999999999999\"");
  EXPECT_EQ(Msg(root.Read("flag", &b)), "flag (line 6): expected true or false, got \"maybe\"");
  EXPECT_EQ(Msg(root.Read("list", &v)), "list (line 7): expected a list of strings, got a scalar");
  EXPECT_EQ(Msg(root.Read("labels", &m)),
            "labels (line 8): expected a mapping of strings to strings, got a list");
  EXPECT_EQ(Msg(root.Read("items", &v)), "items[1] (line 11): expected a string, got a list");
  EXPECT_EQ(Msg(root.Read("ratio", &d)), "ratio (line 12): expected a finite number, got \".nan\"");
  // Finish() reports the first error the caller ignored.
  EXPECT_EQ(Msg(root.Finish()), "name (line 2): expected a string, got a mapping");
}

TEST(MapReaderTest, BoolSpellings) {
  MapReader root = Root("a: true\nb: False\nc: yes\nd: off\n");
  bool a = false, b = true, c = false, d = true;
  ASSERT_TRUE(root.Read("a", &a).ok());
  ASSERT_TRUE(root.Read("b", &b).ok());
  ASSERT_TRUE(root.Read("c", &c).ok());
  ASSERT_TRUE(root.Read("d", &d).ok());
  EXPECT_TRUE(a);
  EXPECT_FALSE(b);
  EXPECT_TRUE(c);
  EXPECT_FALSE(d);
}

TEST(MapReaderTest, EnumErrorListsAllowedValues) {
  MapReader root = Root("\n\nkind: triton\n");
  std::string kind = "vllm";
  const absl::Status s = root.ReadEnum("kind", {"vllm", "llamacpp", "ollama", "sglang"}, &kind);
  EXPECT_EQ(Msg(s),
            "kind (line 3): expected one of vllm, llamacpp, ollama, sglang; got \"triton\"");
  EXPECT_EQ(kind, "vllm");
}

TEST(MapReaderTest, ChildErrors) {
  MapReader root = Root("store: postgres://x\nengines:\n  kind: vllm\nnodes:\n  - a: 1\n  - b\n");
  EXPECT_EQ(Msg(root.Child("store").status()), "store (line 1): expected a mapping, got a scalar");
  EXPECT_EQ(Msg(root.ChildList("engines").status()),
            "engines (line 3): expected a list of mappings, got a mapping");
  EXPECT_EQ(Msg(root.ChildList("nodes").status()),
            "nodes[1] (line 6): expected a mapping, got a scalar");
}

TEST(MapReaderTest, NestedChildPath) {
  MapReader root = Root("store:\n  pool:\n    size: 4\n    sise: 5\n");
  auto store = root.Child("store");
  ASSERT_TRUE(store.ok() && store->has_value());
  auto pool = (*store)->Child("pool");
  ASSERT_TRUE(pool.ok() && pool->has_value());
  EXPECT_EQ((*pool)->path(), "store.pool");
  int64_t size = 0;
  ASSERT_TRUE((*pool)->Read("size", &size).ok());
  EXPECT_EQ(size, 4);
  EXPECT_EQ(Msg((*pool)->Finish()), "unknown key 'sise' at store.pool (line 4); allowed: size");
  EXPECT_EQ(Msg((*pool)->Error("size", "must be at most 2")),
            "store.pool.size (line 3): must be at most 2");
}

TEST(MapReaderTest, NonMapNodeFailsEveryCall) {
  absl::StatusOr<YAML::Node> node = LoadString("- a\n- b\n");
  ASSERT_TRUE(node.ok());
  MapReader r(*node, "");
  std::string s;
  EXPECT_EQ(Msg(r.Read("a", &s)), "the top level (line 1): expected a mapping, got a list");
  EXPECT_FALSE(r.Child("a").ok());
  EXPECT_FALSE(r.ChildList("a").ok());
  EXPECT_FALSE(r.Finish().ok());
}

TEST(MapReaderTest, NullNodeReadsAsEmpty) {
  MapReader r(YAML::Node(), "engines[0]");
  std::string s = "x";
  EXPECT_TRUE(r.Read("name", &s).ok());
  EXPECT_EQ(s, "x");
  EXPECT_TRUE(r.Finish().ok());
}

TEST(MapReaderTest, DuplicateKeyRejected) {
  MapReader root = Root("a: 1\nb: 2\na: 3\n");
  int64_t a = 0, b = 0;
  (void)root.Read("a", &a);
  (void)root.Read("b", &b);
  const absl::Status s = root.Finish();
  EXPECT_EQ(Msg(s), "duplicate key 'a' at the top level (line 3)");
}

TEST(LoadTest, EmptyDocumentIsEmptyMap) {
  absl::StatusOr<YAML::Node> node = LoadString("");
  ASSERT_TRUE(node.ok());
  EXPECT_TRUE(node->IsMap());
  EXPECT_EQ(node->size(), 0u);
  node = LoadString("# only a comment\n");
  ASSERT_TRUE(node.ok());
  EXPECT_TRUE(node->IsMap());
}

TEST(LoadTest, SyntaxErrorHasLine) {
  absl::StatusOr<YAML::Node> node = LoadString("a: 1\nb: [1, 2\nc: 3\n");
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(node.status()), HasSubstr("line "));
  node = LoadString("a: 1\n  b: 2\n");
  ASSERT_FALSE(node.ok());
  EXPECT_THAT(Msg(node.status()), HasSubstr("line 2"));
}

class LoadFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fleetwes_yaml_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::filesystem::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  std::filesystem::path dir_;
};

TEST_F(LoadFileTest, ReadsAFile) {
  absl::StatusOr<YAML::Node> node = LoadFile(Write("agent.yaml", "node_id: n1\n"));
  ASSERT_TRUE(node.ok()) << node.status();
  MapReader r(*node, "");
  std::string id;
  ASSERT_TRUE(r.Read("node_id", &id).ok());
  EXPECT_EQ(id, "n1");
}

TEST_F(LoadFileTest, MissingFileIsNotFound) {
  absl::StatusOr<YAML::Node> node = LoadFile((dir_ / "absent.yaml").string());
  EXPECT_EQ(node.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LoadFileTest, SyntaxErrorNamesFileAndLine) {
  const std::string path = Write("bad.yaml", "a: 1\nb: c: d\n");
  absl::StatusOr<YAML::Node> node = LoadFile(path);
  ASSERT_FALSE(node.ok());
  EXPECT_THAT(Msg(node.status()), HasSubstr(path));
  EXPECT_THAT(Msg(node.status()), HasSubstr("line 2"));
}

}  // namespace
}  // namespace fleetwes::config
