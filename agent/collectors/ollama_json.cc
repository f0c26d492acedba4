#include "agent/collectors/ollama_json.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fleetwes::agent::ollama {
namespace {

using nlohmann::json;

// Integers up to 2^53 survive the trip through a double (frames, histograms).
constexpr uint64_t kMaxInteger = uint64_t{1} << 53;

std::optional<json> ParseJson(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// The non-negative integer at `key`: nullopt when absent or null, InvalidArgument when it is
// anything else than an integer in 0..2^53.
absl::Status ReadCount(const json& obj, const char* key, std::optional<uint64_t>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  uint64_t v = 0;
  if (it->is_number_unsigned()) {
    v = it->get<uint64_t>();
  } else if (it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(key, " is negative"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(key, " is not an integer"));
  }
  if (v > kMaxInteger) return absl::InvalidArgumentError(absl::StrCat(key, " is too large"));
  *out = v;
  return absl::OkStatus();
}

std::string ReadString(const json& obj, const char* key, size_t max_bytes) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return "";
  const std::string& s = it->get_ref<const std::string&>();
  return s.size() <= max_bytes ? s : "";
}

bool NonEmptyString(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() && !it->get_ref<const std::string&>().empty();
}

}  // namespace

absl::StatusOr<std::string> ParseVersion(std::string_view body) {
  std::optional<json> j = ParseJson(body);
  if (!j.has_value() || !j->is_object()) return absl::InvalidArgumentError("not a JSON object");
  auto it = j->find("version");
  if (it == j->end() || !it->is_string()) return absl::InvalidArgumentError("no version");
  const std::string& v = it->get_ref<const std::string&>();
  if (v.empty() || v.size() > 64) return absl::InvalidArgumentError("version of bad length");
  return v;
}

absl::StatusOr<std::vector<PsModel>> ParsePs(std::string_view body) {
  std::optional<json> j = ParseJson(body);
  if (!j.has_value() || !j->is_object()) return absl::InvalidArgumentError("not a JSON object");
  auto models = j->find("models");
  if (models == j->end()) return absl::InvalidArgumentError("no models array");
  std::vector<PsModel> out;
  if (models->is_null()) return out;
  if (!models->is_array()) return absl::InvalidArgumentError("models is not an array");
  if (models->size() > kMaxPsModels) return absl::InvalidArgumentError("too many models");
  out.reserve(models->size());
  for (const json& m : *models) {
    if (!m.is_object()) return absl::InvalidArgumentError("model is not an object");
    PsModel p;
    p.name = ReadString(m, "name", kMaxModelNameBytes);
    if (p.name.empty()) p.name = ReadString(m, "model", kMaxModelNameBytes);
    if (p.name.empty()) return absl::InvalidArgumentError("model without a name");
    if (absl::Status s = ReadCount(m, "size", &p.size); !s.ok()) return s;
    if (absl::Status s = ReadCount(m, "size_vram", &p.size_vram); !s.ok()) return s;
    p.expires_at = ReadString(m, "expires_at", 64);
    auto details = m.find("details");
    if (details != m.end() && details->is_object()) {
      p.quantization_level = ReadString(*details, "quantization_level", 32);
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::string NormalizeModel(std::string_view name) {
  const size_t slash = name.rfind('/');
  const std::string_view last = slash == std::string_view::npos ? name : name.substr(slash + 1);
  if (name.empty() || last.find(':') != std::string_view::npos) return std::string(name);
  return std::string(name) + ":latest";
}

absl::StatusOr<ChunkInfo> ParseChunk(std::string_view text) {
  std::optional<json> j = ParseJson(text);
  if (!j.has_value() || !j->is_object()) return absl::InvalidArgumentError("not a JSON object");
  ChunkInfo info;
  if (auto e = j->find("error"); e != j->end() && !e->is_null()) {
    info.error = true;
    return info;
  }
  if (auto d = j->find("done"); d != j->end()) {
    if (!d->is_boolean()) return absl::InvalidArgumentError("done is not a boolean");
    info.done = d->get<bool>();
  }
  info.has_output = NonEmptyString(*j, "response") || NonEmptyString(*j, "thinking");
  if (auto m = j->find("message"); m != j->end() && m->is_object()) {
    auto calls = m->find("tool_calls");
    info.has_output = info.has_output || NonEmptyString(*m, "content") ||
                      NonEmptyString(*m, "thinking") ||
                      (calls != m->end() && calls->is_array() && !calls->empty());
  }
  if (!info.done) return info;
  FinalObject& f = info.final;
  f.model = ReadString(*j, "model", kMaxModelNameBytes);
  f.done_reason = ReadString(*j, "done_reason", 32);
  for (auto [key, field] :
       {std::pair{"prompt_eval_count", &f.prompt_eval_count},
        std::pair{"prompt_eval_duration", &f.prompt_eval_duration_ns},
        std::pair{"eval_count", &f.eval_count}, std::pair{"eval_duration", &f.eval_duration_ns},
        std::pair{"load_duration", &f.load_duration_ns},
        std::pair{"total_duration", &f.total_duration_ns}}) {
    if (absl::Status s = ReadCount(*j, key, field); !s.ok()) return s;
  }
  return info;
}

ResponseMeter::ResponseMeter(bool ndjson, size_t max_object_bytes)
    : ndjson_(ndjson), max_object_bytes_(max_object_bytes) {}

void ResponseMeter::Object(std::string_view text, absl::Time now) {
  // Blank lines (and a trailing "\r") are not objects.
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return;
  // Once output was seen, only a final object (done: true) or an error still matters: skip
  // parsing lines that cannot be one.
  if (outcome_.first_output.has_value() && text.find("true") == std::string_view::npos &&
      text.find("\"error\"") == std::string_view::npos) {
    return;
  }
  absl::StatusOr<ChunkInfo> info = ParseChunk(text);
  if (!info.ok()) {
    ++outcome_.parse_errors;
    return;
  }
  if (info->error) outcome_.error = true;
  if (info->has_output && !outcome_.first_output.has_value()) outcome_.first_output = now;
  if (info->done) outcome_.final = std::move(info->final);
}

void ResponseMeter::Feed(std::string_view data, absl::Time now) {
  if (!ndjson_) {
    if (skipping_) return;
    if (pending_.size() + data.size() > max_object_bytes_) {
      skipping_ = true;
      ++outcome_.oversized;
      std::string().swap(pending_);
      return;
    }
    pending_.append(data);
    return;
  }
  while (!data.empty()) {
    const size_t nl = data.find('\n');
    const std::string_view part = data.substr(0, nl);
    if (!skipping_) {
      if (pending_.size() + part.size() > max_object_bytes_) {
        skipping_ = true;
        ++outcome_.oversized;
        std::string().swap(pending_);
      } else if (nl != std::string_view::npos && pending_.empty()) {
        Object(part, now);  // a whole line in this piece: no copy
      } else {
        pending_.append(part);
      }
    }
    if (nl == std::string_view::npos) return;
    if (!skipping_ && !pending_.empty()) Object(pending_, now);
    pending_.clear();
    skipping_ = false;
    data.remove_prefix(nl + 1);
  }
}

ResponseOutcome ResponseMeter::Finish(absl::Time now) {
  if (!skipping_ && !pending_.empty()) Object(pending_, now);
  std::string().swap(pending_);
  skipping_ = false;
  return std::move(outcome_);
}

}  // namespace fleetwes::agent::ollama
