#!/usr/bin/env bash
# Runs deploy/systemd/upslot.service under a real systemd, with every sandbox
# setting in force, and checks that upslot still does its job: a throwaway
# container (systemd-nspawn --volatile=yes: the host's /usr read-only, a
# tmpfs for everything else, its own network namespace) boots systemd, and
# inside it:
#   - the unit starts as a dynamic user with no capabilities, no new
#     privileges and a seccomp filter; files it writes are mode 0600;
#   - upload, download, Range, a refused slot, /readyz, /metrics (with the
#     process_* metrics, which read /proc/self under ProcSubset=pid),
#     `upslot files delete` through the control socket (AF_UNIX);
#   - the log lands in the journal namespace `upslot`;
#   - `systemctl reload` keeps the process (and refuses a broken config);
#   - `systemctl stop` lets an upload in flight finish (SIGTERM drain);
#   - a restart keeps the stored files.
# Where no container can boot (no privileges for namespaces, no cgroups),
# it says SKIPPED and exits 0: `systemd-analyze verify` and `security` in
# .ci/run still check the unit. Run as root: `bash deploy/check-systemd.sh`.
# UPSLOT_BIN overrides the binary; KEEP_TMP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '[check-systemd %3ss] %s\n' "$SECONDS" "$*"; }
skip() {
    say "SKIPPED: $*"
    exit 0
}

if ! command -v systemd-nspawn >/dev/null 2>&1; then
    say "installing systemd-container"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container >/dev/null ||
        skip "systemd-nspawn cannot be installed"
fi
[ -x /lib/systemd/systemd ] || skip "no systemd in this image's /usr"

BIN=${UPSLOT_BIN:-$ROOT/target/release/upslot}
if [ -z "${UPSLOT_BIN:-}" ]; then
    cargo build --release --quiet --bin upslot
fi
[ -x "$BIN" ] || { say "FAIL: no upslot binary at $BIN"; exit 1; }

T=$(mktemp -d /tmp/upslot-systemd.XXXXXX)
NSPAWN=
cleanup() {
    if [ -n "$NSPAWN" ]; then
        # SIGTERM asks the container's systemd to power off in order.
        kill -TERM "$NSPAWN" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$NSPAWN" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NSPAWN" 2>/dev/null || true
        wait "$NSPAWN" 2>/dev/null || true
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        say "kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The container's /usr is the host's, read-only: the binary goes to /opt, and a
# copy of the unit points there. Everything else in the unit is as shipped.
mkdir -p "$T/bin" "$T/unit" "$T/etc"
cp "$BIN" "$T/bin/upslot"
sed 's#/usr/local/bin/upslot#/opt/upslot/upslot#g' deploy/systemd/upslot.service >"$T/unit/upslot.service"
grep -q '^ExecStart=/opt/upslot/upslot serve -c /etc/upslot/upslot.toml$' "$T/unit/upslot.service" ||
    { say "FAIL: unexpected ExecStart in deploy/systemd/upslot.service"; exit 1; }
# deploy/upslot.toml as shipped, except the free-space watermark (the
# container's /var is a small tmpfs).
sed 's#^min_free_space = .*#min_free_space = "0"#' deploy/upslot.toml >"$T/etc/upslot.toml"
chmod 0644 "$T/etc/upslot.toml"
cp "$T/etc/upslot.toml" "$T/upslot.toml.good"
binds=(
    --bind-ro="$T/bin:/opt/upslot"
    --bind-ro="$T/unit/upslot.service:/etc/systemd/system/upslot.service"
    --bind-ro="$T/etc:/etc/upslot"
)
if [ -f deploy/journald/journald@upslot.conf ]; then
    binds+=(--bind-ro="$ROOT/deploy/journald/journald@upslot.conf:/etc/systemd/journald@upslot.conf")
fi

say "booting a container (systemd-nspawn --volatile=yes --private-network)"
systemd-nspawn --quiet --register=no --keep-unit --machine="upslot-ci-$$" \
    -D / --volatile=yes --private-network "${binds[@]}" \
    -b systemd.firstboot=off systemd.unit=basic.target >"$T/boot.log" 2>&1 &
NSPAWN=$!
C=
for _ in $(seq 300); do
    # The container's init is systemd-nspawn's only child.
    C=$(awk '{ print $1 }' "/proc/$NSPAWN/task/$NSPAWN/children" 2>/dev/null || true)
    if [ -n "$C" ]; then
        state=$(nsenter -t "$C" -a systemctl is-system-running 2>/dev/null || true)
        case $state in running | degraded) break ;; esac
    fi
    kill -0 "$NSPAWN" 2>/dev/null || break
    sleep 0.2
done
case ${state:-} in
    running | degraded) say "container's systemd is up ($state)" ;;
    *)
        sed 's/^/    /' "$T/boot.log" | tail -n 15
        skip "no container could boot here (state: ${state:-none})"
        ;;
esac

# Everything below runs inside the container; any failed check fails the script.
# The config file is changed from outside (it is bind-mounted read-only).
in_container() { nsenter -t "$C" -a "$@"; }
in_container bash -s <<'EOF' || { say "FAIL: see above"; exit 1; }
set -euo pipefail
say() { printf '[check-systemd] %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    systemctl status upslot --no-pager 2>&1 | tail -n 5 || true
    journalctl --namespace=upslot -u upslot --no-pager 2>&1 | tail -n 15 || true
    exit 1
}
B=/opt/upslot/upslot
CFG=/etc/upslot/upslot.toml
ADMIN=http://127.0.0.1:5051

