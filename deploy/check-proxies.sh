#!/usr/bin/env bash
# Checks deploy/nginx/upslot.conf and deploy/caddy/Caddyfile with the real
# servers, in front of the real upslot (target/release/upslot, configured from
# deploy/upslot.toml):
#   - `nginx -t` on the site, `caddy validate` on the Caddyfile;
#   - through each proxy, over https with a throwaway CA: a 3 MiB upload over
#     HTTP/1.1 with `Expect: 100-continue` and a path as Prosody's file_share
#     writes it (literal `(`, `)`, `+`); an upload over HTTP/2 with a JWT and
#     lowercase percent-escapes; downloads compared by SHA-256; `Range:
#     bytes=0-1` -> 206; HEAD; a CORS preflight; an upload above
#     max_file_size -> 413;
#   - a refused slot is logged with the client's address as the proxy saw it
#     (X-Forwarded-For from a trusted proxy), not with one the client made up.
# Everything listens on 127.0.0.1 (free high ports) and is stopped on exit.
# Run as root (it installs nginx and caddy with apt-get when they are missing).
# Used by .ci/run; run it by hand with `bash deploy/check-proxies.sh`.
# UPSLOT_BIN overrides the binary; SKIP_CADDY=1 skips Caddy; KEEP_TMP=1 keeps
# the scratch directory (configurations and logs) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '[check-proxies %3ss] %s\n' "$SECONDS" "$*"; }
fail() {
    say "FAIL: $*"
    for log in "${T:-/nonexistent}"/upslot/stderr.log "${T:-/nonexistent}"/nginx/error.log "${T:-/nonexistent}"/caddy/caddy.log; do
        [ -f "$log" ] && { say "--- $log (last 20 lines)"; tail -n 20 "$log"; }
    done
    exit 1
}

# --- tools -----------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${SKIP_CADDY:-0}" != 1 ] && ! command -v caddy >/dev/null 2>&1; then
    missing+=(caddy)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    # The packages would start their default sites on port 80; keep them from
    # starting while they install (the same policy-rc.d Debian images use).
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
nginx -v 2>&1 | sed 's/^/[check-proxies] /'
HAVE_CADDY=0
if [ "${SKIP_CADDY:-0}" != 1 ] && command -v caddy >/dev/null 2>&1; then
    HAVE_CADDY=1
    say "caddy $(caddy version)"
else
    say "SKIPPED: Caddy (SKIP_CADDY=1 or not installable); only nginx is checked"
fi

BIN=${UPSLOT_BIN:-$ROOT/target/release/upslot}
if [ -z "${UPSLOT_BIN:-}" ]; then
    cargo build --release --quiet --bin upslot
fi
[ -x "$BIN" ] || fail "no upslot binary at $BIN"

# --- scratch space and clean-up ---------------------------------------------
T=$(mktemp -d /tmp/upslot-proxies.XXXXXX)
# nginx's workers run as nobody and must reach their temp directories.
chmod 0711 "$T"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        say "kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on now (the kernel's choice would need a helper).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            case " ${USED_PORTS:-} " in *" $p "*) continue ;; esac
            USED_PORTS="${USED_PORTS:-} $p"
            echo "$p"
            return
        fi
    done
}
UPSLOT_PORT=$(free_port)
ADMIN_PORT=$(free_port)
NGINX_HTTPS=$(free_port)
NGINX_HTTP=$(free_port)
CADDY_HTTPS=$(free_port)
HOST=upload.example.org

# --- a throwaway CA and a certificate for upload.example.org ----------------
mkdir -p "$T/tls"
(
    cd "$T/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=upslot CI CA" -keyout ca.key -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=$HOST" -keyout key.pem -out req.pem 2>/dev/null
    printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$HOST" >ext.cnf
    openssl x509 -req -in req.pem -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out cert.pem 2>/dev/null
)

# --- upslot, configured from deploy/upslot.toml -----------------------------
mkdir -p "$T/upslot"
sed -e "s#\"127.0.0.1:5050\"#\"127.0.0.1:$UPSLOT_PORT\"#" \
    -e "s#\"127.0.0.1:5051\"#\"127.0.0.1:$ADMIN_PORT\"#" \
    -e "s#\"/var/lib/upslot\"#\"$T/upslot/data\"#" \
    -e 's#^min_free_space = .*#min_free_space = "0"#' \
    deploy/upslot.toml >"$T/upslot/upslot.toml"
