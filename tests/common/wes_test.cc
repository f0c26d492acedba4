#include "common/wes.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace fleetwes {
namespace {

// Full precision: relative error below 1e-9.
void ExpectClose(double expected, double actual) {
  EXPECT_NEAR(actual, expected, std::fabs(expected) * 1e-9 + 1e-12) << "expected " << expected;
}

struct Vector {
  double tokens_per_s;
  double watts;
  double pue;
  v1::ThermalState state;
  double raw;
  double penalized;
  double cost_pct;
};

// The table in docs/wes.md, with the expected values written out from exact arithmetic.
constexpr Vector kVectors[] = {
    {108.9, 0.6, 1.0, v1::THERMAL_STATE_NORMAL, 181.5, 181.5, 0},
    {94.1, 0.9, 1.0, v1::THERMAL_STATE_FAIR, 104.55555555555556, 83.644444444444444, 20},
    {89, 60, 1.0, v1::THERMAL_STATE_NORMAL, 1.4833333333333333, 1.4833333333333333, 0},
    {180, 340, 1.0, v1::THERMAL_STATE_FAIR, 0.52941176470588235, 0.42352941176470588, 20},
    {92, 220, 1.0, v1::THERMAL_STATE_SERIOUS, 0.41818181818181818, 0.23896103896103896,
     42.857142857142857},
    {12, 95, 1.0, v1::THERMAL_STATE_NORMAL, 0.12631578947368421, 0.12631578947368421, 0},
    {45, 180, 1.0, v1::THERMAL_STATE_NORMAL, 0.25, 0.25, 0},
    {100, 50, 1.5, v1::THERMAL_STATE_CRITICAL, 1.3333333333333333, 0.66666666666666667, 50},
};

TEST(ComputeWesTest, TestVectorsFromTheSpec) {
  for (const Vector& v : kVectors) {
    SCOPED_TRACE(testing::Message() << v.tokens_per_s << " tok/s, " << v.watts << " W");
    WesInputs in;
    in.tokens_per_s = v.tokens_per_s;
    in.watts = v.watts;
    in.pue = v.pue;
    in.thermal_state = v.state;
    const v1::Wes wes = ComputeWes(in);
    ASSERT_TRUE(wes.has_raw());
    ASSERT_TRUE(wes.has_penalized());
    ASSERT_TRUE(wes.has_thermal_cost_pct());
    EXPECT_EQ(wes.null_reason(), v1::WES_NULL_REASON_UNSPECIFIED);
    ExpectClose(v.raw, wes.raw());
    ExpectClose(v.penalized, wes.penalized());
    ExpectClose(v.cost_pct, wes.thermal_cost_pct());
    EXPECT_EQ(wes.tokens_per_s(), v.tokens_per_s);
    EXPECT_EQ(wes.watts(), v.watts);
    EXPECT_EQ(wes.pue(), v.pue);
    EXPECT_EQ(wes.thermal_state(), v.state);
  }
}

TEST(ComputeWesTest, NormalStateKeepsPenalizedEqualToRaw) {
  const v1::Wes wes = ComputeWes({.tokens_per_s = 108.9, .watts = 0.6});
  EXPECT_EQ(wes.raw(), wes.penalized());
  EXPECT_EQ(wes.thermal_cost_pct(), 0.0);
  EXPECT_EQ(wes.thermal_penalty(), 1.0);
}

TEST(ComputeWesTest, FillsPenaltyAndScopes) {
  WesInputs in{.tokens_per_s = 92, .watts = 220, .thermal_state = v1::THERMAL_STATE_SERIOUS};
  in.power_scopes = {v1::POWER_SCOPE_GPU_BOARD, v1::POWER_SCOPE_CPU_PACKAGE};
  const v1::Wes wes = ComputeWes(in);
  EXPECT_EQ(wes.thermal_penalty(), 1.75);
  ASSERT_EQ(wes.power_scopes_size(), 2);
  EXPECT_EQ(wes.power_scopes(0), v1::POWER_SCOPE_GPU_BOARD);
  EXPECT_EQ(wes.power_scopes(1), v1::POWER_SCOPE_CPU_PACKAGE);
}

TEST(ComputeWesTest, CustomPenaltiesApply) {
  ThermalPenalties p;
  p.fair = 2.0;
  const v1::Wes wes =
      ComputeWes({.tokens_per_s = 100, .watts = 50, .thermal_state = v1::THERMAL_STATE_FAIR}, p);
  ExpectClose(2.0, wes.raw());
  ExpectClose(1.0, wes.penalized());
  ExpectClose(50.0, wes.thermal_cost_pct());
  EXPECT_EQ(wes.thermal_penalty(), 2.0);
}

TEST(ComputeWesTest, UnspecifiedStateIsPenalizedAsNormal) {
  const v1::Wes wes = ComputeWes(
      {.tokens_per_s = 100, .watts = 50, .thermal_state = v1::THERMAL_STATE_UNSPECIFIED});
  EXPECT_EQ(wes.penalized(), wes.raw());
  EXPECT_EQ(wes.thermal_penalty(), 1.0);
}

void ExpectNull(const v1::Wes& wes, v1::WesNullReason reason) {
  EXPECT_FALSE(wes.has_raw());
  EXPECT_FALSE(wes.has_penalized());
  EXPECT_FALSE(wes.has_thermal_cost_pct());
  EXPECT_EQ(wes.null_reason(), reason) << WesNullReasonName(wes.null_reason());
}

TEST(ComputeWesTest, IdleWhenTokensAbsent) {
  const v1::Wes wes = ComputeWes({.tokens_per_s = std::nullopt, .watts = 60});
  ExpectNull(wes, v1::WES_NULL_REASON_IDLE);
  EXPECT_EQ(wes.watts(), 60);
}

TEST(ComputeWesTest, IdleWhenTokensZero) {
  ExpectNull(ComputeWes({.tokens_per_s = 0.0, .watts = 60}), v1::WES_NULL_REASON_IDLE);
}

TEST(ComputeWesTest, IdleBeatsMissingPower) {
  ExpectNull(ComputeWes({.tokens_per_s = 0.0, .watts = std::nullopt}), v1::WES_NULL_REASON_IDLE);
}

TEST(ComputeWesTest, NoPowerReadingWhenWattsAbsent) {
  const v1::Wes wes = ComputeWes({.tokens_per_s = 50, .watts = std::nullopt});
  ExpectNull(wes, v1::WES_NULL_REASON_NO_POWER_READING);
  EXPECT_FALSE(wes.has_watts());
  EXPECT_EQ(wes.tokens_per_s(), 50);
}

TEST(ComputeWesTest, ZeroWattsIsNonPositive) {
  // The spec row "50 tok/s, 0 W": null; the reason says why.
  ExpectNull(ComputeWes({.tokens_per_s = 50, .watts = 0.0}),
             v1::WES_NULL_REASON_NON_POSITIVE_WATTS);
  ExpectNull(ComputeWes({.tokens_per_s = 50, .watts = -3.0}),
             v1::WES_NULL_REASON_NON_POSITIVE_WATTS);
}

TEST(ComputeWesTest, NonFiniteInputsComeFirst) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  ExpectNull(ComputeWes({.tokens_per_s = nan, .watts = 60}), v1::WES_NULL_REASON_NON_FINITE_INPUT);
  ExpectNull(ComputeWes({.tokens_per_s = inf, .watts = 60}), v1::WES_NULL_REASON_NON_FINITE_INPUT);
  // Non-finite wins over idle and over a missing or zero power reading.
  ExpectNull(ComputeWes({.tokens_per_s = 0.0, .watts = nan}), v1::WES_NULL_REASON_NON_FINITE_INPUT);
  ExpectNull(ComputeWes({.tokens_per_s = std::nullopt, .watts = -inf}),
             v1::WES_NULL_REASON_NON_FINITE_INPUT);
  ExpectNull(ComputeWes({.tokens_per_s = 10.0, .watts = 10.0, .pue = nan}),
             v1::WES_NULL_REASON_NON_FINITE_INPUT);
  ThermalPenalties broken;
  broken.normal = inf;
  ExpectNull(ComputeWes({.tokens_per_s = 10.0, .watts = 10.0}, broken),
             v1::WES_NULL_REASON_NON_FINITE_INPUT);
}

