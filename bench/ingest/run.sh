#!/usr/bin/env bash
# bench/ingest: sustained ingest of fleetwes-aggregator into a co-located PostgreSQL, and the
# machine's ceiling for the same rows.
#
#   bench/ingest/run.sh                              40000 nodes at 2 s for 60 s (after 15 s warm-up)
#   bench/ingest/run.sh --nodes 20000 --duration 120
#
# Starts a private PostgreSQL 15 (deploy/pg-private.sh, settings of docs/operations.md), the
# aggregator (Release build) and fleetwes-loadgen with N simulated nodes publishing every I. Over
# the measured span it reads: frames persisted (and so acknowledged) per second and rows inserted
# per second (frames + model_samples + device_samples, from pg_stat_user_tables), ack latency
# p50/p99 (from the load generator, over its whole run), and the CPU of the aggregator and of
# PostgreSQL (all its processes).
# Then the ceiling: the rows just written are exported with psql's \copy, the tables emptied, and
# the same rows loaded back with psql's \copy in one transaction; rows/s of that load is the
# ceiling.
# Then the transport phase (unless --no-transport): PostgreSQL stopped, the same load generator
# with as many nodes (streams) offering 3x the load (the interval divided by 3) against
# fleetwes-ingest-echo, the aggregator's gRPC set-up acknowledging every frame as soon as it is
# read and storing nothing. Once every stream is open and after its own warm-up: acknowledged
# frames/s over its own measured span, and the CPU of the echo server and of the load generator
# per acknowledged frame: what gRPC alone costs on this machine.
# Ends with one JSON line:
#   {"frames_per_s":..,"ack_p50_ms":..,"ack_p99_ms":..,"rows_per_s":..,
#    "copy_ceiling_rows_per_s":..,"ratio":..,...,"loadgen_cpu_us_per_frame":..,
#    "transport_frames_per_s":..,"transport_server_cpu_us_per_frame":..,
#    "transport_loadgen_cpu_us_per_frame":..}   (ratio = rows_per_s / copy_ceiling_rows_per_s)
set -Eeuo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<'EOF'

options:
  --nodes N            simulated nodes (default 40000)
  --interval SECONDS   frame interval of every node (default 2)
  --duration SECONDS   measured span (default 60)
  --warmup SECONDS     load before measuring (default 15)
  --build DIR          build directory (default build/bench; configured and built when needed)
  --skip-build         use the binaries already in --build
  --frames-copy MODE   the aggregator's writer.frames_copy: direct (default) or staged
  --batch-frames N     the aggregator's writer.max_batch_frames (default: its default)
  --connections N      the aggregator's writer.connections (default: its default)
  --no-transport       skip the transport phase (its JSON fields are then null)
  --transport-nodes N  simulated nodes of the transport phase (default: --nodes)
  --transport-factor F its offered load per node: the interval divided by F (default 3)
  --preload LIB        run the aggregator, the echo server and the load generator with
                       LD_PRELOAD=LIB (another allocator)
  --keep               keep the PostgreSQL cluster and logs (printed at the end)
  -h, --help           this help
EOF
}

bench_name=ingest
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
root=$bench_root
nodes=40000
interval=2
duration=60
warmup=15
build="$root/build/bench"
skip_build=0
keep=0
frames_copy=direct
batch_frames=""
connections=""
transport=1
transport_nodes=""
transport_factor=3
preload=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) need_number "$1" "${2:-}" 1; nodes=$2; shift ;;
    --interval) need_number "$1" "${2:-}" 1; interval=$2; shift ;;
    --duration) need_number "$1" "${2:-}" 1; duration=$2; shift ;;
    --warmup) need_number "$1" "${2:-}" 0; warmup=$2; shift ;;
    --build) [ -n "${2:-}" ] || die "--build needs a directory"; build=$(realpath -m "$2"); shift ;;
    --skip-build) skip_build=1 ;;
    --keep) keep=1 ;;
    --no-transport) transport=0 ;;
    --transport-nodes) need_number "$1" "${2:-}" 1; transport_nodes=$2; shift ;;
    --transport-factor) need_number "$1" "${2:-}" 1; transport_factor=$2; shift ;;
    --preload) [ -f "${2:-}" ] || die "--preload needs a library file"; preload=$2; shift ;;
    --frames-copy)
      case "${2:-}" in direct|staged) frames_copy=$2 ;; *) die "--frames-copy needs direct or staged" ;; esac
      shift ;;
    --batch-frames) need_number "$1" "${2:-}" 1; batch_frames=$2; shift ;;
    --connections) need_number "$1" "${2:-}" 1; connections=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "ingest: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bin="$build/bin"
