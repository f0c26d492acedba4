#include "tests/support/replay_server.h"

#include <httplib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace fleetwes::testing {
namespace {

constexpr char kLlamaDir[] = "llamacpp-b4748/";
constexpr char kJson[] = "application/json; charset=utf-8";
constexpr char kPromText[] = "text/plain; version=0.0.4";

// Shortest text that reads back as the same double; whole numbers without a fraction.
std::string Num(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, ptr) : "NaN";
}

// Some captures end with an annotation after the JSON body ("... 503"): keep the JSON only.
std::string JsonOnly(const std::string& text) {
  size_t end = text.rfind('}');
  return end == std::string::npos ? text : text.substr(0, end + 1);
}

std::optional<double> TemplateValue(const std::string& exposition, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() == 2 && parts[0] == name) {
      double v = 0;
      auto [ptr, ec] = std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), v);
      if (ec == std::errc()) return v;
    }
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::string> ReadFixture(const std::string& relative) {
  const std::string path = absl::StrCat(FLEETWES_FIXTURES_DIR, "/", relative);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read fixture ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ReplayServer::ReplayServer(Clock* clock) : clock_(clock) {}

ReplayServer::~ReplayServer() { Stop(); }

absl::Status ReplayServer::Start(int port) {
  if (server_ != nullptr) return absl::FailedPreconditionError("already started");
  server_ = std::make_unique<httplib::Server>();
  server_->set_tcp_nodelay(true);
  // Stop() waits for idle keep-alive connections; the default keeps that wait short.
  server_->set_keep_alive_timeout(keep_alive_s_);
  server_->Get(".*", [this](const httplib::Request& req, httplib::Response& res) {
    ReplayResponse r = Handle(req.path);
    res.status = r.status;
    res.set_content(r.body, r.content_type.c_str());
  });
  auto ollama_post = [this](const httplib::Request& req, httplib::Response& res) {
    OllamaPost(req.path, req.body, &res);
  };
  server_->Post("/api/generate", ollama_post);
  server_->Post("/api/chat", ollama_post);
  if (port == 0) {
    port_ = server_->bind_to_any_port("127.0.0.1");
  } else {
    port_ = server_->bind_to_port("127.0.0.1", port) ? port : -1;
  }
  if (port_ <= 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot bind 127.0.0.1:", port));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() is a no-op until the accept loop runs: wait for it so Stop() cannot be lost.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server_->is_running()) {
    if (absl::Now() > deadline) return absl::InternalError("HTTP server did not start");
    absl::SleepFor(absl::Milliseconds(1));
  }
  return absl::OkStatus();
}

void ReplayServer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string ReplayServer::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

void ReplayServer::SetRoute(const std::string& path, ReplayResponse response) {
  absl::MutexLock lock(&mu_);
  routes_[path] = std::move(response);
}

void ReplayServer::ClearRoute(const std::string& path) {
  absl::MutexLock lock(&mu_);
  routes_.erase(path);
}

void ReplayServer::SetHang(const std::string& path, bool hang) {
  absl::MutexLock lock(&mu_);
  hang_[path] = hang;
}

int ReplayServer::hits(const std::string& path) const {
  absl::MutexLock lock(&mu_);
  auto it = hits_.find(path);
  return it == hits_.end() ? 0 : it->second;
}

ReplayResponse ReplayServer::Handle(const std::string& path) {
  absl::MutexLock lock(&mu_);
  ++hits_[path];
  auto released = [this, &path]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = hang_.find(path);
    return stopping_ || it == hang_.end() || !it->second;
  };
  mu_.Await(absl::Condition(&released));
  if (auto it = routes_.find(path); it != routes_.end()) return it->second;
  if (prom_ && path == "/metrics") {
    return ReplayResponse{
        200, kPromText, AdvanceExposition(prom_text_, prom_sim_, clock_->Now() - prom_base_time_)};
  }
  if (llamacpp_) {
    if (std::optional<ReplayResponse> r = LlamaCppResponse(path)) return *std::move(r);
  }
  if (ollama_ && (path == "/api/version" || path == "/api/ps")) {
    absl::StatusOr<std::string> body =
        ReadFixture(path == "/api/ps" ? ollama_sim_.ps_fixture : ollama_sim_.version_fixture);
    if (body.ok()) return ReplayResponse{200, kJson, *std::move(body)};
  }
  return ReplayResponse{404, "text/plain", "File Not Found"};
}

