// bench/routing: Router.Pick through a real gRPC server on loopback, against the transport's
// ceiling (grpc.health.v1.Health/Check, the trivial unary call, on the same server).
//
// The fleet (--nodes nodes, --models models, --models_per_node models on each node, so about
// nodes x models_per_node / models nodes per model; every 101st node's data is stale) is filled
// directly into a FleetState, read through a FakeClock so it stays fresh for the whole run. An
// async load client in a process of its own (this executable run with --client_target, as a
// gateway would be: it shares no gRPC threads or poller with the server; --client=thread runs it
// in the server's process instead), with one CompletionQueue, --channels connections and the
// generic stub with pre-serialised requests so it spends little CPU on protobuf, measures:
//   1. Pick QPS at saturation: --outstanding calls in flight for --duration_s (closed loop);
//   2. the trivial call's QPS the same way;
//   3. Pick p50/p99 latency at half the saturation QPS, open loop: calls start on a fixed
//      schedule (a pacing thread starts them, another takes the completions) and latency counts
//      from the scheduled start, so a stall is not hidden.
//   4. the trivial call's p50/p99 at the same rate, open loop (the transport's own share);
//   5. with --churn, while a thread applies each fresh node's frame again every --churn_period_s
//      (window end moved on, the FakeClock moved with real time: the change rate of a real
//      fleet, so the route tables are rebuilt, by the service's refresh every
//      --table_refresh_ms, or by the calls with 0): RouterService::Answer timed in process for
//      2 s back to back, then Pick p50/p99 over gRPC at the rate of phase 3.
// --candidates=index makes the server pick over node lists built once at start, building the
// rows on every call (the server's own path keeps each model's route table and refreshes it
// off the call path). Before the gRPC phases, the table build and Pick over a table are timed in
// process, with the first Pick over a fresh table, and Pick's answer as sent: an arena message
// serialized against PickSerialized's wire bytes. Requests cycle through the models (objective
// EFFICIENCY, count 5, --mode). Prints figures and ends with one JSON line:
//   {"pick_qps":..,"pick_p50_us":..,"pick_p99_us":..,"trivial_qps":..,"ratio":..,...}
#include <fcntl.h>
#include <grpcpp/alarm.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/metrics.h"
#include "aggregator/proto_time.h"
#include "aggregator/routing/router.h"
#include "aggregator/routing/router_service.h"
#include "common/clock.h"
#include "fleetwes/v1/router.grpc.pb.h"
#include "google/protobuf/arena.h"
#include "nlohmann/json.hpp"
#include "tests/aggregator/test_frames.h"

ABSL_FLAG(int, nodes, 10000, "nodes in the fleet");
ABSL_FLAG(int, models, 50, "distinct models in the fleet");
ABSL_FLAG(int, models_per_node, 3, "models each node serves");
ABSL_FLAG(int, outstanding, 64, "calls in flight at saturation");
ABSL_FLAG(int, channels, 2, "client connections");
ABSL_FLAG(double, duration_s, 5, "seconds per phase (after a 1 s warm-up)");
ABSL_FLAG(std::string, mode, "ranked", "Pick mode: ranked or one");
ABSL_FLAG(double, paced_qps, 0,
          "rate of the open-loop latency phase; 0: half the measured Pick saturation");
ABSL_FLAG(bool, in_process_only, false,
          "stop after the in-process timings (for instruction counts with perf stat)");
ABSL_FLAG(std::string, candidates, "fleet",
          "where the server finds a model's nodes: fleet (CandidatesFor, as the aggregator "
          "does) or index (a per-model list built once: what a per-model index in the fleet "
          "state gives)");
ABSL_FLAG(bool, churn, false,
          "also measure Pick p50/p99 at the paced rate while every fresh node reports again "
          "every --churn_period_s");
ABSL_FLAG(double, churn_period_s, 2, "with --churn: each node's reporting interval");
ABSL_FLAG(bool, mutex_deadlock_detection, false,
          "keep absl's mutex deadlock detection on (the Debian build's default); off by default, "
          "as fleetwes-aggregator's main sets it (the server runs in this process), in the "
          "load client's process too");
ABSL_FLAG(std::string, client, "process",
          "where the load client runs: process (a process of its own, this executable with "
          "--client_target) or thread (threads of the server's process)");
ABSL_FLAG(std::string, client_target, "",
          "internal: run as the load client of the server at this address");
ABSL_FLAG(std::string, client_phases, "standard",
          "internal: with --client_target, standard or churn");
ABSL_FLAG(int, router_threads, -1,
          "the service's completion-queue threads (RouterOptions::threads; 0: the callback "
          "service, answered on gRPC's threads); -1: the service's default");
