#!/usr/bin/env bash
# The test command from the README: installs what the tests need on a fresh Debian machine
# with Rust, then runs the formatter check, clippy and every test. Under CI=true a missing
# component is an error, never a skipped test.
# On a slow or overloaded machine, AUTHGATE_TEST_PATIENCE=N (a factor, default 1) multiplies
# every wait of the test harness (tests/common/mod.rs); it reaches the tests from the
# environment as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests need: cmake (Pingora's build), pkg-config,
# redis-server (session store tests), Node.js + npm (the test OpenID provider), Chromium and
# its WebDriver (the browser login test), nginx and Caddy (the forward-auth tests), tinyproxy
# (the outbound proxy of tests/provider_tls.rs; tinyproxy-bin is the binary without the
# system service), faketime (libfaketime: a replica with a skewed clock, tests/fault_scenarios.rs),
# systemd (systemd-analyze: the shipped unit's security exposure, tests/systemd.rs; a container
# image of Debian has no systemd), Apache httpd and mod_auth_openidc (the incumbent the
# migration guide's worked example replaces, run for real by tests/migration.rs).
pkgs=()
command -v cmake >/dev/null || pkgs+=(cmake)
command -v pkg-config >/dev/null || pkgs+=(pkg-config)
command -v redis-server >/dev/null || pkgs+=(redis-server)
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
command -v chromium >/dev/null || pkgs+=(chromium)
command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
command -v caddy >/dev/null || pkgs+=(caddy)
command -v tinyproxy >/dev/null || pkgs+=(tinyproxy-bin)
command -v faketime >/dev/null || pkgs+=(faketime)
command -v systemd-analyze >/dev/null || pkgs+=(systemd)
command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ] || pkgs+=(apache2)
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || pkgs+=(libapache2-mod-auth-openidc)
# python3 and its venv module: kubernetes-validate (below) for tests/kubernetes.rs.
command -v python3 >/dev/null || pkgs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
if ((${#pkgs[@]})); then
  echo "==> installing: ${pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  else
    echo "error: need ${pkgs[*]} (apt-get install ${pkgs[*]}) and cannot install as non-root" >&2
    exit 1
  fi
fi

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# The Kubernetes JSON schemas (tests/kubernetes.rs validates deploy/kubernetes/ against them),
# from PyPI, in a virtual environment of its own (Debian's python3 refuses a global pip).
if [ ! -x target/kube-venv/bin/kubernetes-validate ]; then
  echo "==> kubernetes-validate (PyPI) into target/kube-venv"
  python3 -m venv target/kube-venv
  target/kube-venv/bin/pip install -q kubernetes-validate==1.37.0
fi

echo "==> npm ci (tests/idp: the test OpenID provider)"
(cd tests/idp && npm ci --no-audit --no-fund --loglevel=error)

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
