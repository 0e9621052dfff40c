#!/usr/bin/env bash
# A 3-node Garage cluster on 127.0.0.1, the S3 store that several upslot
# instances share. Used by the integration tests and as an example.
#
#   garage.sh start DIR          create (first time) or restart the cluster
#   garage.sh stop DIR           stop all nodes
#   garage.sh stop-node DIR N    stop node N (1-3): "one node down"
#   garage.sh start-node DIR N   start node N again, wait until it is back
#
# Everything lives under DIR: nodeN.toml, nodeN/{meta,data}, nodeN.log,
# nodeN.pid, and garage.env (S3_* and AWS_* variables, for `source`).
# The binary is $GARAGE, else `garage` on PATH, else ~/.cargo/bin/garage.
#
# Replication factor 3 with 3 nodes: every object is on every node, and reads
# and writes need 2 of 3, so any one node can be down without clients noticing.
set -euo pipefail
SELF="garage.sh ${1:-}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { die "usage: garage.sh start|stop DIR | garage.sh start-node|stop-node DIR N"; }
[ $# -ge 2 ] || usage
ACTION=$1
DIR=$(realpath -m -- "$2")
NODES=(1 2 3)

GARAGE=${GARAGE:-$(command -v garage || echo ~/.cargo/bin/garage)}
[ -x "$GARAGE" ] || [ "$ACTION" = stop ] || [ "$ACTION" = stop-node ] ||
    die "no garage binary: set GARAGE=/path/to/garage, or put it on PATH (cargo install garage)"

# The CLI talks to the node whose config it is given, over RPC.
on() { # N garage-arguments...
    local n=$1
    shift
    "$GARAGE" -c "$DIR/node$n.toml" "$@"
}

write_config() { # N RPC_PORT S3_PORT ADMIN_PORT SECRET
    mkdir -p "$DIR/node$1/meta" "$DIR/node$1/data"
    # sqlite: one file, no memory map sized up front (LMDB's way). fsync of
    # metadata and data stays at Garage's default, off: turn
    # metadata_fsync/data_fsync on in production if a power cut must not
    # lose the last writes.
    cat >"$DIR/node$1.toml" <<EOF
metadata_dir = "$DIR/node$1/meta"
data_dir = "$DIR/node$1/data"
db_engine = "sqlite"
replication_factor = 3

rpc_bind_addr = "127.0.0.1:$2"
rpc_public_addr = "127.0.0.1:$2"
rpc_secret = "$5"
# Filled in once the nodes have made their keys (see first_start).
bootstrap_peers = []

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$3"
# For virtual-host addressing (bucket.s3.garage.localhost); upslot uses
# path-style (http://127.0.0.1:PORT/bucket/key), which needs no DNS.
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$4"
EOF
    # The file holds the cluster's shared secret.
    chmod 600 "$DIR/node$1.toml"
}

running() { ours "$DIR/node$1.pid" "$DIR/node$1.toml" >/dev/null; }

start_node() { # N
    running "$1" && return 0
    # No stdin and no inherited stdout/stderr: a caller reading our output to
    # its end (a test's Command::output()) must not wait for the server.
    "$GARAGE" -c "$DIR/node$1.toml" server </dev/null >>"$DIR/node$1.log" 2>&1 &
    echo $! >"$DIR/node$1.pid"
}

node_up() { # N: the node runs, else show why it died
    running "$1" && return 0
    tail -n 20 "$DIR/node$1.log" >&2
    die "node $1 is not running; its log is $DIR/node$1.log"
}

# address N: ID@127.0.0.1:RPC_PORT, from the key the node makes on first start.
address() { on "$1" node id -q 2>/dev/null; }

# linked A B: node A gets an answer from node B over RPC, else A is told to
# connect to B now. Both are needed after a node restarts:
# - the others keep their outgoing connection to its old process, and Garage
#   drops one only when a write to it fails (or a ping does, every 15 s).
#   Until then their requests to the node go unanswered: the first probe here
#   times out, the next one's write fails and Garage drops the connection.
# - a node that failed to connect to a peer waits 30 s before trying again;
#   `node connect` does not wait.
linked() {
    local b out
    node_up "$1"
    node_up "$2"
    b=$(address "$2") || return 1
    out=$(timeout 2 "$GARAGE" -c "$DIR/node$1.toml" json-api GetNodeInfo \
        "{\"node\": \"${b%@*}\", \"body\": null}" 2>/dev/null) || true
    grep -q '"error": {}' <<<"$out" && return 0
    timeout 5 "$GARAGE" -c "$DIR/node$1.toml" node connect "$b" >/dev/null 2>&1 || true
    return 1
}

# link N...: every ordered pair of these (running) nodes is linked. All pairs
# at once, so that the probes which time out do so together.
link() {
    local a b pid pids=() failed=0
    for a in "$@"; do
        for b in "$@"; do
            [ "$a" = "$b" ] && continue
            wait_for 30 "node $a to reach node $b" linked "$a" "$b" &
            pids+=("$!")
        done
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "the nodes cannot reach each other; see $DIR/node*.log"
}

# s3_ready N: a signed ListObjectsV2 through node N answers 200. That needs
# the layout, the key and the bucket to have reached that node and a quorum
# of nodes to answer: an open port alone is not "ready". curl (7.88) signs
# but does not send the payload hash header that S3 requires; we add it.
s3_ready() {
    local endpoints code
    node_up "$1"
    read -r -a endpoints <<<"$S3_ENDPOINTS"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        "${endpoints[$1 - 1]}/$S3_BUCKET?list-type=2&max-keys=1") || true
    [ "$code" = 200 ]
}

