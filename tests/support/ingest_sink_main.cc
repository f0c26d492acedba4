// fleetwes-ingest-sink: an Ingest.Publish server that acknowledges every frame at once and keeps
// nothing but counts. Benchmarks use it to give an agent a live uplink without a database, so the
// agent's own cost is what is measured. Not a test of the aggregator: no validation, no storage.
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fleetwes/v1/ingest.grpc.pb.h"
#include "tests/support/tool_main.h"

ABSL_FLAG(int, port, 0, "Port on 127.0.0.1; 0 picks a free one (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "Write the bound port here (atomically, once listening).");

namespace {

class Sink final : public fleetwes::v1::Ingest::Service {
 public:
  grpc::Status Publish(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<fleetwes::v1::PublishResponse,
                                                fleetwes::v1::PublishRequest>* stream) override {
    fleetwes::v1::PublishRequest request;
    while (stream->Read(&request)) {
      if (!request.has_frame()) continue;
      fleetwes::v1::PublishResponse response;
      response.mutable_ack()->set_boot_id(request.frame().boot_id());
      response.mutable_ack()->set_seq(request.frame().seq());
      frames_.fetch_add(1);
      if (!stream->Write(response)) break;
    }
    (void)context;
    return grpc::Status::OK;
  }
  uint64_t frames() const { return frames_.load(); }

 private:
  std::atomic<uint64_t> frames_{0};
};

}  // namespace

int main(int argc, char** argv) {
  fleetwes::testing::HelpListsFlagsOf("ingest_sink_main.cc");
  absl::SetProgramUsageMessage(
      "acknowledges every frame published to it and stores nothing (benchmarks).\n\n"
      "  fleetwes-ingest-sink --port=0 --port_file=PORT");
  absl::ParseCommandLine(argc, argv);

  // Block the stop signals before gRPC starts its threads; main waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Sink sink;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", absl::GetFlag(FLAGS_port)),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&sink);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "fleetwes-ingest-sink: cannot listen on 127.0.0.1:" << absl::GetFlag(FLAGS_port)
              << "\n";
    return 1;
  }
  if (const std::string file = absl::GetFlag(FLAGS_port_file); !file.empty()) {
    if (!fleetwes::testing::WritePortFile(file, port)) {
      std::cerr << "fleetwes-ingest-sink: cannot write " << file << "\n";
      return 1;
    }
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::cout << "frames acknowledged: " << sink.frames() << "\n";
  return 0;
}
