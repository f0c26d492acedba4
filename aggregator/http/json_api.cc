#include "aggregator/http/json_api.h"

#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/proto_time.h"
#include "aggregator/routing/router.h"

namespace fleetwes::aggregator {

namespace {

using Params = std::multimap<std::string, std::string>;

constexpr absl::string_view kPrefix = "/api/v1/";

JsonReply Error(const absl::Status& status) {
  return JsonReply{HttpStatusFor(status.code()), JsonError(status)};
}

template <typename Message>
absl::StatusOr<std::string> ProtoJson(const absl::StatusOr<Message>& message) {
  if (!message.ok()) return message.status();
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string body;
  if (!google::protobuf::util::MessageToJsonString(*message, &body, options).ok()) {
    return absl::InternalError("the answer could not be rendered as JSON");
  }
  return body;
}

// Refuses parameters outside `allowed` and repeated ones.
absl::Status CheckParams(const Params& params, const std::set<std::string>& allowed) {
  for (const auto& [key, value] : params) {
    if (allowed.count(key) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown query parameter \"", key,
          "\" (accepted: ", allowed.empty() ? "none" : absl::StrJoin(allowed, ", "), ")"));
    }
    if (params.count(key) > 1) {
      return absl::InvalidArgumentError(absl::StrCat("query parameter \"", key, "\" repeated"));
    }
  }
  return absl::OkStatus();
}

const std::string* Param(const Params& params, const std::string& key) {
  auto it = params.find(key);
  return it == params.end() ? nullptr : &it->second;
}

absl::StatusOr<uint32_t> UintParam(const Params& params, const std::string& key, uint32_t max) {
  const std::string* v = Param(params, key);
  if (v == nullptr) return 0u;
  uint32_t n = 0;
  if (!absl::SimpleAtoi(*v, &n) || n > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": must be an integer in [0, ", max, "], got \"", *v, "\""));
  }
  return n;
}

absl::Status DoubleParam(const Params& params, const std::string& key, std::optional<double>* out) {
  const std::string* v = Param(params, key);
  if (v == nullptr) return absl::OkStatus();
  double d = 0;
  if (!absl::SimpleAtod(*v, &d) || !std::isfinite(d)) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": must be a finite number, got \"", *v, "\""));
  }
  *out = d;
  return absl::OkStatus();
}

// The fields fleet tools script against, added to a Candidate object already in proto JSON.
void AddRouteFields(const v1::Candidate& c, nlohmann::json* out) {
  (*out)["node"] = c.node_id();
  (*out)["tok_s"] = c.tokens_per_s();
  (*out)["wes"] = c.has_wes_penalized() ? nlohmann::json(c.wes_penalized()) : nlohmann::json();
  (*out)["reason"] = c.reason();
}

// `since`: an RFC 3339 time, or a duration back from `now` ("15m", "2h").
absl::Status SinceParam(const Params& params, absl::Time now, google::protobuf::Timestamp* out,
                        bool* has) {
  const std::string* v = Param(params, "since");
  *has = v != nullptr;
  if (v == nullptr) return absl::OkStatus();
  absl::Time t;
  absl::Duration d;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, *v, &t, &error)) {
    // Accepted as given; the range checks happen in the query.
  } else if (absl::ParseDuration(*v, &d) && d >= absl::ZeroDuration() &&
             d <= absl::Hours(24 * 3660)) {
    t = now - d;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "since: an RFC 3339 time or a duration such as 15m expected, got \"", *v, "\""));
  }
  if (t < absl::FromUnixSeconds(-62'135'596'800) || t > absl::FromUnixSeconds(253'402'300'799)) {
    return absl::InvalidArgumentError(absl::StrCat("since: out of range, got \"", *v, "\""));
  }
  *out = ToProtoTime(t);
  return absl::OkStatus();
}

absl::Status StepParam(const Params& params, google::protobuf::Duration* out, bool* has) {
  const std::string* v = Param(params, "step");
  *has = v != nullptr;
  if (v == nullptr) return absl::OkStatus();
  absl::Duration d;
  if (!absl::ParseDuration(*v, &d) || d < absl::ZeroDuration() || d > absl::Hours(24 * 366)) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: a duration such as 1m expected, got \"", *v, "\""));
  }
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1'000'000'000);
  out->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
  return absl::OkStatus();
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return 503;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

std::string JsonError(const absl::Status& status) {
  nlohmann::json j;
  j["error"]["code"] = absl::StatusCodeToString(status.code());
  j["error"]["message"] = std::string(status.message());
  return j.dump();
}

