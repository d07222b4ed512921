#!/usr/bin/env bash
# nas-pipe's speed and memory next to PyTorch's on this machine, in one table: runs
# benches/reference/torch_bench.py (PyTorch, in .venv-torch/, created from PyPI on first use:
# about 5 GB) and then `cargo bench --bench speed` against its JSON. By hand only, never in
# CI or tests. Writes exports/bench/{torch.json,nas-pipe.json,table.md}.
#
#   scripts/bench.sh [--rows SUBSTRING] [--threads N]
#
# TORCH_PYTHON=/path/to/python uses an existing interpreter with torch, onnx and
# onnxruntime==1.32.0 instead of .venv-torch/. Run nothing else meanwhile: both sides are
# timed on all cores.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=""
threads=$(nproc)
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) rows="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        *) echo "usage: scripts/bench.sh [--rows SUBSTRING] [--threads N]" >&2; exit 2 ;;
    esac
done

py="${TORCH_PYTHON:-.venv-torch/bin/python}"
if ! "$py" -c "import torch, onnx, onnxruntime" >/dev/null 2>&1; then
    if [ -n "${TORCH_PYTHON:-}" ]; then
        echo "nas-pipe: $py cannot import torch, onnx and onnxruntime" >&2
        exit 2
    fi
    echo "nas-pipe: installing PyTorch, onnx and onnxruntime 1.32.0 into .venv-torch/ (pip, about 5 GB)" >&2
    python3 -m venv .venv-torch
    .venv-torch/bin/pip install -q torch numpy onnx onnxruntime==1.32.0
fi

# shellcheck source=scripts/ort-env.sh
source scripts/ort-env.sh
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    echo "nas-pipe: ONNX Runtime is missing (see above); the bench needs it for its ONNX Runtime row" >&2
    exit 2
fi

out=exports/bench
mkdir -p "$out"
export RAYON_NUM_THREADS="$threads"
"$py" benches/reference/torch_bench.py --threads "$threads" --rows "$rows" --out "$out/torch.json"
cargo bench --bench speed -- --rows "$rows" --reference "$out/torch.json" --out "$out/nas-pipe.json" \
    | tee "$out/table.md.tmp"
mv "$out/table.md.tmp" "$out/table.md"
echo "nas-pipe: the table is in $out/table.md" >&2