TEST(ComputeWesTest, OutOfDomainInputsAreRejected) {
  ExpectNull(ComputeWes({.tokens_per_s = -5.0, .watts = 10.0}),
             v1::WES_NULL_REASON_NON_FINITE_INPUT);
  ExpectNull(ComputeWes({.tokens_per_s = 5.0, .watts = 10.0, .pue = 0}),
             v1::WES_NULL_REASON_NON_FINITE_INPUT);
}

TEST(ComputeWesTest, NeverReturnsInfinity) {
  // 1e300 / 1e-300 overflows a double.
  const v1::Wes wes = ComputeWes({.tokens_per_s = 1e300, .watts = 1e-300});
  ExpectNull(wes, v1::WES_NULL_REASON_NON_FINITE_INPUT);
  EXPECT_TRUE(std::isfinite(wes.tokens_per_s()));
}

TEST(ComputeWesTest, NullValueKeepsOnlyFiniteInputs) {
  const v1::Wes wes =
      ComputeWes({.tokens_per_s = std::numeric_limits<double>::quiet_NaN(), .watts = 60});
  EXPECT_EQ(wes.tokens_per_s(), 0);
  EXPECT_EQ(wes.watts(), 60);
}

TEST(ThermalPenaltiesTest, Defaults) {
  const ThermalPenalties p;
  EXPECT_EQ(p.For(v1::THERMAL_STATE_UNSPECIFIED), 1.0);
  EXPECT_EQ(p.For(v1::THERMAL_STATE_NORMAL), 1.0);
  EXPECT_EQ(p.For(v1::THERMAL_STATE_FAIR), 1.25);
  EXPECT_EQ(p.For(v1::THERMAL_STATE_SERIOUS), 1.75);
  EXPECT_EQ(p.For(v1::THERMAL_STATE_CRITICAL), 2.0);
}

