#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the stable figure beside load.sh's throughput
# (the same binary and requests give the same count, whatever else the machine is doing).
#
#   bash benches/instructions.sh                       # target/release binaries
#   BIN=/path/authgate PLAIN=/path/plain_proxy bash benches/instructions.sh
#   N=2000 SHAPE=browser bash benches/instructions.sh
#   KEEP=dir bash benches/instructions.sh   # keep each target's dump for callgrind_annotate
#
# Each server runs under `valgrind --tool=callgrind`; a Python keep-alive client sends WARM
# requests, the counters are zeroed (`callgrind_control -z`), N more requests are sent, the
# counters are dumped (`callgrind_control -d`) and the dump's total is divided by N. The client
# is outside the counted process, so only the server's work is counted (the echo upstream runs
# natively). Targets:
#   plain-fair      examples/plain_proxy.rs with `fair`: the production timeouts, pool and
#                   keep-alive settings (authgate's defaults), the baseline issue 17's target
#                   is set against (the ratios below are to it)
#   plain-proxy     examples/plain_proxy.rs bare (Pingora with nothing on the request path): a
#                   second line
#   public          authgate, a public route
#   session-cached  authgate, a protected route with a session cookie (in-memory cache answers)
#   bearer-cached   authgate, a bearer route with an RS256 access token (verified-token cache)
#   legacy          authgate, a protected route that uses the legacy-app options of issue 16
#                   (claims as headers in prefix mode, REMOTE_USER transform, response headers,
#                   strip_prefix), when the binary knows them (`authgate check` accepts them)
# SHAPE: minimal (Host only, the default) or browser (a Chromium navigation's 14 headers, with
# the session cookie among unrelated cookies). Output: one line per target, and
# $OUT_DIR/instructions.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release/authgate}"
PLAIN="${PLAIN:-$ROOT/target/release/examples/plain_proxy}"
N="${N:-2000}"
WARM="${WARM:-300}"
SHAPE="${SHAPE:-minimal}"
OUT_DIR="${OUT_DIR:-bench-results}"

die() { echo "instructions.sh: error: $*" >&2; exit 1; }
for tool in valgrind callgrind_control python3 curl node; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (valgrind: apt-get install valgrind)"
done
[[ -x "$BIN" ]] || die "$BIN missing: cargo build --release --bin authgate"
[[ -x "$PLAIN" ]] || die "$PLAIN missing: cargo build --release --example plain_proxy"
[[ -d "$ROOT/tests/idp/node_modules/oidc-provider" ]] \
    || (cd "$ROOT/tests/idp" && npm ci --no-audit --no-fund) || die "npm ci in tests/idp failed"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer"
[[ "$SHAPE" == minimal || "$SHAPE" == browser ]] || die "SHAPE is minimal or browser"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/authgate-instr.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

read -r ECHO_PORT IDP_PORT GW_PORT ADMIN_PORT PLAIN_PORT FAIR_PORT <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"

wait_url() { # NAME URL SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not answer on $2 within $3 s"
}

"$BIN" echo --listen "127.0.0.1:$ECHO_PORT" >"$TMP/echo.log" 2>&1 &
PIDS+=($!)
(
    cd "$ROOT/tests/idp"
    IDP_PORT="$IDP_PORT" IDP_ISSUER="http://127.0.0.1:$IDP_PORT" IDP_AUTO_LOGIN=1 IDP_ACCESS_TOKEN_TTL=3600 \
    IDP_CLIENTS="[{\"client_id\":\"authgate\",\"client_secret\":\"authgate-secret\",\"redirect_uris\":[\"http://127.0.0.1:$GW_PORT/.authgate/callback\"],\"post_logout_redirect_uris\":[\"http://127.0.0.1:$GW_PORT/\"]}]" \
        exec node idp.js
) >"$TMP/idp.log" 2>&1 </dev/null &
PIDS+=($!)
wait_url "echo upstream" "http://127.0.0.1:$ECHO_PORT/" 15
for ((i = 0; i < 300; i++)); do grep -q "^IDP READY" "$TMP/idp.log" && break; sleep 0.1; done
grep -q "^IDP READY" "$TMP/idp.log" || die "test IdP not ready"

cat >"$TMP/gw.toml" <<EOF
[server]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "$TMP/gw.pid"
upgrade_socket = "$TMP/gw-upgrade.sock"
[log]
access_log = false
[[listeners]]
address = "127.0.0.1:$GW_PORT"
[admin]
address = "127.0.0.1:$ADMIN_PORT"
[session]
store = "memory"
idle_timeout = "1h"
absolute_timeout = "12h"
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
audiences = ["urn:authgate:api"]
[[routes]]
id = "app"
path = "/"
upstream = "echo"
EOF
LEGACY='
[[routes]]
id = "legacy"
path = "/legacy"
upstream = "echo"
strip_prefix = "/legacy"
response_headers = { set = { "Cache-Control" = "no-store" } }
[routes.headers]
claim_prefix = "OIDC_CLAIM_"
remote_user = { claim = "email", pattern = "^(.+)@.*$", replace = "$1" }'
cp "$TMP/gw.toml" "$TMP/gw-base.toml"
printf '%s\n' "$LEGACY" >>"$TMP/gw.toml"
HAS_LEGACY=1
"$BIN" check "$TMP/gw.toml" >/dev/null 2>&1 || { cp "$TMP/gw-base.toml" "$TMP/gw.toml"; HAS_LEGACY=0; }

