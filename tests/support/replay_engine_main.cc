// fleetwes-replay-engine: a stand-in engine (llama-server, vLLM, SGLang, Ollama) for end-to-end
// tests and the quickstart. It serves the captures with counters that advance at --tokens_per_s
// (Ollama: streamed generate/chat answers, one line every --seconds_per_token) and, with
// --rapl_root, keeps a fake RAPL package zone under that directory whose energy counter
// advances at --watts (point the agent's hardware.root there). Runs until SIGTERM/SIGINT.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/replay_server.h"
#include "tests/support/tool_main.h"

ABSL_FLAG(std::string, kind, "llamacpp",
          "Engine to imitate: llamacpp (b4748 captures), vllm (0.29.0 capture), sglang (v0.5 "
          "capture) or ollama (0.11.6/0.34 captures: /api/version, /api/ps, streamed "
          "/api/generate and /api/chat, one line every --seconds_per_token); token counters "
          "advance at --tokens_per_s / --prompt_tokens_per_s.");
ABSL_FLAG(int, port, 0, "Port on 127.0.0.1; 0 picks a free one (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "Write the bound port here (atomically, once listening).");
ABSL_FLAG(double, tokens_per_s, 100, "Generated tokens per second (tokens_predicted_total).");
ABSL_FLAG(double, prompt_tokens_per_s, 200, "Prompt tokens per second (prompt_tokens_total).");
ABSL_FLAG(double, seconds_per_token, 0.02,
          "Generation time added per generated token (tokens_predicted_seconds_total).");
ABSL_FLAG(double, requests_per_s, 1, "Requests started per second (slot task ids).");
ABSL_FLAG(std::string, rapl_root, "",
          "If set, maintain DIR/sys/class/powercap/intel-rapl:0 with an energy counter "
          "advancing at --watts, updated every 100 ms.");
ABSL_FLAG(double, watts, 50, "Power of the fake RAPL package zone.");
ABSL_FLAG(int, keep_alive_s, 1,
          "Seconds an idle keep-alive connection stays open (llama-server and uvicorn: 5).");

namespace {

int Fail(const std::string& message) {
  std::cerr << "fleetwes-replay-engine: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  fleetwes::testing::HelpListsFlagsOf("replay_engine_main.cc");
  absl::SetProgramUsageMessage(
      "imitates llama-server (captured b4748 responses with advancing "
      "counters), vLLM, SGLang or Ollama\nand optionally a RAPL power zone.\n\n"
      "  fleetwes-replay-engine --kind=llamacpp --port=0 --port_file=PORT --tokens_per_s=100 "
      "[--rapl_root=DIR --watts=50]");
  absl::ParseCommandLine(argc, argv);
  const std::string kind = absl::GetFlag(FLAGS_kind);
  if (kind != "llamacpp" && kind != "vllm" && kind != "sglang" && kind != "ollama") {
    return Fail(absl::StrCat("--kind=", kind,
                             " is not supported (supported: llamacpp, vllm, sglang, ollama)"));
  }
  const double tps = absl::GetFlag(FLAGS_tokens_per_s);
  const double watts = absl::GetFlag(FLAGS_watts);
  if (!(tps >= 0) || !(absl::GetFlag(FLAGS_prompt_tokens_per_s) >= 0) ||
      !(absl::GetFlag(FLAGS_seconds_per_token) >= 0) ||
      !(absl::GetFlag(FLAGS_requests_per_s) >= 0)) {
    return Fail("rates must be >= 0");
  }
  if (!(watts >= 0)) return Fail("--watts must be >= 0");

  // Signals are taken by sigwait below; server threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<fleetwes::testing::FakeRapl> rapl;
  if (const std::string root = absl::GetFlag(FLAGS_rapl_root); !root.empty()) {
    rapl = std::make_unique<fleetwes::testing::FakeRapl>(root, watts);
    if (absl::Status s = rapl->Start(); !s.ok()) return Fail(std::string(s.message()));
  }

  fleetwes::testing::ReplayServer server;
  server.set_keep_alive_timeout_s(std::clamp(absl::GetFlag(FLAGS_keep_alive_s), 1, 3600));
  fleetwes::testing::LlamaCppSimOptions sim;
  sim.tokens_per_s = tps;
  sim.prompt_tokens_per_s = absl::GetFlag(FLAGS_prompt_tokens_per_s);
  sim.seconds_per_token = absl::GetFlag(FLAGS_seconds_per_token);
  sim.requests_per_s = absl::GetFlag(FLAGS_requests_per_s);
  if (kind == "llamacpp") {
    if (absl::Status s = server.EnableLlamaCpp(sim); !s.ok()) {
      return Fail(std::string(s.message()));
    }
  } else if (kind == "ollama") {
    fleetwes::testing::OllamaSimOptions ollama;
    ollama.chunk_delay = absl::Seconds(sim.seconds_per_token);
    if (absl::Status s = server.EnableOllama(ollama); !s.ok()) {
      return Fail(std::string(s.message()));
    }
  } else {
    // Prometheus engines: token counters advance, and each generated token is one inter-token
    // observation of --seconds_per_token.
    const std::string prefix = kind == "vllm" ? "vllm:" : "sglang:";
    fleetwes::testing::PromSimOptions prom;
    prom.fixture = kind == "vllm" ? "vllm-0.29.0/metrics_after_load.txt"
                                  : "sglang/metrics_v0.5.10.post1_datadog_trimmed.txt";
    prom.counter_rates[prefix + "generation_tokens_total"] = tps;
    prom.counter_rates[prefix + "prompt_tokens_total"] = absl::GetFlag(FLAGS_prompt_tokens_per_s);
    prom.histograms[prefix + "inter_token_latency_seconds"] = {tps, sim.seconds_per_token};
    if (absl::Status s = server.EnablePromEngine(prom); !s.ok()) {
      return Fail(std::string(s.message()));
    }
  }
  if (absl::Status s = server.Start(absl::GetFlag(FLAGS_port)); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (!fleetwes::testing::WritePortFile(pf, server.port()))
      return Fail(absl::StrCat("cannot write ", pf));
  }
  std::cerr << "fleetwes-replay-engine: " << kind << " on " << server.url() << ", " << tps
            << " tokens/s"
            << (rapl != nullptr ? absl::StrCat(", RAPL ", watts, " W under ", rapl->zone_dir())
                                : std::string())
            << std::endl;

  int signal = 0;
  sigwait(&signals, &signal);
  server.Stop();
  if (rapl != nullptr) rapl->Stop();
  return 0;
}
