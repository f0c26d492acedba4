#include "common/prom_text.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::prom {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string ReadFixture(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::filesystem::path Fixtures() { return FLEETWES_FIXTURES_DIR; }

Exposition MustParse(std::string_view text) {
  absl::StatusOr<Exposition> e = Parse(text);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : Exposition{};
}

// ---- Fixtures ------------------------------------------------------------------------------

TEST(PromFixturesTest, EveryCapturedExpositionParses) {
  int parsed = 0;
  for (const auto& dir : std::filesystem::directory_iterator(Fixtures())) {
    if (!dir.is_directory()) continue;
    for (const auto& file : std::filesystem::directory_iterator(dir.path())) {
      const std::string name = file.path().filename().string();
      if (name.find("metrics") == std::string::npos || file.path().extension() != ".txt") {
        continue;
      }
      SCOPED_TRACE(file.path().string());
      absl::StatusOr<Exposition> e = Parse(ReadFixture(file.path()));
      if (name == "metrics_without_flag.txt") {
        // llama.cpp without --metrics answers with a JSON error, not an exposition.
        ASSERT_FALSE(e.ok());
        EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(e.status().message()), StartsWith("line 1: "));
        continue;
      }
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_FALSE(e->samples.empty());
      ++parsed;
    }
  }
  EXPECT_GE(parsed, 10);
}

TEST(PromFixturesTest, LlamaCppCounters) {
  const Exposition e = MustParse(ReadFixture(Fixtures() / "llamacpp-b4748" / "metrics_busy.txt"));
  EXPECT_EQ(e.Sum("llamacpp:tokens_predicted_total"), 2056);
  EXPECT_EQ(e.Sum("llamacpp:prompt_tokens_total"), 145);
  EXPECT_EQ(e.Sum("llamacpp:kv_cache_usage_ratio"), 0.0703125);
  EXPECT_EQ(e.Sum("llamacpp:requests_processing"), 2);
  EXPECT_EQ(e.TypeOf("llamacpp:tokens_predicted_total"), MetricType::kCounter);
  EXPECT_EQ(e.TypeOf("llamacpp:requests_processing"), MetricType::kGauge);
  EXPECT_EQ(e.help.at("llamacpp:tokens_predicted_total"), "Number of generation tokens processed.");
  EXPECT_FALSE(e.Has("llamacpp:no_such_metric"));
  EXPECT_EQ(e.Sum("llamacpp:no_such_metric"), std::nullopt);
}

TEST(PromFixturesTest, Vllm043TimeToFirstToken) {
  const Exposition e = MustParse(ReadFixture(Fixtures() / "vllm-0.4.3" / "metrics.txt"));
  EXPECT_EQ(e.TypeOf("vllm:time_to_first_token_seconds_bucket"), MetricType::kHistogram);
  const std::optional<Histogram> h = ExtractHistogram(e, "vllm:time_to_first_token_seconds",
                                                      {{"model_name", "facebook/opt-125m"}});
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->count, 1);
  EXPECT_EQ(h->sum, 0.31326723098754883);
  ASSERT_EQ(h->buckets.size(), 17u);
  EXPECT_EQ(h->buckets.front(), std::make_pair(0.001, 0.0));
  EXPECT_EQ(h->buckets[8], std::make_pair(0.25, 0.0));
  EXPECT_EQ(h->buckets[9], std::make_pair(0.5, 1.0));
  EXPECT_EQ(h->buckets.back(), std::make_pair(kInf, 1.0));
  // One observation in (0.25, 0.5]: the median interpolates to the middle of that bucket.
  EXPECT_DOUBLE_EQ(*Quantile(0.5, *h), 0.375);
}

