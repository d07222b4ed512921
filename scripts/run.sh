#!/usr/bin/env bash
# Sets up what the default job needs on a fresh machine and runs it: the Fashion-MNIST data
# set from Debian's dataset-fashion-mnist package, ONNX Runtime in .venv/ (pip), a release
# build, then the default pipeline (pipelines/fashion-mnist.ron, planned to fit one hour)
# end to end with `nas-pipe run`. `bash scripts/run.sh --budget 2h` plans two hours;
# `NAS_PIPE_PIPELINE=pipelines/fashion-mnist-quick.ron bash scripts/run.sh` runs the
# 8–9-minute version.
set -euo pipefail
cd "$(dirname "$0")/.."

data=/usr/share/datasets/fashion-mnist
if [ ! -e "$data/train-images-idx3-ubyte.gz" ] && [ ! -e "$data/train-images-idx3-ubyte" ]; then
    echo "nas-pipe: installing Fashion-MNIST (Debian package dataset-fashion-mnist)" >&2
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q && apt-get install -y -q dataset-fashion-mnist
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -q && sudo apt-get install -y -q dataset-fashion-mnist
    else
        echo "nas-pipe: Fashion-MNIST is missing from $data; install the Debian package dataset-fashion-mnist as root" >&2
        exit 2
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "nas-pipe: cargo is missing. Install Rust with:" >&2
        echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
        exit 2
    fi
fi

# ONNX Runtime for the export check and profiling stages (.venv/, ORT_DYLIB_PATH).
source scripts/ort-env.sh

cargo build --release --locked
# Every stage in order, each skipped when the run folder has it done under the same spec:
# search, derive, retrain, export, validate, profile, report. Run again after a crash and it
# continues from the last checkpoint, keeping the budget's plan. Extra arguments go to
# `nas-pipe run` (--budget, --force, --from STAGE, --only STAGE).
exec ./target/release/nas-pipe run "${NAS_PIPE_PIPELINE:-pipelines/fashion-mnist.ron}" "$@"
