#!/usr/bin/env bash
# bench/restart: how long a restarted fleetwes-aggregator takes to rebuild its fleet state from
# PostgreSQL and serve again.
#
#   bench/restart/run.sh                                   10000 nodes, a day of history
#   bench/restart/run.sh --nodes 20000 --history-points 1440
#
# Starts a private PostgreSQL (deploy/pg-private.sh) and the aggregator (Release build), publishes
# one real frame per node with fleetwes-loadgen, then fills a day of history behind every node in
# SQL (--history-points rows per node spread over the previous 24 h, default 288 = one every
# 5 minutes, with their model and device rows) so the tables, their indexes and yesterday's
# partitions have a realistic shape. Then it restarts the aggregator --runs times and measures,
# each time, from the process start to the log line "fleet state rebuilt" and to the first
# healthy /healthz. Ends with one JSON line:
#   {"nodes":..,"frames":..,"tracks":..,"rebuild_s":..,"ready_s":..}   (the slowest of the runs)
# tracks: the checkpointed (node, leaderboard) histories restored, written at each stop.
set -Eeuo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<'EOF'

options:
  --nodes N              nodes (default 10000)
  --history-points N     history rows per node over the previous day (default 288)
  --runs N               restarts measured (default 3)
  --build DIR            build directory (default build/bench; configured and built when needed)
  --skip-build           use the binaries already in --build
  -h, --help             this help
EOF
}

bench_name=restart
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
root=$bench_root
nodes=10000
points=288
runs=3
build="$root/build/bench"
skip_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) need_number "$1" "${2:-}" 1; nodes=$2; shift ;;
    --history-points) need_number "$1" "${2:-}" 0; points=$2; shift ;;
    --runs) need_number "$1" "${2:-}" 1; runs=$2; shift ;;
    --build) [ -n "${2:-}" ] || die "--build needs a directory"; build=$(realpath -m "$2"); shift ;;
    --skip-build) skip_build=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "restart: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bin="$build/bin"
bench_build "$build" "$skip_build" fleetwes-aggregator fleetwes-loadgen

work=$(mktemp -d /var/tmp/fleetwes-bench-restart.XXXXXX)
chmod 755 "$work"
pgdir="$work/pg"
agg_pid=""
cleanup() {
  [ -z "$agg_pid" ] || kill "$agg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  "$root/deploy/pg-private.sh" stop "$pgdir" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "restart: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

bench_database "$pgdir" -c shared_buffers=2GB -c max_wal_size=8GB -c wal_compression=on \
  -c checkpoint_timeout=30min
aggregator_config "$work/aggregator.yaml"

start_aggregator() {  # sets agg_pid; waits for /healthz; writes "rebuild_s ready_s" to $work/times
  : >"$work/aggregator.log"
  local t0 t_ready
  t0=$(date +%s.%N)
  "$bin/fleetwes-aggregator" --config "$work/aggregator.yaml" >"$work/aggregator.log" 2>&1 &
  agg_pid=$!
  wait_healthy "http://127.0.0.1:$http_port/healthz" "$agg_pid" "$work/aggregator.log" 300
  t_ready=$(date +%s.%N)
  # The log line's own timestamp: "2026-11-24T19:16:41.414+00:00 info  [aggregator] fleet state
  # rebuilt: N nodes".
  python3 - "$t0" "$t_ready" "$work/aggregator.log" >"$work/times" <<'EOF'
import datetime, re, sys
t0, ready = float(sys.argv[1]), float(sys.argv[2])
rebuilt = None
for line in open(sys.argv[3]):
    m = re.match(r"(\S+) .*fleet state rebuilt", line)
    if m:
        rebuilt = datetime.datetime.fromisoformat(m.group(1)).timestamp()
print(f"{(rebuilt - t0) if rebuilt else ready - t0:.3f} {ready - t0:.3f}")
EOF
}
stop_aggregator() {
  kill -TERM "$agg_pid"
  wait "$agg_pid" 2>/dev/null || true
  agg_pid=""
}

say "aggregator (migrations), then one real frame per node from fleetwes-loadgen ($nodes nodes)"
start_aggregator
"$bin/fleetwes-loadgen" --target="127.0.0.1:$grpc_port" --nodes="$nodes" --interval=5s \
  --duration=20s --log_level=warn -o json >"$work/loadgen.json" 2>"$work/loadgen.log" ||
  die "the load generator failed: $(tail -n 5 "$work/loadgen.log")"
sleep 1
stop_aggregator

say "a day of history: $points rows per node over the previous 24 h"
psql_db <<EOF
SET client_min_messages = warning;
DO \$\$
DECLARE d date;
BEGIN
  FOR d IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date, interval '1 day')::date LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF frames FOR VALUES FROM (%L) TO (%L)',
                   'frames_p' || to_char(d, 'YYYYMMDD'), d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF model_samples FOR VALUES FROM (%L) TO (%L)',
                   'model_samples_p' || to_char(d, 'YYYYMMDD'), d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF device_samples FOR VALUES FROM (%L) TO (%L)',
                   'device_samples_p' || to_char(d, 'YYYYMMDD'), d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
  END LOOP;