ABSL_FLAG(int, table_refresh_ms, 500,
          "the service's route table refresh period (RouterOptions::table_refresh); 0: calls "
          "rebuild changed tables");

namespace fleetwes::aggregator {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kPickMethod[] = "/fleetwes.v1.Router/Pick";
constexpr char kHealthMethod[] = "/grpc.health.v1.Health/Check";

std::string ModelName(int i) { return absl::StrCat("model-", i); }

// Fills `state` with the fleet; data is 1 s old at `now` (stale for every 101st node). Returns
// the frames of the fresh nodes.
std::vector<v1::Frame> FillFleet(FleetState* state, absl::Time now, int nodes, int models,
                                 int per_node) {
  std::vector<v1::Frame> fresh;
  const int stride = std::max(1, models / per_node);
  for (int i = 0; i < nodes; ++i) {
    const std::string id = absl::StrCat("node-", 100000 + i);
    const absl::Time end = now - (i % 101 == 100 ? absl::Seconds(60) : absl::Seconds(1));
    state->ApplyHello(
        testing::MakeHello(id, "boot", {{"zone", absl::StrCat("z", i % 4)}, {"tier", "gpu"}}), end);
    auto spec = [&](int j) {
      testing::ModelSpec s;
      s.model = ModelName((i + j * stride) % models);
      s.tokens_per_s = 20 + (i * 37 + j * 11) % 400;
      s.watts = 60 + (i * 13 + j * 7) % 300;
      s.ttft_p95_s = 0.05 + ((i + j) % 40) * 0.02;
      s.waiting = static_cast<uint32_t>((i * 7 + j) % 6);
      s.running = static_cast<uint32_t>(1 + (i + j) % 8);
      s.kv_cache_usage = ((i * 3 + j) % 90) / 100.0;
      return s;
    };
    v1::Frame f = testing::MakeFrame(id, "boot", 1, end, spec(0));
    for (int j = 1; j < per_node; ++j) testing::AddModel(&f, spec(j));
    RecomputeWes(ThermalPenalties{}, &f);
    if (i % 101 != 100) fresh.push_back(f);
    state->ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), end);
  }
  return fresh;
}

// Applies the fresh nodes' frames again, round-robin, each node once per `period`, with the
// window ending at the clock's time, and moves `clock` with real time (from Start to Stop).
class Churn {
 public:
  Churn(FleetState* state, FakeClock* clock, std::vector<v1::Frame> frames, absl::Duration period)
      : state_(state), clock_(clock), frames_(std::move(frames)), period_(period) {}
  ~Churn() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    if (!thread_.joinable()) return;
    stop_.Notify();
    thread_.join();
  }
  // Frames applied per second of real time.
  double rate() const { return seconds_ > 0 ? static_cast<double>(applied_.load()) / seconds_ : 0; }

 private:
  void Run() {
    const absl::Time base = clock_->Now();
    const Clock::time_point t0 = Clock::now();
    const double per_s = static_cast<double>(frames_.size()) / absl::ToDoubleSeconds(period_);
    const int64_t n = static_cast<int64_t>(frames_.size());
    int64_t k = 0;
    while (!stop_.HasBeenNotified()) {
      const double e = std::chrono::duration<double>(Clock::now() - t0).count();
      const absl::Time now = base + absl::Seconds(e);
      clock_->SetTime(now);
      for (const int64_t due = static_cast<int64_t>(e * per_s); k < due && n > 0; ++k) {
        v1::Frame f = frames_[k % n];
        f.set_seq(2 + static_cast<uint64_t>(k / n));
        *f.mutable_window_start() = ToProtoTime(now - absl::Seconds(f.interval_s()));
        *f.mutable_window_end() = ToProtoTime(now);
        state_->ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), now);
      }
      seconds_ = e;
      applied_.store(k);
      stop_.WaitForNotificationWithTimeout(absl::Milliseconds(1));
    }
  }

  FleetState* const state_;
  FakeClock* const clock_;
  const std::vector<v1::Frame> frames_;
  const absl::Duration period_;
  absl::Notification stop_;
  std::thread thread_;
  std::atomic<int64_t> applied_{0};
  double seconds_ = 0;  // read after Stop
};

// User and system CPU time of this process so far, in microseconds.
double ProcessCpuUs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
}

grpc::ByteBuffer Serialized(const google::protobuf::Message& m) {
  const std::string bytes = m.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer reply;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc;
  Clock::time_point start;
};

// Issues calls of one method round-robin over the stubs and the request bodies.
class Load {
 public:
  Load(std::vector<std::unique_ptr<grpc::GenericStub>>* stubs, std::string method,
       std::vector<grpc::ByteBuffer> requests)
      : stubs_(stubs), method_(std::move(method)), requests_(std::move(requests)) {}

