# Shared by the benchmark scripts (sourced, not run): messages, option checks, the Release build,
# free ports and waiting for a server. The script sets bench_name before sourcing this file.

bench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$bench_name" "$*" >&2; exit 1; }

# need_number OPTION VALUE MIN: exits 2 unless VALUE is a whole number >= MIN.
need_number() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ]; then
    printf '%s: %s needs a whole number >= %s (see --help)\n' "$bench_name" "$1" "$3" >&2
    exit 2
  fi
}

# bench_build BUILD_DIR SKIP TARGET...: configures and builds TARGETs (Release, no sanitizers)
# unless SKIP is 1, then checks that every executable target is in BUILD_DIR/bin.
bench_build() {
  local build=$1 skip=$2
  shift 2
  if [ "$skip" -eq 0 ]; then
    say "build (Release, no sanitizers) in $build"
    cmake -S "$bench_root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLEETWES_BUILD_TESTS=ON \
      -DFLEETWES_BUILD_BENCH=ON -DFLEETWES_SANITIZE=OFF >/dev/null
    cmake --build "$build" -j2 --target "$@" >/dev/null
  fi
  local t
  for t in "$@"; do
    case "$t" in fleetwes-*) [ -x "$build/bin/$t" ] || die "$build/bin/$t is missing (drop --skip-build)" ;; esac
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_healthy URL PID LOG SECONDS: until URL answers 2xx; dies with the end of LOG if PID exits.
wait_healthy() {
  local deadline=$((SECONDS + $4))
  until curl -fsS "$1" >/dev/null 2>&1; do
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "the process behind $1 exited"; }
    [ $SECONDS -lt $deadline ] || die "$1 not healthy after $4 s"
    sleep 0.05
  done
}

# bench_database DIR [-c name=value ...]: a private PostgreSQL in DIR (deploy/pg-private.sh) with
# an empty database "fleetwes". Sets pg_port and db_url; psql_db runs psql on that database.
bench_database() {
  local dir=$1
  shift
  say "private PostgreSQL in $dir"
  local cluster
  cluster=$("$bench_root/deploy/pg-private.sh" start "$dir" "$@")
  pg_port=$(cat "$dir/port")
  psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE fleetwes" >/dev/null
  db_url="${cluster%/postgres}/fleetwes"
}
psql_db() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d fleetwes "$@"; }

# aggregator_config FILE [EXTRA_YAML]: an aggregator config on free loopback ports for db_url.
# Sets grpc_port and http_port.
aggregator_config() {
  grpc_port=$(free_port)
  http_port=$(free_port)
  printf 'grpc_listen: "127.0.0.1:%s"\nhttp_listen: "127.0.0.1:%s"\ndatabase:\n  url: "%s"\n%s' \
    "$grpc_port" "$http_port" "$db_url" "${2:-}" >"$1"
}
