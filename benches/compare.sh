#!/usr/bin/env bash
# upslot next to Debian's nginx (dav PUT, sendfile GET), both on 127.0.0.1: the
# performance issue's matrix (4 KiB x2000 at concurrency 32, 1 MiB x300 at 16,
# 100 MiB x4 at 2, 1 GiB x1 at 1; three repetitions; upslot with fsync off and
# on) with loopback TCP and the disk's `dd conv=fdatasync` measured in the same
# run. It prints the machine and a markdown table of MB/s, req/s, p50/p99
# latency, errors by status and the upslot/nginx ratios. It never fails on
# speed: it exits non-zero only if the run itself breaks (no nginx, a failed
# request, a sampled file that differs from what was PUT).
#
#   bash benches/compare.sh
#
# The work is done by benches/loadgen.rs (`cargo bench --bench loadgen`), whose
# defaults are the issue's matrix; its header lists the UPSLOT_LOADGEN_*
# variables, which pass through. A quick look:
#
#   UPSLOT_LOADGEN_MATRIX=4KiB:200:32,1MiB:30:16 UPSLOT_LOADGEN_REPS=1 bash benches/compare.sh
#
# Root is needed only to install nginx when it is missing (apt-get; without root
# the script asks sudo, or says what to run). The rest runs as any user: as root,
# nginx's workers run as nobody (loadgen makes its directories reachable), and
# `sync` needs no privilege. Under sudo, keep your variables with `sudo -E`.
# On a fresh clone, building the release binary comes first and takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian keeps nginx in /usr/sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/sbin:/sbin"

if ! command -v nginx >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "compare.sh: nginx is missing, and installing it needs root: run this script as root," >&2
        echo "or run 'apt-get install nginx' as root first." >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "compare.sh: nginx is missing and there is no apt-get: install nginx (with its dav module)." >&2
        exit 1
    fi
    echo "compare.sh: nginx is missing; installing Debian's nginx with apt-get${as_root:+ (via sudo)}" >&2
    # Keep the package from starting its default site on port 80.
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${as_root[@]}" chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    status=0
    { "${as_root[@]}" apt-get update -qq &&
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends nginx; } || status=$?
    if [ -n "$own_policy" ]; then "${as_root[@]}" rm -f /usr/sbin/policy-rc.d; fi
    if [ "$status" -ne 0 ]; then
        echo "compare.sh: installing nginx failed (apt-get exit status $status)." >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "compare.sh: cargo not found: install Rust (https://rustup.rs), or under sudo keep your PATH." >&2
    exit 1
fi

# Show what differs from the issue's matrix (the machine itself loadgen prints).
overrides=$(env | grep '^UPSLOT_LOADGEN_' | sort | tr '\n' ' ' || true)
if [ -n "$overrides" ]; then
    echo "Settings from the environment: ${overrides% }"
    echo
fi
[ "$(id -u)" -eq 0 ] || echo "compare.sh: not root: nginx runs as $(id -un); that is fine." >&2

exec cargo bench --bench loadgen