absl::Status ReplayServer::EnableOllama(const OllamaSimOptions& options) {
  for (const std::string* f :
       {&options.version_fixture, &options.ps_fixture, &options.generate_fixture,
        &options.chat_fixture, &options.nonstream_fixture}) {
    if (absl::StatusOr<std::string> text = ReadFixture(*f); !text.ok()) return text.status();
  }
  absl::MutexLock lock(&mu_);
  ollama_ = true;
  ollama_sim_ = options;
  return absl::OkStatus();
}

void ReplayServer::ReleaseOllamaChunks(int n) {
  absl::MutexLock lock(&mu_);
  ollama_released_ += n;
}

int ReplayServer::ollama_chunks_sent() const {
  absl::MutexLock lock(&mu_);
  return ollama_chunks_;
}

uint64_t ReplayServer::ollama_bytes_sent() const {
  absl::MutexLock lock(&mu_);
  return ollama_bytes_;
}

int ReplayServer::ollama_streams_done() const {
  absl::MutexLock lock(&mu_);
  return ollama_done_;
}

std::string ReplayServer::last_ollama_request() const {
  absl::MutexLock lock(&mu_);
  return ollama_last_request_;
}

void ReplayServer::OllamaPost(const std::string& path, const std::string& body,
                              httplib::Response* res) {
  OllamaSimOptions sim;
  {
    absl::MutexLock lock(&mu_);
    ++hits_[path];
    if (!ollama_) {
      res->status = 404;
      res->set_content("404 page not found", "text/plain");
      return;
    }
    sim = ollama_sim_;
    ollama_last_request_ = body;
  }
  nlohmann::json request = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const bool stream = !request.is_object() || !request.contains("stream") ||
                      !request["stream"].is_boolean() || request["stream"].get<bool>();
  if (!stream) {
    absl::StatusOr<std::string> text = ReadFixture(sim.nonstream_fixture);
    res->set_content(text.ok() ? *text : "{}", "application/json; charset=utf-8");
    absl::MutexLock lock(&mu_);
    ++ollama_done_;
    return;
  }
  absl::StatusOr<std::string> text =
      ReadFixture(path == "/api/chat" ? sim.chat_fixture : sim.generate_fixture);
  // Like Ollama, the stream names the model the request asked for.
  std::string model;
  if (request.is_object() && request.contains("model") && request["model"].is_string()) {
    model = request["model"].get<std::string>();
  }
  auto lines = std::make_shared<std::vector<std::string>>();
  if (text.ok()) {
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      std::string out = absl::StrCat(line, "\n");
      constexpr absl::string_view kKey = "{\"model\":\"";
      if (!model.empty() && absl::StartsWith(out, kKey)) {
        const size_t end = out.find('"', kKey.size());
        if (end != std::string::npos) out.replace(kKey.size(), end - kKey.size(), model);
      }
      lines->push_back(std::move(out));
    }
  }
  auto filler = std::make_shared<std::string>(absl::StrCat(R"({"model":"filler","response":")",
                                                           std::string(sim.filler_bytes, 'x'),
                                                           R"(","done":false})", "\n"));
  const size_t total = lines->size() + static_cast<size_t>(std::max(0, sim.filler_lines));
  res->set_chunked_content_provider(
      "application/x-ndjson",
      [this, lines, filler, total, sim, next = size_t{0}](size_t, httplib::DataSink& sink) mutable {
        if (next == total) {
          absl::MutexLock lock(&mu_);
          ++ollama_done_;
          sink.done();
          return true;
        }
        if (sim.chunk_delay > absl::ZeroDuration() && next > 0) absl::SleepFor(sim.chunk_delay);
        if (sim.gated) {
          absl::MutexLock lock(&mu_);
          auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || ollama_released_ > 0;
          };
          mu_.Await(absl::Condition(&released));
          if (stopping_) return false;
          --ollama_released_;
        }
        const size_t fillers = static_cast<size_t>(std::max(0, sim.filler_lines));
        const std::string& line = next < fillers ? *filler : (*lines)[next - fillers];
        ++next;
        if (!sink.write(line.data(), line.size())) return false;
        absl::MutexLock lock(&mu_);
        ++ollama_chunks_;
        ollama_bytes_ += line.size();
        return true;
      });
}

