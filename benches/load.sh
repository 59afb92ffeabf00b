#!/usr/bin/env bash
# End-to-end load test: the echo upstream measured directly, through a plain Pingora proxy,
# through authgate and through Apache + mod_auth_openidc, interleaved in one run so every target
# sees the same machine state. Targets:
#   direct          the echo upstream itself
#   plain-fair      examples/plain_proxy.rs with `fair`: Pingora with nothing on the request
#                   path but the settings a production proxy has (authgate's defaults: upstream
#                   connect/read/write/pool-idle timeouts, client keep-alive timeout), built from
#                   the same dependency: the fair baseline for authgate's own cost
#   plain-proxy     the same proxy bare (no timeouts at all): a second line
#   plain-mimalloc  the fair proxy with authgate's allocator (mimalloc): the ratio to it is
#                   authgate's own cost without the allocator's share
#   public          authgate (memory store) on a public route (/public/...)
#   session-cached  the same authgate on a protected route with a valid session cookie: the
#                   in-memory session cache answers
#   session-many    the same, rotating over SESSIONS distinct signed-in sessions (default
#                   10 000, each from a real login): caches as in production, not one hot entry
#   session-redis   a second authgate with store = "redis" and cache_max_age = "0s": every
#                   request asks Redis (one Lua script call: expiry, idle touch, and the record
#                   only when it changed since the copy held in memory)
#   bearer-rs256, bearer-es256
#                   the first authgate on a bearer route (/api) with a JWT access token from
#                   the IdP: the verified-token cache answers after the first request
#   bearer-rs256-nocache, bearer-es256-nocache
#                   a third authgate with gateway.bearer_cache_entries = 0: every request
#                   verifies the signature
#   apache-oidc     Apache httpd (event MPM) + mod_auth_openidc from Debian, sessions in the
#                   same Redis (OIDCSessionType server-cache), signed in once with a valid
#                   session cookie: the incumbent in front of legacy apps
# The session gateways sign in once against the test IdP (tests/idp, auto-login) with
# benches/login.py and wrk sends the session cookie; bearer targets send
# client-credentials tokens from the same IdP.
#
#   bash benches/load.sh                      # 3 rounds x 3 shapes x 13 targets x (1 s + 5 s)
#   ROUNDS=5 CONNS=128 DURATION=10s bash benches/load.sh
#   SHAPES=browser ONLY=plain-fair,session-many bash benches/load.sh
#   SOAK=0 TLS=0 bash benches/load.sh         # without the 10-minute memory run and TLS
#
# Request shapes (SHAPES, default "minimal browser api"; every target is measured in each):
#   minimal   wrk's own request: Host, and the target's credential (cookie or bearer token)
#   browser   a navigation as Chromium sends it: 14 headers, ~1 KB (Accept, Accept-Language,
#             Sec-Fetch-*, Sec-Ch-Ua*, User-Agent, Referer, ...), the session cookie among
#             three unrelated cookies
#   api       an XHR/fetch call: Accept: application/json, Sec-Fetch-Mode: cors, a User-Agent,
#             a Referer, and the credential
# Every target gets its requests from one generated wrk Lua script (the same mechanism for
# all, so the load generator's cost is equal); session-many's picks the next of the SESSIONS
# cookies on each request.
#
# TLS and HTTP/2 (TLS=1, the default), after the plain-HTTP rounds, as browsers reach a
# gateway: one self-signed certificate for 127.0.0.1, served by authgate's TLS listener, the fair
# plain proxy (`--tls`) and Apache (mod_ssl, mod_http2), all in the browser shape with the
# session cookie (authgate: `__Host-` name over HTTPS; one session, as h2load sends fixed
# headers), TLS_ROUNDS interleaved rounds (default ROUNDS) of:
#   h2        h2load over TLS with ALPN h2, CONNS connections x TLS_STREAMS (10) concurrent
#             streams each, for DURATION; percentiles from h2load's per-request log
#   h1-close  wrk over TLS with HTTP/1.1 and `Connection: close`: a new TLS connection (full
#             handshake) for every request
#
# Memory under load (SOAK, default 600s; SOAK=0 skips it): session-many in SCALE_SHAPE at CONNS
# connections for SOAK without a pause, the gateway's resident memory (VmRSS and RssAnon)
# sampled every 10 s, into $OUT_DIR/soak-load.md and soak-load.tsv: RSS before the run, the
# highest in the middle and in the last third (flat is the pass mark), requests and errors.
#
# After the rounds, a scaling curve: plain-proxy and session-cached at SCALE_CONNS connections
# (default "1 16 64 256 1024"), one run each, drawn into $OUT_DIR/scaling.svg (throughput and
# p99 against connections) with the numbers in scaling.md / scaling.json. SCALE_CONNS="" skips it.
#
# Environment: ROUNDS (3), CONNS (64), DURATION (5s), WRK_THREADS (2), WARMUP (1s), PIN (1),
# ONLY (comma-separated target names to measure, e.g. ONLY=plain-proxy,session-cached; the
# servers' logs are copied to $OUT_DIR/logs either way),
# REQ_PATH (/bench?echo_quiet: the echo answers a bare "ok"; the public target gets /public in
# front), OUT_DIR (bench-results).
# Needs cargo, curl, python3, node (+ npm when tests/idp/node_modules is missing), wrk and
# redis-server (wrk and redis-server are installed with apt-get when missing and running as
# root; so are apache2 and libapache2-mod-auth-openidc). All traffic goes to 127.0.0.1. Results:
# a table on stdout, $OUT_DIR/load.md and load.json: req/s, p50, p99, p99.9 (wrk's recorded
# latencies, through a Lua `done` hook), CPU seconds per 10 000 requests of the process(es)
# serving the target (utime + stime from /proc, the measured run only), and throughput and p99
# ratios against every baseline (plain-proxy, plain-mimalloc, apache-oidc, public).
#
# Adding a target: start whatever serves it in `start_servers`, then add
# "name|url|header|pid-variable" to TARGETS in `main`; medians, ratios (against each of BASELINES) and reports pick it up.
set -euo pipefail

ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-5s}"
WRK_THREADS="${WRK_THREADS:-2}"
WARMUP="${WARMUP:-1s}"
REQ_PATH="${REQ_PATH:-/bench?echo_quiet}"
SHAPES="${SHAPES:-minimal browser api}"
SESSIONS="${SESSIONS:-10000}"
SCALE_SHAPE="${SCALE_SHAPE:-browser}"
TLS="${TLS:-1}"
TLS_ROUNDS="${TLS_ROUNDS:-$ROUNDS}"
TLS_STREAMS="${TLS_STREAMS:-10}"
OUT_DIR="${OUT_DIR:-bench-results}"
SCALE_CONNS="${SCALE_CONNS-1 16 64 256 1024}"
SOAK="${SOAK-600s}"
ONLY="${ONLY:-}"
# PIN=1 (the default with 2+ CPUs and taskset): every proxy under test runs on the last CPU;
# wrk, the upstream, Redis and the IdP share the others. The proxy is then the bottleneck and
# targets compare on equal footing, instead of fighting the load generator for 2 cores.
PIN="${PIN:-1}"
LOADGEN_CPU=""
PROXY_CPU=""
if [[ "$PIN" == 1 ]] && command -v taskset >/dev/null 2>&1 && [[ "$(nproc)" -ge 2 ]]; then
    PROXY_CPU="taskset -c $(($(nproc) - 1))"
    LOADGEN_CPU="taskset -c 0-$(($(nproc) - 2))"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/authgate"
