#!/usr/bin/env bash
# End-to-end load test: the echo upstream measured directly and through authgate, interleaved
# in one run so both see the same machine state.
#
#   bash benches/load.sh                      # 3 rounds, 64 connections, 5 s per measurement
#   ROUNDS=5 CONNS=128 DURATION=10s bash benches/load.sh
#
# Environment: ROUNDS (3), CONNS (64), DURATION (5s), WRK_THREADS (2), WARMUP (1s),
# REQ_PATH (/bench?echo_quiet: the echo answers a bare "ok"), OUT_DIR (bench-results).
# Needs cargo, curl, python3 and wrk (installed with apt-get when missing and running as root).
# All traffic goes to 127.0.0.1. Results: a table on stdout, $OUT_DIR/load.md and load.json.
#
# Adding a target: start whatever serves it in `start_servers`, then add "name|url" to
# TARGETS in `main`; medians, ratios (against the first target) and reports pick it up.
set -euo pipefail

ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-5s}"
WRK_THREADS="${WRK_THREADS:-2}"
WARMUP="${WARMUP:-1s}"
REQ_PATH="${REQ_PATH:-/bench?echo_quiet}"
OUT_DIR="${OUT_DIR:-bench-results}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/authgate"

die() { echo "load.sh: error: $*" >&2; exit 1; }

for v in ROUNDS CONNS WRK_THREADS; do
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
    echo "params:  rounds=$ROUNDS conns=$CONNS duration=$DURATION wrk_threads=$WRK_THREADS warmup=$WARMUP path=$REQ_PATH"
}

