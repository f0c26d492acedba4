#include "aggregator/ingest/recompute_wes.h"

#include <gtest/gtest.h>

#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::T0;

TEST(RecomputeWesTest, UsesTheAggregatorsPenaltyTable) {
  v1::Frame f = MakeFrame("n", "b", 1, T0(),
                          {.tokens_per_s = 180, .watts = 340, .state = v1::THERMAL_STATE_FAIR});
  ThermalPenalties strict;
  strict.fair = 2.0;
  RecomputeWes(strict, &f);
  EXPECT_DOUBLE_EQ(f.models(0).wes().raw(), 180.0 / 340.0);
  EXPECT_DOUBLE_EQ(f.models(0).wes().penalized(), 180.0 / 340.0 / 2.0);
  EXPECT_DOUBLE_EQ(f.models(0).wes().thermal_penalty(), 2.0);
  EXPECT_NEAR(f.models(0).wes().thermal_cost_pct(), 50.0, 1e-9);
  EXPECT_DOUBLE_EQ(f.node_wes().penalized(), 180.0 / 340.0 / 2.0);
  EXPECT_EQ(f.node_wes().power_scopes(0), v1::POWER_SCOPE_GPU_BOARD);
}

TEST(RecomputeWesTest, TestVectorsOfTheDefinition) {
  struct Vector {
    double tokens, watts, pue;
    v1::ThermalState state;
    double raw, penalized;
  };
  const Vector vectors[] = {
      {108.9, 0.6, 1.0, v1::THERMAL_STATE_NORMAL, 181.5, 181.5},
      {94.1, 0.9, 1.0, v1::THERMAL_STATE_FAIR, 104.55555555555556, 83.644444444444446},
      {100, 50, 1.5, v1::THERMAL_STATE_CRITICAL, 1.3333333333333333, 0.66666666666666663},
  };
  for (const Vector& v : vectors) {
    v1::Frame f = MakeFrame("n", "b", 1, T0(),
                            {.tokens_per_s = v.tokens, .watts = v.watts, .state = v.state});
    f.mutable_node_wes()->set_pue(v.pue);
    RecomputeWes(ThermalPenalties{}, &f);
    EXPECT_NEAR(f.node_wes().raw(), v.raw, 1e-9 * v.raw);
    EXPECT_NEAR(f.node_wes().penalized(), v.penalized, 1e-9 * v.penalized);
  }
}

TEST(RecomputeWesTest, FallsBackToTheSamplesOwnFieldsAndFramePue) {
  v1::Frame f = MakeFrame("n", "b", 1, T0(), {.tokens_per_s = 50, .watts = 25});
  f.mutable_models(0)->clear_wes();  // an agent that computed nothing
  f.set_pue(1.25);
  RecomputeWes(ThermalPenalties{}, &f);
  EXPECT_DOUBLE_EQ(f.models(0).wes().raw(), 50.0 / (25.0 * 1.25));
  EXPECT_DOUBLE_EQ(f.models(0).wes().pue(), 1.25);
  EXPECT_EQ(f.models(0).wes().thermal_state(), v1::THERMAL_STATE_NORMAL);
}

TEST(RecomputeWesTest, NullValuesKeepTheirReason) {
  v1::Frame f = MakeFrame("n", "b", 1, T0(), {.tokens_per_s = 0, .watts = 60});
  RecomputeWes(ThermalPenalties{}, &f);
  EXPECT_FALSE(f.models(0).wes().has_raw());
  EXPECT_EQ(f.models(0).wes().null_reason(), v1::WES_NULL_REASON_IDLE);
  v1::Frame g = MakeFrame("n", "b", 1, T0(), {.tokens_per_s = 50, .watts = std::nullopt});
  RecomputeWes(ThermalPenalties{}, &g);
  EXPECT_EQ(g.node_wes().null_reason(), v1::WES_NULL_REASON_NO_POWER_READING);
}

}  // namespace
}  // namespace fleetwes::aggregator
