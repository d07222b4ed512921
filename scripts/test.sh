#!/usr/bin/env bash
# Sets up what the test suite needs on a fresh machine and runs it.
# Needs: a Rust toolchain (cargo) of at least the version in Cargo.toml's rust-version, and
# for the ONNX Runtime tests Python 3 with venv and pip (scripts/ort-env.sh installs
# onnxruntime==1.32.0 into .venv/ and exports ORT_DYLIB_PATH), and for the report's browser
# tests Chromium, for the trial ledger's PostgreSQL tests PostgreSQL, for the image sources'
# real-data tests Debian's dataset-fashion-mnist (each installed with apt-get when run as
# root), and for the CUDA build
# (scripts/build-cuda.sh --test; no GPU needed) pip access to PyPI's CUDA 13.0 wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "nas-pipe tests: cargo is missing. Install Rust with:" >&2
        echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
        exit 2
    fi
fi

# The vendored candle-core must equal the crates.io release plus patches/candle-core.diff.
bash scripts/check-candle-patch.sh

source scripts/ort-env.sh

# need PACKAGE WHAT: installs a Debian package with apt-get when run as root; otherwise,
# or when that fails, says which tests are skipped without it.
need() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "nas-pipe tests: installing $1 (Debian) for $2" >&2
        if { apt-get install -y -q "$1" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$1" >/dev/null 2>&1; }; }; then
            return 0
        fi
        echo "nas-pipe tests: could not install $1; $2 are skipped" >&2
    else
        echo "nas-pipe tests: $1 is missing (Debian: apt-get install $1); $2 are skipped" >&2
    fi
}

# The report's browser tests open reports in headless Chromium.
[ -x /usr/bin/chromium ] || need chromium "the report's browser tests"
# The trial ledger's PostgreSQL tests run against a throwaway server
# (scripts/with-postgres.sh: its own data directory, an unprivileged user, 127.0.0.1 only,
# stopped at the end).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need postgresql "the ledger's PostgreSQL tests"
# The image sources' real-data tests write part of Fashion-MNIST as PNG, CSV and npy.
[ -d /usr/share/datasets/fashion-mnist ] || need dataset-fashion-mnist "the real-data tests of the image sources"

# Release mode: later stages train networks, and debug builds are ~18x slower.
bash scripts/with-postgres.sh cargo test --release --locked

# The CUDA build (no GPU needed), so that the CUDA code never rots: its unit tests, and the
# binary's behaviour on a machine without a GPU. Installs PyPI's CUDA 13.0 wheels into .cuda/
# on first use (about 1.2 GB). NAS_PIPE_SKIP_CUDA=1 skips it.
if [ "${NAS_PIPE_SKIP_CUDA:-0}" = 1 ]; then
    echo "nas-pipe tests: NAS_PIPE_SKIP_CUDA=1: the CUDA build is skipped" >&2
else
    bash scripts/build-cuda.sh --test
fi