TEST(PromFixturesTest, Vllm029TimeToFirstToken) {
  const Exposition e =
      MustParse(ReadFixture(Fixtures() / "vllm-0.29.0" / "metrics_after_load.txt"));
  const std::optional<Histogram> h = ExtractHistogram(
      e, "vllm:time_to_first_token_seconds", {{"engine", "0"}, {"model_name", "qwen2.5-1.5b"}});
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->count, 10);
  EXPECT_EQ(h->sum, 1.4721317291259766);
  EXPECT_EQ(h->buckets.back(), std::make_pair(kInf, 10.0));
  for (size_t i = 1; i < h->buckets.size(); ++i) {
    EXPECT_LT(h->buckets[i - 1].first, h->buckets[i].first);
  }
  EXPECT_DOUBLE_EQ(*Quantile(0.5, *h), 0.05);   // 0.04 + 0.02 * 4/8
  EXPECT_DOUBLE_EQ(*Quantile(0.95, *h), 1.75);  // 1.0 + 1.5 * 0.5/1
  EXPECT_EQ(e.Sum("vllm:generation_tokens_total"), 584);
  EXPECT_EQ(e.Sum("vllm:prompt_tokens_total"), 530);
  // The _created family is a gauge of its own, not data of the counter.
  EXPECT_EQ(e.TypeOf("vllm:time_to_first_token_seconds_created"), MetricType::kGauge);
  EXPECT_EQ(e.TypeOf("http_request_size_bytes_count"), MetricType::kSummary);
  // No label set matches: absent, not zero.
  EXPECT_FALSE(ExtractHistogram(e, "vllm:time_to_first_token_seconds", {{"engine", "1"}}));
  EXPECT_FALSE(ExtractHistogram(e, "vllm:time_per_output_token_seconds"));
}

TEST(PromFixturesTest, SglangCounters) {
  const Exposition e =
      MustParse(ReadFixture(Fixtures() / "sglang" / "metrics_v0.5.10.post1_datadog_trimmed.txt"));
  EXPECT_EQ(e.Sum("sglang:generation_tokens_total"), 32);
  EXPECT_EQ(e.Sum("sglang:token_usage"), 0.25);
}

// ---- Syntax that must be accepted ---------------------------------------------------------

TEST(PromParseTest, LabelEscapes) {
  const Exposition e = MustParse(R"(foo{path="C:\\dir\\",msg="say \"hi\"\nbye",empty=""} 1)"
                                 "\n");
  ASSERT_EQ(e.samples.size(), 1u);
  const Sample& s = e.samples[0];
  EXPECT_EQ(*s.Label("path"), "C:\\dir\\");
  EXPECT_EQ(*s.Label("msg"), "say \"hi\"\nbye");
  EXPECT_EQ(*s.Label("empty"), "");
  EXPECT_EQ(s.Label("nope"), nullptr);
  EXPECT_EQ(s.labels[0].first, "path");  // exposition order
  EXPECT_EQ(s.labels[2].first, "empty");
}

TEST(PromParseTest, SpecialValuesInAnyCase) {
  const Exposition e = MustParse(
      "a NaN\nb nan\nc +Inf\nd -Inf\ne Inf\nf inf\ng +inf\nh INF\ni -inf\nj 1e3\nk -0.5\n"
      "l .5\nm 1E-2\nn +7\n");
  ASSERT_EQ(e.samples.size(), 14u);
  EXPECT_TRUE(std::isnan(e.samples[0].value));
  EXPECT_TRUE(std::isnan(e.samples[1].value));
  EXPECT_EQ(e.samples[2].value, kInf);
  EXPECT_EQ(e.samples[3].value, -kInf);
  EXPECT_EQ(e.samples[4].value, kInf);
  EXPECT_EQ(e.samples[5].value, kInf);
  EXPECT_EQ(e.samples[6].value, kInf);
  EXPECT_EQ(e.samples[7].value, kInf);
  EXPECT_EQ(e.samples[8].value, -kInf);
  EXPECT_EQ(e.samples[9].value, 1000);
  EXPECT_EQ(e.samples[10].value, -0.5);
  EXPECT_EQ(e.samples[11].value, 0.5);
  EXPECT_EQ(e.samples[12].value, 0.01);
  EXPECT_EQ(e.samples[13].value, 7);
}

