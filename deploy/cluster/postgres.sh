#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1, the index that several upslot instances
# share. Used by the integration tests and as an example.
#
#   postgres.sh start DIR   first time: initdb, role and database `upslot`;
#                           after a stop: the same data on the same port
#   postgres.sh stop DIR    fast shutdown (open sessions are cut, data kept)
#
# Everything lives under DIR: pgdata/, pgsock/ (the Unix socket), postgres.log
# and postgres.env (UPSLOT_INDEX_URL and PGPORT, for `source`).
#
# fsync is off unless PG_FSYNC=on: tests start and stop servers often and
# never survive a power cut, so waiting for the disk buys them nothing. Never
# run a server whose data matters with fsync off.
#
# PGBIN overrides the binaries' directory (default: Debian's PostgreSQL 15).
set -euo pipefail
SELF="postgres.sh ${1:-}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# = 2 ] || die "usage: postgres.sh start|stop DIR"
ACTION=$1
DIR=$(realpath -m -- "$2")
DATA=$DIR/pgdata
SOCK=$DIR/pgsock
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
FSYNC=${PG_FSYNC:-off}
[ -x "$PGBIN/pg_ctl" ] || die "no PostgreSQL in $PGBIN: apt-get install postgresql-15, or set PGBIN"
# The path goes into postgresql.conf between single quotes.
[[ $DIR != *"'"* ]] || die "DIR must not contain a single quote"

# PostgreSQL refuses to run as root. As root, run it as the `postgres` user
# that Debian's package creates; as anyone else, run it as that user.
if [ "$(id -u)" = 0 ]; then
    AS_PG=(runuser -u postgres --)
else
    AS_PG=()
fi
pg() { "${AS_PG[@]}" "$PGBIN/$1" "${@:2}"; }

running() { [ -s "$DATA/PG_VERSION" ] && pg pg_ctl status -D "$DATA" >/dev/null; }

start() {
    local first='' port password
    mkdir -p "$DIR"
    if [ ${#AS_PG[@]} -gt 0 ]; then
        # DIR is often a root-owned 0700 temporary directory: let postgres
        # pass through it (o+x lists nothing) to its own subdirectories.
        chmod o+x "$DIR"
        mkdir -p "$DATA" "$SOCK"
        touch "$DIR/postgres.log"
        chown postgres: "$DATA" "$SOCK" "$DIR/postgres.log"
        "${AS_PG[@]}" test -w "$SOCK" ||
            die "user postgres cannot reach $SOCK: every directory above $DIR needs o+x"
    fi
    mkdir -p "$SOCK"

    if [ -s "$DIR/postgres.env" ]; then
        # shellcheck source=/dev/null
        . "$DIR/postgres.env"
        port=$PGPORT
    elif [ -e "$DATA/PG_VERSION" ]; then
        die "$DATA exists but its set-up did not finish: stop it and remove $DIR"
    else
        first=1
        port=$(free_ports 1)
        # trust on the socket, so that this script (as postgres) needs no
        # password; scram-sha-256 over TCP, so that upslot's password is
        # really checked, as it would be in production. --no-sync follows
        # PG_FSYNC, for the same reason as fsync below.
        local nosync=(--no-sync)
        [ "$FSYNC" != on ] || nosync=()
        pg initdb -D "$DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 "${nosync[@]}" >/dev/null
        # In the file rather than on the command line, so that a plain
        # `pg_ctl -D DIR/pgdata start` brings the same server back.
        cat >>"$DATA/postgresql.conf" <<EOF

# deploy/cluster/postgres.sh: loopback only, on its own port and socket.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SOCK'
EOF
    fi

    if ! running; then
        pg pg_ctl start -D "$DATA" -l "$DIR/postgres.log" -w -t 60 -o "-c fsync=$FSYNC" >/dev/null || {
            tail -n 20 "$DIR/postgres.log" >&2
            die "PostgreSQL did not start; its log is $DIR/postgres.log"
        }
    fi

    if [ -n "$first" ]; then
        password=$(random_hex 16)
        # On stdin rather than psql -c: a password in argv shows in `ps`.
        pg psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$port" -U postgres -d postgres <<EOF
CREATE ROLE upslot LOGIN PASSWORD '$password';
CREATE DATABASE upslot OWNER upslot;
EOF
        # Written last: its presence means the set-up finished.
        cat >"$DIR/postgres.env.tmp" <<EOF
UPSLOT_INDEX_URL=postgres://upslot:$password@127.0.0.1:$port/upslot
PGPORT=$port
EOF
        chmod 600 "$DIR/postgres.env.tmp"
        mv "$DIR/postgres.env.tmp" "$DIR/postgres.env"
    fi
}

stop() {
    running || return 0
    # pg_ctl signals the postmaster whose PID PostgreSQL recorded in
    # DATA/postmaster.pid, so only this server is stopped. fast: roll back
    # open transactions instead of waiting for clients to disconnect.
    pg pg_ctl stop -D "$DATA" -m fast -w -t 10 >/dev/null ||
        pg pg_ctl stop -D "$DATA" -m immediate -w -t 10 >/dev/null
}

case $ACTION in
start) start ;;
stop) stop ;;
*) die "usage: postgres.sh start|stop DIR" ;;
esac
