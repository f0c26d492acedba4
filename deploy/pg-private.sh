#!/usr/bin/env bash
# A private PostgreSQL cluster for one user of this machine: benchmarks and local trials.
#
#   deploy/pg-private.sh start DIR [-c name=value ...]   initdb DIR/data when needed, start it on a
#                                                       free loopback port; prints the libpq URL
#   deploy/pg-private.sh stop DIR                       fast shutdown
#   deploy/pg-private.sh url DIR                        the URL of the running cluster
#
# The cluster listens on 127.0.0.1 only, trusts local connections (user postgres) and logs to
# DIR/postgres.log. Run as root, the server runs as the `postgres` user (initdb refuses root); DIR
# must then be reachable by that user. Extra -c settings are passed to the server at start.
set -Eeuo pipefail

die() { printf 'pg-private: %s\n' "$*" >&2; exit 1; }
[ $# -ge 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
cmd=$1
dir=$(realpath -m "$2")
shift 2

bindir=""
for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
  if [ -x "$d/initdb" ]; then bindir="$d"; break; fi
done
[ -n "$bindir" ] || die "PostgreSQL server binaries not found; install postgresql-15 (deploy/install-deps.sh)"

as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
pg() { (cd "$dir" && "${as_pg[@]}" "$@"); }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ ${#as_pg[@]} -gt 0 ]; then
      chown postgres:postgres "$dir"
      runuser -u postgres -- test -w "$dir" ||
        die "the postgres user cannot write $dir (a parent directory is closed); pick a directory under /var/tmp"
    fi
    if [ ! -s "$dir/data/PG_VERSION" ]; then
      pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed (see $dir/initdb.log)"; }
    fi
    if pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      die "a cluster is already running on $dir/data (stop it: $0 stop $dir)"
    fi
    port=""
    for candidate in $(( 20000 + RANDOM % 30000 )) $(( 20000 + RANDOM % 30000 )) $(( 20000 + RANDOM % 30000 )); do
      port_in_use "$candidate" || { port=$candidate; break; }
    done
    [ -n "$port" ] || die "no free port"
    opts="-p $port -c listen_addresses=127.0.0.1"
    if [ ${#dir} -lt 90 ]; then opts="$opts -k $dir"; else opts="$opts -c unix_socket_directories="; fi
    while [ $# -gt 0 ]; do
      [ "$1" = "-c" ] && [ -n "${2:-}" ] || die "unexpected argument $1 (expected -c name=value)"
      opts="$opts -c $2"
      shift 2
    done
    touch "$dir/postgres.log"
    [ ${#as_pg[@]} -eq 0 ] || chown postgres:postgres "$dir/postgres.log"
    pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -o "$opts" start >/dev/null ||
      { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start (see $dir/postgres.log)"; }
    echo "$port" >"$dir/port"
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] || exit 0
    pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    ;;
  url)
    [ -s "$dir/port" ] || die "no cluster started in $dir"
    echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
    ;;
  *) die "unknown command $cmd (start, stop, url)" ;;
esac