grep -q "^listen = \"127.0.0.1:$UPSLOT_PORT\"" "$T/upslot/upslot.toml" || fail "listen not substituted"
grep -q "^listen = \"127.0.0.1:$ADMIN_PORT\"" "$T/upslot/upslot.toml" || fail "[admin] listen not substituted"
grep -q "^data_dir = \"$T/upslot/data\"" "$T/upslot/upslot.toml" || fail "data_dir not substituted"
grep -q '^trusted_proxies = \["127.0.0.1/32"' "$T/upslot/upslot.toml" || fail "deploy/upslot.toml does not trust the local proxy"
"$BIN" check-config "$T/upslot/upslot.toml" | sed 's/^/[check-proxies] /'
"$BIN" serve -c "$T/upslot/upslot.toml" >"$T/upslot/stdout.log" 2>"$T/upslot/stderr.log" &
PIDS+=($!)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || fail "upslot is not ready"
say "upslot ready on 127.0.0.1:$UPSLOT_PORT (admin $ADMIN_PORT)"

# --- test bodies ------------------------------------------------------------
head -c $((3 * 1024 * 1024)) /dev/urandom >"$T/big.bin"
printf 'hello over HTTP/2\n' >"$T/small.txt"
# One byte above max_file_size (100 MiB), sparse: no data is ever read.
truncate -s $((100 * 1024 * 1024 + 1)) "$T/over.bin"

SIGN=("$BIN" sign -c "$T/upslot/upslot.toml")