TEST(BaselineLossPctTest, SpecExample) {
  // Baseline 181.5 now delivering 83.6 penalized loses 53.9 %.
  const std::optional<double> loss = BaselineLossPct(181.5, 83.6);
  ASSERT_TRUE(loss.has_value());
  ExpectClose(53.939393939393939, *loss);
  EXPECT_EQ(FormatWes(*loss), "53.9");
}

TEST(BaselineLossPctTest, ImprovementIsNegative) {
  ExpectClose(-10.0, BaselineLossPct(100, 110).value());
}

TEST(BaselineLossPctTest, InvalidBaseline) {
  EXPECT_FALSE(BaselineLossPct(0, 1).has_value());
  EXPECT_FALSE(BaselineLossPct(-1, 1).has_value());
  EXPECT_FALSE(BaselineLossPct(std::numeric_limits<double>::quiet_NaN(), 1).has_value());
  EXPECT_FALSE(BaselineLossPct(1, std::numeric_limits<double>::infinity()).has_value());
}

TEST(FormatWesTest, DisplayRounding) {
  EXPECT_EQ(FormatWes(181.5), "182");
  EXPECT_EQ(FormatWes(100), "100");
  EXPECT_EQ(FormatWes(104.55555), "105");
  EXPECT_EQ(FormatWes(83.644444), "83.6");
  EXPECT_EQ(FormatWes(1.4833333), "1.5");
  EXPECT_EQ(FormatWes(1.0), "1.0");
  EXPECT_EQ(FormatWes(0.52941176), "0.53");
  EXPECT_EQ(FormatWes(0.12631579), "0.13");
  EXPECT_EQ(FormatWes(0.25), "0.25");
  EXPECT_EQ(FormatWes(0), "0.00");
}