JsonApi::JsonApi(const FleetQueries* queries, const FleetState* state, AggregatorMetrics* metrics,
                 Clock* clock, StalenessPolicy policy)
    : queries_(queries), state_(state), metrics_(metrics), clock_(clock), policy_(policy) {}

JsonReply JsonApi::Handle(absl::string_view path, const Params& params) {
  if (!absl::StartsWith(path, kPrefix)) {
    return Error(absl::NotFoundError(absl::StrCat("no route ", path)));
  }
  absl::string_view rest = path.substr(kPrefix.size());
  absl::StatusOr<std::string> body;
  std::string method;
  if (rest == "leaderboard") {
    method = "http.leaderboard";
    body = Leaderboard(params);
  } else if (rest == "nodes") {
    method = "http.nodes";
    body = Nodes(params);
  } else if (rest == "events") {
    method = "http.events";
    body = Events(params);
  } else if (absl::StartsWith(rest, "nodes/") && absl::EndsWith(rest, "/profile")) {
    method = "http.profile";
    body = Profile(rest.substr(6, rest.size() - 6 - 8), params);
  } else if (absl::StartsWith(rest, "nodes/")) {
    method = "http.node";
    body = Node(rest.substr(6), params);
  } else if (rest == "route/best") {
    method = "http.route_best";
    body = RouteBest(params);
  } else {
    return Error(absl::NotFoundError(absl::StrCat("no route ", path,
                                                  " (routes: /api/v1/leaderboard, /api/v1/nodes, "
                                                  "/api/v1/nodes/{id}, /api/v1/nodes/{id}/profile, "
                                                  "/api/v1/events, /api/v1/route/best)")));
  }
  metrics_->CountApiRequest(method, body.status());
  if (!body.ok()) return Error(body.status());
  return JsonReply{200, *std::move(body)};
}

absl::StatusOr<std::string> JsonApi::Leaderboard(const Params& params) {
  if (absl::Status s = CheckParams(params, {"model", "limit"}); !s.ok()) return s;
  v1::LeaderboardRequest request;
  if (const std::string* model = Param(params, "model")) request.set_model(*model);
  absl::StatusOr<uint32_t> limit = UintParam(params, "limit", 1'000'000);
  if (!limit.ok()) return limit.status();
  request.set_limit(*limit);
  return ProtoJson(queries_->Leaderboard(request));
}

absl::StatusOr<std::string> JsonApi::Nodes(const Params& params) {
  if (absl::Status s = CheckParams(params, {}); !s.ok()) return s;
  return ProtoJson(queries_->ListNodes(v1::ListNodesRequest()));
}

absl::StatusOr<std::string> JsonApi::Node(absl::string_view id, const Params& params) {
  if (absl::Status s = CheckParams(params, {}); !s.ok()) return s;
  if (!IsValidNodeId(id)) {
    return absl::InvalidArgumentError("node id: 1..128 characters of [A-Za-z0-9._:-] expected");
  }
  v1::GetNodeRequest request;
  request.set_node_id(std::string(id));
  return ProtoJson(queries_->GetNode(request));
}

absl::StatusOr<std::string> JsonApi::Profile(absl::string_view id, const Params& params) {
  if (absl::Status s = CheckParams(params, {"model", "since", "step", "limit"}); !s.ok()) return s;
  if (!IsValidNodeId(id)) {
    return absl::InvalidArgumentError("node id: 1..128 characters of [A-Za-z0-9._:-] expected");
  }
  v1::ProfileRequest request;
  request.set_node_id(std::string(id));
  if (const std::string* model = Param(params, "model")) request.set_model(*model);
  bool has = false;
  if (absl::Status s = SinceParam(params, clock_->Now(), request.mutable_start(), &has); !s.ok()) {
    return s;
  }
  if (!has) request.clear_start();
  if (absl::Status s = StepParam(params, request.mutable_step(), &has); !s.ok()) return s;
  if (!has) request.clear_step();
  absl::StatusOr<uint32_t> limit = UintParam(params, "limit", 1'000'000);
  if (!limit.ok()) return limit.status();
  request.set_limit(*limit);
  return ProtoJson(queries_->Profile(request));
}

