// fleetwes-store-bench: the cost of PgBatchStore's ways of writing frames (writer.frames_copy:
// direct and staged, both with binary COPY; and direct with text COPY), measured side by side on
// one PostgreSQL. Each mode writes into its own new database; rounds alternate between the modes so
// that other load on the machine weighs on both alike. Frames come from fleetwes-loadgen's
// simulated nodes (real sizes, models and devices). Per mode: frames per second of wall time, the
// client's CPU (row building, libpqxx) and the server backend's CPU (from /proc, so PostgreSQL must
// run on this machine) per frame, the median batch time; then one JSON line. The databases are
// dropped at the end.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/loadgen/profiles.h"
#include "agent/loadgen/sim_node.h"
#include "aggregator/store/migrations.h"
#include "aggregator/store/pg_batch_store.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, database_url, "",
          "libpq URL of a database on the cluster to use (new databases are created beside it)");
ABSL_FLAG(int32_t, nodes, 2000, "simulated nodes");
ABSL_FLAG(int32_t, batch_frames, 500, "frames per WriteBatch");
ABSL_FLAG(int32_t, batches, 10, "batches per mode and round");
ABSL_FLAG(int32_t, rounds, 4, "rounds; each writes `batches` batches in every mode");

namespace {

using fleetwes::aggregator::FrameRecord;
using fleetwes::aggregator::PgBatchStore;
namespace lg = fleetwes::agent::loadgen;
namespace v1 = fleetwes::v1;

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double ProcessCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  std::string field;
  for (size_t i = close + 2; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ' ') {
      fields.push_back(field);
      field.clear();
    } else {
      field.push_back(line[i]);
    }
  }
  // utime and stime are fields 14 and 15 of stat; fields[0] is field 3.
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Mode {
  std::string name;
  PgBatchStore::Mode mode;
  PgBatchStore::CopyFormat format;
  std::string db;
  std::unique_ptr<PgBatchStore> store;
  std::vector<std::unique_ptr<lg::SimNode>> sims;
  size_t next_sim = 0;
  int backend_pid = 0;
  uint64_t frames = 0;
  double wall_s = 0, client_s = 0, server_s = 0;
  std::vector<double> batch_ms;
};

