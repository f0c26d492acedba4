#!/usr/bin/env bash
# bench/agent_overhead: what fleetwes-agent costs a node, next to prometheus-node-exporter.
#
#   bench/agent_overhead/run.sh                    120 s measurement (after a 10 s warm-up)
#   bench/agent_overhead/run.sh --duration 300     longer run
#
# Runs, on this machine: replaying engines (llama.cpp, vLLM and, when the build has it, Ollama;
# SGLang otherwise), a fake hardware tree (a RAPL package with DRAM, a thermal zone) and a fake
# libnvidia-ml.so with 8 GPUs loaded by the agent's real NVML loader, an ingest sink that
# acknowledges every frame, and fleetwes-agent at a 2 s interval. In the same run
# prometheus-node-exporter (Debian package; installed when missing) runs with its default
# collectors and is scraped every 2 s. CPU time comes from /proc/PID/stat (utime + stime) over
# the measured span, peak RSS from VmHWM, PSS and anonymous memory from smaps_rollup at the end,
# wake-ups from the context switches of the agent's threads over the span. Ends with one JSON line:
#   {"agent_cpu_pct":..,"agent_rss_mb":..,"node_exporter_cpu_pct":..,"node_exporter_rss_mb":..,
#    "cpu_ratio":..,"agent_pss_mb":..,"agent_anon_mb":..,"agent_wakeups_per_s":..,
#    "agent_threads":..}
# cpu_pct is the average share of one core; cpu_ratio = agent / node_exporter.
set -Eeuo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<'EOF'

options:
  --duration SECONDS   measured span (default 120)
  --warmup SECONDS     run before measuring (default 10)
  --interval SECONDS   agent sampling interval (default 2)
  --gpus N             fake NVIDIA GPUs (default 8)
  --build DIR          build directory (default build/bench; configured and built when needed,
                       Release, no sanitizers)
  --skip-build         use the binaries already in --build
  -h, --help           this help
EOF
}

bench_name=agent_overhead
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
root=$bench_root
duration=120
warmup=10
interval=2
gpus=8
build="$root/build/bench"
skip_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) need_number "$1" "${2:-}" 1; duration=$2; shift ;;
    --warmup) need_number "$1" "${2:-}" 0; warmup=$2; shift ;;
    --interval) need_number "$1" "${2:-}" 1; interval=$2; shift ;;
    --gpus) need_number "$1" "${2:-}" 1; [ "$2" -le 64 ] || die "--gpus: at most 64"; gpus=$2; shift ;;
    --build) [ -n "${2:-}" ] || die "--build needs a directory"; build=$(realpath -m "$2"); shift ;;
    --skip-build) skip_build=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "agent_overhead: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bin="$build/bin"
bench_build "$build" "$skip_build" fleetwes-agent fleetwes-replay-engine fleetwes-ingest-sink \
  fleetwes_fake_nvml
fake_nvml=$(find "$build" -path '*fake_nvml/libnvidia-ml.so' | head -n 1)
[ -n "$fake_nvml" ] || die "the fake libnvidia-ml.so is missing under $build"

node_exporter=$(command -v prometheus-node-exporter || true)
if [ -z "$node_exporter" ]; then
  say "installing prometheus-node-exporter (Debian package)"
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      prometheus-node-exporter >/dev/null
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      prometheus-node-exporter >/dev/null
  fi
  # The package starts a system service; this run starts its own instance.
  systemctl stop prometheus-node-exporter 2>/dev/null || true
  node_exporter=$(command -v prometheus-node-exporter) || die "prometheus-node-exporter not installed"
fi