TEST(FormatWesTest, RoundingIntoTheNextBand) {
  EXPECT_EQ(FormatWes(99.96), "100");
  EXPECT_EQ(FormatWes(0.996), "1.0");
  EXPECT_EQ(FormatWes(99.94), "99.9");
}

TEST(FormatWesTest, NegativeAndNonFinite) {
  EXPECT_EQ(FormatWes(-12.34), "-12.3");
  EXPECT_EQ(FormatWes(-0.001), "0.00");
  EXPECT_EQ(FormatWes(std::numeric_limits<double>::quiet_NaN()), "n/a");
  EXPECT_EQ(FormatWes(std::numeric_limits<double>::infinity()), "n/a");
}

TEST(NamesTest, ThermalState) {
  EXPECT_EQ(ThermalStateName(v1::THERMAL_STATE_NORMAL), "normal");
  EXPECT_EQ(ThermalStateName(v1::THERMAL_STATE_FAIR), "fair");
  EXPECT_EQ(ThermalStateName(v1::THERMAL_STATE_SERIOUS), "serious");
  EXPECT_EQ(ThermalStateName(v1::THERMAL_STATE_CRITICAL), "critical");
  EXPECT_EQ(ThermalStateName(v1::THERMAL_STATE_UNSPECIFIED), "unknown");
}

TEST(NamesTest, PowerScope) {
  EXPECT_EQ(PowerScopeName(v1::POWER_SCOPE_GPU_BOARD), "gpu_board");
  EXPECT_EQ(PowerScopeName(v1::POWER_SCOPE_CPU_PACKAGE), "cpu_package");
  EXPECT_EQ(PowerScopeName(v1::POWER_SCOPE_SOC), "soc");
  EXPECT_EQ(PowerScopeName(v1::POWER_SCOPE_DRAM), "dram");
  EXPECT_EQ(PowerScopeName(v1::POWER_SCOPE_WALL), "wall");
  EXPECT_EQ(PowerScopeName(v1::POWER_SCOPE_UNSPECIFIED), "unspecified");
}

TEST(NamesTest, NullReason) {
  EXPECT_EQ(WesNullReasonName(v1::WES_NULL_REASON_IDLE), "idle");
  EXPECT_EQ(WesNullReasonName(v1::WES_NULL_REASON_NO_POWER_READING), "no_power_reading");
  EXPECT_EQ(WesNullReasonName(v1::WES_NULL_REASON_NON_POSITIVE_WATTS), "non_positive_watts");
  EXPECT_EQ(WesNullReasonName(v1::WES_NULL_REASON_NON_FINITE_INPUT), "non_finite_input");
  EXPECT_EQ(WesNullReasonName(v1::WES_NULL_REASON_UNSPECIFIED), "");
}

TEST(WorstThermalStateTest, Ordering) {
  EXPECT_EQ(WorstThermalState(v1::THERMAL_STATE_NORMAL, v1::THERMAL_STATE_FAIR),
            v1::THERMAL_STATE_FAIR);
  EXPECT_EQ(WorstThermalState(v1::THERMAL_STATE_CRITICAL, v1::THERMAL_STATE_SERIOUS),
            v1::THERMAL_STATE_CRITICAL);
  EXPECT_EQ(WorstThermalState(v1::THERMAL_STATE_UNSPECIFIED, v1::THERMAL_STATE_NORMAL),
            v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(WorstThermalState(v1::THERMAL_STATE_SERIOUS, v1::THERMAL_STATE_UNSPECIFIED),
            v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(WorstThermalState(v1::THERMAL_STATE_UNSPECIFIED, v1::THERMAL_STATE_UNSPECIFIED),
            v1::THERMAL_STATE_UNSPECIFIED);
}

}  // namespace
}  // namespace fleetwes