# healthy N: node N has the layout and sees a quorum for every partition.
healthy() {
    node_up "$1"
    on "$1" health 2>/dev/null | grep -Eq '^Cluster health: +HEALTHY$'
}

load_env() {
    [ -s "$DIR/garage.env" ] || die "$DIR/garage.env is missing: run 'garage.sh start $DIR' first"
    # shellcheck source=/dev/null
    . "$DIR/garage.env"
}

first_start() {
    local ports secret n ids=() peers out key_id secret_key endpoints=()
    mkdir -p "$DIR"
    read -r -a ports <<<"$(free_ports 9)"
    secret=$(random_hex 32)
    for n in "${NODES[@]}"; do
        write_config "$n" "${ports[n * 3 - 3]}" "${ports[n * 3 - 2]}" "${ports[n * 3 - 1]}" "$secret"
        endpoints+=("http://127.0.0.1:${ports[n * 3 - 2]}")
    done
    for n in "${NODES[@]}"; do start_node "$n"; done

    # Each node makes its key pair when it starts; `node id` reads it.
    for n in "${NODES[@]}"; do
        wait_for 30 "node $n to start" address "$n" >/dev/null
        ids+=("$(address "$n")")
    done
    # Connect every pair directly (linked runs `node connect`): through
    # gossip alone, nodes 2 and 3 would find each other only seconds later.
    link "${NODES[@]}"
    # Garage saves the peers it is connected to only once a minute, so a
    # cluster restarted sooner would not find them again: name them in the
    # configs, for the next start of each node.
    peers=$(printf '"%s", ' "${ids[@]}")
    for n in "${NODES[@]}"; do
        sed -i "s/^bootstrap_peers = \[\]\$/bootstrap_peers = [${peers%, }]/" "$DIR/node$n.toml"
    done

    # One zone per node: with 3 zones and 3 copies, Garage puts one copy in each.
    for n in "${NODES[@]}"; do
        on 1 layout assign -z "dc$n" -c 1G "${ids[n - 1]%@*}" >/dev/null
    done
    on 1 layout apply --version 1 >/dev/null
    # Writes need a quorum in the new layout: every node must have it before
    # the key and the bucket can be stored.
    for n in "${NODES[@]}"; do wait_for 30 "node $n to apply the layout" healthy "$n"; done

    out=$(on 1 key create upslot)
    key_id=$(awk '$1 == "Key" && $2 == "ID:" {print $3}' <<<"$out")
    secret_key=$(awk '$1 == "Secret" && $2 == "key:" {print $3}' <<<"$out")
    if [ -z "$key_id" ] || [ -z "$secret_key" ]; then
        die "cannot read the key from 'garage key create': $out"
    fi
    on 1 bucket create upslot >/dev/null
    on 1 bucket allow --read --write --owner upslot --key upslot >/dev/null

    # Written last: its presence means the cluster was set up completely.
    cat >"$DIR/garage.env.tmp" <<EOF
S3_ENDPOINTS="${endpoints[*]}"
S3_ENDPOINT=${endpoints[0]}
S3_REGION=garage
S3_BUCKET=upslot
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret_key
EOF
    chmod 600 "$DIR/garage.env.tmp"
    mv "$DIR/garage.env.tmp" "$DIR/garage.env"
}

stop_nodes() { # N...
    local n pid pids=()
    for n in "$@"; do
        if pid=$(ours "$DIR/node$n.pid" "$DIR/node$n.toml"); then pids+=("$pid"); fi
    done
    stop_pids "${pids[@]}"
    for n in "$@"; do rm -f "$DIR/node$n.pid"; done
}

case $ACTION in
start)
    [ $# = 2 ] || usage
    if [ -s "$DIR/garage.env" ]; then
        for n in "${NODES[@]}"; do start_node "$n"; done
        link "${NODES[@]}"
    elif [ -e "$DIR/node1.toml" ]; then
        die "$DIR holds a cluster whose set-up did not finish: stop it and remove $DIR"
    else
        first_start
    fi
    load_env
    for n in "${NODES[@]}"; do wait_for 30 "S3 on node $n (log: $DIR/node$n.log)" s3_ready "$n"; done
    ;;
stop)
    [ $# = 2 ] || usage
    stop_nodes "${NODES[@]}"
    ;;
start-node | stop-node)
    [ $# = 3 ] || usage
    [[ $3 =~ ^[123]$ ]] || die "no node $3: nodes are 1, 2 and 3"
    if [ "$ACTION" = stop-node ]; then
        stop_nodes "$3"
    else
        load_env
        start_node "$3"
        # Links among the nodes that are up: another node may be down too.
        up=()
        for n in "${NODES[@]}"; do
            if running "$n"; then up+=("$n"); fi
        done
        link "${up[@]}"
        wait_for 30 "S3 on node $3 (log: $DIR/node$3.log)" s3_ready "$3"
    fi
    ;;
*) usage ;;
esac