# --- the fleet of one node -----------------------------------------------------------------------
work=$(mktemp -d /tmp/fleetwes-agent-overhead.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "agent_overhead: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

wait_file() {  # wait_file PATH SECONDS
  local deadline=$((SECONDS + $2))
  until [ -s "$1" ]; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $1"
    sleep 0.1
  done
}

hw="$work/hw"
mkdir -p "$hw/sys/class/thermal/thermal_zone0" "$hw/proc"
printf 'x86_pkg_temp\n' >"$hw/sys/class/thermal/thermal_zone0/type"
printf '61000\n' >"$hw/sys/class/thermal/thermal_zone0/temp"
printf '100000\n' >"$hw/sys/class/thermal/thermal_zone0/trip_point_0_temp"
printf 'critical\n' >"$hw/sys/class/thermal/thermal_zone0/trip_point_0_type"
for f in stat meminfo vmstat; do cp "/proc/$f" "$hw/proc/$f"; done

scenario="$work/nvml.scenario"
for i in $(seq 0 $((gpus - 1))); do
  printf 'gpu%d name=NVIDIA-L4 power_mw=%d energy_mj=%d temp=%d slowdown=90 gpumax=95 clock=1800 clock_max=2040 mask=0 mem_total=24000000000 mem_used=%d\n' \
    "$i" $((60000 + i * 1000)) $((1000000 + i)) $((55 + i)) $((12000000000 + i * 100000000))
done >"$scenario"

say "ingest sink, engines, agent"
"$bin/fleetwes-ingest-sink" --port_file="$work/sink.port" >"$work/sink.log" 2>&1 &
pids+=($!)
wait_file "$work/sink.port" 10

# --help exits 1 (absl): capture it first, so that pipefail does not turn a match into a miss.
engine_help=$("$bin/fleetwes-replay-engine" --help 2>&1 || true)
engine_kinds=(llamacpp vllm)
if grep -q ollama <<<"$engine_help"; then
  engine_kinds+=(ollama)
else
  engine_kinds+=(sglang)
fi
declare -A engine_port
first=1
for kind in "${engine_kinds[@]}"; do
  rapl=()
  if [ $first -eq 1 ]; then rapl=(--rapl_root="$hw" --watts=95); first=0; fi
  # Idle connections stay open 5 s, as llama-server and uvicorn (vLLM, SGLang) keep them, so the
  # agent reuses its connection from one tick to the next as it does against real engines.
  keep_alive=()
  if grep -q keep_alive_s <<<"$engine_help"; then
    keep_alive=(--keep_alive_s=5)
  fi
  "$bin/fleetwes-replay-engine" --kind="$kind" --port_file="$work/$kind.port" \
    --tokens_per_s=80 "${rapl[@]}" "${keep_alive[@]}" >"$work/$kind.log" 2>&1 &
  pids+=($!)
  wait_file "$work/$kind.port" 10
  engine_port[$kind]=$(cat "$work/$kind.port")
done

{
  printf 'node_id: bench-node\naggregators: ["127.0.0.1:%s"]\ninterval: %ss\n' \
    "$(cat "$work/sink.port")" "$interval"
  printf 'hardware:\n  root: %s\n  nvml_library: %s\n' "$hw" "$fake_nvml"
  printf 'spool:\n  dir: %s/spool\n' "$work"
  printf 'engines:\n'
  for kind in "${engine_kinds[@]}"; do
    printf '  - name: %s\n    kind: %s\n    url: http://127.0.0.1:%s\n' "$kind" "$kind" \
      "${engine_port[$kind]}"
  done
} >"$work/agent.yaml"
if grep -q 7472 <<<"$("$bin/fleetwes-agent" --help 2>&1 || true)"; then
  # Keep the agent's local HTTP on a free port so a running agent on this host does not clash.
  printf 'http:\n  listen: 127.0.0.1:%s\n' "$(free_port)" >>"$work/agent.yaml"
fi
"$bin/fleetwes-agent" --config="$work/agent.yaml" --check-config >/dev/null ||
  die "agent config rejected: $("$bin/fleetwes-agent" --config="$work/agent.yaml" --check-config 2>&1)"
FLEETWES_FAKE_NVML_SCENARIO="$scenario" FLEETWES_FAKE_NVML_STATIC=1 "$bin/fleetwes-agent" --config="$work/agent.yaml" \
  >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)

ne_port=$(free_port)
"$node_exporter" --web.listen-address="127.0.0.1:$ne_port" >"$work/node_exporter.log" 2>&1 &
ne_pid=$!
pids+=($ne_pid)
(
  while sleep "$interval"; do
    curl -s -o /dev/null "http://127.0.0.1:$ne_port/metrics" || true
  done
) &
pids+=($!)