  // Closed loop: `outstanding` calls in flight; completions per second over `duration` after
  // a 1 s warm-up.
  double Saturate(int outstanding, absl::Duration duration) {
    const double cpu_start = ProcessCpuUs();
    int64_t completed = 0;
    const Clock::time_point start = Clock::now();
    const Clock::time_point measure_from = start + std::chrono::seconds(1);
    const Clock::time_point end = measure_from + absl::ToChronoNanoseconds(duration);
    int in_flight = 0;
    for (int i = 0; i < outstanding; ++i, ++in_flight) Start(start);
    int64_t done = 0;
    void* tag;
    bool ok;
    while (in_flight > 0 && cq_.Next(&tag, &ok)) {
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      --in_flight;
      const Clock::time_point now = Clock::now();
      Check(*call);
      ++completed;
      if (now >= measure_from && now < end) ++done;
      if (now < end) {
        Start(now);
        ++in_flight;
      }
    }
    cpu_us_ = ProcessCpuUs() - cpu_start;
    calls_ = completed;
    return static_cast<double>(done) / absl::ToDoubleSeconds(duration);
  }

  // CPU time of this process during the last phase (Saturate or Paced) and the calls it
  // completed, warm-up included.
  double cpu_us() const { return cpu_us_; }
  int64_t calls() const { return calls_; }

  // Open loop at `qps`: call k starts at t0 + k / qps; latency from that scheduled start.
  // Returns the latencies of the calls scheduled after a 1 s warm-up, in microseconds, sorted.
  // A pacing thread (timer slack 1 ns) sleeps until the next call is due and starts every call
  // due by then; this thread takes the completions, blocked in CompletionQueue::Next. (Pacing
  // by CompletionQueue::AsyncNext deadlines, which gRPC rounds to whole milliseconds, started
  // calls up to a millisecond late or spun in epoll_wait with a zero timeout.)
  std::vector<double> Paced(double qps, absl::Duration duration) {
    const auto period = std::chrono::duration<double>(1.0 / qps);
    const double cpu_start = ProcessCpuUs();
    const Clock::time_point t0 = Clock::now();
    const Clock::time_point measure_from = t0 + std::chrono::seconds(1);
    const Clock::time_point end = measure_from + absl::ToChronoNanoseconds(duration);
    std::atomic<int64_t> started{-1};  // calls started, once the pacing thread is done
    grpc::Alarm done_alarm;
    char done_tag = 0;
    std::thread pacer([&] {
      prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
      int64_t k = 0;
      auto due = [&] { return t0 + std::chrono::duration_cast<Clock::duration>(period * k); };
      while (due() < end) {
        std::this_thread::sleep_until(due());
        const Clock::time_point now = Clock::now();
        for (; due() <= now && due() < end; ++k) Start(due());
      }
      started.store(k, std::memory_order_release);
      // Wakes the completion loop, which may be waiting with every call completed.
      done_alarm.Set(&cq_, gpr_now(GPR_CLOCK_MONOTONIC), &done_tag);
    });
    std::vector<double> latencies_us;
    int64_t completed = 0;
    bool pacer_done = false;
    void* tag;
    bool ok;
    while (!(pacer_done && completed == started.load(std::memory_order_acquire)) &&
           cq_.Next(&tag, &ok)) {
      if (tag == &done_tag) {
        pacer_done = true;
        continue;
      }
      const Clock::time_point now = Clock::now();
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      ++completed;
      Check(*call);
      if (call->start >= measure_from) {
        latencies_us.push_back(
            std::chrono::duration<double, std::micro>(now - call->start).count());
      }
    }
    pacer.join();
    cpu_us_ = ProcessCpuUs() - cpu_start;
    calls_ = completed;
    std::sort(latencies_us.begin(), latencies_us.end());
    return latencies_us;
  }

  int64_t errors() const { return errors_; }

  ~Load() {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) delete static_cast<Call*>(tag);
  }

 private:
  void Start(Clock::time_point start) {
    auto* call = new Call;
    call->start = start;
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::GenericStub& stub = *(*stubs_)[next_ % stubs_->size()];
    call->rpc =
        stub.PrepareUnaryCall(&call->ctx, method_, requests_[next_ % requests_.size()], &cq_);
    ++next_;
    call->rpc->StartCall();
    call->rpc->Finish(&call->reply, &call->status, call);
  }

  void Check(const Call& call) {
    if (!call.status.ok()) {
      if (errors_++ == 0) {
        std::fprintf(stderr, "routing: %s failed: %s\n", method_.c_str(),
                     call.status.error_message().c_str());
      }
    }
  }

  std::vector<std::unique_ptr<grpc::GenericStub>>* stubs_;
  const std::string method_;
  const std::vector<grpc::ByteBuffer> requests_;
  grpc::CompletionQueue cq_;
  size_t next_ = 0;
  int64_t errors_ = 0;
  double cpu_us_ = 0;
  int64_t calls_ = 0;
};

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[i];
}

