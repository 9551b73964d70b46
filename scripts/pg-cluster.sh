#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, in one directory:
#   scripts/pg-cluster.sh start <dir> [--durable]
#                                       initdb (trust), listen on 127.0.0.1:<free port> and a Unix
#                                       socket in <dir>, create database `taskpass`; prints its URL.
#                                       Without fsync (test data) unless --durable: then with
#                                       PostgreSQL's default durability, as a deployment runs it
#                                       (the benchmark's own cluster)
#   scripts/pg-cluster.sh stop <dir>    stops it (the directory is left for the caller to remove)
# The server refuses to run as root: as root, it runs as the `postgres` user (or `taskpass-pg`,
# created when neither exists). PG_BIN overrides where the server binaries are.
set -euo pipefail

command=${1:-}
dir=${2:-}
durable=no
case "${3:-}" in
  '') ;;
  --durable) [ "$command" = start ] && durable=yes ;;
  *) durable=bad ;;
esac
if [ -z "$command" ] || [ -z "$dir" ] || [ "$durable" = bad ] || [ $# -gt 3 ] || { [ $# -eq 3 ] && [ "$command" != start ]; }; then
  echo "usage: $0 start <dir> [--durable] | stop <dir>" >&2
  exit 2
fi

if [ -z "${PG_BIN:-}" ]; then
  # Debian installs each major version side by side; take the newest.
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ ! -x "$PG_BIN/initdb" ]; then
  echo "$0: no PostgreSQL server binaries (set PG_BIN, or apt-get install postgresql)" >&2
  exit 1
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# As root, every server command runs as an unprivileged user that owns the directory.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  user=postgres
  if ! id -u "$user" >/dev/null 2>&1; then
    user=taskpass-pg
    id -u "$user" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$user"
  fi
  chown "$user" "$dir"
  as_owner=(runuser -u "$user" --)
fi
run() { (cd "$dir" && "${as_owner[@]}" "$@"); }

case "$command" in
  start)
    # A free port: bound by the kernel, released, then taken by the server a moment later.
    port=$(node -e "const s=require('node:net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
    run "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Throwaway data: no fsync (tests only; PostgreSQL's own durability is not what they test),
    # unless --durable (a benchmark measures what a deployment pays for each commit).
    settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [ "$durable" = yes ] && settings=""
    run "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $settings -c max_connections=200" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    run "$PG_BIN/createdb" -h "$dir" -p "$port" -U postgres taskpass
    echo "$port" >"$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/taskpass"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      run "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
  *)
    echo "usage: $0 start <dir> [--durable] | stop <dir>" >&2
    exit 2
    ;;
esac