ensure_wrk() {
    command -v wrk >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "wrk not found: installing with apt-get"
        apt-get install -y wrk || { apt-get update && apt-get install -y wrk; } \
            || die "apt-get could not install wrk"
    else
        die "wrk is not installed; install it (Debian/Ubuntu: sudo apt-get install wrk) and rerun"
    fi
    command -v wrk >/dev/null 2>&1 || die "wrk still not found after installing"
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

start_servers() {
    read -r ECHO_PORT GW_PORT ADMIN_PORT <<<"$(free_ports 3)"

    "$BIN" echo --listen "127.0.0.1:$ECHO_PORT" >"$TMP/echo.log" 2>&1 &
    ECHO_PID=$!
    PIDS+=("$ECHO_PID")

    cat >"$TMP/authgate.toml" <<EOF
[server]
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "$TMP/authgate.pid"
upgrade_socket = "$TMP/authgate-upgrade.sock"

[log]
access_log = false

[[listeners]]
address = "127.0.0.1:$GW_PORT"

[admin]
address = "127.0.0.1:$ADMIN_PORT"

[upstreams.echo]
servers = ["http://127.0.0.1:$ECHO_PORT"]

[[routes]]
id = "bench"
path = "/"
upstream = "echo"
public = true
EOF
    "$BIN" check "$TMP/authgate.toml" >/dev/null || die "generated config rejected (see above)"
    "$BIN" run -c "$TMP/authgate.toml" >"$TMP/authgate.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")

    wait_http "echo upstream" "http://127.0.0.1:$ECHO_PORT$REQ_PATH" "$TMP/echo.log" "$ECHO_PID"
    wait_http "authgate" "http://127.0.0.1:$GW_PORT$REQ_PATH" "$TMP/authgate.log" "$GW_PID"
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

# measure NAME URL: warm up, run wrk once, append "name round rps p50_us p99_us errors" to
# $TMP/results.tsv.
measure() {
    local name="$1" url="$2" out="$TMP/wrk-$1-$ROUND.txt" rps p50 p99 errors
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    p50="$(to_us "$(awk '$1 == "50%" {print $2; exit}' "$out")")"
    p99="$(to_us "$(awk '$1 == "99%" {print $2; exit}' "$out")")"
    # Non-2xx/3xx responses and socket errors (connect/read/write/timeout), if any.
    errors="$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
                   /Socket errors:/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i}
                   END {print e + 0}' "$out")"
    [[ -n "$rps" && "$p50" != NaN && "$p99" != NaN ]] || { cat "$out" >&2; die "cannot parse wrk output for $name"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$ROUND" "$rps" "$p50" "$p99" "$errors" >>"$TMP/results.tsv"
    printf '  round %s  %-10s %12s req/s  p50 %10s us  p99 %10s us  errors %s\n' \
        "$ROUND" "$name" "$rps" "$p50" "$p99" "$errors"
}

report() {
    mkdir -p "$OUT_DIR"
    MACHINE_NPROC="$MACHINE_NPROC" MACHINE_ARCH="$MACHINE_ARCH" MACHINE_CPU="$MACHINE_CPU" \
    ROUNDS="$ROUNDS" CONNS="$CONNS" DURATION="$DURATION" WRK_THREADS="$WRK_THREADS" \
    REQ_PATH="$REQ_PATH" GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    TARGET_ORDER="$(printf '%s\n' "${TARGETS[@]%%|*}")" \
    python3 - "$TMP/results.tsv" "$OUT_DIR" <<'PY'
import json, os, statistics, sys, time

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
out_dir = sys.argv[2]
order = os.environ["TARGET_ORDER"].split()
runs = {t: [] for t in order}
for name, rnd, rps, p50, p99, err in rows:
    runs[name].append({"round": int(rnd), "rps": float(rps), "p50_us": float(p50),
                       "p99_us": float(p99), "errors": int(err)})
med = {t: {k: statistics.median(r[k] for r in runs[t]) for k in ("rps", "p50_us", "p99_us")}
       | {"errors": sum(r["errors"] for r in runs[t])} for t in order}
base = order[0]
ratios = {t: {"throughput": med[t]["rps"] / med[base]["rps"],
              "p99": med[t]["p99_us"] / med[base]["p99_us"]} for t in order[1:]}

hdr = f"{'target':<10} {'req/s':>12} {'p50 µs':>10} {'p99 µs':>10} {'errors':>7}"
print("\nmedians over %s rounds" % os.environ["ROUNDS"])
print(hdr)
print("-" * len(hdr))
for t in order:
    m = med[t]
    print(f"{t:<10} {m['rps']:>12.0f} {m['p50_us']:>10.0f} {m['p99_us']:>10.0f} {m['errors']:>7}")
for t, r in ratios.items():
    print(f"ratio {t}/{base}: throughput {r['throughput']:.3f}, p99 {r['p99']:.3f}")

env = {k: os.environ[k] for k in ("ROUNDS", "CONNS", "DURATION", "WRK_THREADS", "REQ_PATH")}
machine = {"nproc": int(os.environ["MACHINE_NPROC"]), "arch": os.environ["MACHINE_ARCH"],
           "cpu": os.environ["MACHINE_CPU"]}
stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
doc = {"timestamp": stamp, "git_rev": os.environ["GIT_REV"], "machine": machine,
       "params": {"rounds": int(env["ROUNDS"]), "connections": int(env["CONNS"]),
                  "duration": env["DURATION"], "wrk_threads": int(env["WRK_THREADS"]),
                  "path": env["REQ_PATH"]},
       "baseline": base, "median": med, "ratios_vs_baseline": ratios, "runs": runs}
with open(os.path.join(out_dir, "load.json"), "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

md = [f"# authgate load test ({stamp}, {os.environ['GIT_REV']})", "",
      f"Machine: {machine['nproc']} CPUs, {machine['arch']}, {machine['cpu']}  ",
      f"wrk -t{env['WRK_THREADS']} -c{env['CONNS']} -d{env['DURATION']} on `{env['REQ_PATH']}`, "
      f"medians of {env['ROUNDS']} interleaved rounds", "",
      "| target | req/s | p50 µs | p99 µs | errors |", "|---|---:|---:|---:|---:|"]
for t in order:
    m = med[t]
    md.append(f"| {t} | {m['rps']:.0f} | {m['p50_us']:.0f} | {m['p99_us']:.0f} | {m['errors']} |")
md.append("")
for t, r in ratios.items():
    md.append(f"- {t}/{base}: throughput ×{r['throughput']:.3f}, p99 ×{r['p99']:.3f}")
with open(os.path.join(out_dir, "load.md"), "w") as f:
    f.write("\n".join(md) + "\n")
print(f"\nwrote {out_dir}/load.md and {out_dir}/load.json")
PY
}

main() {
    print_machine
    ensure_wrk
    echo "building release binary"
    cargo build --release --bin authgate
    [[ -x "$BIN" ]] || die "$BIN not built"
    start_servers

    # name|url; the first is the baseline for ratios.
    TARGETS=(
        "direct|http://127.0.0.1:$ECHO_PORT$REQ_PATH"
        "authgate|http://127.0.0.1:$GW_PORT$REQ_PATH"
    )

    : >"$TMP/results.tsv"
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        echo "round $ROUND/$ROUNDS"
        local t
        for t in "${TARGETS[@]}"; do
            measure "${t%%|*}" "${t#*|}"
        done
    done
    report
}

main "$@"
