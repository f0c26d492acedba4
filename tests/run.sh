#!/usr/bin/env bash
# Builds fleetwes with its tests and runs them against a throwaway PostgreSQL 15.
#
#   tests/run.sh                 ASan + UBSan build in build/test, every test except benchmarks
#   tests/run.sh --no-sanitize   plain build in build/test-nosan
#   tests/run.sh -- -L unit      extra arguments after -- go to ctest
#
# Works as root (PostgreSQL then runs as the `postgres` user, initdb refuses root) and as a normal
# user. The database lives in a temporary directory and is stopped and removed on any exit.
set -euo pipefail

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<'EOF'

options:
  --no-sanitize   build without AddressSanitizer/UndefinedBehaviorSanitizer (build/test-nosan)
  --skip-deps     do not run deploy/install-deps.sh
  -h, --help      this help
EOF
}

sanitize=ON
build_dir=build/test
skip_deps=0
ctest_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-sanitize) sanitize=OFF; build_dir=build/test-nosan ;;
    --skip-deps) skip_deps=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ctest_extra=("$@"); break ;;
    *) echo "tests/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started=$(date +%s)
log() { printf '\n==> %s\n' "$*"; }

# --- dependencies -----------------------------------------------------------------------------
if [ "$skip_deps" -eq 0 ]; then
  log "dependencies (deploy/install-deps.sh)"
  deploy/install-deps.sh
fi

# --- sanitizer settings (also used by test discovery during the build) ------------------------
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:print_stacktrace=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"

# --- build -------------------------------------------------------------------------------------
build_failed() {
  echo
  echo "================================ fleetwes tests ================================"
  echo "build:        $build_dir (sanitizers $sanitize)"
  echo "result:       FAILED: $1 (see the compiler output above)"
  echo "================================================================================"
  exit 1
}
log "configure $build_dir (sanitizers $sanitize)"
# -O1 -g1: what the sanitizers' documentation recommends, line tables for their stack traces,
# and half the compile time of -O2 -g.
cmake -S . -B "$build_dir" -DFLEETWES_BUILD_TESTS=ON -DFLEETWES_SANITIZE="$sanitize" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" >/dev/null || build_failed "cmake configure"
log "build $build_dir (-j2)"
cmake --build "$build_dir" -j2 || build_failed "build"

# --- throwaway PostgreSQL ----------------------------------------------------------------------
pg_bindir=""
for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
  if [ -x "$d/initdb" ]; then pg_bindir="$d"; break; fi
done
if [ -z "$pg_bindir" ]; then
  if command -v initdb >/dev/null; then pg_bindir="$(dirname "$(command -v initdb)")"; else
    echo "tests/run.sh: PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql-15" >&2
    exit 1
  fi
fi

as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # /tmp, not $TMPDIR: the postgres user must be able to reach the directory.
  pg_dir="$(mktemp -d /tmp/fleetwes-test-pg.XXXXXX)"
  chown postgres:postgres "$pg_dir"
  if command -v runuser >/dev/null; then as_pg=(runuser -u postgres --); else as_pg=(su postgres -s /bin/sh -c); fi
else
  pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/fleetwes-test-pg.XXXXXX")"
fi
# Runs a PostgreSQL tool as the database owner, from a directory it can read.
pg_run() {
  if [ ${#as_pg[@]} -eq 0 ]; then (cd "$pg_dir" && "$@");
  elif [ "${as_pg[0]}" = "runuser" ]; then (cd "$pg_dir" && "${as_pg[@]}" "$@");
  else (cd "$pg_dir" && "${as_pg[@]}" "$(printf '%q ' "$@")"); fi
}
pg_started=0
cleanup() {
  local rc=$?
  if [ "$pg_started" -eq 1 ]; then
    pg_run "$pg_bindir/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_dir"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log "PostgreSQL ($pg_bindir) in $pg_dir"
pg_run "$pg_bindir/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$pg_dir/initdb.log" 2>&1 || {
  cat "$pg_dir/initdb.log" >&2; echo "tests/run.sh: initdb failed" >&2; exit 1; }
pg_port=""
for attempt in 1 2 3 4 5 6 7 8; do
  candidate=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
  port_in_use "$candidate" && continue
  if pg_run "$pg_bindir/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
      -o "-p $candidate -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null 2>&1; then
    pg_port=$candidate
    pg_started=1
    break
  fi
done
if [ -z "$pg_port" ]; then
  cat "$pg_dir/postgres.log" >&2 || true
  echo "tests/run.sh: could not start PostgreSQL" >&2
  exit 1
fi
export FLEETWES_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
echo "PostgreSQL on 127.0.0.1:$pg_port (FLEETWES_TEST_DATABASE_URL=$FLEETWES_TEST_DATABASE_URL)"

# --- tests -------------------------------------------------------------------------------------
log "ctest -j2 -LE bench ${ctest_extra[*]:-}"
set +e
ctest --test-dir "$build_dir" --output-on-failure -j2 -LE bench --timeout 600 "${ctest_extra[@]}"
rc=$?
set -e

elapsed=$(( $(date +%s) - started ))
echo
echo "================================ fleetwes tests ================================"
echo "build:        $build_dir (sanitizers $sanitize)"
echo "database:     throwaway PostgreSQL on 127.0.0.1:$pg_port"
echo "duration:     ${elapsed}s"
failed_log="$build_dir/Testing/Temporary/LastTestsFailed.log"
if [ "$rc" -eq 0 ]; then
  echo "result:       PASSED"
else
  echo "result:       FAILED (ctest exit $rc)"
  if [ -s "$failed_log" ]; then
    echo "failed tests:"
    sed 's/^[0-9]*:/  /' "$failed_log"
  fi
fi
echo "================================================================================"
exit "$rc"