absl::Status ReplayServer::EnablePromEngine(const PromSimOptions& options) {
  absl::StatusOr<std::string> text = ReadFixture(options.fixture);
  if (!text.ok()) return text.status();
  absl::MutexLock lock(&mu_);
  llamacpp_ = false;
  prom_ = true;
  prom_sim_ = options;
  prom_text_ = *std::move(text);
  prom_base_time_ = clock_->Now();
  return absl::OkStatus();
}

std::string AdvanceExposition(const std::string& text, const PromSimOptions& options,
                              absl::Duration elapsed) {
  const double seconds = std::max(0.0, absl::ToDoubleSeconds(elapsed));
  auto parse = [](absl::string_view v) -> std::optional<double> {
    if (v == "+Inf" || v == "Inf" || v == "inf" || v == "+inf") return HUGE_VAL;
    double d = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
    if (ec != std::errc() || ptr != v.data() + v.size()) return std::nullopt;
    return d;
  };
  auto family_of = [](absl::string_view name, absl::string_view suffix) -> std::string {
    if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
      return std::string(name.substr(0, name.size() - suffix.size()));
    }
    return "";
  };
  std::string out;
  out.reserve(text.size() + 256);
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    size_t name_end = line.find_first_of("{ ");
    size_t value_pos = line.rfind(' ');
    if (line.empty() || line[0] == '#' || name_end == absl::string_view::npos ||
        value_pos == absl::string_view::npos || value_pos < name_end) {
      absl::StrAppend(&out, line, "\n");
      continue;
    }
    absl::string_view name = line.substr(0, name_end);
    std::optional<double> value = parse(line.substr(value_pos + 1));
    double add = 0;
    if (auto it = options.counter_rates.find(std::string(name));
        it != options.counter_rates.end()) {
      add = std::floor(it->second * seconds);
    }
    for (absl::string_view suffix : {"_count", "_sum", "_bucket"}) {
      std::string family = family_of(name, suffix);
      auto it = options.histograms.find(family);
      if (family.empty() || it == options.histograms.end()) continue;
      const double n = std::floor(it->second.per_s * seconds);
      if (suffix == "_count") {
        add = n;
      } else if (suffix == "_sum") {
        add = n * it->second.value_s;
      } else {
        size_t le = line.find("le=\"");
        if (le == absl::string_view::npos) break;
        size_t le_end = line.find('"', le + 4);
        std::optional<double> bound = le_end == absl::string_view::npos
                                          ? std::nullopt
                                          : parse(line.substr(le + 4, le_end - le - 4));
        if (bound.has_value() && *bound >= it->second.value_s) add = n;
      }
    }
    if (add == 0 || !value.has_value()) {
      absl::StrAppend(&out, line, "\n");
      continue;
    }
    absl::StrAppend(&out, line.substr(0, value_pos + 1), Num(*value + add), "\n");
  }
  if (!text.empty() && text.back() == '\n') out.pop_back();
  return out;
}

