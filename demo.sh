#!/usr/bin/env bash
# The demo in one command: installs what it needs on a fresh Debian machine (Node.js and npm
# for the demo OpenID provider, cmake for the build), then runs `authgate demo`: the test
# provider on 127.0.0.1:9400, an upstream that shows the headers it receives on :3000, and
# authgate (memory session store) on http://localhost:8080.
set -euo pipefail
cd "$(dirname "$0")"
pkgs=()
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
command -v cmake >/dev/null || pkgs+=(cmake)
if ((${#pkgs[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  fi
fi
[ -d tests/idp/node_modules/oidc-provider ] || (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error)
exec cargo run --release -- demo "$@"
