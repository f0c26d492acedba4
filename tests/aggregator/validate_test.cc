#include "aggregator/ingest/validate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <ostream>
#include <string>

#include "absl/strings/match.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::MakeHello;
using testing::T0;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::optional<Rejection> Check(const v1::Frame& f, absl::Time now = T0() + absl::Seconds(1)) {
  FrameContext ctx{"studio-01", "boot-a", f.ByteSizeLong(), 65536, now};
  return ValidateFrame(f, ctx);
}

TEST(ValidateFrameTest, AcceptsAGoodFrame) {
  const v1::Frame f = MakeFrame("studio-01", "boot-a", 1, T0());
  EXPECT_EQ(Check(f), std::nullopt);
}

struct BadFrameCase {
  std::string name;
  std::function<void(v1::Frame*)> mutate;
  std::string field;
  RejectReason reason;
};

void PrintTo(const BadFrameCase& c, std::ostream* os) { *os << c.name; }

class BadFrameTest : public ::testing::TestWithParam<BadFrameCase> {};

TEST_P(BadFrameTest, NamesTheField) {
  v1::Frame f = MakeFrame("studio-01", "boot-a", 7, T0());
  GetParam().mutate(&f);
  std::optional<Rejection> r = Check(f);
  ASSERT_TRUE(r.has_value()) << "frame was accepted";
  EXPECT_EQ(r->field, GetParam().field) << r->message;
  EXPECT_EQ(RejectReasonName(r->reason), RejectReasonName(GetParam().reason)) << r->message;
  EXPECT_FALSE(r->message.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BadFrameTest,
    ::testing::Values(
        BadFrameCase{"other_node", [](v1::Frame* f) { f->set_node_id("lab-03"); }, "node_id",
                     RejectReason::kKeyMismatch},
        BadFrameCase{"other_boot", [](v1::Frame* f) { f->set_boot_id("boot-b"); }, "boot_id",
                     RejectReason::kKeyMismatch},
        BadFrameCase{"seq_zero", [](v1::Frame* f) { f->set_seq(0); }, "seq", RejectReason::kSeq},
        BadFrameCase{"seq_above_int64",
                     [](v1::Frame* f) { f->set_seq(std::numeric_limits<uint64_t>::max()); },
                     "seq", RejectReason::kSeq},
        BadFrameCase{"no_window_start", [](v1::Frame* f) { f->clear_window_start(); },
                     "window_start", RejectReason::kWindow},
        BadFrameCase{"window_reversed",
                     [](v1::Frame* f) {
                       *f->mutable_window_start() = ToProtoTime(T0() + absl::Seconds(5));
                     },
                     "window_end", RejectReason::kWindow},
        BadFrameCase{"window_too_long",
                     [](v1::Frame* f) {
                       *f->mutable_window_start() = ToProtoTime(T0() - absl::Hours(2));
                     },
                     "window_end", RejectReason::kWindow},
        BadFrameCase{"window_in_future",
                     [](v1::Frame* f) {
                       *f->mutable_window_start() = ToProtoTime(T0() + absl::Minutes(59));
                       *f->mutable_window_end() = ToProtoTime(T0() + absl::Hours(1));
                     },
                     "window_end", RejectReason::kClockSkew},
        BadFrameCase{"window_before_2020",
                     [](v1::Frame* f) {
                       *f->mutable_window_start() = ToProtoTime(absl::FromUnixSeconds(999));
                       *f->mutable_window_end() = ToProtoTime(absl::FromUnixSeconds(1000));
                     },
                     "window_end", RejectReason::kClockSkew},
        BadFrameCase{"bad_nanos", [](v1::Frame* f) { f->mutable_window_end()->set_nanos(-1); },
                     "window_end", RejectReason::kWindow},
        BadFrameCase{"interval_zero", [](v1::Frame* f) { f->set_interval_s(0); }, "interval_s",
                     RejectReason::kOutOfRange},
        BadFrameCase{"interval_nan", [](v1::Frame* f) { f->set_interval_s(kNaN); }, "interval_s",
                     RejectReason::kNonFinite},
        BadFrameCase{"pue_below_one", [](v1::Frame* f) { f->set_pue(0.5); }, "pue",
                     RejectReason::kOutOfRange},
        BadFrameCase{"thermal_unknown",
                     [](v1::Frame* f) { f->set_thermal_state(static_cast<v1::ThermalState>(9)); },
                     "thermal_state", RejectReason::kEnum},
        BadFrameCase{"decode_negative",
                     [](v1::Frame* f) { f->mutable_models(0)->set_decode_tokens_per_s(-1); },
                     "models[0].decode_tokens_per_s", RejectReason::kOutOfRange},
        BadFrameCase{"decode_nan",
                     [](v1::Frame* f) { f->mutable_models(0)->set_decode_tokens_per_s(kNaN); },
                     "models[0].decode_tokens_per_s", RejectReason::kNonFinite},
        BadFrameCase{"prefill_inf",
                     [](v1::Frame* f) { f->mutable_models(0)->set_prefill_tokens_per_s(kInf); },
                     "models[0].prefill_tokens_per_s", RejectReason::kNonFinite},
        BadFrameCase{"kv_above_one",
                     [](v1::Frame* f) { f->mutable_models(0)->set_kv_cache_usage(1.5); },
                     "models[0].kv_cache_usage", RejectReason::kOutOfRange},
        BadFrameCase{"ttft_negative",
                     [](v1::Frame* f) { f->mutable_models(0)->mutable_ttft()->set_p95_s(-0.1); },
                     "models[0].ttft.p95_s", RejectReason::kOutOfRange},
        BadFrameCase{"tpot_nan",
                     [](v1::Frame* f) { f->mutable_models(0)->mutable_tpot()->set_mean_s(kNaN); },
                     "models[0].tpot.mean_s", RejectReason::kNonFinite},
        BadFrameCase{"model_empty", [](v1::Frame* f) { f->mutable_models(0)->set_model(""); },
                     "models[0].model", RejectReason::kString},
        BadFrameCase{"model_too_long",
                     [](v1::Frame* f) { f->mutable_models(0)->set_model(std::string(300, 'm')); },
                     "models[0].model", RejectReason::kString},
        BadFrameCase{"model_control_char",
                     [](v1::Frame* f) { f->mutable_models(0)->set_model(std::string("a\0b", 3)); },
                     "models[0].model", RejectReason::kString},
        BadFrameCase{"engine_unknown",
                     [](v1::Frame* f) {
                       f->mutable_models(0)->set_engine(static_cast<v1::EngineKind>(42));
                     },
                     "models[0].engine", RejectReason::kEnum},
        BadFrameCase{"model_watts_negative",
                     [](v1::Frame* f) { f->mutable_models(0)->set_watts_attributed(-3); },
                     "models[0].watts_attributed", RejectReason::kOutOfRange},
        BadFrameCase{"model_wes_watts_nan",
                     [](v1::Frame* f) { f->mutable_models(0)->mutable_wes()->set_watts(kNaN); },
                     "models[0].wes.watts", RejectReason::kNonFinite},
        BadFrameCase{"model_wes_scope_unknown",
                     [](v1::Frame* f) {
                       f->mutable_models(0)->mutable_wes()->add_power_scopes(
                           static_cast<v1::PowerScope>(77));
                     },
                     "models[0].wes.power_scopes[1]", RejectReason::kEnum},
        BadFrameCase{"device_power_negative",
                     [](v1::Frame* f) { f->mutable_devices(0)->set_power_w(-5); },
                     "devices[0].power_w", RejectReason::kOutOfRange},
        BadFrameCase{"device_energy_inf",
                     [](v1::Frame* f) { f->mutable_devices(0)->set_energy_j(kInf); },
                     "devices[0].energy_j", RejectReason::kNonFinite},
        BadFrameCase{"device_temperature_absurd",
                     [](v1::Frame* f) { f->mutable_devices(0)->set_temperature_c(5000); },
                     "devices[0].temperature_c", RejectReason::kOutOfRange},
        BadFrameCase{"device_id_empty", [](v1::Frame* f) { f->mutable_devices(0)->set_id(""); },
                     "devices[0].id", RejectReason::kString},
        BadFrameCase{"device_kind_unknown",
                     [](v1::Frame* f) {
                       f->mutable_devices(0)->set_kind(static_cast<v1::DeviceKind>(99));
                     },
                     "devices[0].kind", RejectReason::kEnum},
        BadFrameCase{"engine_id_empty",
                     [](v1::Frame* f) { f->mutable_engines(0)->set_engine_id(""); },
                     "engines[0].engine_id", RejectReason::kString},
        BadFrameCase{"too_many_devices",
                     [](v1::Frame* f) {
                       for (int i = 0; i < kMaxDevices; ++i) *f->add_devices() = f->devices(0);
                     },
                     "devices", RejectReason::kTooMany},
        BadFrameCase{"too_many_models",
                     [](v1::Frame* f) {
                       for (int i = 0; i < kMaxModels; ++i) *f->add_models() = f->models(0);
                     },
                     "models", RejectReason::kTooMany},
        BadFrameCase{"swap_negative",
                     [](v1::Frame* f) { f->mutable_system()->set_swap_in_pages_per_s(-1); },
                     "system.swap_in_pages_per_s", RejectReason::kOutOfRange},
        BadFrameCase{"pressure_above_100",
                     [](v1::Frame* f) {
                       f->mutable_system()->set_memory_pressure_some_avg10(250);
                     },
                     "system.memory_pressure_some_avg10", RejectReason::kOutOfRange},
        BadFrameCase{"node_wes_tokens_negative",
                     [](v1::Frame* f) { f->mutable_node_wes()->set_tokens_per_s(-2); },
                     "node_wes.tokens_per_s", RejectReason::kOutOfRange},
        BadFrameCase{"node_wes_null_reason_unknown",
                     [](v1::Frame* f) {
                       f->mutable_node_wes()->set_null_reason(static_cast<v1::WesNullReason>(8));
                     },
                     "node_wes.null_reason", RejectReason::kEnum}),
    [](const ::testing::TestParamInfo<BadFrameCase>& info) { return info.param.name; });

TEST(ValidateFrameTest, RefusesFramesAboveTheSizeCap) {
  v1::Frame f = MakeFrame("studio-01", "boot-a", 1, T0());
  f.mutable_devices(0)->set_name(std::string(200, 'x'));
  FrameContext ctx{"studio-01", "boot-a", f.ByteSizeLong(), /*max_frame_bytes=*/100,
                   T0() + absl::Seconds(1)};
  std::optional<Rejection> r = ValidateFrame(f, ctx);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->field, "frame");
  EXPECT_EQ(r->reason, RejectReason::kTooLarge);
}