systemctl start upslot.service || fail "systemctl start"
for _ in $(seq 50); do
    curl -sf "$ADMIN/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
[ "$(curl -s "$ADMIN/readyz")" = ready ] || fail "/readyz: $(curl -s "$ADMIN/readyz")"
PID=$(systemctl show -p MainPID --value upslot)
status() { sed -n "s/^$1:[[:space:]]*//p" "/proc/$PID/status"; }
uid=$(status Uid | cut -f1)
[ "$uid" != 0 ] || fail "runs as root"
[ "$(status CapEff)" = 0000000000000000 ] || fail "has capabilities: $(status CapEff)"
[ "$(status NoNewPrivs)" = 1 ] || fail "NoNewPrivs is not set"
[ "$(status Seccomp)" = 2 ] || fail "no seccomp filter"
say "running as uid $uid (dynamic), no capabilities, NoNewPrivs, seccomp filter on"

head -c 2000000 /dev/urandom >/tmp/body.bin
url=$($B sign -c $CFG --size 2000000 --type application/octet-stream 'Grüße (1).bin')
get=${url%%\?*}
code=$(curl -s -o /dev/null -w '%{http_code}' -T /tmp/body.bin -H 'Content-Type: application/octet-stream' "$url")
[ "$code" = 201 ] || fail "PUT: $code"
code=$(curl -s -o /tmp/got.bin -w '%{http_code}' "$get")
[ "$code" = 200 ] && cmp -s /tmp/body.bin /tmp/got.bin || fail "GET: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Range: bytes=0-1' "$get")
[ "$code" = 206 ] || fail "Range: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary hi "$get?v=$(printf '0%.0s' $(seq 64))")
[ "$code" = 403 ] || fail "bad signature: $code"
say "PUT 201, GET 200 (same bytes), Range 206, bad signature 403"
body=$(find /var/lib/upslot/files -type f -size +1M | head -n 1)
[ "$(stat -c %a "$body")" = 600 ] || fail "stored body has mode $(stat -c %a "$body"), not 600 (UMask=0077)"

metrics=$(curl -s "$ADMIN/metrics")
rss=$(printf '%s\n' "$metrics" | sed -n 's/^process_resident_memory_bytes //p')
[ -n "$rss" ] && [ "${rss%.*}" -gt 0 ] || fail "no process_resident_memory_bytes under ProcSubset=pid"
printf '%s\n' "$metrics" | grep -q '^upslot_stored_files 1$' || fail "upslot_stored_files is not 1"
say "/metrics: process_resident_memory_bytes $rss, upslot_stored_files 1"
$B files delete -c $CFG "$get" | grep -q 'deleted 1 file' || fail "files delete"
curl -s "$ADMIN/metrics" | grep -q '^upslot_stored_files 0$' ||
    fail "the running service did not hear of the deletion (control socket)"
say "upslot files delete: the service counted it at once (AF_UNIX control socket)"

journalctl --namespace=upslot -u upslot --no-pager | grep -q 'INFO upslot: listening' ||
    fail "no log in the journal namespace upslot"
say "log lines are in the journal namespace upslot"

systemctl reload upslot || fail "systemctl reload"
sleep 0.5
[ "$(systemctl is-active upslot)" = active ] && [ "$(systemctl show -p MainPID --value upslot)" = "$PID" ] ||
    fail "reload did not keep the process"
say "systemctl reload: same process, still active"
EOF

# A broken configuration: the reload must fail and the service keep running.
echo 'bogus_key = 1' >>"$T/etc/upslot.toml"
in_container bash -c '
    if systemctl reload upslot 2>/dev/null; then echo "[check-systemd] FAIL: reload accepted a broken config"; exit 1; fi
    [ "$(systemctl is-active upslot)" = active ] || { echo "[check-systemd] FAIL: a failed reload stopped the service"; exit 1; }
    echo "[check-systemd] reload with a broken config: refused, service still active"
' || exit 1
cp "$T/upslot.toml.good" "$T/etc/upslot.toml"

in_container bash -s <<'EOF' || { say "FAIL: see above"; exit 1; }
set -euo pipefail
say() { printf '[check-systemd] %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    journalctl --namespace=upslot -u upslot --no-pager 2>&1 | tail -n 15 || true
    exit 1
}
B=/opt/upslot/upslot
CFG=/etc/upslot/upslot.toml
head -c 2000000 /dev/urandom >/tmp/slow.bin
url=$($B sign -c $CFG --size 2000000 slow.bin)
(curl -s -o /dev/null -w '%{http_code}' --limit-rate 400k -T /tmp/slow.bin "$url" >/tmp/slow.code) &
sleep 1.5
start=$(date +%s)
systemctl stop upslot
wait
[ "$(cat /tmp/slow.code)" = 201 ] || fail "the upload in flight during stop got $(cat /tmp/slow.code)"
say "systemctl stop: the upload in flight finished with 201 ($(($(date +%s) - start)) s), then upslot stopped"
systemctl start upslot
for _ in $(seq 50); do
    curl -sf http://127.0.0.1:5051/readyz >/dev/null 2>&1 && break
    sleep 0.1
done
curl -s http://127.0.0.1:5051/metrics | grep -q '^upslot_stored_files 1$' || fail "files lost across a restart"
say "restart: the stored file is still there"
EOF

say "OK"