std::vector<FrameRecord> NextBatch(Mode& m, int n) {
  std::vector<FrameRecord> out;
  out.reserve(n);
  const absl::Time now = absl::Now();
  for (int i = 0; i < n; ++i) {
    lg::SimNode& sim = *m.sims[m.next_sim];
    m.next_sim = (m.next_sim + 1) % m.sims.size();
    auto frame = std::make_shared<v1::Frame>(sim.NextFrame());
    std::string bytes = frame->SerializeAsString();
    out.push_back(FrameRecord{std::move(frame), std::move(bytes), now});
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Compares PgBatchStore's frame writes: direct and staged, binary and text COPY.");
  absl::ParseCommandLine(argc, argv);
  const std::string cluster = absl::GetFlag(FLAGS_database_url);
  if (cluster.empty()) {
    std::cerr << "fleetwes-store-bench: --database_url is required\n";
    return 2;
  }
  const int nodes = absl::GetFlag(FLAGS_nodes);
  const int batch = absl::GetFlag(FLAGS_batch_frames);
  if (nodes < 1 || batch < 1) {
    std::cerr << "fleetwes-store-bench: --nodes and --batch_frames must be >= 1\n";
    return 2;
  }
  try {
    pqxx::connection admin(cluster);
    std::vector<Mode> modes;
    modes.push_back(Mode{"direct", PgBatchStore::Mode::kDirect, PgBatchStore::CopyFormat::kBinary});
    modes.push_back(Mode{"staged", PgBatchStore::Mode::kStaged, PgBatchStore::CopyFormat::kBinary});
    modes.push_back(
        Mode{"direct_text", PgBatchStore::Mode::kDirect, PgBatchStore::CopyFormat::kText});
    const auto& profiles = lg::BuiltinProfiles();
    const absl::Time start = absl::Now() - absl::Hours(1);
    for (Mode& m : modes) {
      m.db = absl::StrCat("fleetwes_store_bench_", m.name, "_", getpid());
      pqxx::nontransaction(admin).exec(absl::StrCat("CREATE DATABASE ", m.db));
      std::string db_url = cluster;
      const size_t slash = db_url.rfind('/');
      const size_t query = db_url.find('?', slash);
      db_url = db_url.substr(0, slash + 1) + m.db +
               (query == std::string::npos ? "" : db_url.substr(query));
      {
        pqxx::connection c(db_url);
        absl::StatusOr<int> applied = fleetwes::aggregator::ApplyMigrations(c);
        if (!applied.ok()) {
          std::cerr << "migrations: " << applied.status() << "\n";
          return 1;
        }
      }
      m.store = std::make_unique<PgBatchStore>(db_url, fleetwes::aggregator::RetentionConfig{},
                                               nullptr, m.mode, m.format);
      for (int i = 0; i < nodes; ++i) {
        lg::SimNodeOptions so;
        so.node_id = absl::StrFormat("bench-%05d", i);
        so.boot_id = "boot";
        so.profile = profiles[i % profiles.size()];
        so.start = start;
        m.sims.push_back(std::make_unique<lg::SimNode>(std::move(so)));
      }
      // Warm-up batch: connection, partitions, staging table.
      std::vector<FrameRecord> records = NextBatch(m, batch);
      std::vector<const FrameRecord*> ptrs;
      for (const FrameRecord& r : records) ptrs.push_back(&r);
      if (auto r = m.store->WriteBatch({}, ptrs); !r.ok()) {
        std::cerr << m.name << ": " << r.status() << "\n";
        return 1;
      }
      pqxx::work tx(admin);
      m.backend_pid = tx.exec1(absl::StrCat(
          "SELECT pid FROM pg_stat_activity WHERE datname = ", tx.quote(m.db), " LIMIT 1"))[0]
                          .as<int>();
      tx.commit();
    }
    for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
      for (Mode& m : modes) {
        for (int b = 0; b < absl::GetFlag(FLAGS_batches); ++b) {
          std::vector<FrameRecord> records = NextBatch(m, batch);
          std::vector<const FrameRecord*> ptrs;
          for (const FrameRecord& r : records) ptrs.push_back(&r);
          const double c0 = ThreadCpuSeconds();
          const double s0 = ProcessCpuSeconds(m.backend_pid);
          const absl::Time t0 = absl::Now();
          absl::StatusOr<std::vector<bool>> r = m.store->WriteBatch({}, ptrs);
          const absl::Time t1 = absl::Now();
          if (!r.ok()) {
            std::cerr << m.name << ": " << r.status() << "\n";
            return 1;
          }
          m.client_s += ThreadCpuSeconds() - c0;
          m.server_s += ProcessCpuSeconds(m.backend_pid) - s0;
          m.wall_s += absl::ToDoubleSeconds(t1 - t0);
          m.batch_ms.push_back(absl::ToDoubleMilliseconds(t1 - t0));
          m.frames += records.size();
        }
      }
    }
    nlohmann::ordered_json out;
    out["nodes"] = nodes;
    out["batch_frames"] = batch;
    for (Mode& m : modes) {
      std::sort(m.batch_ms.begin(), m.batch_ms.end());
      const double median = m.batch_ms[m.batch_ms.size() / 2];
      const double fps = static_cast<double>(m.frames) / m.wall_s;
      const double client_us = 1e6 * m.client_s / static_cast<double>(m.frames);
      const double server_us = 1e6 * m.server_s / static_cast<double>(m.frames);
      std::fprintf(stderr,
                   "%s: %lu frames, %.0f frames/s of wall time, median batch %.1f ms; CPU per "
                   "frame: client %.1f us, server backend %.1f us\n",
                   m.name.c_str(), static_cast<unsigned long>(m.frames), fps, median, client_us,
                   server_us);
      out[m.name + "_frames_per_s"] = std::round(fps);
      out[m.name + "_median_batch_ms"] = std::round(median * 10) / 10;
      out[m.name + "_client_us_per_frame"] = std::round(client_us * 10) / 10;
      out[m.name + "_server_us_per_frame"] = std::round(server_us * 10) / 10;
      m.store.reset();
      pqxx::nontransaction(admin).exec(absl::StrCat("DROP DATABASE ", m.db, " WITH (FORCE)"));
    }
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "fleetwes-store-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