PLAIN="$ROOT/target/release/examples/plain_proxy"
PLAIN_MI="$ROOT/target/release/examples/plain_proxy_mimalloc"

die() { echo "load.sh: error: $*" >&2; exit 1; }

for shape in $SHAPES $SCALE_SHAPE; do
    [[ "$shape" =~ ^(minimal|browser|api)$ ]] || die "unknown shape '$shape' (minimal, browser, api)"
done
for v in ROUNDS CONNS WRK_THREADS SESSIONS TLS_ROUNDS TLS_STREAMS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/authgate-load.XXXXXX")"
PIDS=()

cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait (5 s), then SIGKILL.
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -d "$TMP" ]]; then
        mkdir -p "$OUT_DIR/logs" && cp "$TMP"/*.log "$OUT_DIR/logs/" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

print_machine() {
    local cpu
    cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
    MACHINE_NPROC="$(nproc)"
    MACHINE_ARCH="$(uname -m)"
    MACHINE_CPU="${cpu:-unknown}"
    echo "machine: nproc=$MACHINE_NPROC arch=$MACHINE_ARCH cpu=$MACHINE_CPU"
    echo "pinning: proxies: ${PROXY_CPU:-none}; load generator and upstream: ${LOADGEN_CPU:-none}"
    echo "params:  rounds=$ROUNDS conns=$CONNS duration=$DURATION wrk_threads=$WRK_THREADS warmup=$WARMUP path=$REQ_PATH"
}

# ensure_tool COMMAND APT_PACKAGE: install with apt-get when missing and running as root.
ensure_tool() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "$cmd not found: installing $pkg with apt-get"
        apt-get install -y "$pkg" || { apt-get update && apt-get install -y "$pkg"; } \
            || die "apt-get could not install $pkg"
    else
        die "$cmd is not installed; install it (Debian/Ubuntu: sudo apt-get install $pkg) and rerun"
    fi
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still not found after installing $pkg"
}

# ensure_file PATH APT_PACKAGE: like ensure_tool, for a package known by one of its files.
ensure_file() {
    local file="$1" pkg="$2"
    [[ -e "$file" ]] && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "$file not found: installing $pkg with apt-get"
        apt-get install -y "$pkg" || { apt-get update && apt-get install -y "$pkg"; } \
            || die "apt-get could not install $pkg"
    fi
    [[ -e "$file" ]] || die "$file is missing; install $pkg (Debian/Ubuntu: sudo apt-get install $pkg) and rerun"
}

# The test IdP's dependencies (oidc-provider), installed as tests/run.sh does.
ensure_idp() {
    command -v node >/dev/null 2>&1 \
        || die "node is required for the test IdP (tests/idp); install Node.js >= 18 (Debian/Ubuntu: apt-get install nodejs npm)"
    [[ -d "$ROOT/tests/idp/node_modules/oidc-provider" ]] && return 0
    command -v npm >/dev/null 2>&1 || die "tests/idp/node_modules is missing and npm is not installed"
    echo "installing the test IdP's dependencies (npm ci in tests/idp)"
    (cd "$ROOT/tests/idp" && npm ci --no-audit --no-fund) || die "npm ci in tests/idp failed"
}

for tool in cargo curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# Print N free TCP ports on 127.0.0.1, all held open together so they differ.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_http NAME URL LOGFILE PID: poll until URL answers 2xx (at most 15 s).
wait_http() {
    local name="$1" url="$2" log="$3" pid="$4" i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "--- $log" >&2; tail -n 30 "$log" >&2 || true
            die "$name exited before answering on $url"
        fi
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            echo "$name ready: $url"
            return 0
        fi
        sleep 0.1
    done
    echo "--- $log" >&2; tail -n 30 "$log" >&2 || true
    die "$name did not answer on $url within 15 s"
}

# wait_log NAME LOGFILE PID PATTERN SECONDS: poll until LOGFILE has a line matching PATTERN.
wait_log() {
    local name="$1" log="$2" pid="$3" pattern="$4" secs="$5" i
    for ((i = 0; i < secs * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "--- $log" >&2; tail -n 30 "$log" >&2 || true
            die "$name exited before it was ready"
        fi
        if grep -q "$pattern" "$log" 2>/dev/null; then
            echo "$name ready"
            return 0
        fi
        sleep 0.1
    done
    echo "--- $log" >&2; tail -n 30 "$log" >&2 || true
    die "$name was not ready within $secs s"
}

# wait_redis PORT PID LOGFILE: poll until redis-server answers PING (at most 10 s).
wait_redis() {
    local port="$1" pid="$2" log="$3" i
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "--- $log" >&2; tail -n 30 "$log" >&2 || true
            die "redis-server exited before answering"
        fi
        if python3 - "$port" 2>/dev/null <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.settimeout(1)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(7) == b"+PONG\r\n" else 1)
PY
        then
            echo "redis-server ready: 127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    echo "--- $log" >&2; tail -n 30 "$log" >&2 || true
    die "redis-server did not answer PING on 127.0.0.1:$port within 10 s"
}

# gateway_config NAME PORT ADMIN_PORT SESSION_TOML [EXTRA_TOML]: write and check
# $TMP/NAME.toml: the test IdP as provider, /public public, /api for bearer tokens and /
# protected, all in front of the echo upstream; EXTRA_TOML is appended.
gateway_config() {
    local name="$1" port="$2" admin="$3" session="$4" extra="${5:-}"
    cat >"$TMP/$name.toml" <<EOF
[server]
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "$TMP/$name.pid"
upgrade_socket = "$TMP/$name-upgrade.sock"

[log]
access_log = false

[[listeners]]
address = "127.0.0.1:$port"

[admin]
address = "127.0.0.1:$admin"

[session]
idle_timeout = "1h"
absolute_timeout = "12h"
$session

[[providers]]
id = "bench"
issuer = "http://127.0.0.1:$IDP_PORT"
client_id = "authgate"
client_secret = "authgate-secret"
scopes = ["openid", "email", "profile"]

[upstreams.echo]
servers = ["http://127.0.0.1:$ECHO_PORT"]

[[routes]]
id = "public"
path = "/public"
upstream = "echo"
public = true

[[routes]]
id = "api"
path = "/api"
upstream = "echo"
bearer = true
audiences = ["urn:authgate:api", "urn:authgate:api-es256"]

[[routes]]
id = "app"
path = "/"
upstream = "echo"
public = false

$extra
EOF
    "$BIN" check "$TMP/$name.toml" >/dev/null || die "generated config $name.toml rejected (see above)"
}

start_servers() {
    read -r ECHO_PORT GW_PORT ADMIN_PORT GWR_PORT GWR_ADMIN_PORT REDIS_PORT IDP_PORT \
        GWN_PORT GWN_ADMIN_PORT PLAIN_PORT APACHE_PORT PLAIN_MI_PORT PLAIN_FAIR_PORT \
        GW_TLS_PORT PLAIN_TLS_PORT APACHE_TLS_PORT <<<"$(free_ports 16)"
    # One self-signed certificate for 127.0.0.1 (P-256), for every TLS listener.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" 2>/dev/null || die "openssl could not make a certificate"
    chmod 644 "$TMP/tls-key.pem"

    $LOADGEN_CPU "$BIN" echo --listen "127.0.0.1:$ECHO_PORT" >"$TMP/echo.log" 2>&1 &
    ECHO_PID=$!
    PIDS+=("$ECHO_PID")

    $LOADGEN_CPU redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" >"$TMP/redis.log" 2>&1 </dev/null &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")

    # The IdP's client: a callback and a post-logout URL for each gateway.
    local redirects="" post_logout="" p
    for p in "$GW_PORT" "$GWR_PORT"; do
        redirects+="${redirects:+,}\"http://127.0.0.1:$p/.authgate/callback\""
        post_logout+="${post_logout:+,}\"http://127.0.0.1:$p/\""
    done
    (
        cd "$ROOT/tests/idp"
        IDP_PORT="$IDP_PORT" IDP_ISSUER="http://127.0.0.1:$IDP_PORT" IDP_AUTO_LOGIN=1 \
        IDP_ACCESS_TOKEN_TTL=3600 \
        IDP_CLIENTS="[{\"client_id\":\"authgate\",\"client_secret\":\"authgate-secret\",\"redirect_uris\":[$redirects,\"http://127.0.0.1:$APACHE_PORT/oidc/callback\"],\"post_logout_redirect_uris\":[$post_logout]}]" \
            exec $LOADGEN_CPU node idp.js
    ) >"$TMP/idp.log" 2>&1 </dev/null &
    IDP_PID=$!
    PIDS+=("$IDP_PID")

    wait_http "echo upstream" "http://127.0.0.1:$ECHO_PORT$REQ_PATH" "$TMP/echo.log" "$ECHO_PID"
    $PROXY_CPU "$PLAIN" "127.0.0.1:$PLAIN_PORT" "127.0.0.1:$ECHO_PORT" 2 >"$TMP/plain.log" 2>&1 &
    PLAIN_PID=$!
    PIDS+=("$PLAIN_PID")
    wait_http "plain Pingora proxy" "http://127.0.0.1:$PLAIN_PORT$REQ_PATH" "$TMP/plain.log" "$PLAIN_PID"
    $PROXY_CPU "$PLAIN" "127.0.0.1:$PLAIN_FAIR_PORT" "127.0.0.1:$ECHO_PORT" 2 fair \
        --tls "127.0.0.1:$PLAIN_TLS_PORT" "$TMP/tls-cert.pem" "$TMP/tls-key.pem" >"$TMP/plain-fair.log" 2>&1 &
    PLAIN_FAIR_PID=$!
    PIDS+=("$PLAIN_FAIR_PID")
    wait_http "plain Pingora proxy (fair)" "http://127.0.0.1:$PLAIN_FAIR_PORT$REQ_PATH" "$TMP/plain-fair.log" "$PLAIN_FAIR_PID"
    $PROXY_CPU "$PLAIN_MI" "127.0.0.1:$PLAIN_MI_PORT" "127.0.0.1:$ECHO_PORT" 2 fair >"$TMP/plain-mimalloc.log" 2>&1 &
    PLAIN_MI_PID=$!
    PIDS+=("$PLAIN_MI_PID")
    wait_http "plain Pingora proxy (mimalloc)" "http://127.0.0.1:$PLAIN_MI_PORT$REQ_PATH" \
        "$TMP/plain-mimalloc.log" "$PLAIN_MI_PID"
    wait_redis "$REDIS_PORT" "$REDIS_PID" "$TMP/redis.log"
    wait_log "test IdP (http://127.0.0.1:$IDP_PORT)" "$TMP/idp.log" "$IDP_PID" "^IDP READY" 30

    local secret
    secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    gateway_config authgate "$GW_PORT" "$ADMIN_PORT" 'store = "memory"' "[[listeners]]
address = \"127.0.0.1:$GW_TLS_PORT\"
tls_cert_file = \"$TMP/tls-cert.pem\"
tls_key_file = \"$TMP/tls-key.pem\""
    gateway_config authgate-redis "$GWR_PORT" "$GWR_ADMIN_PORT" "store = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT/\"
secret = \"$secret\"
cache_max_age = \"0s\""
    gateway_config authgate-nocache "$GWN_PORT" "$GWN_ADMIN_PORT" 'store = "memory"' \
        $'[gateway]\nbearer_cache_entries = 0'

    $PROXY_CPU "$BIN" run -c "$TMP/authgate-nocache.toml" >"$TMP/authgate-nocache.log" 2>&1 &
    GWN_PID=$!
    PIDS+=("$GWN_PID")
    $PROXY_CPU "$BIN" run -c "$TMP/authgate.toml" >"$TMP/authgate.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    $PROXY_CPU "$BIN" run -c "$TMP/authgate-redis.toml" >"$TMP/authgate-redis.log" 2>&1 &
    GWR_PID=$!
    PIDS+=("$GWR_PID")

    # /readyz answers 200 once the provider's discovery and keys are fetched.
    wait_http "authgate (memory store)" "http://127.0.0.1:$ADMIN_PORT/readyz" "$TMP/authgate.log" "$GW_PID"
    wait_http "authgate (redis store)" "http://127.0.0.1:$GWR_ADMIN_PORT/readyz" "$TMP/authgate-redis.log" "$GWR_PID"
    wait_http "authgate (no bearer cache)" "http://127.0.0.1:$GWN_ADMIN_PORT/readyz" "$TMP/authgate-nocache.log" "$GWN_PID"
    wait_http "authgate public route" "http://127.0.0.1:$GW_PORT/public$REQ_PATH" "$TMP/authgate.log" "$GW_PID"

    start_apache
    SESSION_MEM="$(login "$GW_PORT")"
    SESSION_REDIS="$(login "$GWR_PORT")"
    echo "signing in $SESSIONS sessions on 127.0.0.1:$GW_PORT for session-many"
    local t0=$SECONDS
    python3 "$ROOT/benches/login.py" --count "$SESSIONS" --parallel 16 "http://127.0.0.1:$GW_PORT" \
        >"$TMP/sessions.txt" || die "the $SESSIONS logins for session-many failed"
    [[ "$(sort -u "$TMP/sessions.txt" | wc -l)" -eq "$SESSIONS" ]] || die "the $SESSIONS sessions are not distinct"
    echo "$SESSIONS sessions signed in in $((SECONDS - t0)) s"
    TOKEN_RS256="$(access_token urn:authgate:api)"
    TOKEN_ES256="$(access_token urn:authgate:api-es256)"
    local t port code
    for t in "$TOKEN_RS256" "$TOKEN_ES256"; do
        for port in "$GW_PORT" "$GWN_PORT"; do
            code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $t" \
                "http://127.0.0.1:$port/api$REQ_PATH")"
            [[ "$code" == 200 ]] || die "bearer route on port $port answered $code with a token"
        done
    done
    for port in "$GW_PORT" "$GWN_PORT"; do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/api$REQ_PATH")"
        [[ "$code" == 401 ]] || die "bearer route on port $port answered $code without a token (expected 401)"
    done
    echo "bearer routes (ports $GW_PORT, $GWN_PORT): 200 with RS256 and ES256 tokens, 401 without"
}

# start_apache: Apache httpd + mod_auth_openidc in front of the echo upstream, sessions in the
# same Redis, signed in once; sets APACHE_PID and SESSION_APACHE.
start_apache() {
    local m=/usr/lib/apache2/modules code
    mkdir -p "$TMP/apache"
    chmod 755 "$TMP" "$TMP/apache"
    cat >"$TMP/apache/httpd.conf" <<EOF
ServerRoot $TMP/apache
LoadModule mpm_event_module $m/mod_mpm_event.so
LoadModule authz_core_module $m/mod_authz_core.so
LoadModule authz_user_module $m/mod_authz_user.so
LoadModule authn_core_module $m/mod_authn_core.so
LoadModule auth_openidc_module $m/mod_auth_openidc.so
LoadModule proxy_module $m/mod_proxy.so
LoadModule proxy_http_module $m/mod_proxy_http.so
LoadModule ssl_module $m/mod_ssl.so
LoadModule http2_module $m/mod_http2.so
LoadModule socache_shmcb_module $m/mod_socache_shmcb.so
Listen 127.0.0.1:$APACHE_PORT
Listen 127.0.0.1:$APACHE_TLS_PORT
SSLSessionCache shmcb:$TMP/apache/ssl_scache(512000)
<VirtualHost 127.0.0.1:$APACHE_TLS_PORT>
  SSLEngine on
  SSLCertificateFile $TMP/tls-cert.pem
  SSLCertificateKeyFile $TMP/tls-key.pem
  Protocols h2 http/1.1
</VirtualHost>
ServerName 127.0.0.1
PidFile $TMP/apache/httpd.pid
ErrorLog $TMP/apache/error.log
LogLevel warn
# Keep-alive like the other targets (Apache's default closes a connection every 100 requests).
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60
$( [[ "$(id -u)" -eq 0 ]] && printf 'User www-data\nGroup www-data\n' )
OIDCProviderMetadataURL http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration
OIDCClientID authgate
OIDCClientSecret authgate-secret
OIDCRedirectURI http://127.0.0.1:$APACHE_PORT/oidc/callback
OIDCCryptoPassphrase $(python3 -c 'import secrets; print(secrets.token_hex(32))')
OIDCScope "openid email profile"
OIDCPKCEMethod S256
OIDCCacheType redis
OIDCRedisCacheServer 127.0.0.1:$REDIS_PORT
OIDCSessionType server-cache
<Location />
  AuthType openid-connect
  Require valid-user
</Location>
ProxyPass /oidc/callback !
ProxyPass / http://127.0.0.1:$ECHO_PORT/
EOF
    $PROXY_CPU apache2 -f "$TMP/apache/httpd.conf" -k start || die "apache2 did not start (see $TMP/apache/error.log)"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$TMP/apache/httpd.pid" ]] && break
        sleep 0.1
    done
    APACHE_PID="$(cat "$TMP/apache/httpd.pid" 2>/dev/null)" || die "apache2 wrote no pid file"
    PIDS+=("$APACHE_PID")
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$APACHE_PORT$REQ_PATH")"
    [[ "$code" == 302 || "$code" == 401 ]] || die "Apache answered $code without a session (expected 302/401)"
    SESSION_APACHE="$(python3 "$ROOT/benches/login.py" --apache "http://127.0.0.1:$APACHE_PORT")" \
        || die "login at Apache + mod_auth_openidc failed"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Cookie: $SESSION_APACHE" \
        "http://127.0.0.1:$APACHE_PORT$REQ_PATH")"
    [[ "$code" == 200 ]] || die "Apache answered $code with the session cookie"
    echo "Apache + mod_auth_openidc on 127.0.0.1:$APACHE_PORT: signed in (200 with the cookie)"
}

# cpu_ticks PID: utime + stime (clock ticks) of PID and its child processes (Apache's workers).
cpu_ticks() {
    local pid total=0 f
    for pid in "$1" $(pgrep -P "$1" 2>/dev/null); do
        f="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        # Fields after the ")" that closes the command name: utime is the 12th, stime the 13th.
        f="${f##*) }"
        total=$((total + $(awk '{print $12 + $13}' <<<"$f")))
    done
    echo "$total"
}

# access_token RESOURCE: a client-credentials JWT access token (RFC 9068) from the test IdP.
access_token() {
    curl -sf --max-time 5 -u authgate:authgate-secret "http://127.0.0.1:$IDP_PORT/token" \
        -d grant_type=client_credentials -d "resource=$1" -d scope=api:read \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' \
        || die "no access token for $1 from the IdP"
}

# login PORT: sign in to the gateway on PORT, check that the protected route answers 200 with
# the session cookie and 401 without it, print the cookie (name=value).
login() {
    local port="$1" cookie code
    cookie="$(python3 "$ROOT/benches/login.py" "http://127.0.0.1:$port")" \
        || die "login to the gateway on 127.0.0.1:$port failed"
    [[ "$cookie" == authgate_session=?* ]] || die "unexpected session cookie from port $port: '$cookie'"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Cookie: $cookie" \
        "http://127.0.0.1:$port$REQ_PATH")"
    [[ "$code" == 200 ]] || die "protected route on port $port answered $code with the session cookie"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$REQ_PATH")"
    [[ "$code" == 401 ]] || die "protected route on port $port answered $code without a cookie (expected 401)"
    echo "signed in on 127.0.0.1:$port (protected route: 200 with the cookie, 401 without)" >&2
    printf '%s\n' "$cookie"
}

# Print a wrk latency such as 812.00us, 1.23ms, 2.00s, 1.50m in microseconds.
to_us() {
    awk -v t="$1" 'BEGIN {
        if (match(t, /^[0-9.]+/) == 0) { print "NaN"; exit }
        n = substr(t, 1, RLENGTH) + 0; u = substr(t, RLENGTH + 1)
        if (u == "us") f = 1; else if (u == "ms") f = 1e3; else if (u == "s") f = 1e6
        else if (u == "m") f = 6e7; else if (u == "h") f = 3.6e9; else { print "NaN"; exit }
        printf "%.1f\n", n * f
    }'
}

# lua_str VALUE: VALUE as a Lua string literal (cookies, tokens and paths: no quote, backslash
# or control character, which is checked).
lua_str() {
    [[ "$1" != *[\"\\]* && "$1" != *[[:cntrl:]]* ]] || die "cannot quote for Lua: $1"
    printf '"%s"' "$1"
}

# wrk_script SHAPE HEADER OUT: write the wrk Lua script that sends SHAPE's headers plus HEADER
# ("Cookie: ...", "Authorization: ...", empty, or "@FILE": a different cookie from FILE, one
# name=value per line, on each request), and reports percentiles in its `done` hook.
wrk_script() {
    local shape="$1" header="$2" out="$3"
    {
        echo 'local headers = {}'
        case "$shape" in
        browser)
            cat <<'LUA'
headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
headers["Accept-Language"] = "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7"
headers["Cache-Control"] = "max-age=0"
headers["Sec-Ch-Ua"] = "\"Chromium\";v=\"156\", \"Not)A;Brand\";v=\"24\", \"Google Chrome\";v=\"156\""
headers["Sec-Ch-Ua-Mobile"] = "?0"
headers["Sec-Ch-Ua-Platform"] = "\"Linux\""
headers["Sec-Fetch-Dest"] = "document"
headers["Sec-Fetch-Mode"] = "navigate"
headers["Sec-Fetch-Site"] = "same-origin"
headers["Sec-Fetch-User"] = "?1"
headers["Upgrade-Insecure-Requests"] = "1"
headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
headers["Referer"] = "http://127.0.0.1/dashboard/reports?period=last-30-days&view=summary"
local cookie_before = "_ga=GA1.1.1946326214.1764500000; _ga_X1Y2Z3=GS1.1.1764500000.3.1.1764500100.0.0.0; theme=dark"
local cookie_after = "consent=necessary%2Canalytics"
LUA
            ;;
        api)
            cat <<'LUA'
headers["Accept"] = "application/json"
headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
headers["Accept-Language"] = "en-GB,en-US;q=0.9,en;q=0.8"
headers["Sec-Fetch-Dest"] = "empty"
headers["Sec-Fetch-Mode"] = "cors"
headers["Sec-Fetch-Site"] = "same-origin"
headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
headers["Referer"] = "http://127.0.0.1/dashboard/reports"
local cookie_before, cookie_after = "theme=dark", nil
LUA
            ;;
        *) echo 'local cookie_before, cookie_after = nil, nil' ;;
        esac
        cat <<'LUA'
local function cookie(session)
  local parts = {}
  -- Not ipairs: it would stop at the first nil.
  local all = {cookie_before, session, cookie_after}
  for i = 1, 3 do
    if all[i] then parts[#parts + 1] = all[i] end
  end
  if #parts > 0 then headers["Cookie"] = table.concat(parts, "; ") end
end
LUA
        case "$header" in
        @*)
            printf 'local file = %s\n' "$(lua_str "${header#@}")"
            cat <<'LUA'
local cookies, i = {}, 0
init = function(args)
  for line in io.lines(file) do cookies[#cookies + 1] = line end
  -- Each thread starts elsewhere in the list.
  i = math.random(#cookies)
end
request = function()
  i = i % #cookies + 1
  cookie(cookies[i])
  return wrk.format(nil, nil, headers)
end
LUA
            ;;
        *)
            if [[ "$header" == Cookie:* ]]; then
                printf 'cookie(%s)\n' "$(lua_str "${header#Cookie: }")"
            else
                echo 'cookie(nil)'
                [[ -z "$header" ]] || printf 'headers[%s] = %s\n' "$(lua_str "${header%%: *}")" "$(lua_str "${header#*: }")"
            fi
            cat <<'LUA'
local req
init = function(args) req = wrk.format(nil, nil, headers) end
request = function() return req end
LUA
            ;;
        esac
        cat <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("pctl %d %d %d %d\n", latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), summary.requests))
end
LUA
    } >"$out"
}

# measure NAME URL HEADER PID: warm up, run wrk once in SHAPE (sending HEADER as `wrk_script`
# takes it) and append "name shape round rps p50_us p99_us p999_us errors cpu_s_per_10k" to
# $TMP/results.tsv. PID serves the target: its CPU time (and its children's) over the measured
# run is divided by the requests wrk completed.
measure() {
    local name="$1" url="$2" header="${3:-}" pid="$4" out="$TMP/wrk-$1-$SHAPE-$ROUND.txt"
    local rps p50 p99 p999 errors requests before after cpu script="$TMP/wrk-$1-$SHAPE.lua"
    wrk_script "$SHAPE" "$header" "$script"
    $LOADGEN_CPU wrk -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" -s "$script" "$url" >/dev/null
    before="$(cpu_ticks "$pid")"
    $LOADGEN_CPU wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" -s "$script" "$url" >"$out"
    after="$(cpu_ticks "$pid")"
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    read -r p50 p99 p999 requests <<<"$(awk '$1 == "pctl" {print $2, $3, $4, $5}' "$out")"
    # Non-2xx/3xx responses and socket errors (connect/read/write/timeout), if any.
    errors="$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
                   /Socket errors:/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i}
                   END {print e + 0}' "$out")"
    [[ -n "$rps" && -n "$p999" && "${requests:-0}" -gt 0 ]] || { cat "$out" >&2; die "cannot parse wrk output for $name"; }
    cpu="$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN {printf "%.3f", t / hz / n * 10000}')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$SHAPE" "$ROUND" "$rps" "$p50" "$p99" "$p999" "$errors" "$cpu" \
        >>"$TMP/results.tsv"
    printf '  round %s  %-8s %-20s %10s req/s  p50 %7s us  p99 %7s us  p99.9 %7s us  cpu %6s s/10k  errors %s\n' \
        "$ROUND" "$SHAPE" "$name" "$rps" "$p50" "$p99" "$p999" "$cpu" "$errors"
}

# scaling: throughput and p99 of plain-proxy and session-cached at each of SCALE_CONNS.
scaling() {
    [[ -n "$SCALE_CONNS" ]] || return 0
    local c t name url header threads out rps p99
    : >"$TMP/scaling.tsv"
    echo "scaling curve: connections $SCALE_CONNS, $SCALE_SHAPE requests"
    for c in $SCALE_CONNS; do
        threads=$((c < WRK_THREADS ? c : WRK_THREADS))
        for t in "plain-fair|http://127.0.0.1:$PLAIN_FAIR_PORT$REQ_PATH|" \
                 "session-many|http://127.0.0.1:$GW_PORT$REQ_PATH|@$TMP/sessions.txt"; do
            IFS='|' read -r name url header <<<"$t"
            local script="$TMP/scale-$name.lua"
            wrk_script "$SCALE_SHAPE" "$header" "$script"
            out="$TMP/scale-$name-$c.txt"
            $LOADGEN_CPU wrk -t"$threads" -c"$c" -d"$WARMUP" -s "$script" "$url" >/dev/null
            $LOADGEN_CPU wrk -t"$threads" -c"$c" -d"$DURATION" -s "$script" "$url" >"$out"
            rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
            p99="$(awk '$1 == "pctl" {print $3}' "$out")"
            [[ -n "$rps" && -n "$p99" ]] || { cat "$out" >&2; die "cannot parse wrk output ($name, $c connections)"; }
            printf '%s\t%s\t%s\t%s\n' "$name" "$c" "$rps" "$p99" >>"$TMP/scaling.tsv"
            printf '  %-15s %5s conns %10s req/s  p99 %8s us\n' "$name" "$c" "$rps" "$p99"
        done
    done
    python3 "$ROOT/benches/scaling_svg.py" "$TMP/scaling.tsv" "$OUT_DIR"
}

# measure_tls NAME MODE URL COOKIE PID: one TLS run (MODE h2 or h1-close) in the browser shape
# with COOKIE; appends to $TMP/tls.tsv like `measure` does to results.tsv.
measure_tls() {
    local name="$1" mode="$2" url="$3" cookie="$4" pid="$5" out="$TMP/tls-$1-$2-$ROUND.txt"
    local rps p50 p99 p999 errors requests before after cpu secs="${DURATION%s}"
    local script="$TMP/tls-$1-$2.lua" h=() line
    if [[ "$mode" == h2 ]]; then
        # The browser shape's headers, from the generated script, as h2load -H options.
        wrk_script browser "Cookie: $cookie" "$script"
        while IFS= read -r line; do
            h+=(-H "$line")
        done < <(python3 - "$script" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
for k, v in re.findall(r'headers\["([^"]+)"\] = "((?:[^"\\]|\\.)*)"', src):
    print(f"{k}: {v.encode().decode('unicode_escape')}")
before = re.search(r'local cookie_before = "([^"]*)"', src).group(1)
after = re.search(r'local cookie_after = "([^"]*)"', src).group(1)
session = re.search(r'cookie\("([^"]*)"\)', src).group(1)
print(f"Cookie: {before}; {session}; {after}")
PY
)
        $LOADGEN_CPU h2load -t"$WRK_THREADS" -c"$CONNS" -m"$TLS_STREAMS" -D1 "${h[@]}" "$url" >/dev/null 2>&1
        before="$(cpu_ticks "$pid")"
        $LOADGEN_CPU h2load -t"$WRK_THREADS" -c"$CONNS" -m"$TLS_STREAMS" -D"$secs" --log-file="$out.log" \
            "${h[@]}" "$url" >"$out" 2>&1 || true
        after="$(cpu_ticks "$pid")"
        rps="$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")"
        requests="$(awk '/^requests:/ {print $8}' "$out")"
        # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
        # and "status codes: N 2xx, N 3xx, N 4xx, N 5xx".
        errors="$(awk '/^requests:/ {e += $10 + $12 + $14} /^status codes:/ {e += $6 + $8} END {print e + 0}' "$out")"
        read -r p50 p99 p999 <<<"$(awk -F'\t' '{print $3}' "$out.log" | sort -n | awk '
            {v[NR] = $1} END {if (NR == 0) exit; printf "%d %d %d\n", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[int(NR * 0.999) + 1]}')"
    else
        wrk_script browser "Cookie: $cookie" "$script"
        sed -i 's/^local req$/headers["Connection"] = "close"\nlocal req/' "$script"
        $LOADGEN_CPU wrk -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" -s "$script" "$url" >/dev/null
        before="$(cpu_ticks "$pid")"
        $LOADGEN_CPU wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" -s "$script" "$url" >"$out"
        after="$(cpu_ticks "$pid")"
        rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
        read -r p50 p99 p999 requests <<<"$(awk '$1 == "pctl" {print $2, $3, $4, $5}' "$out")"
        errors="$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
                       /Socket errors:/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i}
                       END {print e + 0}' "$out")"
    fi
    [[ -n "$rps" && -n "$p999" && "${requests:-0}" -gt 0 ]] || { cat "$out" >&2; die "cannot parse the TLS run of $name ($mode)"; }
    cpu="$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN {printf "%.3f", t / hz / n * 10000}')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$ROUND" "$rps" "$p50" "$p99" "$p999" "${errors:-0}" "$cpu" \
        >>"$TMP/tls.tsv"
    printf '  round %s  %-8s %-20s %10s req/s  p50 %7s us  p99 %7s us  p99.9 %7s us  cpu %6s s/10k  errors %s\n' \
        "$ROUND" "$mode" "$name" "$rps" "$p50" "$p99" "$p999" "$cpu" "${errors:-0}"
}

# tls_rounds: the TLS and HTTP/2 comparison (see the header), reported like the plain rounds
# into $OUT_DIR/tls.md and tls.json.
tls_rounds() {
    [[ "$TLS" == 1 ]] || return 0
    local t name url cookie pid mode
    local tls_targets=(
        "plain-fair|https://127.0.0.1:$PLAIN_TLS_PORT$REQ_PATH||$PLAIN_FAIR_PID"
        "session-cached|https://127.0.0.1:$GW_TLS_PORT$REQ_PATH|__Host-$SESSION_MEM|$GW_PID"
        "apache-oidc|https://127.0.0.1:$APACHE_TLS_PORT$REQ_PATH|$SESSION_APACHE|$APACHE_PID"
    )
    local code
    for t in "${tls_targets[@]}"; do
        IFS='|' read -r name url cookie pid <<<"$t"
        code="$(curl -sk -o /dev/null -w '%{http_code} %{http_version}' --http2 --max-time 5 \
            ${cookie:+-H "Cookie: $cookie"} "$url")"
        [[ "$code" == "200 2" ]] || die "$name over TLS answered '$code' (expected 200 over HTTP/2)"
    done
    echo "TLS targets answer 200 over HTTP/2"
    : >"$TMP/tls.tsv"
    for ((ROUND = 1; ROUND <= TLS_ROUNDS; ROUND++)); do
        echo "TLS round $ROUND/$TLS_ROUNDS"
        for mode in h2 h1-close; do
            for t in "${tls_targets[@]}"; do
                IFS='|' read -r name url cookie pid <<<"$t"
                if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then
                    continue
                fi
                measure_tls "$name" "$mode" "$url" "$cookie" "$pid"
            done
        done
    done
    local dir="$OUT_DIR/tls"
    mkdir -p "$dir"
    # report_tsv reads these (bash scoping is dynamic): the TLS targets, modes and baselines.
    local TARGETS=("${tls_targets[@]}") SHAPES="h2 h1-close" BASELINES=(plain-fair apache-oidc)
    report_tsv "$TMP/tls.tsv" "$dir"
    mv "$dir/load.md" "$OUT_DIR/tls.md"
    mv "$dir/load.json" "$OUT_DIR/tls.json"
    rmdir "$dir"
}

report() {
    report_tsv "$TMP/results.tsv" "$OUT_DIR"
}

# rss_kib PID FIELD: VmRSS or RssAnon of PID in KiB.
rss_kib() {
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}

# soak: the session gateway under SOAK of session-many load, its RSS sampled every 10 s.
soak() {
    [[ -n "$SOAK" && "$SOAK" != 0 && "$SOAK" != 0s ]] || return 0
    local secs="${SOAK%s}" script="$TMP/wrk-soak.lua" out="$TMP/wrk-soak.txt" t=0 wrk_pid
    [[ "$secs" =~ ^[1-9][0-9]*$ ]] || die "SOAK must be seconds, e.g. 600s (got '$SOAK')"
    echo "memory under load: session-many ($SCALE_SHAPE shape) for ${secs} s"
    wrk_script "$SCALE_SHAPE" "@$TMP/sessions.txt" "$script"
    printf '0\t%s\t%s\n' "$(rss_kib "$GW_PID" VmRSS)" "$(rss_kib "$GW_PID" RssAnon)" >"$TMP/soak.tsv"
    $LOADGEN_CPU wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" -s "$script" \
        "http://127.0.0.1:$GW_PORT$REQ_PATH" >"$out" &
    wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        sleep 10
        t=$((t + 10))
        ((t <= secs)) || break
        printf '%s\t%s\t%s\n' "$t" "$(rss_kib "$GW_PID" VmRSS)" "$(rss_kib "$GW_PID" RssAnon)" >>"$TMP/soak.tsv"
    done
    wait "$wrk_pid" || die "wrk failed during the soak"
    cp "$TMP/soak.tsv" "$OUT_DIR/soak-load.tsv"
    local requests errors rps
    requests="$(awk '$1 == "pctl" {print $5}' "$out")"
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    errors="$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
                   /Socket errors:/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i}
                   END {print e + 0}' "$out")"
    SECS="$secs" REQUESTS="$requests" RPS="$rps" ERRORS="$errors" SESSIONS="$SESSIONS" \
        SHAPE="$SCALE_SHAPE" CONNS="$CONNS" python3 - "$TMP/soak.tsv" "$OUT_DIR/soak-load.md" <<'PY'
import os, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
secs = int(os.environ["SECS"])
start = rows[0]
middle = [r for r in rows if secs / 3 <= r[0] < 2 * secs / 3]
last = [r for r in rows if r[0] >= 2 * secs / 3]
mib = lambda kib: kib / 1024
peak = lambda rs, i: max(r[i] for r in rs)
lines = [
    f"Memory under load: session-many ({os.environ['SESSIONS']} rotated sessions, "
    f"{os.environ['SHAPE']} shape, {os.environ['CONNS']} connections) for {secs} s without a "
    f"pause: {int(os.environ['REQUESTS']):,} requests ({float(os.environ['RPS']):,.0f} req/s), "
    f"{os.environ['ERRORS']} errors. Resident memory of the gateway, sampled every 10 s:",
    "",
    "| | RSS | anonymous |",
    "|---|---:|---:|",
    f"| before the run (after the rounds and {os.environ['SESSIONS']} sign-ins) | {mib(start[1]):.1f} MiB | {mib(start[2]):.1f} MiB |",
    f"| highest, middle third | {mib(peak(middle, 1)):.1f} MiB | {mib(peak(middle, 2)):.1f} MiB |",
    f"| highest, last third | {mib(peak(last, 1)):.1f} MiB | {mib(peak(last, 2)):.1f} MiB |",
    f"| at the end | {mib(rows[-1][1]):.1f} MiB | {mib(rows[-1][2]):.1f} MiB |",
    "",
    "Growth from the middle third to the last: "
    f"{mib(peak(last, 1) - peak(middle, 1)):+.1f} MiB RSS, {mib(peak(last, 2) - peak(middle, 2)):+.1f} MiB anonymous.",
    "",
    "Samples (s, RSS MiB): " + " ".join(f"{r[0]}:{mib(r[1]):.1f}" for r in rows),
]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:-1]))
PY
}

# report_tsv TSV DIR: medians, ratios and the tables of one set of runs.
report_tsv() {
    mkdir -p "$2"
    MACHINE_NPROC="$MACHINE_NPROC" MACHINE_ARCH="$MACHINE_ARCH" MACHINE_CPU="$MACHINE_CPU" \
    ROUNDS="$ROUNDS" CONNS="$CONNS" DURATION="$DURATION" WRK_THREADS="$WRK_THREADS" \
    REQ_PATH="$REQ_PATH" GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    TARGET_ORDER="$(printf '%s\n' "${TARGETS[@]%%|*}")" BASELINES="${BASELINES[*]}" SHAPES="$SHAPES" \
    python3 - "$1" "$2" <<'PY'
import json, os, statistics, sys, time

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
out_dir = sys.argv[2]
shapes = [x for x in os.environ["SHAPES"].split() if any(r[1] == x for r in rows)]
# Targets left out with ONLY have no rows.
measured = {r[0] for r in rows}
order = [t for t in os.environ["TARGET_ORDER"].split() if t in measured]
runs = {sh: {t: [] for t in order} for sh in shapes}
for name, shape, rnd, rps, p50, p99, p999, err, cpu in rows:
    runs[shape][name].append({"round": int(rnd), "rps": float(rps), "p50_us": float(p50),
                              "p99_us": float(p99), "p999_us": float(p999), "errors": int(err),
                              "cpu_s_per_10k": float(cpu)})
keys = ("rps", "p50_us", "p99_us", "p999_us", "cpu_s_per_10k")
med = {sh: {t: {k: statistics.median(r[k] for r in runs[sh][t]) for k in keys}
            | {"errors": sum(r["errors"] for r in runs[sh][t])} for t in order if runs[sh][t]}
       for sh in shapes}
bases = [b for b in os.environ["BASELINES"].split() if b in measured]
# ratios[shape][base][target]: the target's median throughput, p99 and CPU per request
# divided by the base's, in the same shape.
ratios = {sh: {b: {t: {"throughput": med[sh][t]["rps"] / med[sh][b]["rps"],
                       "p99": med[sh][t]["p99_us"] / med[sh][b]["p99_us"],
                       "cpu": med[sh][t]["cpu_s_per_10k"] / med[sh][b]["cpu_s_per_10k"]
                              if med[sh][b]["cpu_s_per_10k"] else float("nan")}
                   for t in med[sh] if t != b}
               for b in bases if b in med[sh]}
          for sh in shapes}
rcols = [(b, k, f"{'thr' if k == 'throughput' else k}/{b}") for b in bases
         for k in ("throughput", "p99", "cpu")]

def cell(sh, b, t, k):
    if t == b or b not in ratios[sh] or t not in ratios[sh][b]:
        return "-"
    return f"{ratios[sh][b][t][k]:.3f}"

w = max(6, max(len(t) for t in order))
print(f"\nmedians over {os.environ['ROUNDS']} rounds; ratio = target / baseline in the same shape "
      "(thr: higher is better, p99 and cpu: lower is better)")
for sh in shapes:
    hdr = (f"{'target':<{w}} {'req/s':>10} {'p50 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9} {'cpu/10k':>8} {'errors':>6}"
           + "".join(f" {h:>17}" for _, _, h in rcols))
    print(f"\nshape: {sh}")
    print(hdr)
    print("-" * len(hdr))
    for t in order:
        if t not in med[sh]:
            continue
        m = med[sh][t]
        print(f"{t:<{w}} {m['rps']:>10.0f} {m['p50_us']:>9.0f} {m['p99_us']:>9.0f} {m['p999_us']:>9.0f} {m['cpu_s_per_10k']:>8.3f} {m['errors']:>6}"
              + "".join(f" {cell(sh, b, t, k):>17}" for b, k, _ in rcols))

env = {k: os.environ[k] for k in ("ROUNDS", "CONNS", "DURATION", "WRK_THREADS", "REQ_PATH")}
machine = {"nproc": int(os.environ["MACHINE_NPROC"]), "arch": os.environ["MACHINE_ARCH"],
           "cpu": os.environ["MACHINE_CPU"]}
stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
doc = {"timestamp": stamp, "git_rev": os.environ["GIT_REV"], "machine": machine,
       "params": {"rounds": int(env["ROUNDS"]), "connections": int(env["CONNS"]),
                  "duration": env["DURATION"], "wrk_threads": int(env["WRK_THREADS"]),
                  "path": env["REQ_PATH"], "shapes": shapes},
       "baselines": bases, "median": med, "ratios": ratios, "runs": runs}
with open(os.path.join(out_dir, "load.json"), "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

md = [f"# authgate load test ({stamp}, {os.environ['GIT_REV']})", "",
      f"Machine: {machine['nproc']} CPUs, {machine['arch']}, {machine['cpu']}  ",
      f"wrk -t{env['WRK_THREADS']} -c{env['CONNS']} -d{env['DURATION']} on `{env['REQ_PATH']}` "
      f"(public: `/public{env['REQ_PATH']}`), medians of {env['ROUNDS']} interleaved rounds. "
      "Ratios are target / baseline in the same request shape (thr: higher is better; p99 and "
      "cpu: lower is better). CPU: seconds of the serving process(es) per 10 000 requests."]
for sh in shapes:
    md += ["", f"## Shape: {sh}", "",
           "| target | req/s | p50 µs | p99 µs | p99.9 µs | CPU s/10k | errors | " + " | ".join(h for _, _, h in rcols) + " |",
           "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(rcols)]
    for t in order:
        if t not in med[sh]:
            continue
        m = med[sh][t]
        md.append(f"| {t} | {m['rps']:.0f} | {m['p50_us']:.0f} | {m['p99_us']:.0f} | {m['p999_us']:.0f} | {m['cpu_s_per_10k']:.3f} | {m['errors']} | "
                  + " | ".join(cell(sh, b, t, k) for b, k, _ in rcols) + " |")
with open(os.path.join(out_dir, "load.md"), "w") as f:
    f.write("\n".join(md) + "\n")
print(f"\nwrote {out_dir}/load.md and {out_dir}/load.json")
PY
}

main() {
    print_machine
    # 1 024 connections need more descriptors than the usual soft limit.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    ensure_tool wrk wrk
    ensure_tool redis-server redis-server
    ensure_tool apache2 apache2
    ensure_tool openssl openssl
    [[ "$TLS" != 1 ]] || ensure_tool h2load nghttp2-client
    ensure_file /usr/lib/apache2/modules/mod_auth_openidc.so libapache2-mod-auth-openidc
    ensure_idp
    echo "building release binaries"
    cargo build --release --bin authgate --example plain_proxy --example plain_proxy_mimalloc
    [[ -x "$BIN" && -x "$PLAIN" && -x "$PLAIN_MI" ]] || die "$BIN, $PLAIN or $PLAIN_MI not built"
    start_servers

    # name|url|header (empty: none)|pid of the serving process. Ratios are taken against each
    # of BASELINES.
    TARGETS=(
        "direct|http://127.0.0.1:$ECHO_PORT$REQ_PATH||$ECHO_PID"
        "plain-fair|http://127.0.0.1:$PLAIN_FAIR_PORT$REQ_PATH||$PLAIN_FAIR_PID"
        "plain-proxy|http://127.0.0.1:$PLAIN_PORT$REQ_PATH||$PLAIN_PID"
        "plain-mimalloc|http://127.0.0.1:$PLAIN_MI_PORT$REQ_PATH||$PLAIN_MI_PID"
        "public|http://127.0.0.1:$GW_PORT/public$REQ_PATH||$GW_PID"
        "session-cached|http://127.0.0.1:$GW_PORT$REQ_PATH|Cookie: $SESSION_MEM|$GW_PID"
        "session-many|http://127.0.0.1:$GW_PORT$REQ_PATH|@$TMP/sessions.txt|$GW_PID"
        "session-redis|http://127.0.0.1:$GWR_PORT$REQ_PATH|Cookie: $SESSION_REDIS|$GWR_PID"
        "bearer-rs256|http://127.0.0.1:$GW_PORT/api$REQ_PATH|Authorization: Bearer $TOKEN_RS256|$GW_PID"
        "bearer-es256|http://127.0.0.1:$GW_PORT/api$REQ_PATH|Authorization: Bearer $TOKEN_ES256|$GW_PID"
        "bearer-rs256-nocache|http://127.0.0.1:$GWN_PORT/api$REQ_PATH|Authorization: Bearer $TOKEN_RS256|$GWN_PID"
        "bearer-es256-nocache|http://127.0.0.1:$GWN_PORT/api$REQ_PATH|Authorization: Bearer $TOKEN_ES256|$GWN_PID"
        "apache-oidc|http://127.0.0.1:$APACHE_PORT$REQ_PATH|Cookie: $SESSION_APACHE|$APACHE_PID"
    )
    BASELINES=(plain-fair plain-proxy plain-mimalloc apache-oidc)

    : >"$TMP/results.tsv"
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        echo "round $ROUND/$ROUNDS"
        local t name url header pid
        for SHAPE in $SHAPES; do
            for t in "${TARGETS[@]}"; do
                IFS='|' read -r name url header pid <<<"$t"
                if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then
                    continue
                fi
                measure "$name" "$url" "$header" "$pid"
            done
        done
    done
    report
    tls_rounds
    soak
    scaling
}

main "$@"