absl::Status ReplayServer::EnableLlamaCpp(const LlamaCppSimOptions& options) {
  std::map<std::string, std::string> fixtures;
  for (const char* name : {"metrics_idle.txt", "metrics_without_flag.txt", "health_loading.txt",
                           "props.json", "slots_idle.json", "slots_busy.json", "v1_models.json"}) {
    absl::StatusOr<std::string> text = ReadFixture(absl::StrCat(kLlamaDir, name));
    if (!text.ok()) return text.status();
    fixtures[name] = *std::move(text);
  }
  const std::string& metrics = fixtures["metrics_idle.txt"];
  Counters base{};
  base.tokens_predicted = TemplateValue(metrics, "llamacpp:tokens_predicted_total").value_or(0);
  base.prompt_tokens = TemplateValue(metrics, "llamacpp:prompt_tokens_total").value_or(0);
  base.predicted_seconds =
      TemplateValue(metrics, "llamacpp:tokens_predicted_seconds_total").value_or(0);
  base.prompt_seconds = TemplateValue(metrics, "llamacpp:prompt_seconds_total").value_or(0);
  absl::MutexLock lock(&mu_);
  fixtures_ = std::move(fixtures);
  llamacpp_ = true;
  sim_ = options;
  base_ = base;
  base_time_ = clock_->Now();
  return absl::OkStatus();
}

void ReplayServer::SetLlamaCppOptions(const LlamaCppSimOptions& options) {
  absl::MutexLock lock(&mu_);
  Rebase(clock_->Now());
  sim_ = options;
}

void ReplayServer::SetLoading(bool loading) {
  absl::MutexLock lock(&mu_);
  loading_ = loading;
}

void ReplayServer::SetMetricsEnabled(bool enabled) {
  absl::MutexLock lock(&mu_);
  metrics_enabled_ = enabled;
}

void ReplayServer::RestartEngine() {
  absl::MutexLock lock(&mu_);
  base_ = Counters{};
  base_time_ = clock_->Now();
}

uint64_t ReplayServer::tokens_predicted_total() const {
  absl::MutexLock lock(&mu_);
  return static_cast<uint64_t>(CountersAt(clock_->Now()).tokens_predicted);
}

uint64_t ReplayServer::prompt_tokens_total() const {
  absl::MutexLock lock(&mu_);
  return static_cast<uint64_t>(CountersAt(clock_->Now()).prompt_tokens);
}

ReplayServer::Counters ReplayServer::CountersAt(absl::Time t) const {
  const double e = std::max(0.0, absl::ToDoubleSeconds(t - base_time_));
  const double generated = std::floor(sim_.tokens_per_s * e);
  const double prompted = std::floor(sim_.prompt_tokens_per_s * e);
  Counters c;
  c.tokens_predicted = base_.tokens_predicted + generated;
  c.predicted_seconds = base_.predicted_seconds + generated * sim_.seconds_per_token;
  c.prompt_tokens = base_.prompt_tokens + prompted;
  c.prompt_seconds = base_.prompt_seconds + prompted * sim_.prompt_seconds_per_token;
  c.requests = base_.requests + std::floor(sim_.requests_per_s * e);
  return c;
}

void ReplayServer::Rebase(absl::Time t) {
  base_ = CountersAt(t);
  base_time_ = t;
}

