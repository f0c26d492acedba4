#include "aggregator/ingest/node_cardinality.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::ModelSpec;
using testing::T0;

v1::Frame FrameWith(const std::string& node, std::initializer_list<std::string> models,
                    std::initializer_list<std::string> devices) {
  v1::Frame f = MakeFrame(node, "boot-a", 1, T0());
  f.clear_models();
  f.clear_devices();
  for (const std::string& m : models) testing::AddModel(&f, ModelSpec{.model = m});
  for (const std::string& d : devices) f.add_devices()->set_id(d);
  return f;
}

TEST(NodeCardinalityTest, CountsDistinctKeysPerNodeAndRefusesBeyondTheCap) {
  NodeCardinality c(CardinalityLimits{.max_models_per_node = 3, .max_devices_per_node = 2});
  EXPECT_EQ(c.Admit(FrameWith("n1", {"a", "b"}, {"gpu0"}), T0()), std::nullopt);
  EXPECT_EQ(c.Admit(FrameWith("n1", {"a", "b", "c"}, {"gpu0"}), T0()), std::nullopt);
  EXPECT_EQ(c.models("n1"), 3u);

  // Two new names at once: the first one over the cap is named; nothing is recorded.
  std::optional<Rejection> r = c.Admit(FrameWith("n1", {"a", "d", "e"}, {"gpu1"}), T0());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason, RejectReason::kCardinality);
  EXPECT_EQ(r->field, "models[1].model");
  EXPECT_EQ(c.models("n1"), 3u);
  EXPECT_EQ(c.devices("n1"), 1u);

  // Devices have their own cap; a repeated id within a frame counts once.
  EXPECT_EQ(c.Admit(FrameWith("n1", {"a"}, {"gpu1", "gpu1"}), T0()), std::nullopt);
  r = c.Admit(FrameWith("n1", {"a"}, {"gpu0", "gpu2"}), T0());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->field, "devices[1].id");

  // Other nodes are counted apart.
  EXPECT_EQ(c.Admit(FrameWith("n2", {"x", "y", "z"}, {"gpu7", "gpu8"}), T0()), std::nullopt);
}

TEST(NodeCardinalityTest, KeysUnseenForTheWindowNoLongerCount) {
  NodeCardinality c(CardinalityLimits{.max_models_per_node = 2, .window = absl::Hours(1)});
  EXPECT_EQ(c.Admit(FrameWith("n1", {"a", "b"}, {}), T0()), std::nullopt);
  // "a" stays in use, "b" goes quiet.
  EXPECT_EQ(c.Admit(FrameWith("n1", {"a"}, {}), T0() + absl::Minutes(50)), std::nullopt);
  EXPECT_TRUE(c.Admit(FrameWith("n1", {"c"}, {}), T0() + absl::Minutes(59)).has_value());
  EXPECT_EQ(c.Admit(FrameWith("n1", {"c"}, {}), T0() + absl::Minutes(61)), std::nullopt);
  EXPECT_EQ(c.models("n1"), 2u);  // "a" and "c"
  EXPECT_TRUE(c.Admit(FrameWith("n1", {"b"}, {}), T0() + absl::Minutes(62)).has_value());
}

TEST(NodeCardinalityTest, TheEngineIdIsPartOfAModelsKey) {
  NodeCardinality c(CardinalityLimits{.max_models_per_node = 1});
  v1::Frame f = FrameWith("n1", {"a"}, {});
  EXPECT_EQ(c.Admit(f, T0()), std::nullopt);
  f.mutable_models(0)->set_engine_id("llamacpp-1");
  EXPECT_TRUE(c.Admit(f, T0()).has_value());
}

}  // namespace
}  // namespace fleetwes::aggregator
