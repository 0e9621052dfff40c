# shellcheck shell=bash
# Helpers shared by garage.sh, postgres.sh and nginx.sh (sourced, not run).
# The caller sets SELF (its name and action) before sourcing this file.

# A start picks free ports and its servers bind them moments later, so two
# starts at once (tests run side by side) could pick the same port. Starts of
# all three scripts go one at a time; `flock -o` keeps the lock's descriptor
# out of the servers they leave running.
case "${1:-}" in
start | start-node)
    if [ -z "${UPSLOT_CLUSTER_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
        UPSLOT_CLUSTER_LOCKED=1 exec flock -o "${TMPDIR:-/tmp}/upslot-cluster-start.lock" \
            bash "$0" "$@"
    fi
    ;;
esac

# Every script reports how long it took, on stderr, also when it fails: the
# integration tests log it, and it tells an operator what "slow" looks like.
# EPOCHREALTIME's decimal separator follows the locale, so keep digits only.
_t0=${EPOCHREALTIME//[!0-9]/}
_report() {
    local rc=$? us
    us=$((${EPOCHREALTIME//[!0-9]/} - _t0))
    if [ "$rc" = 0 ]; then
        printf '%s: done in %d.%02d s\n' "$SELF" $((us / 1000000)) $((us % 1000000 / 10000)) >&2
    else
        printf '%s: FAILED (exit %s) after %d.%02d s\n' "$SELF" "$rc" $((us / 1000000)) $((us % 1000000 / 10000)) >&2
    fi
}
trap _report EXIT

die() {
    printf '%s: %s\n' "$SELF" "$*" >&2
    exit 1
}

# free_ports N: N distinct free TCP ports on 127.0.0.1. All N sockets stay
# bound until all are printed, so the kernel cannot hand out one port twice.
# Another program may still take a port before our server binds it; that race
# is accepted here (the server then fails to start, and so does the script).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

# alive PID: the process exists and is not a zombie. A server whose parent
# (this script) has exited is reparented, and a reaper that is slow, or none
# at all in some containers, would leave a zombie that `kill -0` still finds.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# ours PIDFILE PATTERN: prints the PID recorded in PIDFILE if that process is
# alive and its command line contains PATTERN (a config path under DIR).
# The check keeps a stale pid file from naming an unrelated process that
# reused the number after a reboot or a crash.
ours() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
    echo "$pid"
}

# stop_pids PID...: SIGTERM to all at once, then up to 10 s for all of them
# to exit, then SIGKILL for any still there. Servers stopped together shut
# down in parallel, so stopping three nodes takes as long as the slowest one.
stop_pids() {
    local pid left deadline=$((SECONDS + 10))
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    while :; do
        left=()
        for pid in "$@"; do alive "$pid" && left+=("$pid"); done
        [ ${#left[@]} -gt 0 ] || return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.05
    done
    printf '%s: still running after 10 s, sending SIGKILL to %s\n' "$SELF" "${left[*]}" >&2
    kill -KILL "${left[@]}" 2>/dev/null || true
}

# wait_for SECONDS WHAT CMD...: runs CMD every 0.1 s until it succeeds, or
# dies after SECONDS saying what it was waiting for.
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "gave up after ${limit} s waiting for $what"
        sleep 0.1
    done
}

# random_hex BYTES: a secret from the kernel's generator, as hex, which needs
# no quoting in TOML, URLs or SQL.
random_hex() {
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}
