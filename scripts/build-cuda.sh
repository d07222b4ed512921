#!/usr/bin/env bash
# Builds nas-pipe with Candle's `cuda` feature on a machine with or without a GPU, from
# PyPI's CUDA 13.0 wheels.
#
#   scripts/build-cuda.sh            build target/cuda/release/nas-pipe
#   scripts/build-cuda.sh --test     also run the unit tests of the CUDA build (on the CPU
#                                    when this machine has no GPU)
#   scripts/build-cuda.sh --env      only install the toolkit; print the exports to use it
#
# What it does:
# - installs the CUDA 13.0.x compiler, headers and libraries (pinned: nvcc ≥ 13.1 writes PTX
#   that an R580 driver refuses) with `pip install --no-deps` into .cuda/venv, and lays them
#   out as a toolkit root in .cuda/root;
# - builds into its own target directory (target/cuda), so the default CPU build is never
#   touched and never needs CUDA;
# - kernels for compute capability $CUDA_COMPUTE_CAP (default 90: H100/H200; the fatbin and
#   PTX hold that architecture only), fatbins compressed (needs a driver ≥ 580).
#
# No libcuda stub is needed: the patched candle-core loads the CUDA driver, cuBLAS and cuRAND
# at run time (cudarc's `dynamic-loading`), so the binary starts on a machine without a GPU
# and `device: Cuda(N)` fails there with an error instead. It does link libcudart.so.13
# (candle-kernels' MoE kernels need it); the build puts a copy next to the binary, which
# finds it there (RUNPATH $ORIGIN). cuBLAS and cuRAND come from the loader's path: the
# `nvidia/cu13/lib` of a CUDA 13 pip install on LD_LIBRARY_PATH (scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=build
case "${1:-}" in
    --test) MODE=test ;;
    --env) MODE=env ;;
    "") ;;
    *) echo "usage: scripts/build-cuda.sh [--test | --env]" >&2; exit 2 ;;
esac

ROOT="$PWD/.cuda"
VENV="$ROOT/venv"
R="$ROOT/root"
WHEELS=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35
)
STAMP="$ROOT/wheels.txt"

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${WHEELS[*]}" ]; then
    command -v python3 >/dev/null 2>&1 || {
        echo "build-cuda: python3 is missing: it installs the CUDA wheels (Debian: apt-get install python3-venv)" >&2
        exit 2
    }
    echo "build-cuda: installing the CUDA 13.0 toolkit wheels into .cuda/venv (about 1.2 GB)" >&2
    rm -rf "$VENV" "$R" "$STAMP"
    python3 -m venv "$VENV" || {
        echo "build-cuda: python3 cannot create a virtual environment (Debian: apt-get install python3-venv)" >&2
        exit 2
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "${WHEELS[@]}" || {
        echo "build-cuda: pip could not install the CUDA 13.0 wheels from PyPI (no network?)" >&2
        exit 2
    }
    echo "${WHEELS[*]}" > "$STAMP"
fi

CU13=$("$VENV/bin/python" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13"))')
if [ ! -x "$R/bin/nvcc" ]; then
    rm -rf "$R"
    mkdir -p "$R/lib64"
    ln -s "$CU13/bin" "$R/bin"
    ln -s "$CU13/include" "$R/include"
    ln -s "$CU13/nvvm" "$R/nvvm"
    # The wheels ship only versioned sonames; the linker and the loader want both names.
    for l in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
        ln -s "$CU13/lib/lib$l" "$R/lib64/lib${l%.so.*}.so"
        ln -s "$CU13/lib/lib$l" "$R/lib64/lib$l"
    done
fi

export PATH="$R/bin:$PATH"
export CUDA_ROOT="$R"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
# cargo does not rebuild candle-kernels when this changes: `cargo clean --target-dir
# target/cuda --release -p candle-kernels` after editing it.
export NVCC_APPEND_FLAGS=--compress-mode=size
export CARGO_TARGET_DIR="$PWD/target/cuda"
# libcudart for the link (nothing else from the toolkit is linked), found at run time next to
# the binary ($ORIGIN), where the build copies it.
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$R/lib64 -C link-arg=-Wl,-rpath,\$ORIGIN"
export CARGO_PROFILE_RELEASE_STRIP=symbols
export LD_LIBRARY_PATH="$R/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ "$MODE" = env ]; then
    for v in PATH CUDA_ROOT CUDARC_CUDA_VERSION CUDA_COMPUTE_CAP CUDAFORGE_THREADS \
        NVCC_APPEND_FLAGS CARGO_TARGET_DIR RUSTFLAGS LD_LIBRARY_PATH; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    exit 0
fi

start=$(date +%s)
cargo build --release --locked --features cuda --bin nas-pipe
bin="$CARGO_TARGET_DIR/release/nas-pipe"
cp -fL "$CU13/lib/libcudart.so.13" "$CARGO_TARGET_DIR/release/"
echo "build-cuda: $bin, $(stat -c %s "$bin") bytes, built in $(( $(date +%s) - start )) s" >&2
echo "build-cuda: it loads libcudart.so.13 from its own folder, and the NVIDIA driver," \
    "cuBLAS and cuRAND (CUDA 13) from the loader's path when a CUDA device is used" >&2

if [ "$MODE" = test ]; then
    source scripts/ort-env.sh
    # The unit tests of the CUDA build: on CUDA device 0 as well as the CPU when there is one.
    cargo test --release --locked --features cuda --lib
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        # No GPU here: the binary must still start, refuse CUDA with an error (exit 2, no
        # panic), and run a pipeline on the CPU under `Auto`.
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        expect_refusal() {
            local what=$1 want=$2; shift 2
            set +e
            "$@" >"$tmp/out" 2>&1
            local rc=$?
            set -e
            if [ "$rc" != 2 ] || ! grep -q "$want" "$tmp/out" || grep -q panicked "$tmp/out"; then
                echo "build-cuda: $what: expected exit 2 and \"$want\", got exit $rc:" >&2
                cat "$tmp/out" >&2
                exit 1
            fi
            echo "build-cuda: $what: $(head -1 "$tmp/out")" >&2
        }
        "$bin" --version >/dev/null
        expect_refusal "no driver" "no NVIDIA driver" "$bin" run pipelines/smoke.ron --device cuda:0 --out "$tmp"
        # A driver library that answers every call with CUDA_ERROR_NO_DEVICE (100): every
        # function cudarc 0.19.10 declares. Only for this check; never on a real machine's path.
        mkdir -p "$tmp/fake"
        grep -ohE '^\s+pub fn cu[A-Za-z0-9_]+\(|^\s+fn cu[A-Za-z0-9_]+\(' \
            "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs \
            | sed -E 's/^\s+(pub )?fn //;s/\(//' | sort -u | awk '{print "int "$1"(void){return 100;}"}' >"$tmp/fake.c"
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$tmp/fake/libcuda.so.1" "$tmp/fake.c"
        expect_refusal "a driver without devices" "does not start" \
            env LD_LIBRARY_PATH="$tmp/fake:$LD_LIBRARY_PATH" "$bin" device-check --device cuda:0
        "$bin" run pipelines/smoke.ron --device auto --out "$tmp" >"$tmp/run.txt" 2>&1 || {
            cat "$tmp/run.txt" >&2
            exit 1
        }
        echo "build-cuda: smoke.ron under --device auto ran on the CPU" >&2
    fi
fi
