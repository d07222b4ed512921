#!/usr/bin/env bash
# The GPU check, in one go on a machine with an NVIDIA GPU and no network (a few minutes):
#
#   scripts/gpu-check.sh [OUT]        OUT defaults to exports/gpu-check
#
# 1. prints the GPU (nvidia-smi) and checks that the CUDA binary finds its libraries;
# 2. `nas-pipe device-check --device cuda:0`: every CPU kernel, every op and two networks
#    forward and backward on the CPU and on the GPU (max |cuda − cpu| per row), then a DARTS
#    search step and a retraining step timed on both (median after warm-up);
# 3. `nas-pipe run pipelines/smoke.ron --device cuda:0`: search, retrain, export, validate
#    (ONNX Runtime against Candle on CUDA) and profile, end to end;
# 4. writes OUT/gpu-check.json: the GPU, the device check's figures, the smoke run's outcome.
#
# Built elsewhere: scripts/build-cuda.sh, then scripts/gpu-pack.sh, which puts the binary,
# its libcudart and ONNX Runtime into target/gpu-check/. The binary is taken from there,
# else target/cuda/release/ (NAS_PIPE_BIN overrides). cuBLAS and cuRAND (CUDA 13) come from
# the machine: the `nvidia/cu13/lib` folder of a pip install (PyTorch's cu13 wheels have
# it), found through any python3 on PATH or in a venv under $HOME, /opt or /workspace, or
# named by CUDA13_LIB. Exits 0 when everything passed, 1 when a check failed, 2 when
# something it needs is missing.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-exports/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PACK=target/gpu-check
say() { echo "gpu-check: $*" >&2; }
missing() { say "$*"; exit 2; }

# The binary.
BIN="${NAS_PIPE_BIN:-}"
if [ -z "$BIN" ]; then
    for b in "$PACK/nas-pipe" target/cuda/release/nas-pipe; do
        [ -x "$b" ] && BIN="$b" && break
    done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || missing "no CUDA build of nas-pipe: run scripts/build-cuda.sh and scripts/gpu-pack.sh where it can build"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# The GPU.
command -v nvidia-smi >/dev/null 2>&1 || missing "nvidia-smi not found: no NVIDIA driver on this machine"
GPU_CSV="$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1)" \
    || missing "nvidia-smi failed: $GPU_CSV"
say "GPU: $GPU_CSV"

# CUDA 13 libraries: cuBLAS, cuBLASLt, cuRAND.
NEED="libcublas.so.13 libcublasLt.so.13 libcurand.so.10"
has_libs() { for l in $NEED; do [ -e "$1/$l" ] || return 1; done; }
LIBDIR="${CUDA13_LIB:-}"
if [ -z "$LIBDIR" ]; then
    cands=()
    for py in python3 $(ls -d "$HOME"/*/bin/python3 "$HOME"/.*/bin/python3 /opt/*/bin/python3 \
        /opt/*/*/bin/python3 /workspace/*/bin/python3 2>/dev/null); do
        d=$("$py" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))' 2>/dev/null) \
            && cands+=("$d")
    done
    cands+=(/usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu)
    for d in "${cands[@]}"; do
        if [ -d "$d" ] && has_libs "$d"; then LIBDIR="$d"; break; fi
    done
fi
[ -n "$LIBDIR" ] && has_libs "$LIBDIR" \
    || missing "no CUDA 13 cuBLAS/cuRAND ($NEED) found; set CUDA13_LIB to a folder that has them (pip install nvidia-cublas nvidia-curand: site-packages/nvidia/cu13/lib)"
say "CUDA 13 libraries: $LIBDIR"
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$BIN" | grep -q 'not found'; then
    ldd "$BIN" | grep 'not found' >&2
    missing "$BIN cannot load its libraries"
fi

# ONNX Runtime, for the smoke run's validate and profile stages.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    xz=$(ls "$PACK"/libonnxruntime.so.*.xz 2>/dev/null | head -1)
    if [ -n "$xz" ]; then
        lib="$OUT/$(basename "$xz" .xz)"
        [ -f "$lib" ] || python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$xz" "$lib"
        export ORT_DYLIB_PATH="$lib"
    else
        f=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0 2>/dev/null | head -1)
        [ -n "$f" ] && export ORT_DYLIB_PATH="$PWD/$f"
    fi
fi
[ -n "${ORT_DYLIB_PATH:-}" ] || say "no ONNX Runtime library: the smoke run will stop at validate"

status=0
say "device check (device-check.txt, device-check.json)"
timeout 420 "$BIN" device-check --device cuda:0 --repeats "${REPEATS:-5}" --figures "$OUT/device-check.json" \
    2>&1 | tee "$OUT/device-check.txt"
dc=${PIPESTATUS[0]}
[ "$dc" = 0 ] || status=1

say "smoke run on cuda:0 (smoke.txt, runs/smoke/)"
start=$(date +%s%N)
timeout 240 "$BIN" run pipelines/smoke.ron --device cuda:0 --out "$OUT/runs" --force 2>&1 | tee "$OUT/smoke.txt"
smoke=${PIPESTATUS[0]}
smoke_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$smoke" = 0 ] || status=1

python3 - "$OUT" "$GPU_CSV" "$dc" "$smoke" "$smoke_ms" "$LIBDIR" <<'EOF' || say "python3 could not write gpu-check.json"
import json, os, sys
out, gpu, dc, smoke, smoke_ms, libdir = sys.argv[1:]
name, cap, driver, mem = [s.strip() for s in (gpu.split("\n")[0].split(",") + ["", "", "", ""])[:4]]
def load(p):
    try:
        with open(p) as f: return json.load(f)
    except Exception: return None
r = {
    "gpu": {"name": name, "compute_cap": cap, "driver": driver, "memory": mem},
    "cuda_libraries": libdir,
    "device_check": {"exit_code": int(dc), "figures": load(os.path.join(out, "device-check.json"))},
    "smoke": {"exit_code": int(smoke), "seconds": int(smoke_ms) / 1000,
              "summary": load(os.path.join(out, "runs", "smoke", "summary.json"))},
}
r["ok"] = r["device_check"]["exit_code"] == 0 and r["smoke"]["exit_code"] == 0
with open(os.path.join(out, "gpu-check.json.tmp"), "w") as f: json.dump(r, f, indent=2)
os.replace(os.path.join(out, "gpu-check.json.tmp"), os.path.join(out, "gpu-check.json"))
EOF
say "device check exit $dc, smoke run exit $smoke; figures in $OUT/gpu-check.json"
exit $status
