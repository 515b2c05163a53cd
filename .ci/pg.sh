#!/usr/bin/env bash
# Throw-away PostgreSQL cluster for CI.
#   .ci/pg.sh start DIR [PORT]   -> initdb + start (fsync off), prints the DSN
#   .ci/pg.sh stop DIR           -> stop and remove DIR
set -euo pipefail
cmd=${1:?usage: pg.sh start|stop DIR [PORT]}
dir=${2:?usage: pg.sh start|stop DIR [PORT]}
bin=${HALO_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
case $cmd in
  start)
    port=${3:-54329}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -A trust -U halo -E UTF8 --locale=C --no-sync >/dev/null
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" >/dev/null
    echo "host=127.0.0.1 port=$port user=halo dbname=postgres"
    ;;
  stop)
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