say "warm-up ${warmup}s, then measuring ${duration}s"
sleep "$warmup"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Context switches (voluntary + involuntary) summed over the process's threads: each is a wake-up.
ctx_switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
for p in $agent_pid $ne_pid; do
  kill -0 "$p" 2>/dev/null || die "process $p exited early; see $work/*.log"
done
a0=$(cpu_ticks $agent_pid)
n0=$(cpu_ticks $ne_pid)
w0=$(ctx_switches $agent_pid)
t0=$(date +%s.%N)
sleep "$duration"
a1=$(cpu_ticks $agent_pid)
n1=$(cpu_ticks $ne_pid)
w1=$(ctx_switches $agent_pid)
t1=$(date +%s.%N)
agent_pss=$(awk '/^Pss:/ { print $2 }' "/proc/$agent_pid/smaps_rollup")
agent_anon=$(awk '/^Anonymous:/ { print $2 }' "/proc/$agent_pid/smaps_rollup")
agent_threads=$(ls "/proc/$agent_pid/task" | wc -l)
agent_hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")
ne_hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$ne_pid/status")
hz=$(getconf CLK_TCK)
# The sink prints how many frames it acknowledged when it stops: proof the uplink was live.
sink_pid=${pids[0]}
kill -TERM "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
acked=$(awk '/frames acknowledged:/ { print $3 }' "$work/sink.log")
say "frames acknowledged by the sink: ${acked:-0}"
[ "${acked:-0}" -gt 0 ] || die "the agent delivered no frames; see $work/agent.log"

python3 - "$a0" "$a1" "$n0" "$n1" "$t0" "$t1" "$hz" "$agent_hwm" "$ne_hwm" "${#engine_kinds[@]}" \
  "$gpus" "$w0" "$w1" "$agent_pss" "$agent_anon" "$agent_threads" <<'EOF'
import json, sys
a0, a1, n0, n1 = (int(x) for x in sys.argv[1:5])
t0, t1 = float(sys.argv[5]), float(sys.argv[6])
hz = int(sys.argv[7])
agent_kb, ne_kb = int(sys.argv[8]), int(sys.argv[9])
w0, w1, pss_kb, anon_kb, threads = (int(x) for x in sys.argv[12:17])
span = t1 - t0
agent_s = (a1 - a0) / hz
ne_s = (n1 - n0) / hz
agent_pct = 100.0 * agent_s / span
ne_pct = 100.0 * ne_s / span
print(f"span {span:.1f} s, {sys.argv[10]} engines, {sys.argv[11]} GPUs", file=sys.stderr)
print(f"fleetwes-agent:           {agent_s:.2f} CPU s, {agent_pct:.3f} % of one core, "
      f"peak RSS {agent_kb / 1024:.1f} MB", file=sys.stderr)
print(f"                          PSS {pss_kb / 1024:.1f} MB, anonymous {anon_kb / 1024:.1f} MB, "
      f"{threads} threads, {(w1 - w0) / span:.1f} wake-ups/s", file=sys.stderr)
print(f"prometheus-node-exporter: {ne_s:.2f} CPU s, {ne_pct:.3f} % of one core, "
      f"peak RSS {ne_kb / 1024:.1f} MB", file=sys.stderr)
print(json.dumps({
    "agent_cpu_pct": round(agent_pct, 4),
    "agent_rss_mb": round(agent_kb / 1024, 2),
    "node_exporter_cpu_pct": round(ne_pct, 4),
    "node_exporter_rss_mb": round(ne_kb / 1024, 2),
    "cpu_ratio": round(agent_pct / ne_pct, 4) if ne_pct > 0 else None,
    "agent_pss_mb": round(pss_kb / 1024, 2),
    "agent_anon_mb": round(anon_kb / 1024, 2),
    "agent_wakeups_per_s": round((w1 - w0) / span, 2),
    "agent_threads": threads,
}))
EOF