std::optional<ReplayResponse> ReplayServer::LlamaCppResponse(const std::string& path) {
  if (path == "/health") {
    if (loading_) return ReplayResponse{503, kJson, JsonOnly(fixtures_["health_loading.txt"])};
    return ReplayResponse{200, kJson, R"({"status":"ok"})"};
  }
  if (loading_) {
    return ReplayResponse{
        503, kJson,
        R"({"error":{"code":503,"message":"Loading model","type":"unavailable_error"}})"};
  }
  if (path == "/metrics") {
    if (!metrics_enabled_) {
      return ReplayResponse{501, kJson, JsonOnly(fixtures_["metrics_without_flag.txt"])};
    }
    const Counters c = CountersAt(clock_->Now());
    const bool busy = sim_.tokens_per_s > 0;
    const std::map<std::string, double> values = {
        {"llamacpp:prompt_tokens_total", c.prompt_tokens},
        {"llamacpp:prompt_seconds_total", c.prompt_seconds},
        {"llamacpp:tokens_predicted_total", c.tokens_predicted},
        {"llamacpp:tokens_predicted_seconds_total", c.predicted_seconds},
        {"llamacpp:n_decode_total", c.tokens_predicted},
        {"llamacpp:requests_processing", busy ? 2.0 : 0.0},
    };
    std::string body;
    for (absl::string_view line : absl::StrSplit(fixtures_["metrics_idle.txt"], '\n')) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, ' ');
      auto it = values.find(std::string(kv.first));
      if (!line.empty() && line[0] != '#' && it != values.end()) {
        absl::StrAppend(&body, kv.first, " ", Num(it->second), "\n");
      } else if (!line.empty()) {
        absl::StrAppend(&body, line, "\n");
      }
    }
    return ReplayResponse{200, kPromText, std::move(body)};
  }
  if (path == "/props") return ReplayResponse{200, kJson, fixtures_["props.json"]};
  if (path == "/v1/models") return ReplayResponse{200, kJson, fixtures_["v1_models.json"]};
  if (path == "/slots") {
    const bool busy = sim_.tokens_per_s > 0;
    nlohmann::json slots = nlohmann::json::parse(
        fixtures_[busy ? "slots_busy.json" : "slots_idle.json"], nullptr, false);
    if (!slots.is_array() || slots.empty()) return ReplayResponse{500, kJson, "{}"};
    const int64_t n = static_cast<int64_t>(slots.size());
    const int64_t requests = static_cast<int64_t>(CountersAt(clock_->Now()).requests);
    for (int64_t i = 0; i < n; ++i) {
      nlohmann::json& slot = slots[static_cast<size_t>(i)];
      const int64_t started_here = requests > i ? (requests - i + n - 1) / n : 0;
      slot["id_task"] = slot.value("id_task", int64_t{0}) + started_here;
    }
    return ReplayResponse{200, kJson, slots.dump()};
  }
  return std::nullopt;
}

FakeRapl::FakeRapl(std::string root, double watts, Clock* clock, uint64_t max_energy_range_uj,
                   uint64_t start_uj)
    : root_(std::move(root)),
      watts_(watts),
      clock_(clock),
      max_range_uj_(max_energy_range_uj),
      start_uj_(start_uj) {}

FakeRapl::~FakeRapl() { Stop(); }

std::string FakeRapl::zone_dir() const {
  return absl::StrCat(root_, "/sys/class/powercap/intel-rapl:0");
}

uint64_t FakeRapl::EnergyAt(absl::Time t) const {
  const double e = std::max(0.0, absl::ToDoubleSeconds(t - start_time_));
  const uint64_t uj = start_uj_ + static_cast<uint64_t>(std::llround(watts_ * e * 1e6));
  return max_range_uj_ > 0 ? uj % max_range_uj_ : uj;
}

namespace {

absl::Status WriteAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FakeRapl::Create() {
  std::error_code ec;
  std::filesystem::create_directories(zone_dir(), ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", zone_dir(), ": ", ec.message()));
  start_time_ = clock_->Now();
  if (absl::Status s = WriteAtomically(zone_dir() + "/name", "package-0\n"); !s.ok()) return s;
  if (absl::Status s =
          WriteAtomically(zone_dir() + "/max_energy_range_uj", absl::StrCat(max_range_uj_, "\n"));
      !s.ok()) {
    return s;
  }
  return Update();
}

absl::Status FakeRapl::Update() {
  return WriteAtomically(zone_dir() + "/energy_uj", absl::StrCat(EnergyAt(clock_->Now()), "\n"));
}

absl::Status FakeRapl::Start(absl::Duration period) {
  if (absl::Status s = Create(); !s.ok()) return s;
  thread_ = std::thread([this, period] {
    while (!clock_->WaitFor(period, &stop_)) {
      (void)Update();
    }
  });
  return absl::OkStatus();
}

void FakeRapl::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fleetwes::testing
