#!/usr/bin/env bash
# nginx on 127.0.0.1 in front of several upslot instances, round robin.
# Used by the integration tests and as an example; the proxy settings are
# those of deploy/nginx/upslot.conf (read it for the reasons), minus TLS.
#
#   nginx.sh start DIR UPSTREAM...   e.g. 127.0.0.1:5050 127.0.0.1:5060
#   nginx.sh stop DIR
#
# Everything lives under DIR: nginx.conf, nginx.pid, nginx-error.log, temp
# directories, and nginx.env (NGINX_URL, for `source`). A start after a stop
# keeps the port and takes the upstreams given this time.
set -euo pipefail
SELF="nginx.sh ${1:-}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { die "usage: nginx.sh start DIR HOST:PORT... | nginx.sh stop DIR"; }
[ $# -ge 2 ] || usage
ACTION=$1
DIR=$(realpath -m -- "$2")
shift 2
NGINX=${NGINX:-/usr/sbin/nginx}

start() {
    local port upstreams='' u
    [ $# -ge 1 ] || usage
    [ -x "$NGINX" ] || die "no nginx at $NGINX: apt-get install nginx-light, or set NGINX"
    ours "$DIR/nginx.pid" "$DIR/nginx.conf" >/dev/null && die "already running; stop it first"
    local hostport='^[][0-9A-Za-z.:-]+:[0-9]+$'
    for u in "$@"; do
        [[ $u =~ $hostport ]] || die "upstream '$u' is not HOST:PORT"
        upstreams+="        server $u;"$'\n'
    done
    mkdir -p "$DIR/tmp"
    # Run as root, nginx's workers switch to nobody; they need to pass through
    # DIR to the temp directories (which nginx creates and hands to them).
    chmod o+x "$DIR"
    # The same port as last time, so that a URL a test holds stays valid.
    port=$(sed -n 's|^NGINX_URL=http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$DIR/nginx.env" 2>/dev/null) || true
    [ -n "$port" ] || port=$(free_ports 1)

    cat >"$DIR/nginx.conf" <<EOF
# Written by deploy/cluster/nginx.sh.
daemon on;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
worker_processes 1;
events { worker_connections 1024; }

http {
    # No access log: upslot promises not to keep client addresses, and the
    # URLs carry the upload tokens.
    access_log off;
    server_tokens off;
    # Under DIR, not /var/lib/nginx: no root needed, nothing left behind.
    # With buffering off below they should stay empty.
    client_body_temp_path $DIR/tmp/client_body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;

    upstream upslot {
        # Round robin. A server that refuses connections is skipped for
        # 10 s (max_fails=1 fail_timeout=10s, nginx's defaults).
$upstreams        keepalive 16;
    }

    server {
        listen 127.0.0.1:$port;
        # Each upslot instance enforces its own max_file_size; a second limit
        # here could only disagree with it.
        client_max_body_size 0;
        client_body_timeout 60s;
        send_timeout 60s;

        # Every path: upslot answers only under its base_path. Never give an
        # instance's admin listener (/metrics) as an upstream.
        location / {
            # No URI part: the path reaches upslot byte for byte, as signed.
            proxy_pass http://upslot;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            gzip off;

            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header Forwarded "";

            # nginx's default, spelled out: a request goes to the next
            # instance when one refuses the connection or times out; never
            # POST/PATCH/LOCK once sent. nginx counts PUT as idempotent, but
            # with request buffering off it cannot resend a body it has begun
            # to send: a PUT moves on only if its connection failed, and one
            # that reached an instance which then failed gets 502, never a
            # second copy elsewhere.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 5s;
            proxy_send_timeout 60s;
            proxy_read_timeout 120s;
            proxy_redirect off;
        }
    }
}
EOF

    # -p: relative paths nginx might still use resolve under DIR; -e: errors
    # before the config is read go there too, not to /var/log/nginx.
    "$NGINX" -p "$DIR/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf" -q -t ||
        die "nginx rejects $DIR/nginx.conf; see $DIR/nginx-error.log"
    # With `daemon on` nginx returns once its socket is bound and the master
    # has written its PID: no waiting loop is needed.
    "$NGINX" -p "$DIR/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf" </dev/null >/dev/null 2>&1 || {
        tail -n 20 "$DIR/nginx-error.log" >&2
        die "nginx did not start"
    }
    wait_for 5 "nginx to write its pid file" ours "$DIR/nginx.pid" "$DIR/nginx.conf" >/dev/null
    echo "NGINX_URL=http://127.0.0.1:$port" >"$DIR/nginx.env"
}

stop() {
    local pid
    pid=$(ours "$DIR/nginx.pid" "$DIR/nginx.conf") || return 0
    # TERM: fast shutdown; open uploads are cut, as they would be on a crash.
    stop_pids "$pid"
    rm -f "$DIR/nginx.pid"
}

case $ACTION in
start) start "$@" ;;
stop) [ $# = 0 ] || usage; stop ;;
*) usage ;;
esac