TEST(ValidateFrameTest, RefusesFramesOlderThanTheRetentionAsExpired) {
  const absl::Time now = T0() + absl::Hours(24 * 40);
  FrameContext ctx{"studio-01", "boot-a", 0, 65536, now, now - absl::Hours(24 * 30)};
  v1::Frame old = MakeFrame("studio-01", "boot-a", 1, now - absl::Hours(24 * 31));
  ctx.serialized_bytes = old.ByteSizeLong();
  std::optional<Rejection> r = ValidateFrame(old, ctx);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason, RejectReason::kExpired);
  EXPECT_EQ(r->field, "window_end");
  EXPECT_EQ(RejectReasonName(r->reason), "expired");
  EXPECT_NE(r->message.find("744h"), std::string::npos) << r->message;

  // A frame replayed from 29 days ago is still welcome.
  v1::Frame recent = MakeFrame("studio-01", "boot-a", 1, now - absl::Hours(24 * 29));
  ctx.serialized_bytes = recent.ByteSizeLong();
  EXPECT_FALSE(ValidateFrame(recent, ctx).has_value());
}

TEST(ValidateFrameTest, AllowsAbsentOptionalValuesAndUnsetPue) {
  v1::Frame f = MakeFrame("studio-01", "boot-a", 1, T0());
  f.set_pue(0);
  f.mutable_devices(0)->clear_power_w();
  f.mutable_devices(0)->clear_temperature_c();
  f.mutable_models(0)->clear_kv_cache_usage();
  f.mutable_models(0)->clear_decode_tokens_per_s();
  f.mutable_node_wes()->clear_watts();
  EXPECT_EQ(Check(f), std::nullopt);
}

