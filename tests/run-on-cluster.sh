#!/usr/bin/env bash
# Runs the HTTP test suites a second time, on S3 (a 3-node Garage cluster)
# and PostgreSQL instead of the local disk and the embedded index: the same
# tests, each with its own key prefix and database schema (tests/common,
# `on_cluster`). Tests of the file-system store itself skip there.
# Usage: bash tests/run-on-cluster.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d /tmp/upslot-suites-XXXXXX)
stop() {
    bash deploy/cluster/garage.sh stop "$dir" || true
    bash deploy/cluster/postgres.sh stop "$dir" || true
    rm -rf "$dir"
}
trap stop EXIT
bash deploy/cluster/garage.sh start "$dir"
bash deploy/cluster/postgres.sh start "$dir"

suites=(upload upload_wire upload_restart download conditional cors paths
    quota expiry metrics vectors logging limits connections files_cli tls)
args=()
for suite in "${suites[@]}"; do
    args+=(--test "$suite")
done
UPSLOT_TEST_CLUSTER=$dir cargo test "${args[@]}" "$@"
