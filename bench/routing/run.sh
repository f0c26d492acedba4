#!/usr/bin/env bash
# bench/routing: Router.Pick QPS at saturation, Pick p50/p99 at half that rate (open loop) and
# the trivial unary call's QPS (grpc.health.v1.Health/Check), on one gRPC server on loopback
# over a fleet filled in memory (fleetwes-routing-bench; see its header comment).
#
#   bench/routing/run.sh                          10000 nodes x 50 models, 3 models per node
#   bench/routing/run.sh --mode one --outstanding 32
#   bench/routing/run.sh --churn                  also p50/p99 while every node reports each 2 s
#
# Ends with the program's JSON line plus the machine's load average at the end:
#   {"pick_qps":..,"pick_p50_us":..,"pick_p99_us":..,"trivial_qps":..,"trivial_p99_us":..,
#    "ratio":..,"load1":..} (with --churn also churn_p50_us, churn_p99_us, churn_frames_per_s)
# Targets: ratio >= 0.8, pick_p99_us <= 1000.
set -Eeuo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<'EOF2'

options:
  --nodes N              nodes (default 10000)
  --models N             models in the fleet (default 50)
  --models-per-node N    models on each node (default 3)
  --outstanding N        calls in flight at saturation (default 64)
  --duration N           seconds per phase (default 5)
  --mode ranked|one      Pick mode (default ranked)
  --churn                also measure p50/p99 at the same rate while each fresh node's frame is
                         applied again every 2 s (the route tables change all the time)
  --table-refresh-ms N   the router's table refresh period (default 500, the service's; 0: rebuilt
                         by calls)
  --router-threads N     the router's completion-queue threads (router.threads; default: the
                         service's default, 1; 0: the callback service on gRPC's threads)
  --client process|thread  the load client in a process of its own (default) or in the
                         server's process
  --build DIR            build directory (default build/bench; configured and built when needed)
  --skip-build           use the binaries already in --build
  -h, --help             this help
EOF2
}

bench_name=routing
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
root=$bench_root
nodes=10000
models=50
per_node=3
outstanding=64
duration=5
mode=ranked
churn=false
table_refresh_ms=500
router_threads=-1
client=process
build="$root/build/bench"
skip_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) need_number "$1" "${2:-}" 1; nodes=$2; shift ;;
    --models) need_number "$1" "${2:-}" 1; models=$2; shift ;;
    --models-per-node) need_number "$1" "${2:-}" 1; per_node=$2; shift ;;
    --outstanding) need_number "$1" "${2:-}" 1; outstanding=$2; shift ;;
    --duration) need_number "$1" "${2:-}" 1; duration=$2; shift ;;
    --mode) case "${2:-}" in ranked|one) mode=$2 ;; *) die "--mode needs ranked or one" ;; esac; shift ;;
    --churn) churn=true ;;
    --table-refresh-ms) need_number "$1" "${2:-}" 0; table_refresh_ms=$2; shift ;;
    --router-threads) need_number "$1" "${2:-}" 0; router_threads=$2; shift ;;
    --client) case "${2:-}" in process|thread) client=$2 ;; *) die "--client needs process or thread" ;; esac; shift ;;
    --build) [ -n "${2:-}" ] || die "--build needs a directory"; build=$(realpath -m "$2"); shift ;;
    --skip-build) skip_build=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "routing: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bench_build "$build" "$skip_build" fleetwes-routing-bench

say "uptime before: $(uptime)"
line=$("$build/bin/fleetwes-routing-bench" --nodes="$nodes" --models="$models" \
  --models_per_node="$per_node" --outstanding="$outstanding" --duration_s="$duration" --mode="$mode" \
  --churn="$churn" --table_refresh_ms="$table_refresh_ms" --router_threads="$router_threads" \
  --client="$client")
load1=$(cut -d' ' -f1 /proc/loadavg)
say "uptime after: $(uptime)"
printf '%s\n' "${line%\}},\"load1\":$load1}"