absl::StatusOr<std::string> JsonApi::Events(const Params& params) {
  if (absl::Status s = CheckParams(params, {"node", "model", "kind", "since", "limit"}); !s.ok()) {
    return s;
  }
  v1::EventsRequest request;
  if (const std::string* node = Param(params, "node")) request.set_node_id(*node);
  if (const std::string* model = Param(params, "model")) request.set_model(*model);
  if (const std::string* kinds = Param(params, "kind")) {
    for (absl::string_view k : absl::StrSplit(*kinds, ',')) {
      const std::string name = absl::StrCat("EVENT_KIND_", absl::AsciiStrToUpper(k));
      v1::EventKind kind;
      if (!v1::EventKind_Parse(name, &kind) || kind == v1::EVENT_KIND_UNSPECIFIED) {
        return absl::InvalidArgumentError(
            absl::StrCat("kind: rank_change, thermal_change or stale expected, got \"", k, "\""));
      }
      request.add_kinds(kind);
    }
  }
  bool has = false;
  if (absl::Status s = SinceParam(params, clock_->Now(), request.mutable_start(), &has); !s.ok()) {
    return s;
  }
  if (!has) request.clear_start();
  absl::StatusOr<uint32_t> limit = UintParam(params, "limit", 1'000'000);
  if (!limit.ok()) return limit.status();
  request.set_limit(*limit);
  return ProtoJson(queries_->Events(request));
}

absl::StatusOr<std::string> JsonApi::RouteBest(const Params& params) {
  if (absl::Status s =
          CheckParams(params, {"model", "objective", "count", "max_ttft_s", "max_queue",
                               "min_kv_headroom", "max_data_age_s", "mode"});
      !s.ok()) {
    return s;
  }
  v1::PickRequest request;
  const std::string* model = Param(params, "model");
  if (model == nullptr || model->empty()) {
    return absl::InvalidArgumentError("model: required (?model=NAME)");
  }
  request.set_model(*model);
  std::string objective = "efficiency";
  if (const std::string* o = Param(params, "objective")) {
    objective = absl::AsciiStrToLower(*o);
    if (objective == "efficiency") {
      request.set_objective(v1::OBJECTIVE_EFFICIENCY);
    } else if (objective == "latency") {
      request.set_objective(v1::OBJECTIVE_LATENCY);
    } else if (objective == "balanced") {
      request.set_objective(v1::OBJECTIVE_BALANCED);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "objective: one of efficiency, latency, balanced expected, got \"", *o, "\""));
    }
  }
  if (const std::string* m = Param(params, "mode")) {
    const std::string mode = absl::AsciiStrToLower(*m);
    if (mode == "ranked") {
      request.set_mode(v1::PICK_MODE_RANKED);
    } else if (mode == "one") {
      request.set_mode(v1::PICK_MODE_ONE);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("mode: one of ranked, one expected, got \"", *m, "\""));
    }
  }
  absl::StatusOr<uint32_t> count = UintParam(params, "count", kPickMaxCount);
  if (!count.ok()) return count.status();
  request.set_count(*count);
  absl::StatusOr<uint32_t> max_queue =
      UintParam(params, "max_queue", std::numeric_limits<uint32_t>::max());
  if (!max_queue.ok()) return max_queue.status();
  if (Param(params, "max_queue") != nullptr) {
    request.mutable_constraints()->set_max_queue(*max_queue);
  }
  struct DoubleConstraint {
    const char* key;
    void (v1::Constraints::*set)(double);
  };
  for (const DoubleConstraint& c :
       {DoubleConstraint{"max_ttft_s", &v1::Constraints::set_max_ttft_s},
        DoubleConstraint{"min_kv_headroom", &v1::Constraints::set_min_kv_headroom},
        DoubleConstraint{"max_data_age_s", &v1::Constraints::set_max_data_age_s}}) {
    std::optional<double> value;
    if (absl::Status s = DoubleParam(params, c.key, &value); !s.ok()) return s;
    if (value.has_value()) (request.mutable_constraints()->*c.set)(*value);
  }

  absl::StatusOr<v1::PickResponse> picked =
      Pick(request, CandidatesFor(*state_, request.model()), clock_->Now(), policy_);
  absl::StatusOr<std::string> body = ProtoJson(picked);
  if (!body.ok()) return body.status();
  nlohmann::json j = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InternalError("the answer could not be rendered as JSON");
  AddRouteFields(picked->efficiency(), &j["efficiency"]);
  AddRouteFields(picked->latency(), &j["latency"]);
  j["default"] = objective;
  return j.dump();
}

}  // namespace fleetwes::aggregator
