# Sourced by scripts/test.sh and scripts/run.sh (from the repository root): makes sure a
# project-local virtual environment .venv/ (git-ignored) holds ONNX Runtime 1.32.0 and the
# onnx package from PyPI, and exports ORT_DYLIB_PATH to its shared library. When Python,
# venv or pip is unavailable it says what is missing and leaves ORT_DYLIB_PATH unset: the
# ONNX Runtime tests then report themselves as skipped, and `nas-pipe profile` explains
# where it looked.

ORT_VERSION=1.32.0

ort_lib() {
    local f
    for f in .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ORT_VERSION"; do
        if [ -f "$f" ]; then
            echo "$PWD/$f"
            return 0
        fi
    done
    return 1
}

ort_setup() {
    if ort_lib >/dev/null; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "nas-pipe: python3 is missing, so ONNX Runtime cannot be installed into .venv/;" >&2
        echo "  install Python 3 (apt-get install python3-venv) or set ORT_DYLIB_PATH to libonnxruntime.so" >&2
        return 1
    fi
    if [ ! -x .venv/bin/pip ]; then
        echo "nas-pipe: creating .venv/ for ONNX Runtime" >&2
        if ! python3 -m venv .venv; then
            echo "nas-pipe: python3 cannot create a virtual environment (Debian: apt-get install python3-venv);" >&2
            echo "  or set ORT_DYLIB_PATH to libonnxruntime.so" >&2
            return 1
        fi
    fi
    echo "nas-pipe: installing onnxruntime==$ORT_VERSION and onnx into .venv/ (pip)" >&2
    if ! .venv/bin/pip install -q "onnxruntime==$ORT_VERSION" onnx; then
        echo "nas-pipe: pip could not install onnxruntime==$ORT_VERSION (no network?);" >&2
        echo "  install it by hand with .venv/bin/pip install onnxruntime==$ORT_VERSION, or set ORT_DYLIB_PATH" >&2
        return 1
    fi
    ort_lib >/dev/null
}

# Pillow, which examples/serve.py needs for image files (PNG, JPEG, ...), and its test.
PILLOW_VERSION=13.0.0
if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import PIL" 2>/dev/null; then
    echo "nas-pipe: installing pillow==$PILLOW_VERSION into .venv/ (pip), for examples/serve.py" >&2
    .venv/bin/pip install -q "pillow==$PILLOW_VERSION" ||
        echo "nas-pipe: pip could not install Pillow; serve.py's image test is skipped" >&2
fi

if [ -n "${ORT_DYLIB_PATH:-}" ]; then
    echo "nas-pipe: using ORT_DYLIB_PATH=$ORT_DYLIB_PATH" >&2
elif ort_setup; then
    ORT_DYLIB_PATH="$(ort_lib)"
    export ORT_DYLIB_PATH
else
    echo "nas-pipe: continuing without ONNX Runtime: its tests are skipped and profiling is unavailable" >&2
fi