[ -n "$transport_nodes" ] || transport_nodes=$nodes
transport_interval_ms=$((interval * 1000 / transport_factor))
[ "$transport_interval_ms" -ge 10 ] || die "--transport-factor: the interval would be under 10 ms"
targets=(fleetwes-aggregator fleetwes-loadgen)
[ "$transport" -eq 0 ] || targets+=(fleetwes-ingest-echo)
bench_build "$build" "$skip_build" "${targets[@]}"

work=$(mktemp -d /var/tmp/fleetwes-bench-ingest.XXXXXX)
chmod 755 "$work"
pgdir="$work/pg"
agg_pid=""
load_pid=""
echo_pid=""
cleanup() {
  [ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
  [ -z "$echo_pid" ] || kill "$echo_pid" 2>/dev/null || true
  [ -z "$agg_pid" ] || kill "$agg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  "$root/deploy/pg-private.sh" stop "$pgdir" || true
  if [ "$keep" -eq 1 ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'echo "ingest: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

bench_database "$pgdir" -c synchronous_commit=on -c wal_compression=on -c max_wal_size=4GB \
  -c checkpoint_timeout=15min -c shared_buffers=2GB -c autovacuum_vacuum_insert_scale_factor=0.05
writer_yaml="writer:
  frames_copy: $frames_copy
"
[ -z "$batch_frames" ] || writer_yaml+="  max_batch_frames: $batch_frames
  queue_frames: $((batch_frames > 20000 ? batch_frames : 20000))
"
[ -z "$connections" ] || writer_yaml+="  connections: $connections
"
aggregator_config "$work/aggregator.yaml" "log_level: warn
$writer_yaml"
say "fleetwes-aggregator on 127.0.0.1:$grpc_port"
LD_PRELOAD="$preload" "$bin/fleetwes-aggregator" --config "$work/aggregator.yaml" >"$work/aggregator.log" 2>&1 &
agg_pid=$!
wait_healthy "http://127.0.0.1:$http_port/healthz" "$agg_pid" "$work/aggregator.log" 60

say "fleetwes-loadgen: $nodes nodes every ${interval}s, ${warmup}s warm-up + ${duration}s measured"
LD_PRELOAD="$preload" "$bin/fleetwes-loadgen" --target="127.0.0.1:$grpc_port" --nodes="$nodes" --interval="${interval}s" \
  --duration="$((warmup + duration))s" --log_level=warn -o json >"$work/loadgen.json" \
  2>"$work/loadgen.log" &
load_pid=$!

postmaster=$(head -n 1 "$pgdir/data/postmaster.pid")
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {  # the postmaster, its reaped children, and its live children
  local total
  total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$postmaster/stat")
  for c in $(ps -o pid= --ppid "$postmaster"); do total=$((total + $(ticks "$c"))); done
  echo "$total"
}
rows_inserted() {  # "<frame rows> <all rows>" inserted so far
  psql_db -tA -F ' ' -c "SELECT coalesce(sum(n_tup_ins) FILTER (WHERE relname LIKE 'frames%'), 0),
                               coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables
                WHERE relname ~ '^(frames|model_samples|device_samples)_p[0-9]{8}$'"
}

sleep "$warmup"
kill -0 "$load_pid" 2>/dev/null || { cat "$work/loadgen.log" >&2; die "the load generator exited early"; }
a0=$(ticks "$agg_pid"); l0=$(ticks "$load_pid"); p0=$(pg_ticks); read -r f0 r0 < <(rows_inserted); t0=$(date +%s.%N)
sleep "$duration"
a1=$(ticks "$agg_pid"); l1=$(ticks "$load_pid"); p1=$(pg_ticks); read -r f1 r1 < <(rows_inserted); t1=$(date +%s.%N)
wait "$load_pid" || die "the load generator failed: $(tail -n 5 "$work/loadgen.log")"
load_pid=""
[ -s "$work/loadgen.json" ] || die "the load generator printed no summary"

# Let the writer drain, then stop the aggregator before the ceiling run.
sleep 2
kill -TERM "$agg_pid"
wait "$agg_pid" 2>/dev/null || true
agg_pid=""

say "ceiling: the same rows through psql's \\copy"
rows_total=0
for t in frames model_samples device_samples; do
  psql_db -c "\\copy (SELECT * FROM $t) TO '$work/$t.copy'"
  rows_total=$((rows_total + $(wc -l <"$work/$t.copy")))
done
psql_db -c "TRUNCATE frames, model_samples, device_samples"
c0=$(date +%s.%N)
psql_db <<EOF
BEGIN;
\\copy frames FROM '$work/frames.copy'
\\copy model_samples FROM '$work/model_samples.copy'
\\copy device_samples FROM '$work/device_samples.copy'
COMMIT;
EOF
c1=$(date +%s.%N)
hz=$(getconf CLK_TCK)

# Transport phase. Its figures are "null" in the JSON line when skipped.
e0=0 e1=0 el0=0 el1=0 ea0=0 ea1=0 et0=0 et1=0 open_s=0 streams=0
if [ "$transport" -eq 1 ]; then
  # Nothing else on the machine's cores from this benchmark: the database is done.
  "$root/deploy/pg-private.sh" stop "$pgdir" >/dev/null
  LD_PRELOAD="$preload" "$bin/fleetwes-ingest-echo" --port=0 --port_file="$work/echo.port" >"$work/echo.out" \
    2>"$work/echo.log" &
  echo_pid=$!
  deadline=$((SECONDS + 30))
  until [ -s "$work/echo.port" ]; do
    kill -0 "$echo_pid" 2>/dev/null || { cat "$work/echo.log" >&2; die "fleetwes-ingest-echo exited"; }
    [ $SECONDS -lt $deadline ] || die "fleetwes-ingest-echo did not listen within 30 s"
    sleep 0.05
  done
  echo_port=$(cat "$work/echo.port")
  # echo_counts: "<frames acknowledged so far> <open streams>" (the echo answers SIGUSR1).
  echo_counts() {
    local lines deadline
    lines=$(wc -l <"$work/echo.out")
    kill -USR1 "$echo_pid"
    deadline=$((SECONDS + 10))
    until [ "$(wc -l <"$work/echo.out")" -gt "$lines" ]; do
      [ $SECONDS -lt $deadline ] || die "fleetwes-ingest-echo did not report its counts"
      sleep 0.01
    done
    tail -n 1 "$work/echo.out" | sed -n 's/^acked=\([0-9]*\) streams=\([0-9]*\)$/\1 \2/p'
  }
  say "transport: fleetwes-loadgen with $transport_nodes nodes every ${transport_interval_ms}ms" \
    "against fleetwes-ingest-echo on 127.0.0.1:$echo_port; every stream open, then ${warmup}s" \
    "warm-up + ${duration}s measured"
  # Runs until stopped after the measured span; the drain is short: the offered load exceeds
  # what is acknowledged, so a backlog is expected.
  LD_PRELOAD="$preload" "$bin/fleetwes-loadgen" --target="127.0.0.1:$echo_port" --nodes="$transport_nodes" \
    --interval="${transport_interval_ms}ms" --duration=0 --drain_timeout=1s --log_level=warn \
    -o json >"$work/transport-loadgen.json" 2>"$work/transport-loadgen.log" &
  load_pid=$!
  # Opening many streams takes a while on a busy machine; the measured span starts after it.
  s0=$SECONDS
  deadline=$((SECONDS + 300))
  while read -r _ streams < <(echo_counts) && [ "$streams" -lt "$transport_nodes" ]; do
    kill -0 "$load_pid" 2>/dev/null || { cat "$work/transport-loadgen.log" >&2; die "the load generator exited early"; }
    [ $SECONDS -lt $deadline ] || { say "transport: only $streams streams open after 300 s; measuring anyway"; break; }
    sleep 1
  done
  open_s=$((SECONDS - s0))
  sleep "$warmup"
  kill -0 "$load_pid" 2>/dev/null || { cat "$work/transport-loadgen.log" >&2; die "the load generator exited early"; }
  read -r e0 _ < <(echo_counts); ea0=$(ticks "$echo_pid"); el0=$(ticks "$load_pid"); et0=$(date +%s.%N)
  sleep "$duration"
  read -r e1 streams < <(echo_counts); ea1=$(ticks "$echo_pid"); el1=$(ticks "$load_pid"); et1=$(date +%s.%N)
  # Closing thousands of backlogged streams can take long on a busy machine: its summary (ack
  # latency) is reported when it comes within 30 s; the measured figures do not depend on it.
  kill -TERM "$load_pid"
  deadline=$((SECONDS + 30))
  while kill -0 "$load_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -KILL "$load_pid" 2>/dev/null || true
  wait "$load_pid" 2>/dev/null || true
  load_pid=""
  kill -TERM "$echo_pid"
  wait "$echo_pid" 2>/dev/null || true
  echo_pid=""
fi

python3 - "$work/loadgen.json" "$a0" "$a1" "$p0" "$p1" "$r0" "$r1" "$t0" "$t1" "$c0" "$c1" \
  "$rows_total" "$hz" "$nodes" "$interval" "$f0" "$f1" "$l0" "$l1" "$transport" "$transport_nodes" \
  "$e0" "$e1" "$ea0" "$ea1" "$el0" "$el1" "$et0" "$et1" "$work/transport-loadgen.json" \
  "$transport_interval_ms" "$open_s" "$streams" <<'EOF'
import json, sys
load = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
a0, a1, p0, p1, r0, r1 = (int(x) for x in sys.argv[2:8])
t0, t1, c0, c1 = (float(x) for x in sys.argv[8:12])
rows_total, hz, nodes, interval = int(sys.argv[12]), int(sys.argv[13]), int(sys.argv[14]), int(sys.argv[15])
f0, f1 = int(sys.argv[16]), int(sys.argv[17])
l0, l1 = int(sys.argv[18]), int(sys.argv[19])
transport, transport_nodes = int(sys.argv[20]) == 1, int(sys.argv[21])
e0, e1, ea0, ea1, el0, el1 = (int(x) for x in sys.argv[22:28])
et0, et1 = float(sys.argv[28]), float(sys.argv[29])
transport_interval_ms, open_s, streams = (int(x) for x in sys.argv[31:34])
span = t1 - t0
rows_per_s = (r1 - r0) / span
frames_per_s = (f1 - f0) / span
ceiling = rows_total / (c1 - c0) if c1 > c0 else 0.0
agg_pct = 100.0 * (a1 - a0) / hz / span
pg_pct = 100.0 * (p1 - p0) / hz / span
load_pct = 100.0 * (l1 - l0) / hz / span
out = sys.stderr
print(f"offered: {nodes} nodes every {interval} s = {nodes / interval:.0f} frames/s", file=out)
print(f"acknowledged: {load['frames_acked']} of {load['frames_sent']} sent, "
      f"{load['acked_per_s']:.0f} frames/s over the load generator's {load['elapsed_s']:.0f} s; "
      f"ack p50 {load['ack_p50_ms']:.1f} ms, p99 {load['ack_p99_ms']:.1f} ms; "
      f"rejected {load['frames_rejected']}, resent {load['frames_resent']}", file=out)
print(f"persisted over the measured {span:.1f} s: {frames_per_s:.0f} frames/s, "
      f"{rows_per_s:.0f} rows/s (frames + model and device samples)", file=out)
# CPU per persisted frame: steadier than rates on a machine shared with other work.
agg_us = 1e6 * (a1 - a0) / hz / (f1 - f0) if f1 > f0 else 0.0
pg_us = 1e6 * (p1 - p0) / hz / (f1 - f0) if f1 > f0 else 0.0
load_us = 1e6 * (l1 - l0) / hz / (f1 - f0) if f1 > f0 else 0.0
print(f"CPU (share of one core): aggregator {agg_pct:.0f} %, PostgreSQL {pg_pct:.0f} %, "
      f"load generator {load_pct:.0f} %; per persisted frame: aggregator {agg_us:.0f} us, "
      f"PostgreSQL {pg_us:.0f} us, load generator {load_us:.0f} us", file=out)
print(f"ceiling: {rows_total} rows by psql \\copy in {c1 - c0:.2f} s = {ceiling:.0f} rows/s", file=out)
tr_fps = tr_server_us = tr_load_us = None
if transport:
    tr_span = et1 - et0
    tr_fps = (e1 - e0) / tr_span
    tr_server_us = 1e6 * (ea1 - ea0) / hz / (e1 - e0) if e1 > e0 else 0.0
    tr_load_us = 1e6 * (el1 - el0) / hz / (e1 - e0) if e1 > e0 else 0.0
    try:
        tr = json.loads(open(sys.argv[30]).read().strip().splitlines()[-1])
        tr_text = (f"ack p50 {tr['ack_p50_ms']:.1f} ms, p99 {tr['ack_p99_ms']:.1f} ms over its "
                   f"whole run; streams ended with an error {tr['disconnects']}")
    except (OSError, ValueError, IndexError, KeyError):
        tr_text = "the load generator's summary did not come within 30 s of its stop"
    print(f"transport: {transport_nodes} nodes every {transport_interval_ms} ms = "
          f"{transport_nodes * 1000 / transport_interval_ms:.0f} frames/s offered to "
          f"fleetwes-ingest-echo, {streams} streams open ({open_s} s to open them all); "
          f"acknowledged over the measured {tr_span:.1f} s: {tr_fps:.0f} frames/s; CPU (share of "
          f"one core): echo server {100.0 * (ea1 - ea0) / hz / tr_span:.0f} %, load generator "
          f"{100.0 * (el1 - el0) / hz / tr_span:.0f} %; per acknowledged frame: echo server "
          f"{tr_server_us:.0f} us, load generator {tr_load_us:.0f} us; {tr_text}", file=out)
print(json.dumps({
    "frames_per_s": round(frames_per_s, 1),
    "ack_p50_ms": round(load["ack_p50_ms"], 2),
    "ack_p99_ms": round(load["ack_p99_ms"], 2),
    "rows_per_s": round(rows_per_s, 1),
    "copy_ceiling_rows_per_s": round(ceiling, 1),
    "ratio": round(rows_per_s / ceiling, 3) if ceiling > 0 else None,
    "nodes": nodes,
    "interval_s": interval,
    "aggregator_cpu_pct": round(agg_pct, 1),
    "postgres_cpu_pct": round(pg_pct, 1),
    "loadgen_cpu_pct": round(load_pct, 1),
    "aggregator_cpu_us_per_frame": round(agg_us, 1),
    "postgres_cpu_us_per_frame": round(pg_us, 1),
    "loadgen_cpu_us_per_frame": round(load_us, 1),
    "transport_nodes": transport_nodes if transport else None,
    "transport_interval_ms": transport_interval_ms if transport else None,
    "transport_frames_per_s": round(tr_fps, 1) if transport else None,
    "transport_server_cpu_us_per_frame": round(tr_server_us, 1) if transport else None,
    "transport_loadgen_cpu_us_per_frame": round(tr_load_us, 1) if transport else None,
}))
EOF
