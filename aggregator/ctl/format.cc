#include "aggregator/ctl/format.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/wes.h"

namespace fleetwes::aggregator::ctl {
namespace {

constexpr absl::string_view kNone = "-";

std::string Fixed1(double v) { return absl::StrFormat("%.1f", v); }

// "20%", "42.9%": one decimal unless the value is (nearly) whole.
std::string Pct(double v) {
  if (!std::isfinite(v)) return std::string(kNone);
  if (std::fabs(v - std::round(v)) < 0.05) return absl::StrFormat("%.0f%%", v);
  return absl::StrFormat("%.1f%%", v);
}

std::string WesOrDash(bool has, double v) { return has ? FormatWes(v) : std::string(kNone); }

std::string Seconds(double s) {
  if (!std::isfinite(s) || s < 0) return std::string(kNone);
  if (s < 1) return absl::StrFormat("%.0fms", s * 1000);
  return absl::StrFormat("%.2fs", s);
}

// "DEVICE_KIND_GPU_NVIDIA" -> "gpu_nvidia".
std::string EnumShort(const std::string& name, absl::string_view prefix) {
  absl::string_view v = name;
  if (absl::StartsWith(v, prefix)) v.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(v);
}

std::string Labels(const google::protobuf::Map<std::string, std::string>& labels) {
  if (labels.empty()) return std::string(kNone);
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

std::string Timestamp(const google::protobuf::Timestamp& ts) {
  absl::Time t = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", t, absl::UTCTimeZone());
}

double AgeAt(const google::protobuf::Timestamp& ts, absl::Time now) {
  absl::Time t = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::ToDoubleSeconds(now - t);
}

std::string EntryNotes(const v1::LeaderboardEntry& e) {
  std::vector<std::string> notes;
  if (e.memory_pressure()) notes.push_back("swapping");
  if (e.has_baseline_loss_pct() && std::isfinite(e.baseline_loss_pct())) {
    notes.push_back(absl::StrCat("loss ", Pct(e.baseline_loss_pct()), " vs baseline"));
  }
  if (e.stale()) notes.push_back("stale");
  return notes.empty() ? std::string(kNone) : absl::StrJoin(notes, ", ");
}

std::string WesSummary(const v1::Wes& w) {
  if (!w.has_penalized()) {
    std::string reason(WesNullReasonName(w.null_reason()));
    return absl::StrCat("- (", reason.empty() ? "no value" : reason, ")");
  }
  std::string s = absl::StrCat(FormatWes(w.penalized()), " tok/J");
  if (w.has_raw()) absl::StrAppend(&s, " (raw ", FormatWes(w.raw()));
  if (w.has_thermal_cost_pct()) {
    absl::StrAppend(&s, ", thermal cost ", Pct(w.thermal_cost_pct()));
  }
  absl::StrAppend(&s, ", ", Fixed1(w.tokens_per_s()), " tok/s");
  if (w.has_watts()) absl::StrAppend(&s, ", ", Fixed1(w.watts()), " W");
  absl::StrAppend(&s, ", scope ", PowerScopes(w));
  if (w.has_raw()) absl::StrAppend(&s, ")");
  return s;
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view s) {
  if (s == "table") return OutputFormat::kTable;
  if (s == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("-o must be \"table\" or \"json\", got \"", s, "\""));
}

absl::StatusOr<v1::Objective> ParseObjective(absl::string_view s) {
  if (s == "efficiency") return v1::OBJECTIVE_EFFICIENCY;
  if (s == "latency") return v1::OBJECTIVE_LATENCY;
  if (s == "balanced") return v1::OBJECTIVE_BALANCED;
  return absl::InvalidArgumentError(absl::StrCat(
      "--objective must be \"efficiency\", \"latency\" or \"balanced\", got \"", s, "\""));
}

absl::StatusOr<v1::PickMode> ParsePickMode(absl::string_view s) {
  if (s == "ranked") return v1::PICK_MODE_RANKED;
  if (s == "one") return v1::PICK_MODE_ONE;
  return absl::InvalidArgumentError(
      absl::StrCat("--mode must be \"ranked\" or \"one\", got \"", s, "\""));
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(m, &out, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot render JSON: ", status.ToString()));
  }
  return out;
}

std::string FormatAge(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return std::string(kNone);
  if (seconds < 10) return absl::StrFormat("%.1fs", seconds);
  int64_t s = static_cast<int64_t>(seconds);
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

std::string UnrankedReason(const v1::LeaderboardEntry& e) {
  if (e.stale()) return "stale";
  std::string reason(WesNullReasonName(e.wes().null_reason()));
  if (!reason.empty()) return reason;
  return "unranked";
}

std::string PowerScopes(const v1::Wes& wes) {
  std::vector<std::string> names;
  for (int s : wes.power_scopes()) {
    names.emplace_back(PowerScopeName(static_cast<v1::PowerScope>(s)));
  }
  return names.empty() ? std::string(kNone) : absl::StrJoin(names, "+");
}

std::string LeaderboardTable(const v1::LeaderboardResponse& r) {
  std::string out;
  if (r.model().empty()) {
    out = "fleet leaderboard (node WES, tokens per joule)";
  } else {
    out = absl::StrCat("leaderboard for model ", r.model(), " (WES, tokens per joule)");
  }
  if (r.has_as_of()) absl::StrAppend(&out, ", as of ", Timestamp(r.as_of()));
  out += "\n";

  using A = TextTable::Align;
  TextTable ranked({"RANK", "NODE", "WES", "RAW WES", "THERMAL COST", "STATE", "POWER SCOPE",
                    "TOK/S", "WATTS", "AGE", "NOTES"},
                   {A::kRight, A::kLeft, A::kRight, A::kRight, A::kRight, A::kLeft, A::kLeft,
                    A::kRight, A::kRight, A::kRight, A::kLeft});
  for (const auto& e : r.entries()) {
    const v1::Wes& w = e.wes();
    ranked.AddRow({absl::StrCat(e.rank()), e.node_id(), WesOrDash(w.has_penalized(), w.penalized()),
                   WesOrDash(w.has_raw(), w.raw()),
                   w.has_thermal_cost_pct() ? Pct(w.thermal_cost_pct()) : std::string(kNone),
                   std::string(ThermalStateName(e.thermal_state())), PowerScopes(w),
                   Fixed1(e.tokens_per_s()), w.has_watts() ? Fixed1(w.watts()) : std::string(kNone),
                   FormatAge(e.data_age_s()), EntryNotes(e)});
  }
  if (ranked.empty()) {
    out += "no ranked nodes\n";
  } else {
    out += ranked.Render();
  }

  if (r.unranked_size() > 0) {
    absl::StrAppend(&out, "\nunranked (", r.unranked_size(), "):\n");
    TextTable unranked({"NODE", "REASON", "STATE", "TOK/S", "WATTS", "AGE"},
                       {A::kLeft, A::kLeft, A::kLeft, A::kRight, A::kRight, A::kRight});
    for (const auto& e : r.unranked()) {
      const v1::Wes& w = e.wes();
      unranked.AddRow({e.node_id(), UnrankedReason(e),
                       std::string(ThermalStateName(e.thermal_state())), Fixed1(e.tokens_per_s()),
                       w.has_watts() ? Fixed1(w.watts()) : std::string(kNone),
                       FormatAge(e.data_age_s())});
    }
    out += unranked.Render("  ");
  }
  return out;
}

std::string PickTable(const v1::PickResponse& r) {
  std::string objective = EnumShort(v1::Objective_Name(r.objective()), "OBJECTIVE_");
  if (r.objective() == v1::OBJECTIVE_UNSPECIFIED) objective = "efficiency";
  std::string out = absl::StrCat("route for model ", r.model(), ", objective ", objective,
                                 " (data age up to ", FormatAge(r.data_age_s()), ")\n");
  // One line per pick; the recommendation also says why (the table gives every reason).
  auto pick_line = [&out](absl::string_view title, bool has, const v1::Candidate& c,
                          const std::string& detail, bool with_reason) {
    if (!has || c.node_id().empty()) {
      absl::StrAppend(&out, title, "-\n");
      return;
    }
    absl::StrAppend(&out, title, c.node_id(), "  ", detail);
    if (with_reason && !c.reason().empty()) absl::StrAppend(&out, "  (", c.reason(), ")");
    out += "\n";
  };
  const auto& rec = r.recommendation();
  pick_line("recommendation: ", r.has_recommendation(), rec,
            absl::StrCat("weight ", Pct(rec.weight() * 100)), true);
  const auto& eff = r.efficiency();
  pick_line("efficiency:     ", r.has_efficiency(), eff,
            absl::StrCat("WES ", WesOrDash(eff.has_wes_penalized(), eff.wes_penalized())), false);
  const auto& lat = r.latency();
  pick_line("latency:        ", r.has_latency(), lat,
            absl::StrCat(Fixed1(lat.tokens_per_s()), " tok/s, TTFT p95 ",
                         lat.has_ttft_p95_s() ? Seconds(lat.ttft_p95_s()) : std::string(kNone)),
            false);

  using A = TextTable::Align;
  TextTable t({"RANK", "NODE", "SCORE", "WEIGHT", "WES", "RAW WES", "TOK/S", "TTFT P95", "QUEUE",
               "STATE", "AGE", "REASON"},
              {A::kRight, A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight, A::kRight,
               A::kRight, A::kRight, A::kLeft, A::kRight, A::kLeft});
  int rank = 0;
  for (const auto& c : r.candidates()) {
    t.AddRow({absl::StrCat(++rank), c.node_id(), absl::StrFormat("%.4g", c.score()),
              Pct(c.weight() * 100), WesOrDash(c.has_wes_penalized(), c.wes_penalized()),
              WesOrDash(c.has_wes_raw(), c.wes_raw()), Fixed1(c.tokens_per_s()),
              c.has_ttft_p95_s() ? Seconds(c.ttft_p95_s()) : std::string(kNone),
              c.has_queue() ? absl::StrCat(c.queue()) : std::string(kNone),
              std::string(ThermalStateName(c.thermal_state())), FormatAge(c.data_age_s()),
              c.reason().empty() ? std::string(kNone) : c.reason()});
  }
  out += "\n";
  // Mode ONE answers with the recommendation alone.
  if (!t.empty()) {
    out += t.Render();
  } else if (!r.has_recommendation()) {
    out += "no candidates\n";
  }
  if (r.excluded_size() > 0) {
    absl::StrAppend(&out, "\nexcluded (", r.excluded_size(), "):\n");
    TextTable x({"NODE", "REASON"});
    for (const auto& e : r.excluded()) x.AddRow({e.node_id(), e.reason()});
    out += x.Render("  ");
  }
  return out;
}

std::string NodesTable(const v1::ListNodesResponse& r, absl::Time now) {
  if (r.nodes_size() == 0) return "no nodes\n";
  using A = TextTable::Align;
  TextTable t({"NODE", "STATUS", "STATE", "WES", "POWER SCOPE", "MODELS", "LAST SEQ", "LAST SEEN",
               "AGENT", "LABELS"},
              {A::kLeft, A::kLeft, A::kLeft, A::kRight, A::kLeft, A::kLeft, A::kRight, A::kRight,
               A::kLeft, A::kLeft});
  for (const auto& n : r.nodes()) {
    const v1::Wes& w = n.node_wes();
    std::string wes =
        w.has_penalized()
            ? FormatWes(w.penalized())
            : absl::StrCat("- (", std::string(WesNullReasonName(w.null_reason())), ")");
    if (!w.has_penalized() && w.null_reason() == v1::WES_NULL_REASON_UNSPECIFIED) wes = "-";
    t.AddRow({n.node_id(), n.stale() ? "stale" : "live",
              std::string(ThermalStateName(n.thermal_state())), wes, PowerScopes(w),
              n.models().empty() ? std::string(kNone) : absl::StrJoin(n.models(), ","),
              absl::StrCat(n.last_seq()),
              n.has_last_seen() ? absl::StrCat(FormatAge(AgeAt(n.last_seen(), now)), " ago")
                                : std::string(kNone),
              n.agent_version().empty() ? std::string(kNone) : n.agent_version(),
              Labels(n.labels())});
  }
  return t.Render();
}

std::string NodeDetail(const v1::GetNodeResponse& r, absl::Time now) {
  const v1::NodeSummary& n = r.node();
  std::string out;
  absl::StrAppend(&out, "node:          ", n.node_id(), "\n");
  absl::StrAppend(&out, "status:        ", n.stale() ? "stale" : "live", "\n");
  absl::StrAppend(&out, "labels:        ", Labels(n.labels()), "\n");
  absl::StrAppend(&out, "agent version: ", n.agent_version().empty() ? "-" : n.agent_version(),
                  "\n");
  if (n.has_last_seen()) {
    absl::StrAppend(&out, "last seen:     ", Timestamp(n.last_seen()), " (",
                    FormatAge(AgeAt(n.last_seen(), now)), " ago), seq ", n.last_seq(), "\n");
  }
  absl::StrAppend(&out, "thermal state: ", std::string(ThermalStateName(n.thermal_state())), "\n");
  absl::StrAppend(&out, "node WES:      ", WesSummary(n.node_wes()), "\n");
  absl::StrAppend(&out, "models:        ",
                  n.models().empty() ? std::string(kNone) : absl::StrJoin(n.models(), ", "), "\n");
  if (!r.has_latest_frame()) return out;

  const v1::Frame& f = r.latest_frame();
  using A = TextTable::Align;
  absl::StrAppend(&out, "\nlatest frame:  seq ", f.seq(), ", boot ", f.boot_id(), ", window ",
                  absl::StrFormat("%.1fs", f.interval_s()));
  if (f.has_window_end()) absl::StrAppend(&out, " ending ", Timestamp(f.window_end()));
  out += "\n";

  if (f.devices_size() > 0) {
    out += "\ndevices:\n";
    TextTable d({"ID", "KIND", "NAME", "SCOPE", "POWER W", "TEMP C", "CLOCK MHZ", "THROTTLE",
                 "STATE", "NOTE"},
                {A::kLeft, A::kLeft, A::kLeft, A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight,
                 A::kLeft, A::kLeft});
    for (const auto& dev : f.devices()) {
      std::string clock(kNone);
      if (dev.has_clock_mhz()) {
        clock = absl::StrFormat("%.0f", dev.clock_mhz());
        if (dev.has_clock_max_mhz())
          absl::StrAppend(&clock, absl::StrFormat("/%.0f", dev.clock_max_mhz()));
      }
      std::string note = dev.unavailable_reason();
      if (dev.power_capped()) note = note.empty() ? "power capped" : note + ", power capped";
      d.AddRow({dev.id(), EnumShort(v1::DeviceKind_Name(dev.kind()), "DEVICE_KIND_"), dev.name(),
                std::string(PowerScopeName(dev.power_scope())),
                dev.has_power_w() ? Fixed1(dev.power_w()) : std::string(kNone),
                dev.has_temperature_c() ? absl::StrFormat("%.0f", dev.temperature_c())
                                        : std::string(kNone),
                clock, absl::StrFormat("0x%x", dev.throttle_mask()),
                std::string(ThermalStateName(dev.thermal_state())),
                note.empty() ? std::string(kNone) : note});
    }
    out += d.Render("  ");
  }
  if (f.models_size() > 0) {
    out += "\nmodels:\n";
    TextTable m({"ENGINE", "MODEL", "TOK/S", "PREFILL TOK/S", "TTFT P95", "TPOT P95", "QUEUE", "KV",
                 "WATTS", "WES", "RAW WES"},
                {A::kLeft, A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight, A::kRight,
                 A::kRight, A::kRight, A::kRight, A::kRight});
    for (const auto& s : f.models()) {
      const v1::Wes& w = s.wes();
      std::string wes = w.has_penalized() ? FormatWes(w.penalized())
                                          : std::string(WesNullReasonName(w.null_reason()));
      if (wes.empty()) wes = std::string(kNone);
      m.AddRow(
          {s.engine_id().empty() ? EnumShort(v1::EngineKind_Name(s.engine()), "ENGINE_KIND_")
                                 : s.engine_id(),
           s.model(),
           s.has_decode_tokens_per_s() ? Fixed1(s.decode_tokens_per_s()) : std::string(kNone),
           s.has_prefill_tokens_per_s() ? Fixed1(s.prefill_tokens_per_s()) : std::string(kNone),
           s.ttft().has_p95_s() ? Seconds(s.ttft().p95_s()) : std::string(kNone),
           s.tpot().has_p95_s() ? Seconds(s.tpot().p95_s()) : std::string(kNone),
           s.has_requests_waiting() ? absl::StrCat(s.requests_waiting()) : std::string(kNone),
           s.has_kv_cache_usage() ? Pct(s.kv_cache_usage() * 100) : std::string(kNone),
           s.has_watts_attributed() ? Fixed1(s.watts_attributed()) : std::string(kNone), wes,
           WesOrDash(w.has_raw(), w.raw())});
    }
    out += m.Render("  ");
  }
  if (f.has_system()) {
    const v1::SystemSample& sys = f.system();
    out += "\nmemory:        ";
    std::vector<std::string> parts;
    if (sys.has_swap_in_pages_per_s()) {
      parts.push_back(absl::StrFormat("swap in %.0f pages/s", sys.swap_in_pages_per_s()));
    }
    if (sys.has_swap_out_pages_per_s()) {
      parts.push_back(absl::StrFormat("swap out %.0f pages/s", sys.swap_out_pages_per_s()));
    }
    if (sys.has_memory_pressure_some_avg10()) {
      parts.push_back(absl::StrFormat("pressure avg10 %.1f%%", sys.memory_pressure_some_avg10()));
    }
    parts.push_back(sys.memory_pressure() ? "UNDER PRESSURE" : "no pressure");
    out += absl::StrJoin(parts, ", ");
    out += "\n";
  }
  return out;
}

namespace {

std::string OptionalFixed(bool has, double v, const char* format = "%.1f") {
  return has && std::isfinite(v) ? absl::StrFormat(format, v) : std::string(kNone);
}

std::string EventChange(const v1::Event& e) {
  switch (e.kind()) {
    case v1::EVENT_KIND_RANK_CHANGE:
    case v1::EVENT_KIND_STALE: {
      auto rank = [](uint32_t r) {
        return r == 0 ? std::string("unranked") : absl::StrCat("#", r);
      };
      return absl::StrCat(rank(e.old_rank()), " -> ", rank(e.new_rank()));
    }
    case v1::EVENT_KIND_THERMAL_CHANGE:
      return absl::StrCat(std::string(ThermalStateName(e.old_thermal_state())), " -> ",
                          std::string(ThermalStateName(e.new_thermal_state())));
    default:
      return std::string(kNone);
  }
}

}  // namespace

std::string EventsTable(const v1::EventsResponse& r) {
  if (r.events_size() == 0) return "no events\n";
  TextTable t({"TIME", "NODE", "MODEL", "KIND", "CHANGE", "MESSAGE"});
  for (const v1::Event& e : r.events()) {
    t.AddRow({Timestamp(e.time()), e.node_id(), e.model().empty() ? std::string(kNone) : e.model(),
              EnumShort(v1::EventKind_Name(e.kind()), "EVENT_KIND_"), EventChange(e),
              e.message().empty() ? std::string(kNone) : e.message()});
  }
  return t.Render();
}

std::string HistoryTable(const v1::HistoryResponse& r) {
  if (r.points_size() == 0) return "no samples in the range\n";
  using A = TextTable::Align;
  TextTable t({"TIME", "TOK/S", "WATTS", "RAW WES", "WES", "STATE"},
              {A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight, A::kLeft});
  for (const v1::HistoryPoint& p : r.points()) {
    t.AddRow({Timestamp(p.time()), Fixed1(p.tokens_per_s()),
              OptionalFixed(p.has_watts(), p.watts()), WesOrDash(p.has_wes_raw(), p.wes_raw()),
              WesOrDash(p.has_wes_penalized(), p.wes_penalized()),
              std::string(ThermalStateName(p.thermal_state()))});
  }
  return t.Render();
}

std::string ProfileTable(const v1::ProfileResponse& r) {
  std::string out = absl::StrCat("profile of node ", r.node_id(), ", model ", r.model(), "\n");
  if (r.points_size() == 0) return out + "no samples in the range\n";
  using A = TextTable::Align;
  TextTable t({"TIME", "TOK/S", "TTFT P95", "TPOT P95", "KV", "QUEUE", "STATE", "SWAP", "WATTS",
               "RAW WES", "WES"},
              {A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight, A::kRight, A::kLeft, A::kLeft,
               A::kRight, A::kRight, A::kRight});
  for (const v1::ProfilePoint& p : r.points()) {
    t.AddRow({Timestamp(p.time()), Fixed1(p.tokens_per_s()),
              p.has_ttft_p95_s() ? Seconds(p.ttft_p95_s()) : std::string(kNone),
              p.has_tpot_p95_s() ? Seconds(p.tpot_p95_s()) : std::string(kNone),
              p.has_kv_cache_usage() ? Pct(p.kv_cache_usage() * 100) : std::string(kNone),
              p.has_queue() ? absl::StrCat(p.queue()) : std::string(kNone),
              std::string(ThermalStateName(p.thermal_state())), p.memory_pressure() ? "yes" : "no",
              OptionalFixed(p.has_watts(), p.watts()), WesOrDash(p.has_wes_raw(), p.wes_raw()),
              WesOrDash(p.has_wes_penalized(), p.wes_penalized())});
  }
  return out + t.Render();
}

std::string RankMove(uint32_t rank, uint32_t previous, bool tty) {
  if (previous == rank) return "";
  if (previous == 0) return "new";
  const bool up = rank < previous;
  const uint32_t places = up ? previous - rank : rank - previous;
  if (tty) return absl::StrCat(up ? "▲" : "▼", places, " (#", previous, ")");
  return absl::StrCat(up ? "up " : "down ", places, " (was #", previous, ")");
}

std::string WatchScreen(const v1::LeaderboardUpdate& u,
                        const std::map<std::string, uint32_t>& previous_ranks, bool tty) {
  const v1::LeaderboardResponse& r = u.leaderboard();
  std::string out =
      r.model().empty()
          ? std::string("fleet leaderboard (node WES, tokens per joule)")
          : absl::StrCat("leaderboard for model ", r.model(), " (WES, tokens per joule)");
  if (r.has_as_of()) absl::StrAppend(&out, ", as of ", Timestamp(r.as_of()));
  out += "\n";
  using A = TextTable::Align;
  TextTable t({"RANK", "MOVE", "NODE", "WES", "RAW WES", "STATE", "TOK/S", "WATTS", "AGE"},
              {A::kRight, A::kLeft, A::kLeft, A::kRight, A::kRight, A::kLeft, A::kRight, A::kRight,
               A::kRight});
  // Colours are added after alignment so escape sequences do not count as width.
  std::vector<int> direction;
  for (const v1::LeaderboardEntry& e : r.entries()) {
    uint32_t previous = e.rank();
    if (e.has_previous_rank()) {
      previous = e.previous_rank();
    } else if (!previous_ranks.empty()) {
      auto it = previous_ranks.find(e.node_id());
      previous = it == previous_ranks.end() ? 0 : it->second;
    }
    direction.push_back(previous == 0 || previous == e.rank() ? 0 : (e.rank() < previous ? 1 : -1));
    const v1::Wes& w = e.wes();
    t.AddRow({absl::StrCat(e.rank()), RankMove(e.rank(), previous, tty), e.node_id(),
              WesOrDash(w.has_penalized(), w.penalized()), WesOrDash(w.has_raw(), w.raw()),
              std::string(ThermalStateName(e.thermal_state())), Fixed1(e.tokens_per_s()),
              w.has_watts() ? Fixed1(w.watts()) : std::string(kNone), FormatAge(e.data_age_s())});
  }
  if (t.empty()) {
    out += "no ranked nodes\n";
  } else {
    std::vector<std::string> lines = absl::StrSplit(t.Render(), '\n');
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].empty()) continue;
      const int d = i >= 1 && i - 1 < direction.size() ? direction[i - 1] : 0;
      if (tty && d != 0) {
        absl::StrAppend(&out, d > 0 ? "\x1b[32m" : "\x1b[31m", lines[i], "\x1b[0m\n");
      } else {
        absl::StrAppend(&out, lines[i], "\n");
      }
    }
  }
  if (r.unranked_size() > 0) {
    std::vector<std::string> names;
    for (const v1::LeaderboardEntry& e : r.unranked()) {
      names.push_back(absl::StrCat(e.node_id(), " (", UnrankedReason(e), ")"));
    }
    absl::StrAppend(&out, "unranked: ", absl::StrJoin(names, ", "), "\n");
  }
  if (u.events_size() > 0) {
    out += "events:\n";
    for (const v1::Event& e : u.events()) {
      absl::StrAppend(&out, "  ", Timestamp(e.time()), "  ", e.node_id(), "  ",
                      EnumShort(v1::EventKind_Name(e.kind()), "EVENT_KIND_"), "  ", EventChange(e),
                      e.message().empty() ? "" : "  ", e.message(), "\n");
    }
  }
  return out;
}

TextTable::TextTable(std::vector<std::string> header, std::vector<Align> align)
    : header_(std::move(header)), align_(std::move(align)) {
  align_.resize(header_.size(), Align::kLeft);
}

void TextTable::AddRow(std::vector<std::string> cells) {
  cells.resize(header_.size());
  rows_.push_back(std::move(cells));
}

std::string TextTable::Render(absl::string_view indent) const {
  // Columns are as wide as their widest cell in characters (UTF-8 code points, e.g. arrows).
  auto chars = [](const std::string& s) {
    return static_cast<size_t>(
        std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  std::vector<size_t> width(header_.size(), 0);
  for (size_t i = 0; i < header_.size(); ++i) width[i] = chars(header_[i]);
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], chars(row[i]));
  }
  std::string out;
  auto render_row = [&](const std::vector<std::string>& row) {
    std::string line(indent);
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      size_t pad = width[i] - chars(row[i]);
      if (align_[i] == Align::kRight) line.append(pad, ' ');
      line += row[i];
      if (align_[i] == Align::kLeft) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  render_row(header_);
  for (const auto& row : rows_) render_row(row);
  return out;
}

}  // namespace fleetwes::aggregator::ctl