END
\$\$;
CREATE TEMP TABLE latest AS SELECT DISTINCT ON (node_id) * FROM frames ORDER BY node_id, window_end DESC;
INSERT INTO frames
  SELECT l.node_id, 'history', k, l.window_start - k * (interval '24 hours' / $points),
         l.window_end - k * (interval '24 hours' / $points), l.received_at, l.interval_s,
         l.decode_tokens_per_s, l.watts, l.pue, l.wes_raw, l.wes_penalized, l.thermal_cost_pct,
         l.wes_null_reason, l.thermal_state, l.memory_pressure, l.swap_in_pages_per_s,
         l.swap_out_pages_per_s, l.frame
  FROM latest l CROSS JOIN generate_series(1, $points) k;
INSERT INTO model_samples
  SELECT m.node_id, 'history', k, m.window_end - k * (interval '24 hours' / $points), m.engine_id,
         m.engine, m.model, m.decode_tokens_per_s, m.prefill_tokens_per_s, m.ttft_mean_s,
         m.ttft_p50_s, m.ttft_p95_s, m.ttft_count, m.ttft_estimate, m.tpot_mean_s, m.tpot_p50_s,
         m.tpot_p95_s, m.tpot_count, m.tpot_estimate, m.requests_running, m.requests_waiting,
         m.kv_cache_usage, m.watts_attributed, m.wes_tokens_per_s, m.wes_watts, m.wes_raw,
         m.wes_penalized, m.thermal_cost_pct, m.wes_null_reason, m.thermal_state
  FROM model_samples m JOIN latest l USING (node_id, boot_id, seq)
  CROSS JOIN generate_series(1, $points) k;
INSERT INTO device_samples
  SELECT d.node_id, 'history', k, d.window_end - k * (interval '24 hours' / $points), d.device_id,
         d.kind, d.scope, d.power_w, d.energy_j, d.temperature_c, d.clock_mhz, d.clock_max_mhz,
         d.throttle_mask, d.thermal_state, d.power_capped
  FROM device_samples d JOIN latest l USING (node_id, boot_id, seq)
  CROSS JOIN generate_series(1, $points) k;
VACUUM ANALYZE;
EOF
frames=$(psql_db -tAc "SELECT count(*) FROM frames")
say "$frames frames, database $(psql_db -tAc "SELECT pg_size_pretty(pg_database_size('fleetwes'))")"

worst_rebuild=0
worst_ready=0
for i in $(seq 1 "$runs"); do
  start_aggregator
  read -r rebuild ready <"$work/times"
  grep -q "fleet state rebuilt: $nodes nodes" "$work/aggregator.log" ||
    die "the aggregator did not rebuild $nodes nodes: $(grep 'fleet state rebuilt' "$work/aggregator.log")"
  tracks=$(sed -n 's/.*fleet state rebuilt: [0-9]* nodes, \([0-9]*\) of .*/\1/p' "$work/aggregator.log" | tail -1)
  say "run $i: fleet state rebuilt after ${rebuild} s (${tracks:-0} checkpointed tracks), healthy after ${ready} s"
  worst_rebuild=$(python3 -c "print(max($worst_rebuild, $rebuild))")
  worst_ready=$(python3 -c "print(max($worst_ready, $ready))")
  stop_aggregator
done
printf '{"nodes": %d, "frames": %d, "tracks": %d, "rebuild_s": %s, "ready_s": %s}\n' "$nodes" \
  "$frames" "${tracks:-0}" "$worst_rebuild" "$worst_ready"