std::vector<v1::PickRequest> PickRequests(int models, const std::string& mode) {
  std::vector<v1::PickRequest> picks;
  for (int m = 0; m < models; ++m) {
    v1::PickRequest r;
    r.set_model(ModelName(m));
    r.set_objective(v1::OBJECTIVE_EFFICIENCY);
    r.set_mode(mode == "one" ? v1::PICK_MODE_ONE : v1::PICK_MODE_RANKED);
    picks.push_back(r);
  }
  return picks;
}

using Emit = std::function<void(const nlohmann::json&)>;

// The load client: runs `phases` against `target` and returns the result. "standard": phases 1
// to 4 (see the top of this file), open loop at `paced_qps` (0: half the Pick saturation);
// "churn": Pick open loop at `paced_qps`. Each closed-loop phase
// is framed by {"event":"begin","phase":..} and {"event":"end","phase":..,"cpu_us":..,"calls":..}
// (this process's CPU time during the phase) passed to `emit` as it happens.
nlohmann::json RunClient(const std::string& target, const std::string& phases, double paced_qps,
                         const Emit& emit) {
  const std::vector<v1::PickRequest> picks =
      PickRequests(absl::GetFlag(FLAGS_models), absl::GetFlag(FLAGS_mode));
  const absl::Duration duration = absl::Seconds(absl::GetFlag(FLAGS_duration_s));
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int i = 0; i < absl::GetFlag(FLAGS_channels); ++i) {
    grpc::ChannelArguments args;
    args.SetInt("fleetwes.bench_channel", i);  // distinct arguments: one connection each
    stubs.push_back(std::make_unique<grpc::GenericStub>(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<grpc::ByteBuffer> pick_bodies;
  for (const v1::PickRequest& r : picks) pick_bodies.push_back(Serialized(r));
  nlohmann::json result;
  if (phases == "churn") {
    Load churn_load(&stubs, kPickMethod, pick_bodies);
    const std::vector<double> lat = churn_load.Paced(paced_qps, duration);
    result["p50_us"] = Percentile(lat, 0.50);
    result["p99_us"] = Percentile(lat, 0.99);
    result["calls"] = lat.size();
    result["errors"] = churn_load.errors();
    return result;
  }
  // HealthCheckRequest{service: ""} is empty on the wire (one empty slice: a buffer without any
  // is no message at all).
  grpc::Slice empty_slice;
  const grpc::ByteBuffer health_body(&empty_slice, 1);
  const int outstanding = absl::GetFlag(FLAGS_outstanding);
  auto saturate = [&](Load& load, const char* phase) {
    emit({{"event", "begin"}, {"phase", phase}});
    const double qps = load.Saturate(outstanding, duration);
    emit({{"event", "end"}, {"phase", phase}, {"cpu_us", load.cpu_us()}, {"calls", load.calls()}});
    return qps;
  };
  Load pick_load(&stubs, kPickMethod, pick_bodies);
  const double pick_qps = saturate(pick_load, "pick");
  std::fprintf(stderr, "==> Pick at saturation (%d in flight): %.0f calls/s\n", outstanding,
               pick_qps);
  Load trivial_load(&stubs, kHealthMethod, {health_body});
  const double trivial_qps = saturate(trivial_load, "trivial");
  std::fprintf(stderr, "==> Health.Check at saturation: %.0f calls/s\n", trivial_qps);
  if (!(paced_qps > 0)) paced_qps = pick_qps / 2;
  auto paced = [&](Load& load, const char* phase) {
    emit({{"event", "begin"}, {"phase", phase}});
    std::vector<double> latencies = load.Paced(paced_qps, duration);
    emit({{"event", "end"}, {"phase", phase}, {"cpu_us", load.cpu_us()}, {"calls", load.calls()}});
    return latencies;
  };
  const std::vector<double> lat = paced(pick_load, "pick_paced");
  std::fprintf(stderr, "==> Pick at %.0f calls/s (open loop): p50 %.0f us, p99 %.0f us (%zu)\n",
               paced_qps, Percentile(lat, 0.50), Percentile(lat, 0.99), lat.size());
  const std::vector<double> trivial_lat = paced(trivial_load, "trivial_paced");
  std::fprintf(
      stderr, "==> Health.Check at %.0f calls/s (open loop): p50 %.0f us, p99 %.0f us (%zu)\n",
      paced_qps, Percentile(trivial_lat, 0.50), Percentile(trivial_lat, 0.99), trivial_lat.size());
  result["pick_qps"] = pick_qps;
  result["trivial_qps"] = trivial_qps;
  result["paced_qps"] = paced_qps;
  result["pick_p50_us"] = Percentile(lat, 0.50);
  result["pick_p99_us"] = Percentile(lat, 0.99);
  result["trivial_p50_us"] = Percentile(trivial_lat, 0.50);
  result["trivial_p99_us"] = Percentile(trivial_lat, 0.99);
  result["errors"] = pick_load.errors() + trivial_load.errors();
  return result;
}

// Runs RunClient in a process of its own (this executable with --client_target), passing its
// events to `emit`; its stderr is this process's.
absl::StatusOr<nlohmann::json> RunClientProcess(const std::string& target,
                                                const std::string& phases, double paced_qps,
                                                const Emit& emit) {
  std::vector<std::string> args = {
      "/proc/self/exe",
      absl::StrCat("--client_target=", target),
      absl::StrCat("--client_phases=", phases),
      absl::StrCat("--paced_qps=", paced_qps),
      absl::StrCat("--models=", absl::GetFlag(FLAGS_models)),
      absl::StrCat("--mode=", absl::GetFlag(FLAGS_mode)),
      absl::StrCat("--channels=", absl::GetFlag(FLAGS_channels)),
      absl::StrCat("--outstanding=", absl::GetFlag(FLAGS_outstanding)),
      absl::StrCat("--duration_s=", absl::GetFlag(FLAGS_duration_s)),
      absl::StrCat("--mutex_deadlock_detection=", absl::GetFlag(FLAGS_mutex_deadlock_detection))};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return absl::InternalError(absl::StrCat("cannot start the load client: errno ", rc));
  }
  FILE* out = fdopen(fds[0], "r");
  nlohmann::json result;
  char* line = nullptr;
  size_t cap = 0;
  while (getline(&line, &cap, out) > 0) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.value("event", "") == "result") {
      result = std::move(j);
    } else {
      emit(j);
    }
  }
  free(line);
  fclose(out);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || result.is_null()) {
    return absl::InternalError("the load client failed");
  }
  return result;
}

