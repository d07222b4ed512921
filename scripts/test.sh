#!/usr/bin/env bash
# Sets up what the test suite needs on a fresh machine and runs it.
# Needs: a Rust toolchain (cargo) of at least the version in Cargo.toml's rust-version.
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

# Release mode: later stages train networks, and debug builds are ~18x slower.
cargo test --release --locked
