#!/usr/bin/env bash
# The test command from the README: installs what the tests need on a fresh Debian machine
# with Rust, then runs the formatter check, clippy and every test. Under CI=true a missing
# component is an error, never a skipped test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests need: cmake (Pingora's build), pkg-config.
pkgs=()
command -v cmake >/dev/null || pkgs+=(cmake)
command -v pkg-config >/dev/null || pkgs+=(pkg-config)
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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --all-targets --locked
cargo test --doc --locked