// --client_target: this process is the load client; prints its events and result as JSON lines.
int RunClientMain() {
  const Emit print = [](const nlohmann::json& j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  };
  nlohmann::json result =
      RunClient(absl::GetFlag(FLAGS_client_target), absl::GetFlag(FLAGS_client_phases),
                absl::GetFlag(FLAGS_paced_qps), print);
  result["event"] = "result";
  print(result);
  return 0;
}

int Run() {
  const int nodes = absl::GetFlag(FLAGS_nodes);
  const int models = absl::GetFlag(FLAGS_models);
  const int per_node = std::min(absl::GetFlag(FLAGS_models_per_node), models);
  const absl::Duration duration = absl::Seconds(absl::GetFlag(FLAGS_duration_s));
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (nodes < 1 || models < 1 || per_node < 1 || absl::GetFlag(FLAGS_outstanding) < 1 ||
      absl::GetFlag(FLAGS_channels) < 1 || duration <= absl::ZeroDuration() ||
      (mode != "ranked" && mode != "one") ||
      (absl::GetFlag(FLAGS_candidates) != "fleet" && absl::GetFlag(FLAGS_candidates) != "index") ||
      (absl::GetFlag(FLAGS_client) != "process" && absl::GetFlag(FLAGS_client) != "thread") ||
      !(absl::GetFlag(FLAGS_churn_period_s) > 0) || absl::GetFlag(FLAGS_table_refresh_ms) < 0) {
    std::fprintf(stderr, "routing: bad flags (see --help)\n");
    return 2;
  }

  FakeClock clock;
  FleetState state;
  const absl::Time fill_start = absl::Now();
  std::vector<v1::Frame> fresh_frames = FillFleet(&state, clock.Now(), nodes, models, per_node);
  std::fprintf(stderr, "==> fleet: %d nodes x %d models (%d per node) filled in %.1f s\n", nodes,
               models, per_node, absl::ToDoubleSeconds(absl::Now() - fill_start));

  const std::vector<v1::PickRequest> picks = PickRequests(models, mode);

  // Pick in process, no transport: what one call costs the server's CPU. The service's refresh
  // rebuilds a model's route table after a change to its nodes; building it (and the orders the
  // first Pick builds) is what a change costs the refresh.
  const StalenessPolicy policy;
  const int kBuilds = 200;
  const absl::Time t = absl::Now();
  const double c1 = ProcessCpuUs();
  size_t serving = 0;
  absl::flat_hash_map<std::string, RouteTable> tables;
  for (int i = 0; i < kBuilds; ++i) {
    const v1::PickRequest& r = picks[i % picks.size()];
    RouteTable table = BuildRouteTable(state.Serving(r.model()), policy);
    serving += table.rows.size();
    tables[r.model()] = std::move(table);
  }
  const double build_us = absl::ToDoubleMicroseconds(absl::Now() - t) / kBuilds;
  const double build_cpu_us = (ProcessCpuUs() - c1) / kBuilds;
  std::fprintf(stderr, "==> in process: %.1f us per route table built (%zu nodes per model)\n",
               build_us, serving / kBuilds);
  const int kPickOnly = 20000;
  absl::BitGen gen_for_bench;
  const absl::Time t2 = absl::Now();
  const double c2 = ProcessCpuUs();
  for (int i = 0; i < kPickOnly; ++i) {
    const v1::PickRequest& r = picks[i % picks.size()];
    absl::StatusOr<v1::PickResponse> resp =
        Pick(r, tables[r.model()], clock.Now(), policy, gen_for_bench);
    if (!resp.ok()) {
      std::fprintf(stderr, "routing: Pick failed: %s\n", resp.status().ToString().c_str());
      return 1;
    }
  }
  const double pick_only_us = absl::ToDoubleMicroseconds(absl::Now() - t2) / kPickOnly;
  const double pick_only_cpu_us = (ProcessCpuUs() - c2) / kPickOnly;
  std::fprintf(stderr, "==> in process, CPU time: %.1f us per table built, %.1f us per Pick\n",
               build_cpu_us, pick_only_cpu_us);
  std::fprintf(stderr, "==> in process: %.1f us per Pick over the model's route table\n",
               pick_only_us);
  // The answer as sent: built on an arena and serialized (what the typed service did per call),
  // against PickSerialized's wire bytes (what the router's threads send).
  double message_bytes_cpu_us = 0;
  double serialized_cpu_us = 0;
  size_t answer_bytes = 0;
  {
    std::string bytes;
    const double c4 = ProcessCpuUs();
    for (int i = 0; i < kPickOnly; ++i) {
      const v1::PickRequest& r = picks[i % picks.size()];
      google::protobuf::Arena arena;
      auto* resp = google::protobuf::Arena::CreateMessage<v1::PickResponse>(&arena);
      if (!Pick(r, tables[r.model()], clock.Now(), policy, gen_for_bench, resp).ok()) return 1;
      bytes.clear();
      resp->SerializeToString(&bytes);
    }
    message_bytes_cpu_us = (ProcessCpuUs() - c4) / kPickOnly;
    const double c5 = ProcessCpuUs();
    for (int i = 0; i < kPickOnly; ++i) {
      const v1::PickRequest& r = picks[i % picks.size()];
      if (!PickSerialized(r, tables[r.model()], clock.Now(), policy, gen_for_bench, &bytes).ok()) {
        return 1;
      }
      answer_bytes += bytes.size();
    }
    serialized_cpu_us = (ProcessCpuUs() - c5) / kPickOnly;
    answer_bytes /= kPickOnly;
  }
  std::fprintf(stderr,
               "==> in process, CPU time: %.1f us per Pick into an arena message and serialized, "
               "%.1f us per PickSerialized (%zu bytes)\n",
               message_bytes_cpu_us, serialized_cpu_us, answer_bytes);
  // The first call after a change: a fresh table and one Pick over it (which builds the
  // table's orders and the candidates it lists).
  const absl::Time t3 = absl::Now();
  for (int i = 0; i < kBuilds; ++i) {
    const v1::PickRequest& r = picks[i % picks.size()];
    const RouteTable table = BuildRouteTable(state.Serving(r.model()), policy);
    if (!Pick(r, table, clock.Now(), policy, gen_for_bench).ok()) return 1;
  }
  const double first_pick_us = absl::ToDoubleMicroseconds(absl::Now() - t3) / kBuilds;
  std::fprintf(stderr, "==> in process: %.1f us per table built and first Pick over it\n",
               first_pick_us);
  if (absl::GetFlag(FLAGS_in_process_only)) return 0;
  // For --candidates=index: node lists built once, rows built on every call.
  absl::flat_hash_map<std::string, std::vector<NodeStatePtr>> index;
  for (const v1::PickRequest& r : picks) index[r.model()] = CandidatesFor(state, r.model());

  AggregatorMetrics metrics;
  RouterService::CandidateSource source = nullptr;
  if (absl::GetFlag(FLAGS_candidates) == "index") {
    source = [&index](absl::string_view model) {
      auto it = index.find(model);
      return it != index.end() ? it->second : std::vector<NodeStatePtr>{};
    };
  }
  RouterOptions router_options;
  router_options.table_refresh = absl::Milliseconds(absl::GetFlag(FLAGS_table_refresh_ms));
  if (absl::GetFlag(FLAGS_router_threads) >= 0) {
    router_options.threads = absl::GetFlag(FLAGS_router_threads);
  }
  RouterService router(&state, &clock, policy, &metrics, router_options, std::move(source));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  router.Register(&builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "routing: cannot listen on 127.0.0.1\n");
    return 1;
  }
  router.StartServing();
  const std::string target = absl::StrCat("127.0.0.1:", port);

  {  // One typed call to check the answer.
    auto stub =
        v1::Router::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::PickResponse resp;
    grpc::Status s = stub->Pick(&ctx, picks[0], &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "routing: Pick over gRPC failed: %s\n", s.error_message().c_str());
      return 1;
    }
    std::fprintf(stderr, "==> Pick %s: %d candidates, %d excluded, recommendation %s\n",
                 picks[0].model().c_str(), resp.candidates_size(), resp.excluded_size(),
                 resp.recommendation().node_id().c_str());
  }

  // The load client: a process of its own (as a gateway would be), or threads of this one.
  const bool client_process = absl::GetFlag(FLAGS_client) == "process";
  absl::flat_hash_map<std::string, double> cpu_at_begin;
  absl::flat_hash_map<std::string, double> cpu_per_call;  // server and client, per phase
  const Emit on_event = [&](const nlohmann::json& j) {
    const std::string phase = j.value("phase", "");
    if (j.value("event", "") == "begin") {
      cpu_at_begin[phase] = ProcessCpuUs();
    } else if (j.value("event", "") == "end") {
      // An in-process client's figure is already the whole process's.
      const double server_us = client_process ? ProcessCpuUs() - cpu_at_begin[phase] : 0;
      const int64_t calls = j.value("calls", int64_t{0});
      cpu_per_call[phase] = calls > 0 ? (server_us + j.value("cpu_us", 0.0)) / calls : 0;
      if (client_process && calls > 0) {
        std::fprintf(stderr, "==> %s: CPU per call %.1f us in the server, %.1f us in the client\n",
                     phase.c_str(), server_us / calls, j.value("cpu_us", 0.0) / calls);
      }
    }
  };
  auto run_client = [&](const std::string& phases, double qps) -> absl::StatusOr<nlohmann::json> {
    if (client_process) return RunClientProcess(target, phases, qps, on_event);
    return RunClient(target, phases, qps, on_event);
  };
  absl::StatusOr<nlohmann::json> standard = run_client("standard", absl::GetFlag(FLAGS_paced_qps));
  if (!standard.ok()) {
    std::fprintf(stderr, "routing: %s\n", standard.status().ToString().c_str());
    return 1;
  }
  const double pick_qps = (*standard)["pick_qps"];
  const double trivial_qps = (*standard)["trivial_qps"];
  const double paced_qps = (*standard)["paced_qps"];
  const double pick_cpu_us = cpu_per_call["pick"];
  const double trivial_cpu_us = cpu_per_call["trivial"];
  std::fprintf(stderr,
               "==> CPU per call (server and client): Pick %.1f us, Health.Check %.1f us; "
               "open loop: Pick %.1f us, Health.Check %.1f us\n",
               pick_cpu_us, trivial_cpu_us, cpu_per_call["pick_paced"],
               cpu_per_call["trivial_paced"]);
  double churn_p50 = 0;
  double churn_p99 = 0;
  double churn_rate = 0;
  int64_t churn_errors = 0;
  double answer_p50 = 0;
  uint64_t refreshes = 0;
  double refresh_ms = 0;
  double answer_p99 = 0;
  const bool churn = absl::GetFlag(FLAGS_churn);
  if (churn) {
    Churn churner(&state, &clock, std::move(fresh_frames),
                  absl::Seconds(absl::GetFlag(FLAGS_churn_period_s)));
    churner.Start();
    // In process first: RouterService::Answer back to back for 2 s, each call timed.
    std::vector<double> answer_us;
    const Clock::time_point answer_end = Clock::now() + std::chrono::seconds(2);
    for (size_t i = 0; Clock::now() < answer_end; ++i) {
      v1::PickResponse resp;
      const Clock::time_point a = Clock::now();
      if (!router.Answer(picks[i % picks.size()], &resp).ok()) ++churn_errors;
      answer_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
    }
    std::sort(answer_us.begin(), answer_us.end());
    answer_p50 = Percentile(answer_us, 0.50);
    answer_p99 = Percentile(answer_us, 0.99);
    std::fprintf(stderr,
                 "==> in process with the fleet changing: RouterService::Answer p50 %.1f us, "
                 "p99 %.1f us (%zu calls)\n",
                 answer_p50, answer_p99, answer_us.size());
    absl::StatusOr<nlohmann::json> churned = run_client("churn", paced_qps);
    churner.Stop();
    if (!churned.ok()) {
      std::fprintf(stderr, "routing: %s\n", churned.status().ToString().c_str());
      return 1;
    }
    churn_p50 = (*churned)["p50_us"];
    churn_p99 = (*churned)["p99_us"];
    churn_rate = churner.rate();
    churn_errors += (*churned)["errors"].get<int64_t>();
    std::fprintf(stderr,
                 "==> Pick at %.0f calls/s (open loop) with %.0f frames/s applied: p50 %.0f us, "
                 "p99 %.0f us (%zu)\n",
                 paced_qps, churn_rate, churn_p50, churn_p99, (*churned)["calls"].get<size_t>());
    refreshes = router.refreshes();
    refresh_ms = refreshes > 0 ? router.refresh_ns() / 1e6 / refreshes : 0;
    std::fprintf(stderr, "==> %llu table refreshes, %.1f ms each on average\n",
                 static_cast<unsigned long long>(refreshes), refresh_ms);
  }
  const int64_t errors = (*standard)["errors"].get<int64_t>() + churn_errors;
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  router.StopServing();

  nlohmann::json j;
  j["nodes"] = nodes;
  j["models"] = models;
  j["nodes_per_model"] = serving / kBuilds;
  j["mode"] = mode;
  j["outstanding"] = absl::GetFlag(FLAGS_outstanding);
  j["candidates"] = absl::GetFlag(FLAGS_candidates);
  j["table_build_us"] = build_us;
  j["pick_only_us"] = pick_only_us;
  j["table_build_cpu_us"] = build_cpu_us;
  j["pick_only_cpu_us"] = pick_only_cpu_us;
  j["pick_message_serialized_cpu_us"] = message_bytes_cpu_us;
  j["pick_serialized_cpu_us"] = serialized_cpu_us;
  j["answer_bytes"] = answer_bytes;
  j["first_pick_us"] = first_pick_us;
  j["pick_qps"] = pick_qps;
  j["pick_p50_us"] = (*standard)["pick_p50_us"];
  j["pick_p99_us"] = (*standard)["pick_p99_us"];
  j["paced_qps"] = paced_qps;
  j["trivial_qps"] = trivial_qps;
  j["trivial_p50_us"] = (*standard)["trivial_p50_us"];
  j["trivial_p99_us"] = (*standard)["trivial_p99_us"];
  j["table_refresh_ms"] = absl::GetFlag(FLAGS_table_refresh_ms);
  j["router_threads"] = router_options.threads;
  j["mutex_deadlock_detection"] = absl::GetFlag(FLAGS_mutex_deadlock_detection);
  if (churn) {
    j["churn_frames_per_s"] = churn_rate;
    j["churn_p50_us"] = churn_p50;
    j["churn_p99_us"] = churn_p99;
    j["churn_answer_p50_us"] = answer_p50;
    j["churn_answer_p99_us"] = answer_p99;
    j["churn_refreshes"] = refreshes;
    j["churn_refresh_ms"] = refresh_ms;
  }
  j["ratio"] = trivial_qps > 0 ? pick_qps / trivial_qps : 0;
  j["client"] = absl::GetFlag(FLAGS_client);
  j["pick_cpu_us"] = pick_cpu_us;
  j["trivial_cpu_us"] = trivial_cpu_us;
  j["pick_paced_cpu_us"] = cpu_per_call["pick_paced"];
  j["trivial_paced_cpu_us"] = cpu_per_call["trivial_paced"];
  j["cpu_ratio"] = pick_cpu_us > 0 ? trivial_cpu_us / pick_cpu_us : 0;
  j["errors"] = errors;
  std::printf("%s\n", j.dump().c_str());
  return errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace fleetwes::aggregator

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // In the load client's process too: the detection's cycle graph costs the client CPU on every
  // call (gRPC's own mutexes), the same for both methods, on the cores the server shares.
  if (!absl::GetFlag(FLAGS_mutex_deadlock_detection)) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }
  if (!absl::GetFlag(FLAGS_client_target).empty()) {
    return fleetwes::aggregator::RunClientMain();
  }
  return fleetwes::aggregator::Run();
}