TEST(PromParseTest, Timestamps) {
  const Exposition e = MustParse("a 1 1700000000123\nb{x=\"y\"} 2 -5\nc 3\nd{}4\n");
  ASSERT_EQ(e.samples.size(), 4u);
  EXPECT_EQ(e.samples[3].value, 4);
  EXPECT_EQ(e.samples[0].timestamp_ms, 1700000000123);
  EXPECT_EQ(e.samples[1].timestamp_ms, -5);
  EXPECT_EQ(e.samples[2].timestamp_ms, std::nullopt);
}

TEST(PromParseTest, WhitespaceCommentsAndLineEndings) {
  const Exposition e = MustParse(
      "# a free comment\r\n"
      "\r\n"
      "   \n"
      "#\n"
      "# HELP x:y_total Help with \\\\ and \\n escapes\r\n"
      "# TYPE x:y_total counter\r\n"
      "x:y_total{a=\"1\"} 4   \r\n"
      "\tx:y_total { a = \"2\" , } \t 5\t\n"
      "z{} 6");  // no final newline
  ASSERT_EQ(e.samples.size(), 3u);
  EXPECT_EQ(e.Sum("x:y_total"), 9);
  EXPECT_EQ(*e.samples[1].Label("a"), "2");
  EXPECT_EQ(e.samples[2].name, "z");
  EXPECT_TRUE(e.samples[2].labels.empty());
  EXPECT_EQ(e.help.at("x:y_total"), "Help with \\ and \n escapes");
  EXPECT_EQ(e.types.at("x:y_total"), MetricType::kCounter);
  EXPECT_EQ(e.Find("x:y_total").size(), 2u);
}

TEST(PromParseTest, TypeAppliesToChildren) {
  const Exposition e = MustParse(
      "# TYPE h histogram\n"
      "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\nh_created 1.7e9\n"
      "# TYPE s summary\n"
      "s{quantile=\"0.5\"} 0.1\ns_sum 1\ns_count 3\n"
      "# TYPE c counter\nc_total 5\nc_created 1.7e9\n"
      "# TYPE g gauge\ng_count 1\n");
  EXPECT_EQ(e.TypeOf("h_bucket"), MetricType::kHistogram);
  EXPECT_EQ(e.TypeOf("h_sum"), MetricType::kHistogram);
  EXPECT_EQ(e.TypeOf("h_count"), MetricType::kHistogram);
  EXPECT_EQ(e.TypeOf("h_created"), MetricType::kHistogram);
  EXPECT_EQ(e.TypeOf("s"), MetricType::kSummary);
  EXPECT_EQ(e.TypeOf("s_count"), MetricType::kSummary);
  EXPECT_EQ(e.TypeOf("c_total"), MetricType::kCounter);
  EXPECT_EQ(e.TypeOf("c_created"), MetricType::kCounter);
  EXPECT_EQ(e.TypeOf("g"), MetricType::kGauge);
  EXPECT_EQ(e.TypeOf("g_count"), MetricType::kUntyped);  // a gauge has no children
  EXPECT_EQ(e.TypeOf("s_bucket"), MetricType::kUntyped);
  EXPECT_EQ(e.TypeOf("unknown"), MetricType::kUntyped);
}

// ---- Garbage that must be rejected with its line -------------------------------------------

struct Bad {
  const char* text;
  int line;
  const char* what;
};

