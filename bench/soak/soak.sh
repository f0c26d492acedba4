#!/usr/bin/env bash
# Soak variant of the fault-injection tests (tests/e2e/faults_test.cc, docs/delivery.md): runs
# every scenario repeatedly with a longer load phase, against the throwaway PostgreSQL that
# tests/run.sh provides, and stops at the first failure.
#
#   bench/soak/soak.sh [--load-seconds=60] [--repeat=10] [--no-sanitize]
#
# Each run prints the scenario tallies ("produced=N persisted=N duplicated=N lost=N ...").
set -euo pipefail

load_seconds=60
repeat=10
run_args=()
for arg in "$@"; do
  case "$arg" in
    --load-seconds=*) load_seconds="${arg#*=}" ;;
    --repeat=*) repeat="${arg#*=}" ;;
    --no-sanitize) run_args+=(--no-sanitize) ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench/soak/soak.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
case "$load_seconds$repeat" in *[!0-9]*) echo "bench/soak/soak.sh: numbers expected" >&2; exit 2 ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export FLEETWES_FAULTS_LOAD_S="$load_seconds"
exec "$root/tests/run.sh" --skip-deps "${run_args[@]}" -- -R '^FaultsTest\.' -V \
  --repeat "until-fail:$repeat" --timeout $(( load_seconds * 3 + 300 ))