valgrind --tool=callgrind --callgrind-out-file="$TMP/gw.cg.%p" "$BIN" run -c "$TMP/gw.toml" \
    >"$TMP/gw.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
valgrind --tool=callgrind --callgrind-out-file="$TMP/plain.cg.%p" \
    "$PLAIN" "127.0.0.1:$PLAIN_PORT" "127.0.0.1:$ECHO_PORT" 1 >"$TMP/plain.log" 2>&1 &
PLAIN_PID=$!
PIDS+=("$PLAIN_PID")
valgrind --tool=callgrind --callgrind-out-file="$TMP/fair.cg.%p" \
    "$PLAIN" "127.0.0.1:$FAIR_PORT" "127.0.0.1:$ECHO_PORT" 1 fair >"$TMP/fair.log" 2>&1 &
FAIR_PID=$!
PIDS+=("$FAIR_PID")
wait_url "authgate under callgrind" "http://127.0.0.1:$ADMIN_PORT/readyz" 120
wait_url "plain proxy under callgrind" "http://127.0.0.1:$PLAIN_PORT/" 120
wait_url "fair plain proxy under callgrind" "http://127.0.0.1:$FAIR_PORT/" 120

COOKIE="$(python3 "$ROOT/benches/login.py" "http://127.0.0.1:$GW_PORT")" || die "login failed"
TOKEN="$(curl -sf --max-time 10 -u authgate:authgate-secret "http://127.0.0.1:$IDP_PORT/token" \
    -d grant_type=client_credentials -d resource=urn:authgate:api -d scope=api:read \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" || die "no token"

# send PORT PATH COUNT [HEADER...]: COUNT keep-alive GETs; every answer must be 200.
send() {
    python3 - "$@" <<'PY'
import http.client, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
headers = {}
for h in sys.argv[4:]:
    k, v = h.split(": ", 1)
    headers[k] = v
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(count):
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"{path}: {r.status}")
PY
}

BROWSER=()
if [[ "$SHAPE" == browser ]]; then
    BROWSER=(
        "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"
        "Accept-Encoding: gzip, deflate, br, zstd"
        "Accept-Language: en-GB,en;q=0.9,de;q=0.8"
        "Cache-Control: max-age=0"
        "Sec-Ch-Ua: \"Chromium\";v=\"156\", \"Not A(Brand\";v=\"24\""
        "Sec-Ch-Ua-Mobile: ?0"
        "Sec-Ch-Ua-Platform: \"Linux\""
        "Sec-Fetch-Dest: document"
        "Sec-Fetch-Mode: navigate"
        "Sec-Fetch-Site: same-origin"
        "Sec-Fetch-User: ?1"
        "Upgrade-Insecure-Requests: 1"
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
        "Referer: http://127.0.0.1/previous/page"
    )
fi

# measure NAME PID PORT PATH [HEADER...]: instructions per request of PID.
measure() {
    local name="$1" pid="$2" port="$3" path="$4"
    shift 4
    send "$port" "$path" "$WARM" "$@" "${BROWSER[@]}" || die "$name: warm-up failed"
    callgrind_control -z "$pid" >/dev/null 2>&1
    send "$port" "$path" "$N" "$@" "${BROWSER[@]}" || die "$name: run failed"
    rm -f "$TMP"/*.cg.*.[0-9]*
    callgrind_control -d "$pid" >/dev/null 2>&1
    local dump total
    dump="$(ls -t "$TMP"/*.cg."$pid".* 2>/dev/null | grep -v "\.$pid$" | head -1)"
    [[ -n "$dump" ]] || die "$name: no callgrind dump"
    [[ -n "${KEEP:-}" ]] && mkdir -p "$KEEP" && cp "$dump" "$KEEP/$name.callgrind"
    total="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
    local per=$((total / N)) ratio=""
    [[ "$name" == plain-fair ]] && FAIR_PER=$per
    [[ -n "${FAIR_PER:-}" && "$name" != plain-fair ]] \
        && ratio="$(awk -v a="$per" -v b="$FAIR_PER" 'BEGIN { printf "  %.2f x plain-fair", a / b }')"
    printf '%-16s %10d instructions/request%s\n' "$name" "$per" "$ratio" | tee -a "$TMP/result.txt"
}

APP_COOKIE="$COOKIE"
if [[ "$SHAPE" == browser ]]; then
    APP_COOKIE="_ga=GA1.1.1234567890.1700000000; theme=dark; $COOKIE; consent=yes"
fi
echo "shape=$SHAPE n=$N binary=$BIN"
measure plain-fair "$FAIR_PID" "$FAIR_PORT" "/bench?echo_quiet"
measure plain-proxy "$PLAIN_PID" "$PLAIN_PORT" "/bench?echo_quiet"
measure public "$GW_PID" "$GW_PORT" "/public/bench?echo_quiet"
measure session-cached "$GW_PID" "$GW_PORT" "/bench?echo_quiet" "Cookie: $APP_COOKIE"
measure bearer-cached "$GW_PID" "$GW_PORT" "/api/bench?echo_quiet" "Authorization: Bearer $TOKEN"
if [[ "$HAS_LEGACY" == 1 ]]; then
    measure legacy "$GW_PID" "$GW_PORT" "/legacy/bench?echo_quiet" "Cookie: $APP_COOKIE"
fi
mkdir -p "$OUT_DIR"
{
    echo "# Instructions per request (callgrind), shape $SHAPE, $N requests after $WARM"
    echo
    echo '```'
    cat "$TMP/result.txt"
    echo '```'
} >"$OUT_DIR/instructions.md"