TEST(PromParseTest, MalformedInputIsRejectedWithItsLine) {
  const Bad kBad[] = {
      {"ok 1\nfoo{bar=\"x\" 1\n", 2, "expected ',' or '}'"},
      {"# TYPE foo\n", 1, "TYPE without a type"},
      {"\n\n# TYPE foo countr\n", 3, "unknown metric type \"countr\""},
      {"# TYPE foo counter gauge\n", 1, "unexpected text after the TYPE"},
      {"foo bar\n", 1, "invalid value \"bar\""},
      {"a 1\r\nb 2\r\nfoo\r\n", 3, "missing value"},
      {"foo 1 abc\n", 1, "invalid timestamp"},
      {"foo 1 1.5\n", 1, "invalid timestamp"},
      {"foo 1 123 456\n", 1, "unexpected text after the timestamp"},
      {"9foo 1\n", 1, "expected a metric name"},
      {"foo{9x=\"a\"} 1\n", 1, "invalid label name"},
      {"foo{a=b} 1\n", 1, "expected '\"'"},
      {"foo{a=\"\\x\"} 1\n", 1, "invalid escape sequence"},
      {"foo{a=\"1\",a=\"2\"} 1\n", 1, "duplicate label \"a\""},
      {"foo{a\"1\"} 1\n", 1, "expected '=' after label name"},
      {"foo{a=\"1\"\n} 1\n", 1, "expected ',' or '}'"},
      {"foo{a=\"1\",\n", 1, "unterminated label set"},
      {"foo{a=\"unterminated} 1\n", 1, "unterminated value"},
      {"foo-bar 1\n", 1, "unexpected character '-'"},
      {"# HELP\n", 1, "HELP without a valid metric name"},
      {"# TYPE a counter\n# TYPE a gauge\n", 2, "conflicting TYPE"},
      {"foo 1.2.3\n", 1, "invalid value"},
      {"foo nan(123)\n", 1, "invalid value"},
      {"foo 0x10\n", 1, "invalid value"},
      {"foo -NaN\n", 1, "invalid value"},
      {"foo{a=\"\xff\xfe\"} 1\n", 1, "not valid UTF-8"},
      {"# TYPE h histogram\nh_bucket{x=\"1\"} 1\n", 2, "has no \"le\" label"},
      {"# TYPE h histogram\nh_bucket{le=\"abc\"} 1\n", 2, "invalid \"le\" label"},
      {"# TYPE s summary\ns{quantile=\"x\"} 1\n", 2, "invalid \"quantile\" label"},
      {"{\"error\":{\"code\":501}}\n", 1, "expected a metric name"},
      {"<html><body>502 Bad Gateway</body></html>\n", 1, "expected a metric name"},
  };
  for (const Bad& bad : kBad) {
    SCOPED_TRACE(bad.text);
    absl::StatusOr<Exposition> e = Parse(bad.text);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string msg(e.status().message());
    EXPECT_THAT(msg, StartsWith("line " + std::to_string(bad.line) + ": "));
    EXPECT_THAT(msg, HasSubstr(bad.what));
  }
}

TEST(PromParseTest, EmptyInputIsAnEmptyExposition) {
  const Exposition e = MustParse("");
  EXPECT_TRUE(e.samples.empty());
}

TEST(PromParseTest, Limits) {
  ParseLimits limits;
  limits.max_bytes = 16;
  EXPECT_EQ(Parse("a 1\nb 2\nc 3\nd 4\ne 5\n", limits).status().code(),
            absl::StatusCode::kResourceExhausted);

  limits = ParseLimits();
  limits.max_samples = 2;
  absl::StatusOr<Exposition> e = Parse("a 1\nb 2\nc 3\n", limits);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(e.status().message()), StartsWith("line 3: "));
  EXPECT_TRUE(Parse("a 1\nb 2\n", limits).ok());

  limits = ParseLimits();
  limits.max_labels_per_sample = 2;
  EXPECT_TRUE(Parse("a{x=\"1\",y=\"2\"} 1\n", limits).ok());
  EXPECT_EQ(Parse("a{x=\"1\",y=\"2\",z=\"3\"} 1\n", limits).status().code(),
            absl::StatusCode::kResourceExhausted);

  limits = ParseLimits();
  limits.max_line_bytes = 10;
  e = Parse("a 1\nbbbbbbbbbbbbbbbbbbbb 1\n", limits);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(e.status().message()), StartsWith("line 2: "));
}

// ---- Histograms ---------------------------------------------------------------------------