TEST(ValidateHelloTest, AcceptsAGoodHello) {
  EXPECT_TRUE(ValidateHello(MakeHello("studio-01", "boot-a", {{"site", "lab"}})).ok());
}

TEST(ValidateHelloTest, NamesTheBadField) {
  struct Case {
    std::function<void(v1::Hello*)> mutate;
    std::string prefix;
  };
  const Case cases[] = {
      {[](v1::Hello* h) { h->set_node_id(""); }, "hello.node_id:"},
      {[](v1::Hello* h) { h->set_node_id("has space"); }, "hello.node_id:"},
      {[](v1::Hello* h) { h->set_node_id(std::string(129, 'n')); }, "hello.node_id:"},
      {[](v1::Hello* h) { h->set_boot_id(""); }, "hello.boot_id:"},
      {[](v1::Hello* h) { h->set_agent_version(std::string(200, 'v')); }, "hello.agent_version:"},
      {[](v1::Hello* h) {
         for (int i = 0; i <= kMaxLabels; ++i)
           (*h->mutable_labels())["k" + std::to_string(i)] = "v";
       },
       "hello.labels:"},
      {[](v1::Hello* h) { (*h->mutable_labels())["bad key"] = "v"; }, "hello.labels:"},
      {[](v1::Hello* h) {  // each label within its caps, all of them above kMaxLabelBytes
         for (int i = 0; i < 20; ++i) {
           (*h->mutable_labels())["k" + std::to_string(i)] = std::string(250, 'v');
         }
       },
       "hello.labels:"},
      {[](v1::Hello* h) { (*h->mutable_labels())["site"] = std::string(300, 'v'); },
       "hello.labels[\"site\"]:"},
      {[](v1::Hello* h) { h->mutable_devices(0)->set_power_w(-1); }, "hello.devices[0].power_w:"},
      {[](v1::Hello* h) { h->set_interval_s(-2); }, "hello.interval_s:"},
  };
  for (const Case& c : cases) {
    v1::Hello h = MakeHello("studio-01", "boot-a");
    c.mutate(&h);
    absl::Status s = ValidateHello(h);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.prefix;
    EXPECT_TRUE(absl::StartsWith(s.message(), c.prefix)) << s.message();
  }
}

TEST(NodeIdTest, Charset) {
  EXPECT_TRUE(IsValidNodeId("edge-7.site_a:1"));
  EXPECT_FALSE(IsValidNodeId(""));
  EXPECT_FALSE(IsValidNodeId("a/b"));
  EXPECT_FALSE(IsValidNodeId("é"));
  EXPECT_TRUE(IsValidNodeId(std::string(128, 'a')));
  EXPECT_FALSE(IsValidNodeId(std::string(129, 'a')));
}

}  // namespace
}  // namespace fleetwes::aggregator
