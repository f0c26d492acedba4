#!/usr/bin/env bash
# fleetwes quickstart: builds everything and runs a complete fleet on this machine.
#
#   deploy/quickstart.sh              run until Ctrl-C, showing the live leaderboard
#   deploy/quickstart.sh --for 60     run 60 seconds, print the final leaderboard, exit
#
# Starts, under ./.fleetwes/: a private PostgreSQL 15 (pg/), fleetwes-aggregator, a replayed
# llama.cpp engine with a fleetwes-agent for this host, and fleetwes-loadgen simulating a fleet
# of 12 nodes. Logs go to .fleetwes/logs/. Ctrl-C (or the end of --for) stops everything.
set -Eeuo pipefail

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<'EOF'

options:
  --for SECONDS      run that long, print the final leaderboard and exit 0
  --nodes N          simulated nodes (default 12)
  --grpc-port PORT   aggregator gRPC port (default 7470)
  --http-port PORT   aggregator HTTP port for /metrics and /healthz (default 7471)
  --skip-deps        do not run deploy/install-deps.sh
  --skip-build       use the binaries already in build/quickstart
  -h, --help         this help

Then, in another terminal:
  build/quickstart/bin/fleetwesctl leaderboard
  build/quickstart/bin/fleetwesctl route --model=meta-llama/Llama-3.1-8B-Instruct
  curl -s localhost:7471/metrics | grep fleetwes_
EOF
}

run_for=0
nodes=12
grpc_port=7470
http_port=7471
skip_deps=0
skip_build=0
is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
while [ $# -gt 0 ]; do
  case "$1" in
    --for) is_number "${2:-}" && [ "$2" -gt 0 ] || { echo "quickstart: --for needs a number of seconds" >&2; exit 2; }
           run_for=$2; shift ;;
    --nodes) is_number "${2:-}" && [ "$2" -gt 0 ] || { echo "quickstart: --nodes needs a positive number" >&2; exit 2; }
             nodes=$2; shift ;;
    --grpc-port) is_number "${2:-}" || { echo "quickstart: --grpc-port needs a port number" >&2; exit 2; }
                 grpc_port=$2; shift ;;
    --http-port) is_number "${2:-}" || { echo "quickstart: --http-port needs a port number" >&2; exit 2; }
                 http_port=$2; shift ;;
    --skip-deps) skip_deps=1 ;;
    --skip-build) skip_build=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "quickstart: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
state="$root/.fleetwes"
logs="$state/logs"
run="$state/run"
build="$root/build/quickstart"
bin="$build/bin"
say() { printf '==> %s\n' "$*"; }
trap 'echo "quickstart: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$grpc_port" "$http_port"; do
  if port_in_use "$p"; then
    die "port $p is already in use (another fleetwes-aggregator or quickstart?). Stop it, or pick other ports with --grpc-port/--http-port."
  fi
done
[ "$grpc_port" != "$http_port" ] || die "--grpc-port and --http-port must differ"

# --- dependencies and build -------------------------------------------------------------------
if [ "$skip_deps" -eq 0 ]; then
  say "dependencies (deploy/install-deps.sh)"
  deploy/install-deps.sh
fi
targets=(fleetwes-aggregator fleetwes-agent fleetwes-replay-engine fleetwesctl fleetwes-loadgen)
if [ "$skip_build" -eq 0 ]; then
  say "build (Release, build/quickstart; the first build takes a few minutes)"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLEETWES_BUILD_TESTS=ON >/dev/null
  cmake --build "$build" -j2 --target "${targets[@]}"
fi
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || die "$bin/$t is missing; run without --skip-build"
done

mkdir -p "$logs" "$run"

# --- process bookkeeping: every child is started in its own session and stopped by pid -------
pids=()
names=()
pg_bindir=""
pg_data=""
pg_started=0
as_pg=()
stopping=0