constexpr char kTwoEngines[] =
    "# TYPE lat histogram\n"
    "lat_bucket{engine=\"0\",le=\"+Inf\"} 4\n"  // out of order on purpose
    "lat_bucket{engine=\"0\",le=\"0.1\"} 1\n"
    "lat_bucket{engine=\"0\",le=\"1\"} 3\n"
    "lat_sum{engine=\"0\"} 2.5\n"
    "lat_count{engine=\"0\"} 4\n"
    "lat_bucket{engine=\"1\",le=\"0.1\"} 2\n"
    "lat_bucket{engine=\"1\",le=\"1\"} 2\n"
    "lat_bucket{engine=\"1\",le=\"+Inf\"} 6\n"
    "lat_sum{engine=\"1\"} 20\n"
    "lat_count{engine=\"1\"} 6\n";

TEST(ExtractHistogramTest, SumsAcrossLabelSetsAndSorts) {
  const Exposition e = MustParse(kTwoEngines);
  const std::optional<Histogram> h = ExtractHistogram(e, "lat");
  ASSERT_TRUE(h.has_value());
  ASSERT_EQ(h->buckets.size(), 3u);
  EXPECT_EQ(h->buckets[0], std::make_pair(0.1, 3.0));
  EXPECT_EQ(h->buckets[1], std::make_pair(1.0, 5.0));
  EXPECT_EQ(h->buckets[2], std::make_pair(kInf, 10.0));
  EXPECT_EQ(h->sum, 22.5);
  EXPECT_EQ(h->count, 10);
}

TEST(ExtractHistogramTest, MatchSelectsLabelSets) {
  const Exposition e = MustParse(kTwoEngines);
  const std::optional<Histogram> h = ExtractHistogram(e, "lat", {{"engine", "1"}});
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->buckets[0], std::make_pair(0.1, 2.0));
  EXPECT_EQ(h->buckets[2], std::make_pair(kInf, 6.0));
  EXPECT_EQ(h->count, 6);
  EXPECT_EQ(h->sum, 20);
  EXPECT_FALSE(ExtractHistogram(e, "lat", {{"engine", "2"}}).has_value());
  EXPECT_FALSE(ExtractHistogram(e, "other").has_value());
}

TEST(ExtractHistogramTest, MissingInfBucketComesFromCount) {
  const Exposition e =
      MustParse("h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 3\nh_count 5\nh_sum 7\n");
  const std::optional<Histogram> h = ExtractHistogram(e, "h");
  ASSERT_TRUE(h.has_value());
  ASSERT_EQ(h->buckets.size(), 3u);
  EXPECT_EQ(h->buckets[2], std::make_pair(kInf, 5.0));
  EXPECT_EQ(h->count, 5);
}

TEST(DeltaTest, BucketByBucket) {
  Histogram a{{{0.1, 1}, {1, 3}, {kInf, 4}}, 2.5, 4};
  Histogram b{{{0.1, 2}, {1, 7}, {kInf, 9}}, 6.0, 9};
  const std::optional<Histogram> d = Delta(a, b);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->buckets[0], std::make_pair(0.1, 1.0));
  EXPECT_EQ(d->buckets[1], std::make_pair(1.0, 4.0));
  EXPECT_EQ(d->buckets[2], std::make_pair(kInf, 5.0));
  EXPECT_EQ(d->count, 5);
  EXPECT_EQ(d->sum, 3.5);
}

TEST(DeltaTest, ResetOrLayoutChangeIsNullopt) {
  Histogram a{{{0.1, 1}, {1, 3}, {kInf, 4}}, 2.5, 4};
  Histogram reset{{{0.1, 0}, {1, 1}, {kInf, 1}}, 0.2, 1};
  EXPECT_FALSE(Delta(a, reset).has_value());
  Histogram other{{{0.2, 1}, {1, 3}, {kInf, 4}}, 2.5, 4};
  EXPECT_FALSE(Delta(a, other).has_value());
  Histogram shorter{{{1, 3}, {kInf, 4}}, 2.5, 4};
  EXPECT_FALSE(Delta(a, shorter).has_value());
  Histogram count_down = a;
  count_down.count = 3;
  EXPECT_FALSE(Delta(a, count_down).has_value());
}

