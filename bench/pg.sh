# The catalog a benchmark runs over, sourced after bench_setup: Debian's
# PostgreSQL (`tests/peers.sh` installs it), a cluster made with initdb in
# $WORK/pg and started with pg_ctl on a free loopback port — as `nobody`
# when the bench runs as root (PostgreSQL refuses root). Durable as a
# production one is (fsync and synchronous_commit on), so it is compared
# fairly with SQLite's synchronous=FULL.
# start_postgres sets PG_PORT; make_database NAME creates a database and
# prints its URL; stop_postgres stops it.

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin; bin=$(pg_bin) || { echo "PostgreSQL is missing: run tests/peers.sh" >&2; return 1; }
  mkdir -p "$WORK/pg" && chmod 755 "$WORK"
  [ "$(id -u)" = 0 ] && chown nobody:nogroup "$WORK/pg"
  PG_PORT=$(free_port)
  as_pg "$bin/initdb" -U ferry --auth=trust -E UTF8 --locale=C -D "$WORK/pg/data" >/dev/null
  as_pg "$bin/pg_ctl" start -w -D "$WORK/pg/data" -l "$WORK/pg/log" \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1" >/dev/null
}

make_database() {
  as_pg "$(pg_bin)/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U ferry -d postgres -c "CREATE DATABASE $1" >/dev/null
  echo "postgres://ferry@127.0.0.1:$PG_PORT/$1"
}

stop_postgres() {
  [ -n "${PG_PORT:-}" ] && as_pg "$(pg_bin)/pg_ctl" stop -m fast -D "$WORK/pg/data" >/dev/null 2>&1 || true
}

# The running cluster's processes (for cpu_s): its postmaster and the
# processes it started (a backend that ended is in the postmaster's
# children's time), not other clusters of the same user.
pg_pids() {
  local pm
  pm=$(head -n1 "$WORK/pg/data/postmaster.pid" 2>/dev/null) || return 0
  echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"
}
