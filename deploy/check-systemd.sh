#!/usr/bin/env bash
# Installs the Debian package under a real systemd and checks its whole life:
# a throwaway container (systemd-nspawn on an overlay of the host's root file
# system with a tmpfs above it that takes every change, and its own network
# namespace) boots systemd, and inside it:
#   - `apt install ./upslot_*.deb` creates the `upslot` account and
#     /var/lib/upslot (0750), enables and starts the unit, which generates its
#     secret (0600) and logs the lines to paste, secret elided, in the journal
#     namespace `upslot`;
#   - the unit runs with no capabilities, no new privileges and a seccomp
#     filter; files it writes are mode 0600;
#   - upload, download, Range, a refused slot, /readyz, /metrics (with the
#     process_* metrics, which read /proc/self under ProcSubset=pid),
#     `upslot files delete` through the control socket (AF_UNIX), the man
#     page and bash completion;
#   - `systemctl reload` keeps the process (and refuses a broken config);
#   - upgrading to a rebuilt package keeps the files, the secret and the
#     operator's edits to /etc/upslot/upslot.toml;
#   - `systemctl stop` lets an upload in flight finish (SIGTERM drain), and a
#     restart keeps the stored files;
#   - `apt remove` keeps the data, the configuration and the account;
#     `apt purge` leaves nothing: no /etc/upslot, no /var/lib/upslot, no
#     journal namespace, no account.
# Where no container can boot (no privileges for namespaces, no cgroups), it
# says SKIPPED and exits 0, but fails under CI=true. Run as root:
#   bash deploy/check-systemd.sh
# UPSLOT_DEB and UPSLOT_DEB_UPGRADE name the packages to install and upgrade
# to (default: built here with cargo deb, revisions 1 and 2); KEEP_TMP=1
# keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '[check-systemd %3ss] %s\n' "$SECONDS" "$*"; }
skip() {
    if [ "${CI:-}" = true ]; then
        say "FAIL (CI=true): $*"
        exit 1
    fi
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

T=$(mktemp -d /tmp/upslot-systemd.XXXXXX)
mkdir -p "$T/debs"
if [ -n "${UPSLOT_DEB:-}" ]; then
    cp "$UPSLOT_DEB" "$T/debs/first.deb"
    cp "${UPSLOT_DEB_UPGRADE:-$UPSLOT_DEB}" "$T/debs/upgrade.deb"
else
    command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
    say "building the packages (cargo deb; the upgrade is the same build, revision 2)"
    first=$(cargo deb --quiet --deb-revision 1 | tail -n 1)
    cp "$first" "$T/debs/first.deb"
    upgrade=$(cargo deb --quiet --no-build --deb-revision 2 | tail -n 1)
    cp "$upgrade" "$T/debs/upgrade.deb"
fi
say "packages: $(dpkg-deb -f "$T/debs/first.deb" Version) then $(dpkg-deb -f "$T/debs/upgrade.deb" Version)"

NSPAWN=
ROOTFS=$T/root
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
    umount "$ROOTFS" 2>/dev/null || true
    umount "$T/changes" 2>/dev/null || true
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        say "kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The container's root: the host's, read through an overlay whose changes (the
# install, the data, the purge) go to a tmpfs and vanish with it. (nspawn's
# own --volatile=overlay refuses the host's root directory.)
mkdir -p "$T/changes" "$ROOTFS"
mount -t tmpfs -o mode=0755 tmpfs "$T/changes" || skip "cannot mount a tmpfs"
mkdir "$T/changes/upper" "$T/changes/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/changes/upper,workdir=$T/changes/work" "$ROOTFS" ||
    skip "cannot mount an overlay of /"
say "booting a container (systemd-nspawn on an overlay of /, --private-network)"
systemd-nspawn --quiet --register=no --keep-unit --machine="upslot-ci-$$" \
    -D "$ROOTFS" --private-network --bind-ro="$T/debs:/opt/upslot-debs" \
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
export DEBIAN_FRONTEND=noninteractive
CFG=/etc/upslot/upslot.toml
ADMIN=http://127.0.0.1:5051
ready() {
    for _ in $(seq 100); do
        curl -sf "$ADMIN/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "/readyz: $(curl -s "$ADMIN/readyz")"
}
apt_get() { apt-get -qq -o Dpkg::Use-Pty=0 "$@" </dev/null >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt-get $*"; }; }

# ---- install ----
# Container images forbid maintainer scripts to start services (policy-rc.d
# exits 101); a booted Debian system has no such file.
rm -f /usr/sbin/policy-rc.d
! getent passwd upslot >/dev/null || fail "an upslot account exists before the install"
apt_get install -y /opt/upslot-debs/first.deb
grep -q 'journalctl --namespace=upslot -u upslot' /tmp/apt.log || fail "the install did not say where the lines to paste are"
[ "$(systemctl is-enabled upslot)" = enabled ] || fail "unit not enabled"
ready
getent passwd upslot | grep -q ':/var/lib/upslot:/usr/sbin/nologin$' || fail "account: $(getent passwd upslot)"
[ "$(stat -c '%U:%G %a' /var/lib/upslot)" = "upslot:upslot 750" ] ||
    fail "/var/lib/upslot is $(stat -c '%U:%G %a' /var/lib/upslot)"
[ "$(stat -c '%U %a' /var/lib/upslot/secret)" = "upslot 600" ] ||
    fail "secret is $(stat -c '%U %a' /var/lib/upslot/secret)"
secret=$(cat /var/lib/upslot/secret)
log=$(journalctl --namespace=upslot -u upslot --no-pager -o cat)
printf '%s\n' "$log" | grep -q 'http_upload_external_secret' || fail "no lines to paste in the journal"
printf '%s\n' "$log" | grep -q '<the secret; see the log line above>' || fail "the pasted lines lack the placeholder"
! printf '%s\n' "$log" | grep -qF "$secret" || fail "the secret is in the journal"
say "apt install: account upslot, /var/lib/upslot 0750, unit enabled and running, secret generated (0600)"
say "journalctl --namespace=upslot -u upslot: the lines to paste, secret elided"
man -w upslot-files-export >/dev/null 2>&1 || [ -f /usr/share/man/man1/upslot-files-export.1.gz ] || fail "no man page"
[ -f /usr/share/bash-completion/completions/upslot ] || fail "no bash completion"

PID=$(systemctl show -p MainPID --value upslot)
status() { sed -n "s/^$1:[[:space:]]*//p" "/proc/$PID/status"; }
uid=$(status Uid | cut -f1)
[ "$uid" = "$(id -u upslot)" ] || fail "runs as uid $uid, not upslot"
[ "$(status CapEff)" = 0000000000000000 ] || fail "has capabilities: $(status CapEff)"
[ "$(status NoNewPrivs)" = 1 ] || fail "NoNewPrivs is not set"
[ "$(status Seccomp)" = 2 ] || fail "no seccomp filter"
say "running as upslot (uid $uid), no capabilities, NoNewPrivs, seccomp filter on"

# ---- serve ----
head -c 2000000 /dev/urandom >/tmp/body.bin
url=$(upslot sign -c $CFG --size 2000000 --type application/octet-stream 'Grüße (1).bin')
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
[ "$(stat -c '%U %a' "$body")" = "upslot 600" ] || fail "stored body is $(stat -c '%U %a' "$body"), not upslot 600 (UMask=0077)"

metrics=$(curl -s "$ADMIN/metrics")
rss=$(printf '%s\n' "$metrics" | sed -n 's/^process_resident_memory_bytes //p')
[ -n "$rss" ] && [ "${rss%.*}" -gt 0 ] || fail "no process_resident_memory_bytes under ProcSubset=pid"
printf '%s\n' "$metrics" | grep -q '^upslot_stored_files 1$' || fail "upslot_stored_files is not 1"
say "/metrics: process_resident_memory_bytes $rss, upslot_stored_files 1"
upslot files delete -c $CFG "$get" | grep -q 'deleted 1 file' || fail "files delete"
curl -s "$ADMIN/metrics" | grep -q '^upslot_stored_files 0$' ||
    fail "the running service did not hear of the deletion (control socket)"
say "upslot files delete: the service counted it at once (AF_UNIX control socket)"

systemctl reload upslot || fail "systemctl reload"
sleep 0.5
[ "$(systemctl is-active upslot)" = active ] && [ "$(systemctl show -p MainPID --value upslot)" = "$PID" ] ||
    fail "reload did not keep the process"
say "systemctl reload: same process, still active"
cp $CFG /tmp/upslot.toml.good
echo 'bogus_key = 1' >>$CFG
if systemctl reload upslot 2>/dev/null; then fail "reload accepted a broken config"; fi
[ "$(systemctl is-active upslot)" = active ] || fail "a failed reload stopped the service"
cp /tmp/upslot.toml.good $CFG
say "reload with a broken config: refused, service still active"

# ---- upgrade ----
url=$(upslot sign -c $CFG --size 2000000 kept.bin)
kept=${url%%\?*}
code=$(curl -s -o /dev/null -w '%{http_code}' -T /tmp/body.bin "$url")
[ "$code" = 201 ] || fail "PUT before the upgrade: $code"
# The operator's edit to the conffile must survive the upgrade.
sed -i 's/^retention = .*/retention = "3d"  # edited by the operator/' $CFG
grep -q 'edited by the operator' $CFG || fail "could not edit $CFG"
apt_get install -y /opt/upslot-debs/upgrade.deb
[ "$(dpkg-query -W -f '${Version}' upslot)" = "$(dpkg-deb -f /opt/upslot-debs/upgrade.deb Version)" ] ||
    fail "not upgraded: $(dpkg-query -W -f '${Version}' upslot)"
ready
grep -q 'edited by the operator' $CFG || fail "the upgrade replaced the operator's configuration"
[ "$(cat /var/lib/upslot/secret)" = "$secret" ] || fail "the upgrade changed the secret"
code=$(curl -s -o /tmp/got.bin -w '%{http_code}' "$kept")
[ "$code" = 200 ] && cmp -s /tmp/body.bin /tmp/got.bin || fail "GET after the upgrade: $code"
say "upgrade to $(dpkg-query -W -f '${Version}' upslot): file, secret and the operator's upslot.toml kept"

# ---- stop drains, restart keeps ----
url=$(upslot sign -c $CFG --size 2000000 slow.bin)
(curl -s -o /dev/null -w '%{http_code}' --limit-rate 400k -T /tmp/body.bin "$url" >/tmp/slow.code) &
sleep 1.5
start=$(date +%s)
systemctl stop upslot
wait
[ "$(cat /tmp/slow.code)" = 201 ] || fail "the upload in flight during stop got $(cat /tmp/slow.code)"
say "systemctl stop: the upload in flight finished with 201 ($(($(date +%s) - start)) s), then upslot stopped"
systemctl start upslot
ready
curl -s "$ADMIN/metrics" | grep -q '^upslot_stored_files 2$' || fail "files lost across a restart"
say "restart: the stored files are still there"
[ -n "$(ls -d /var/log/journal/*.upslot 2>/dev/null)" ] || fail "no journal namespace under /var/log/journal"

# ---- remove, then purge ----
apt_get remove -y upslot
! command -v upslot >/dev/null || fail "the binary outlived remove"
[ "$(systemctl is-active upslot 2>/dev/null)" != active ] || fail "still running after remove"
[ -f $CFG ] || fail "remove deleted the configuration"
[ -f /var/lib/upslot/secret ] && [ -n "$(find /var/lib/upslot/files -type f)" ] || fail "remove deleted the data"
getent passwd upslot >/dev/null || fail "remove deleted the account"
say "apt remove: service stopped, binary gone; data, configuration and account kept"
apt_get purge -y upslot
for gone in /etc/upslot /var/lib/upslot /etc/systemd/journald@upslot.conf /usr/lib/systemd/system/upslot.service /lib/systemd/system/upslot.service; do
    [ ! -e "$gone" ] || fail "$gone outlived purge"
done
[ -z "$(ls -d /var/log/journal/*.upslot /run/log/journal/*.upslot 2>/dev/null)" ] || fail "the journal namespace outlived purge"
! getent passwd upslot >/dev/null || fail "the account outlived purge"
! getent group upslot >/dev/null || fail "the group outlived purge"
say "apt purge: nothing left (/etc/upslot, /var/lib/upslot, journal namespace, account, group)"
EOF

say "OK"
