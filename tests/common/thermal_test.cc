#include "common/thermal.h"

#include <limits>

#include "gtest/gtest.h"

namespace fleetwes::thermal {
namespace {

constexpr auto kNormal = v1::THERMAL_STATE_NORMAL;
constexpr auto kFair = v1::THERMAL_STATE_FAIR;
constexpr auto kSerious = v1::THERMAL_STATE_SERIOUS;
constexpr auto kCritical = v1::THERMAL_STATE_CRITICAL;

NvidiaReading Nv(uint64_t mask, std::optional<double> temp = std::nullopt) {
  NvidiaReading r;
  r.clocks_event_mask = mask;
  r.temperature_c = temp;
  r.slowdown_threshold_c = 90;
  r.gpu_max_threshold_c = 85;
  return r;
}

TEST(NvidiaStateTest, CriticalBits) {
  EXPECT_EQ(NvidiaState(Nv(kNvHwThermalSlowdown)), kCritical);
  EXPECT_EQ(NvidiaState(Nv(kNvHwPowerBrakeSlowdown)), kCritical);
  EXPECT_EQ(NvidiaState(Nv(kNvHwThermalSlowdown | kNvGpuIdle)), kCritical);
}

TEST(NvidiaStateTest, SeriousBits) {
  EXPECT_EQ(NvidiaState(Nv(kNvSwThermalSlowdown)), kSerious);
  EXPECT_EQ(NvidiaState(Nv(kNvSwThermalSlowdown | kNvSwPowerCap)), kSerious);
}

TEST(NvidiaStateTest, HwSlowdownNeedsTwoConsecutiveReads) {
  NvidiaReading first = Nv(kNvHwSlowdown);
  EXPECT_EQ(NvidiaState(first), kNormal);
  NvidiaReading second = Nv(kNvHwSlowdown);
  second.hw_slowdown_in_previous_read = true;
  EXPECT_EQ(NvidiaState(second), kSerious);
  // Seen before but not now: no longer slowing down.
  NvidiaReading cleared = Nv(0);
  cleared.hw_slowdown_in_previous_read = true;
  EXPECT_EQ(NvidiaState(cleared), kNormal);
}

TEST(NvidiaStateTest, InformationalBitsAreNormal) {
  for (uint64_t bit :
       {kNvGpuIdle, kNvApplicationsClocks, kNvSwPowerCap, kNvSyncBoost, kNvDisplayClock}) {
    EXPECT_EQ(NvidiaState(Nv(bit)), kNormal) << "bit 0x" << std::hex << bit;
  }
  EXPECT_EQ(NvidiaState(Nv(kNvGpuIdle | kNvApplicationsClocks | kNvSwPowerCap | kNvSyncBoost |
                           kNvDisplayClock)),
            kNormal);
}

TEST(NvidiaStateTest, TemperatureThresholds) {
  // SLOWDOWN 90, GPU_MAX 85.
  EXPECT_EQ(NvidiaState(Nv(0, 79.9)), kNormal);
  EXPECT_EQ(NvidiaState(Nv(0, 80)), kFair);  // within 5 of GPU_MAX
  EXPECT_EQ(NvidiaState(Nv(0, 84.9)), kFair);
  EXPECT_EQ(NvidiaState(Nv(0, 85)), kSerious);  // >= GPU_MAX
  EXPECT_EQ(NvidiaState(Nv(0, 89.9)), kSerious);
  EXPECT_EQ(NvidiaState(Nv(0, 90)), kCritical);  // >= SLOWDOWN
  EXPECT_EQ(NvidiaState(Nv(0, 101)), kCritical);
}

TEST(NvidiaStateTest, FairNearSlowdownWithoutGpuMax) {
  NvidiaReading r = Nv(0, 86);
  r.gpu_max_threshold_c.reset();
  EXPECT_EQ(NvidiaState(r), kFair);  // within 5 of SLOWDOWN 90
  r.temperature_c = 84.9;
  EXPECT_EQ(NvidiaState(r), kNormal);
}

TEST(NvidiaStateTest, MissingOrBogusThresholdsAreIgnored) {
  NvidiaReading r;
  r.temperature_c = 95;
  EXPECT_EQ(NvidiaState(r), kNormal);
  r.slowdown_threshold_c = 0;  // not implemented by the driver
  r.gpu_max_threshold_c = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(NvidiaState(r), kNormal);
  r.temperature_c = std::numeric_limits<double>::quiet_NaN();
  r.slowdown_threshold_c = 90;
  EXPECT_EQ(NvidiaState(r), kNormal);
}

TEST(NvidiaStateTest, WorstConditionWins) {
  EXPECT_EQ(NvidiaState(Nv(kNvSwThermalSlowdown, 95)), kCritical);
  EXPECT_EQ(NvidiaState(Nv(kNvHwThermalSlowdown, 30)), kCritical);
  EXPECT_EQ(NvidiaState(Nv(0x00, 30)), kNormal);
}

TEST(ParseTripTypeTest, SysfsValues) {
  EXPECT_EQ(ParseTripType("active"), TripType::kActive);
  EXPECT_EQ(ParseTripType("passive\n"), TripType::kPassive);
  EXPECT_EQ(ParseTripType("hot"), TripType::kHot);
  EXPECT_EQ(ParseTripType(" critical "), TripType::kCritical);
  EXPECT_EQ(ParseTripType("CRITICAL"), TripType::kCritical);
  EXPECT_EQ(ParseTripType("bogus"), std::nullopt);
  EXPECT_EQ(ParseTripType(""), std::nullopt);
}

CpuReading Cpu(std::optional<double> temp, std::vector<TripPoint> trips, bool counters = false) {
  CpuReading r;
  r.temperature_c = temp;
  r.trips = std::move(trips);
  r.throttle_counters_increased = counters;
  return r;
}

TEST(CpuStateTest, CriticalNearHotOrCriticalTrip) {
  const std::vector<TripPoint> crit = {{TripType::kCritical, 105}};
  EXPECT_EQ(CpuState(Cpu(99.9, crit)), kNormal);
  EXPECT_EQ(CpuState(Cpu(100, crit)), kCritical);
  const std::vector<TripPoint> hot = {{TripType::kHot, 95}};
  EXPECT_EQ(CpuState(Cpu(90, hot)), kCritical);
  EXPECT_EQ(CpuState(Cpu(89.9, hot)), kNormal);
}

TEST(CpuStateTest, PassiveTrip) {
  const std::vector<TripPoint> trips = {{TripType::kPassive, 90}, {TripType::kCritical, 105}};
  EXPECT_EQ(CpuState(Cpu(84.9, trips)), kNormal);
  EXPECT_EQ(CpuState(Cpu(85, trips)), kFair);  // within 5 of passive
  EXPECT_EQ(CpuState(Cpu(89.9, trips)), kFair);
  EXPECT_EQ(CpuState(Cpu(90, trips)), kSerious);  // passive crossed
  EXPECT_EQ(CpuState(Cpu(99.9, trips)), kSerious);
  EXPECT_EQ(CpuState(Cpu(100, trips)), kCritical);
}

TEST(CpuStateTest, ThrottleCountersAreSerious) {
  EXPECT_EQ(CpuState(Cpu(40, {}, true)), kSerious);
  EXPECT_EQ(CpuState(Cpu(std::nullopt, {}, true)), kSerious);
  EXPECT_EQ(CpuState(Cpu(101, {{TripType::kCritical, 105}}, true)), kCritical);
}

TEST(CpuStateTest, ActiveTripsAndMissingDataAreNormal) {
  EXPECT_EQ(CpuState(Cpu(70, {{TripType::kActive, 60}})), kNormal);
  EXPECT_EQ(CpuState(Cpu(std::nullopt, {{TripType::kCritical, 50}})), kNormal);
  EXPECT_EQ(CpuState(Cpu(70, {})), kNormal);
  EXPECT_EQ(CpuState(Cpu(70, {{TripType::kCritical, 0}})), kNormal);  // unset trip
}

TEST(AmdStateTest, Thresholds) {
  AmdReading r{.temperature_c = 50, .crit_c = 100, .emergency_c = 105};
  EXPECT_EQ(AmdState(r), kNormal);
  r.temperature_c = 94.9;
  EXPECT_EQ(AmdState(r), kNormal);
  r.temperature_c = 95;
  EXPECT_EQ(AmdState(r), kFair);
  r.temperature_c = 100;
  EXPECT_EQ(AmdState(r), kSerious);
  r.temperature_c = 104.9;
  EXPECT_EQ(AmdState(r), kSerious);
  r.temperature_c = 105;
  EXPECT_EQ(AmdState(r), kCritical);
}

TEST(AmdStateTest, MissingValues) {
  EXPECT_EQ(AmdState({.temperature_c = 120}), kNormal);
  EXPECT_EQ(AmdState({.temperature_c = 110, .emergency_c = 105}), kCritical);
  EXPECT_EQ(AmdState({.temperature_c = std::nullopt, .crit_c = 100}), kNormal);
}

TEST(AppleStateTest, Names) {
  EXPECT_EQ(AppleState("Nominal"), kNormal);
  EXPECT_EQ(AppleState("Fair"), kFair);
  EXPECT_EQ(AppleState("Serious"), kSerious);
  EXPECT_EQ(AppleState("Critical"), kCritical);
  EXPECT_EQ(AppleState("nominal"), kNormal);
  EXPECT_EQ(AppleState("SERIOUS\n"), kSerious);
  EXPECT_EQ(AppleState("Moderate"), kFair);
  EXPECT_EQ(AppleState("Heavy"), kSerious);
  EXPECT_EQ(AppleState("Trapping"), kCritical);
  EXPECT_EQ(AppleState("hot"), std::nullopt);
  EXPECT_EQ(AppleState(""), std::nullopt);
}

}  // namespace
}  // namespace fleetwes::thermal
