#!/usr/bin/env bash
# Sets up what the test suite needs on a fresh machine and runs it.
# Needs: a Rust toolchain (cargo) of at least the version in Cargo.toml's rust-version, and
# for the ONNX Runtime tests Python 3 with venv and pip (scripts/ort-env.sh installs
# onnxruntime==1.32.0 into .venv/ and exports ORT_DYLIB_PATH), and for the report's browser
# test Chromium (installed with apt-get when run as root), for the trial ledger's
# PostgreSQL tests PostgreSQL (installed with apt-get when run as root), and for the CUDA build
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

# The report's browser test (report_opens_in_chromium_without_console_errors) opens a report
# in headless Chromium; without it that one test says it is skipped.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "nas-pipe tests: installing Chromium (Debian package chromium) for the report's browser test" >&2
        if ! { apt-get install -y -q chromium >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; then
            echo "nas-pipe tests: could not install Chromium; the report's browser test is skipped" >&2
        fi
    else
        echo "nas-pipe tests: Chromium is missing (Debian: apt-get install chromium); the report's browser test is skipped" >&2
    fi
fi

# The trial ledger's PostgreSQL tests run against a throwaway server
# (scripts/with-postgres.sh: its own data directory, an unprivileged user, 127.0.0.1 only,
# stopped at the end); without PostgreSQL they say they are skipped.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "nas-pipe tests: installing PostgreSQL (Debian package postgresql) for the trial ledger's tests" >&2
        if ! { apt-get install -y -q postgresql >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; }; }; then
            echo "nas-pipe tests: could not install PostgreSQL; the ledger's PostgreSQL tests are skipped" >&2
        fi
    else
        echo "nas-pipe tests: PostgreSQL is missing (Debian: apt-get install postgresql); the ledger's PostgreSQL tests are skipped" >&2
    fi
fi

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