# Runs every check through the proxy listening on 127.0.0.1:$2 for https://$HOST.
exercise() {
    local name=$1 port=$2
    local base="https://$HOST:$port/upload/"
    local curl=(curl -sS --cacert "$T/tls/ca.pem" --resolve "$HOST:$port:127.0.0.1" --max-time 60)
    local code url get sum_sent sum_got slot hdr dir="$T/$name"
    mkdir -p "$dir"

    # 1. HTTP/1.1, v1, 3 MiB, Expect: 100-continue; the path as Prosody's
    #    file_share writes it (literal parentheses and plus sign).
    url=$("${SIGN[@]}" --base-url "$base" --size "$(stat -c %s "$T/big.bin")" \
        --type application/octet-stream "Grüße (1)+x.bin")
    url=$(printf '%s' "$url" | sed -e 's/%28/(/g' -e 's/%29/)/g' -e 's/%2B/+/g')
    case $url in *"(1)+x.bin?v="*) ;; *) fail "$name: unexpected URL $url" ;; esac
    code=$("${curl[@]}" --http1.1 -v -o "$dir/put1.out" -w '%{http_code}' \
        -H 'Expect: 100-continue' -H 'Content-Type: application/octet-stream' \
        -T "$T/big.bin" "$url" 2>"$dir/put1.trace") || fail "$name: upload 1: curl failed"
    [ "$code" = 201 ] || fail "$name: upload over HTTP/1.1: $code $(cat "$dir/put1.out")"
    grep -q '^> Expect: 100-continue' "$dir/put1.trace" || fail "$name: curl sent no Expect"
    grep -q '^< HTTP/1.1 100 Continue' "$dir/put1.trace" || fail "$name: no 100 Continue"
    get=${url%%\?*}
    code=$("${curl[@]}" -o "$dir/get1.bin" -w '%{http_code}' "$get")
    [ "$code" = 200 ] || fail "$name: download: $code"
    sum_sent=$(sha256sum <"$T/big.bin" | cut -d' ' -f1)
    sum_got=$(sha256sum <"$dir/get1.bin" | cut -d' ' -f1)
    [ "$sum_sent" = "$sum_got" ] || fail "$name: downloaded body differs"
    say "$name: PUT 3 MiB over HTTP/1.1 with 100-continue: 201; GET: 200, sha256 $sum_got matches"

    # 2. Range: bytes=0-1 (Safari's video probe) and HEAD.
    code=$("${curl[@]}" -D "$dir/range.h" -o "$dir/range.bin" -w '%{http_code}' \
        -H 'Range: bytes=0-1' "$get")
    [ "$code" = 206 ] || fail "$name: Range bytes=0-1: $code"
    grep -qi "^content-range: bytes 0-1/$(stat -c %s "$T/big.bin")" "$dir/range.h" ||
        fail "$name: wrong Content-Range: $(grep -i content-range "$dir/range.h")"
    cmp -s "$dir/range.bin" <(head -c 2 "$T/big.bin") || fail "$name: wrong range bytes"
    "${curl[@]}" -I -o /dev/null -D "$dir/head.h" "$get"
    grep -qi "^content-length: $(stat -c %s "$T/big.bin")" "$dir/head.h" ||
        fail "$name: HEAD has no Content-Length"
    say "$name: Range bytes=0-1: 206 with Content-Range; HEAD: Content-Length"

    # 3. HTTP/2, JWT (Authorization header), lowercase percent-escapes.
    "${SIGN[@]}" --scheme jwt --base-url "$base" --size "$(stat -c %s "$T/small.txt")" \
        --type text/plain "Ä ö.txt" >"$dir/slot"
    slot=$(sed -n 1p "$dir/slot" | sed 's/%\([0-9A-F]\)\([0-9A-F]\)/%\L\1\2/g')
    hdr=$(sed -n 2p "$dir/slot")
    case $slot in *%c3%84*) ;; *) fail "$name: unexpected URL $slot" ;; esac
    code=$("${curl[@]}" --http2 -o "$dir/put2.out" -w '%{http_code} %{http_version}' \
        -H "$hdr" -H 'Content-Type: text/plain' -T "$T/small.txt" "$slot")
    [ "$code" = "201 2" ] || fail "$name: upload over HTTP/2: $code $(cat "$dir/put2.out")"
    code=$("${curl[@]}" --http2 -o "$dir/get2.txt" -w '%{http_code}' "$slot")
    [ "$code" = 200 ] && cmp -s "$dir/get2.txt" "$T/small.txt" || fail "$name: HTTP/2 download: $code"
    say "$name: PUT with a JWT over HTTP/2: 201; GET: 200, same bytes"

    # 4. CORS preflight, no token.
    code=$("${curl[@]}" -X OPTIONS -D "$dir/cors.h" -o /dev/null -w '%{http_code}' \
        -H 'Origin: https://chat.example.org' -H 'Access-Control-Request-Method: PUT' "$get")
    [ "$code" = 204 ] && grep -qi '^access-control-allow-origin: ' "$dir/cors.h" ||
        fail "$name: preflight: $code"
    say "$name: OPTIONS preflight: 204 with Access-Control-Allow-Origin"

    # 5. Above max_file_size: 413 before the body is sent.
    url=$("${SIGN[@]}" --base-url "$base" --size "$(stat -c %s "$T/over.bin")" over.bin)
    code=$("${curl[@]}" --http1.1 -o "$dir/over.out" -w '%{http_code} %{size_upload}' \
        -H 'Expect: 100-continue' -T "$T/over.bin" "$url") || true
    [ "$code" = "413 0" ] || fail "$name: upload above max_file_size: status, bytes sent: $code"
    say "$name: PUT of max_file_size + 1 byte with 100-continue: 413, no body byte sent"

    # 6. A refused slot from 127.0.0.3, claiming to be someone else: the log
    #    line names 127.0.0.3 (the proxy's X-Forwarded-For), nothing made up.
    url=$("${SIGN[@]}" --base-url "$base" --size 5 refused.txt)
    url="${url%%\?*}?v=$(printf '0%.0s' $(seq 64))"
    local before line
    before=$(grep -c 'authorization failed' "$T/upslot/stderr.log" || true)
    code=$("${curl[@]}" --interface 127.0.0.3 -o /dev/null -w '%{http_code}' \
        -H 'X-Forwarded-For: 203.0.113.9' -H 'Forwarded: for=198.51.100.7' \
        --data-binary hello -X PUT "$url")
    [ "$code" = 403 ] || fail "$name: bad signature: $code"
    for _ in $(seq 50); do
        [ "$(grep -c 'authorization failed' "$T/upslot/stderr.log")" -gt "$before" ] && break
        sleep 0.1
    done
    line=$(grep 'authorization failed' "$T/upslot/stderr.log" | sed -n "$((before + 1))p")
    case $line in
        *"client=127.0.0.3 "*) ;;
        *) fail "$name: failed-auth line does not name the client: $line" ;;
    esac
    if grep -q -e 203.0.113.9 -e 198.51.100.7 "$T/upslot/stderr.log"; then
        fail "$name: an address the client made up reached the log"
    fi
    say "$name: bad signature: 403, logged as ${line#*authorization failed }"

    # 7. (Information only.) A slot upslot refuses, with a 3 MiB body and
    #    100-continue: how much of the body the client sent before the 403.
    #    nginx answers 100 Continue itself, so the body flows; when upslot
    #    closes the connection before nginx has sent it all, nginx's write
    #    fails and the client gets 502 instead of 403 (upslot answers before
    #    reading and closes without draining). Caddy, with
    #    expect_continue_timeout, sends nothing.
    code=$("${curl[@]}" --http1.1 -o /dev/null -w '%{http_code} %{size_upload}' \
        -H 'Expect: 100-continue' -T "$T/big.bin" "$url") || true
    say "$name: refused slot with 100-continue: status, body bytes sent: $code"
}

