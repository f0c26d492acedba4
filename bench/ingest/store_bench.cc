// fleetwes-store-bench: the cost of PgBatchStore's ways of writing frames (writer.frames_copy:
// direct and staged, both with binary COPY), measured side by side on one PostgreSQL. Each mode
// writes into its own new database; rounds alternate between the modes so that other load on the
// machine weighs on both alike. Frames come from fleetwes-loadgen's simulated nodes (real sizes,
// models and devices). Per mode: frames per second of wall time, the client's CPU (row building,
// libpqxx) and the server backend's CPU (from /proc, so PostgreSQL must run on this machine) per
// frame, the median batch time; then one JSON line. With
// --connections N, one more mode writes N batches at a time through N connections (its "batch
// time" is the time until all N committed). The databases are dropped at the end.
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
#include <thread>
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
ABSL_FLAG(int32_t, connections, 1,
          "when above 1, one more mode: direct binary COPY through this many connections, each "
          "writing its own batches at the same time (as many writer connections would)");

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
  std::string db;
  int connections = 1;
  std::vector<std::unique_ptr<PgBatchStore>> stores;  // one per connection
  std::vector<std::unique_ptr<lg::SimNode>> sims;
  size_t next_sim = 0;
  std::vector<int> backend_pids;
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
      "Compares PgBatchStore's frame writes: direct and staged, one or several connections.");
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
    modes.push_back(Mode{"direct", PgBatchStore::Mode::kDirect});
    modes.push_back(Mode{"staged", PgBatchStore::Mode::kStaged});
    const int connections = absl::GetFlag(FLAGS_connections);
    if (connections > 1) {
      if (static_cast<int64_t>(connections) * batch > nodes) {
        std::cerr << "fleetwes-store-bench: --connections x --batch_frames exceeds --nodes (the "
                     "connections' batches would share nodes)\n";
        return 2;
      }
      modes.push_back(Mode{absl::StrCat("direct_", connections, "conn"),
                           PgBatchStore::Mode::kDirect, "", connections});
    }
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
      for (int c = 0; c < m.connections; ++c) {
        m.stores.push_back(std::make_unique<PgBatchStore>(
            db_url, fleetwes::aggregator::RetentionConfig{}, nullptr, m.mode));
      }
      for (int i = 0; i < nodes; ++i) {
        lg::SimNodeOptions so;
        so.node_id = absl::StrFormat("bench-%05d", i);
        so.boot_id = "boot";
        so.profile = profiles[i % profiles.size()];
        so.start = start;
        m.sims.push_back(std::make_unique<lg::SimNode>(std::move(so)));
      }
      // Warm-up batch per connection: connection, partitions, staging table.
      for (auto& store : m.stores) {
        std::vector<FrameRecord> records = NextBatch(m, batch);
        std::vector<const FrameRecord*> ptrs;
        for (const FrameRecord& r : records) ptrs.push_back(&r);
        if (auto r = store->WriteBatch({}, ptrs); !r.ok()) {
          std::cerr << m.name << ": " << r.status() << "\n";
          return 1;
        }
      }
      pqxx::work tx(admin);
      for (const pqxx::row& row : tx.exec(
               absl::StrCat("SELECT pid FROM pg_stat_activity WHERE datname = ", tx.quote(m.db)))) {
        m.backend_pids.push_back(row[0].as<int>());
      }
      tx.commit();
    }
    for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
      for (Mode& m : modes) {
        for (int b = 0; b < absl::GetFlag(FLAGS_batches); ++b) {
          // One batch per connection, written at the same time.
          const size_t n = m.stores.size();
          std::vector<std::vector<FrameRecord>> records(n);
          std::vector<std::vector<const FrameRecord*>> ptrs(n);
          for (size_t c = 0; c < n; ++c) {
            records[c] = NextBatch(m, batch);
            for (const FrameRecord& r : records[c]) ptrs[c].push_back(&r);
          }
          std::vector<double> client(n, 0);
          std::vector<absl::Status> status(n);
          double s0 = 0;
          for (int pid : m.backend_pids) s0 += ProcessCpuSeconds(pid);
          const absl::Time t0 = absl::Now();
          auto write = [&](size_t c) {
            const double c0 = ThreadCpuSeconds();
            status[c] = m.stores[c]->WriteBatch({}, ptrs[c]).status();
            client[c] = ThreadCpuSeconds() - c0;
          };
          std::vector<std::thread> threads;
          for (size_t c = 1; c < n; ++c) threads.emplace_back(write, c);
          write(0);
          for (std::thread& t : threads) t.join();
          const absl::Time t1 = absl::Now();
          for (size_t c = 0; c < n; ++c) {
            if (!status[c].ok()) {
              std::cerr << m.name << ": " << status[c] << "\n";
              return 1;
            }
            m.client_s += client[c];
            m.frames += records[c].size();
          }
          double s1 = 0;
          for (int pid : m.backend_pids) s1 += ProcessCpuSeconds(pid);
          m.server_s += s1 - s0;
          m.wall_s += absl::ToDoubleSeconds(t1 - t0);
          m.batch_ms.push_back(absl::ToDoubleMilliseconds(t1 - t0));
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
      m.stores.clear();
      pqxx::nontransaction(admin).exec(absl::StrCat("DROP DATABASE ", m.db, " WITH (FORCE)"));
    }
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "fleetwes-store-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