pg_run() {
  if [ ${#as_pg[@]} -eq 0 ]; then (cd "$pg_root" && "$@"); else (cd "$pg_root" && "${as_pg[@]}" "$@"); fi
}

stop_all() {
  [ "$stopping" -eq 0 ] || return 0
  stopping=1
  trap '' INT TERM
  [ -z "${watch_pid:-}" ] || kill "$watch_pid" 2>/dev/null || true
  echo
  say "stopping"
  local i
  # Reverse start order: load first, database last.
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    local pid=${pids[$i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      local waited=0
      while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
      if kill -0 "$pid" 2>/dev/null; then
        echo "  ${names[$i]} (pid $pid) did not stop in 10s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      wait "$pid" 2>/dev/null || true
      echo "  stopped ${names[$i]}"
    fi
  done
  if [ "$pg_started" -eq 1 ]; then
    pg_run "$pg_bindir/pg_ctl" -D "$pg_data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    echo "  stopped PostgreSQL"
  fi
}
on_exit() {
  local rc=$?
  stop_all
  exit $rc
}
trap on_exit EXIT
trap 'exit 0' INT TERM

# start NAME LOGFILE CMD...: runs CMD in the background in its own session (so a Ctrl-C reaches
# only this script, which then stops the children in order). Each run starts a fresh log.
start() {
  local name=$1 logfile=$2
  shift 2
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  pids+=($!)
  names+=("$name")
}

# check_alive NAME PID: fails with the end of the log if the process has exited.
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "quickstart: ${names[$i]} exited unexpectedly; the end of $logs/${names[$i]}.log:" >&2
      tail -n 20 "$logs/${names[$i]}.log" >&2 || true
      return 1
    fi
  done
}

# --- PostgreSQL -------------------------------------------------------------------------------
for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
  if [ -x "$d/initdb" ]; then pg_bindir="$d"; break; fi
done
[ -n "$pg_bindir" ] || die "PostgreSQL server binaries not found; install postgresql-15 (deploy/install-deps.sh)"

pg_root="$state/pg"
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(runuser -u postgres --)
  mkdir -p "$pg_root"
  chown postgres:postgres "$pg_root"
  if ! runuser -u postgres -- test -w "$pg_root"; then
    # A parent directory is closed to other users (a checkout under /root, for instance).
    fallback="/var/tmp/fleetwes-quickstart-pg-$(printf '%s' "$root" | md5sum | cut -c1-12)"
    mkdir -p "$fallback"
    chown postgres:postgres "$fallback"
    echo "note: the postgres user cannot reach $pg_root; the database and its log live in $fallback"
    pg_root="$fallback"
  fi
else
  mkdir -p "$pg_root"
fi
pg_data="$pg_root/data"
pg_log="$logs/postgres.log"
[ "$pg_root" = "$state/pg" ] || pg_log="$pg_root/postgres.log"
touch "$pg_log"
[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$pg_log"

if [ ! -s "$pg_data/PG_VERSION" ]; then
  say "PostgreSQL: initdb in $pg_data"
  pg_run "$pg_bindir/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 >"$logs/initdb.log" 2>&1 ||
    { tail -n 20 "$logs/initdb.log" >&2; die "initdb failed (see $logs/initdb.log)"; }
fi
if pg_run "$pg_bindir/pg_ctl" -D "$pg_data" status >/dev/null 2>&1; then
  die "a PostgreSQL from an earlier quickstart is still running on $pg_data; stop it with: ${as_pg[*]} $pg_bindir/pg_ctl -D $pg_data stop"
fi
pg_port=""
for candidate in 54329 54339 54349 $(( 20000 + RANDOM % 30000 )) $(( 20000 + RANDOM % 30000 )); do
  port_in_use "$candidate" || { pg_port=$candidate; break; }
done
[ -n "$pg_port" ] || die "no free port for PostgreSQL"
socket_opt="-k $pg_root"
[ ${#pg_root} -lt 90 ] || socket_opt="-c unix_socket_directories="
say "PostgreSQL on 127.0.0.1:$pg_port"
pg_run "$pg_bindir/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t 60 \
  -o "-p $pg_port $socket_opt -c listen_addresses=127.0.0.1" start >/dev/null ||
  { tail -n 20 "$pg_log" >&2; die "PostgreSQL did not start (see $pg_log)"; }
pg_started=1
db_url="postgresql://postgres@127.0.0.1:$pg_port/fleetwes"
if ! psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'fleetwes'" | grep -q 1; then
  psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qc "CREATE DATABASE fleetwes" >/dev/null
fi

# --- fleetwes-aggregator ----------------------------------------------------------------------
cat >"$run/aggregator.yaml" <<EOF
# Written by deploy/quickstart.sh.
grpc_listen: "127.0.0.1:$grpc_port"
http_listen: "127.0.0.1:$http_port"
database:
  url: "$db_url"
EOF
say "fleetwes-aggregator on 127.0.0.1:$grpc_port (gRPC) and 127.0.0.1:$http_port (HTTP)"
start aggregator "$logs/aggregator.log" "$bin/fleetwes-aggregator" --config "$run/aggregator.yaml"
deadline=$(( $(date +%s) + 60 ))
until curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; do
  check_alive || die "fleetwes-aggregator did not start"
  [ "$(date +%s)" -lt "$deadline" ] || die "fleetwes-aggregator not healthy after 60s (see $logs/aggregator.log)"
  sleep 0.2
done

# --- a replayed llama.cpp engine and the agent for this host --------------------------------
rm -f "$run/engine.port"
say "fleetwes-replay-engine (llama.cpp replay)"
start engine "$logs/engine.log" "$bin/fleetwes-replay-engine" --kind=llamacpp --port=0 \
  --port_file="$run/engine.port" --tokens_per_s=45
deadline=$(( $(date +%s) + 30 ))
until [ -s "$run/engine.port" ]; do
  check_alive || die "fleetwes-replay-engine did not start"
  [ "$(date +%s)" -lt "$deadline" ] || die "fleetwes-replay-engine wrote no port file in 30s"
  sleep 0.1
done
engine_port=$(cat "$run/engine.port")
host_id=$(hostname 2>/dev/null | tr -c 'A-Za-z0-9._:\n-' '-' | cut -c1-100 || true)
[ -n "$host_id" ] || host_id=localhost
cat >"$run/agent.yaml" <<EOF
# Written by deploy/quickstart.sh: this host, with a replayed llama.cpp server as its engine.
node_id: "$host_id"
labels:
  source: quickstart
aggregators: ["127.0.0.1:$grpc_port"]
interval: 2s
engines:
  - name: llamacpp
    kind: llamacpp
    url: "http://127.0.0.1:$engine_port"
hardware:
  root: /
spool:
  dir: "$state/spool"
EOF
say "fleetwes-agent for this host ($host_id)"
start agent "$logs/agent.log" "$bin/fleetwes-agent" --config "$run/agent.yaml"

# --- the simulated fleet ----------------------------------------------------------------------
say "fleetwes-loadgen: $nodes simulated nodes"
start loadgen "$logs/loadgen.log" "$bin/fleetwes-loadgen" --target="127.0.0.1:$grpc_port" \
  --nodes="$nodes" --interval=2s

ctl=("$bin/fleetwesctl" --server="127.0.0.1:$grpc_port" --timeout=3s)
echo
echo "fleetwes is running. Logs: $logs/"
echo "  ${ctl[*]} leaderboard"
echo "  ${ctl[*]} route --model=meta-llama/Llama-3.1-8B-Instruct"
echo "  curl -s 127.0.0.1:$http_port/metrics | grep ^fleetwes_"
echo

# --- the live leaderboard ---------------------------------------------------------------------
started=$(date +%s)
if [ "$run_for" -gt 0 ]; then
  echo "running for ${run_for}s"
  next_note=$(( started + 10 ))
  while [ $(( $(date +%s) - started )) -lt "$run_for" ]; do
    check_alive || exit 1
    if [ "$(date +%s)" -ge "$next_note" ]; then
      ranked=$("${ctl[@]}" leaderboard -o json 2>/dev/null | grep -o '"rank":[1-9]' | wc -l || true)
      echo "  $(( $(date +%s) - started ))s: $ranked nodes ranked"
      next_note=$(( next_note + 10 ))
    fi
    sleep 1
  done
  check_alive || exit 1
  echo
  "${ctl[@]}" leaderboard || die "fleetwesctl could not read the leaderboard"
  stop_all
  echo
  sed -n '/^fleetwes-loadgen: /,$p' "$logs/loadgen.log"
  exit 0
fi

echo "The live leaderboard follows (fleetwesctl leaderboard --watch: redrawn as it changes,"
echo "rank moves highlighted). Ctrl-C stops everything; logs are in $logs/."
sleep 2
# The watch runs beside a liveness check of every component; whichever ends first ends the run.
"${ctl[@]}" leaderboard --watch &
watch_pid=$!
while kill -0 "$watch_pid" 2>/dev/null; do
  check_alive || exit 1
  sleep 1
done
wait "$watch_pid" || die "fleetwesctl leaderboard --watch ended (status $?)"
