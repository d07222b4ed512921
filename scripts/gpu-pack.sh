#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has no network into one
# folder, target/gpu-check/ (about 30 MB): the CUDA binary and the libcudart next to it
# (scripts/build-cuda.sh builds both), and ONNX Runtime's library, xz-compressed, for the
# smoke run's validate and profile stages. Copy or carry that folder, with scripts/ and
# pipelines/, to the GPU machine and run scripts/gpu-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/cuda/release/nas-pipe
if [ ! -x "$BIN" ]; then
    echo "gpu-pack: $BIN is missing: run scripts/build-cuda.sh first" >&2
    exit 2
fi
source scripts/ort-env.sh
if [ -z "${ORT_DYLIB_PATH:-}" ] || [ ! -f "$ORT_DYLIB_PATH" ]; then
    echo "gpu-pack: no ONNX Runtime library (scripts/ort-env.sh says why above)" >&2
    exit 2
fi

PACK=target/gpu-check
rm -rf "$PACK.tmp"
mkdir -p "$PACK.tmp"
cp "$BIN" target/cuda/release/libcudart.so.13 "$PACK.tmp/"
python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(open(sys.argv[1],"rb"), lzma.open(sys.argv[2],"wb",preset=6))' \
    "$ORT_DYLIB_PATH" "$PACK.tmp/$(basename "$ORT_DYLIB_PATH").xz"
rm -rf "$PACK"
mv "$PACK.tmp" "$PACK"
du -b "$PACK"/* | sed 's/^/gpu-pack: /' >&2