# --- nginx --------------------------------------------------------------------
mkdir -p "$T/nginx"
sed -e "s#listen 443 ssl http2;#listen 127.0.0.1:$NGINX_HTTPS ssl http2;#" \
    -e '/listen \[::\]:/d' \
    -e "s#listen 80;#listen 127.0.0.1:$NGINX_HTTP;#" \
    -e "s#/etc/letsencrypt/live/$HOST/fullchain.pem#$T/tls/cert.pem#" \
    -e "s#/etc/letsencrypt/live/$HOST/privkey.pem#$T/tls/key.pem#" \
    -e "s#server 127.0.0.1:5050;#server 127.0.0.1:$UPSLOT_PORT;#" \
    deploy/nginx/upslot.conf >"$T/nginx/upslot.conf"
for gone in 'listen 443' 'listen 80;' 'listen \[::\]' letsencrypt '127.0.0.1:5050;'; do
    if grep -v '^[[:space:]]*#' "$T/nginx/upslot.conf" | grep -q "$gone"; then
        fail "deploy/nginx/upslot.conf changed: '$gone' was not substituted"
    fi
done
cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log notice;
events { worker_connections 64; }
http {
    default_type application/octet-stream;
    client_body_temp_path $T/nginx/client_body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    include $T/nginx/upslot.conf;
}
EOF
NGINX=(nginx -p "$T/nginx/" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log")
"${NGINX[@]}" -t 2>&1 | sed 's/^/[check-proxies] nginx -t: /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "nginx -t"
"${NGINX[@]}" &
PIDS+=($!)
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_HTTPS") 2>/dev/null && break
    sleep 0.1
done
code=$(curl -sS -o /dev/null -w '%{http_code}' --resolve "$HOST:$NGINX_HTTP:127.0.0.1" \
    "http://$HOST:$NGINX_HTTP/upload/x")
[ "$code" = 301 ] || fail "nginx: plain http is not redirected: $code"
exercise nginx "$NGINX_HTTPS"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$T/tls/ca.pem" \
    --resolve "$HOST:$NGINX_HTTPS:127.0.0.1" "https://$HOST:$NGINX_HTTPS/metrics")
[ "$code" = 404 ] || fail "nginx: /metrics answers $code, not 404"
say "nginx: http redirects to https; nothing outside /upload/ is served"

# --- Caddy --------------------------------------------------------------------
if [ "$HAVE_CADDY" = 1 ]; then
    mkdir -p "$T/caddy"
    export XDG_DATA_HOME="$T/caddy/data" XDG_CONFIG_HOME="$T/caddy/config"
    caddy validate --adapter caddyfile --config deploy/caddy/Caddyfile >"$T/caddy/validate.log" 2>&1 ||
        { cat "$T/caddy/validate.log"; fail "caddy validate deploy/caddy/Caddyfile"; }
    say "caddy validate deploy/caddy/Caddyfile: $(tail -n 1 "$T/caddy/validate.log")"
    {
        printf '{\n\tadmin off\n\tauto_https off\n}\n\n'
        sed -e "s#^$HOST {#https://$HOST:$CADDY_HTTPS {\n\tbind 127.0.0.1\n\ttls $T/tls/cert.pem $T/tls/key.pem#" \
            -e "s#reverse_proxy 127.0.0.1:5050 {#reverse_proxy 127.0.0.1:$UPSLOT_PORT {#" \
            deploy/caddy/Caddyfile
    } >"$T/caddy/Caddyfile"
    grep -q "bind 127.0.0.1" "$T/caddy/Caddyfile" || fail "Caddyfile: site address not substituted"
    grep -q "reverse_proxy 127.0.0.1:$UPSLOT_PORT" "$T/caddy/Caddyfile" || fail "Caddyfile: upstream not substituted"
    caddy validate --adapter caddyfile --config "$T/caddy/Caddyfile" >>"$T/caddy/validate.log" 2>&1 ||
        { cat "$T/caddy/validate.log"; fail "caddy validate (rendered for the test)"; }
    caddy run --adapter caddyfile --config "$T/caddy/Caddyfile" >"$T/caddy/caddy.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$CADDY_HTTPS") 2>/dev/null && break
        sleep 0.1
    done
    exercise caddy "$CADDY_HTTPS"
fi

say "OK"
