#!/usr/bin/env bash
# Sets up what the test suite needs on a fresh machine and runs it.
# Needs: a Rust toolchain (cargo) of at least the version in Cargo.toml's rust-version, and
# for the ONNX Runtime tests Python 3 with venv and pip (scripts/ort-env.sh installs
# onnxruntime==1.32.0 into .venv/ and exports ORT_DYLIB_PATH).
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

source scripts/ort-env.sh

# Release mode: later stages train networks, and debug builds are ~18x slower.
cargo test --release --locked
