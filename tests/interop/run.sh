#!/usr/bin/env bash
# The interoperability suite: real Prosody, ejabberd, slixmpp, Chromium and nginx
# against the upslot binary. Installs what is missing (Debian packages, a Python
# venv), builds upslot, runs pytest. Everything binds 127.0.0.1 and is stopped
# at the end. Arguments are passed to pytest (e.g. `-k browser`, `-x`).
#
#   UPSLOT_INTEROP_PROFILE=debug     test target/debug/upslot (default: release)
#   UPSLOT_INTEROP_VENV=DIR          the venv (default: target/interop-venv)
#   UPSLOT_INTEROP_CLUSTER=1         upslot is three instances on S3 (Garage) and
#                                    PostgreSQL behind nginx (deploy/cluster/)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

say() { printf '\n--> %s\n' "$*"; }

# ---------------------------------------------------------------- packages
PACKAGES=(prosody prosody-modules ejabberd chromium nginx openssl ca-certificates python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    # The suite starts its own instances on high ports: keep the packaged
    # services (5222, 5269, 80, ...) from being started by the install.
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/tmp/upslot-interop-apt.log 2>&1 || { tail -50 /tmp/upslot-interop-apt.log; exit 1; }
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

# ---------------------------------------------------------------- venv
VENV=${UPSLOT_INTEROP_VENV:-$ROOT/target/interop-venv}
REQ=$ROOT/tests/interop/requirements.txt
stamp=$(sha256sum "$REQ" | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$stamp" ]; then
    say "python venv $VENV"
    rm -rf "$VENV"
    PY=/usr/bin/python3
    [ -x "$PY" ] || PY=$(command -v python3)
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    echo "$stamp" > "$VENV/.requirements"
fi

# ---------------------------------------------------------------- upslot
# Release by default: .ci/run has built it just before (deploy checks), and a
# debug `cargo build` after `cargo test` would rebuild tokio and hyper without
# the dev-dependencies' features.
if [ "${UPSLOT_INTEROP_PROFILE:-release}" = release ]; then
    say "cargo build --release --bin upslot"
    cargo build --release --bin upslot
    export UPSLOT_BIN=$ROOT/target/release/upslot
else
    say "cargo build --bin upslot"
    cargo build --bin upslot
    export UPSLOT_BIN=$ROOT/target/debug/upslot
fi

# ---------------------------------------------------------------- versions
say "versions"
for p in prosody prosody-modules ejabberd erlang-base chromium nginx openssl; do
    printf '%-16s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"
done
for p in slixmpp aiohttp pytest; do
    printf '%-16s %s\n' "$p" "$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$p'))")"
done
printf '%-16s %s\n' upslot "$("$UPSLOT_BIN" --version)"

# ---------------------------------------------------------------- run
# Every process the suite starts is recorded here (process group id, name); the
# fixtures stop them, and this trap stops whatever a killed pytest left behind.
BASETEMP=$ROOT/target/interop-tmp
PIDS=$ROOT/target/interop-pids
: > "$PIDS"
export UPSLOT_INTEROP_PIDFILE=$PIDS
cleanup() {
    local pgid name
    [ -f "$PIDS" ] || return 0
    while read -r pgid name; do
        if kill -0 -- "-$pgid" 2>/dev/null; then
            echo "stopping leftover $name (process group $pgid)" >&2
            kill -TERM -- "-$pgid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
    done < "$PIDS"
    rm -f "$PIDS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "pytest tests/interop"
cd "$ROOT/tests/interop"
start=$SECONDS
rc=0
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m pytest --basetemp="$BASETEMP" "$@" || rc=$?
echo "interop suite: $((SECONDS - start)) s (logs and configs under $BASETEMP)"
if [ $rc -eq 5 ]; then
    echo "pytest collected no tests" >&2
fi
exit $rc