TEST(QuantileTest, InterpolatesWithinBucket) {
  const Histogram h{{{10, 4}, {20, 8}, {kInf, 8}}, 100, 8};
  EXPECT_DOUBLE_EQ(*Quantile(0.25, h), 5);  // first bucket: lower bound 0
  EXPECT_DOUBLE_EQ(*Quantile(0.5, h), 10);
  EXPECT_DOUBLE_EQ(*Quantile(0.75, h), 15);
  EXPECT_DOUBLE_EQ(*Quantile(1.0, h), 20);
  EXPECT_DOUBLE_EQ(*Quantile(0.0, h), 0);
}

TEST(QuantileTest, InfBucketReturnsSecondHighestBound) {
  const Histogram h{{{1, 1}, {2, 1}, {kInf, 10}}, 100, 10};
  EXPECT_DOUBLE_EQ(*Quantile(0.5, h), 2);
  EXPECT_DOUBLE_EQ(*Quantile(0.99, h), 2);
  EXPECT_DOUBLE_EQ(*Quantile(0.05, h), 0.5);
}

TEST(QuantileTest, NonPositiveFirstBound) {
  const Histogram h{{{-1, 5}, {0, 5}, {kInf, 5}}, -5, 5};
  EXPECT_DOUBLE_EQ(*Quantile(0.5, h), -1);
}

TEST(QuantileTest, EmptyOrInvalid) {
  const Histogram empty{{{1, 0}, {kInf, 0}}, 0, 0};
  EXPECT_FALSE(Quantile(0.5, empty).has_value());
  const Histogram h{{{1, 1}, {kInf, 2}}, 1, 2};
  EXPECT_FALSE(Quantile(-0.1, h).has_value());
  EXPECT_FALSE(Quantile(1.1, h).has_value());
  EXPECT_FALSE(Quantile(std::numeric_limits<double>::quiet_NaN(), h).has_value());
  const Histogram only_inf{{{kInf, 3}}, 1, 3};
  EXPECT_FALSE(Quantile(0.5, only_inf).has_value());
  const Histogram no_inf{{{1, 1}, {2, 3}}, 1, 3};
  EXPECT_FALSE(Quantile(0.5, no_inf).has_value());
}

TEST(QuantileTest, NonMonotonicBucketsAreRepaired) {
  const Histogram h{{{1, 4}, {2, 3}, {4, 8}, {kInf, 8}}, 10, 8};
  // Repaired to 4, 4, 8, 8: the median sits at the top of the first bucket.
  EXPECT_DOUBLE_EQ(*Quantile(0.5, h), 1);
  EXPECT_DOUBLE_EQ(*Quantile(0.75, h), 3);
}

TEST(QuantileTest, FromAWindowDelta) {
  const Exposition before = MustParse(kTwoEngines);
  const std::string later_text = std::string(kTwoEngines) +
                                 "lat_bucket{engine=\"2\",le=\"0.1\"} 0\n"
                                 "lat_bucket{engine=\"2\",le=\"1\"} 2\n"
                                 "lat_bucket{engine=\"2\",le=\"+Inf\"} 2\n"
                                 "lat_count{engine=\"2\"} 2\n"
                                 "lat_sum{engine=\"2\"} 1.2\n";
  const Exposition after = MustParse(later_text);
  const std::optional<Histogram> d =
      Delta(*ExtractHistogram(before, "lat"), *ExtractHistogram(after, "lat"));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->count, 2);
  EXPECT_DOUBLE_EQ(d->sum, 1.2);
  EXPECT_DOUBLE_EQ(*Quantile(0.5, *d), 0.55);  // 0.1 + 0.9 * 1/2
}

}  // namespace
}  // namespace fleetwes::prom
