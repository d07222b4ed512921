#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while: scripts/fuzz.sh TARGET SECONDS
#   TARGET   spec (the spec parser and checks) or onnx (the ONNX reader of predict,
#            profile and validate); see fuzz/fuzz_targets/.
#   SECONDS  how long libFuzzer runs (-max_total_time).
# Installs cargo-fuzz from crates.io when it is missing. The corpus fuzz/corpus/TARGET/ is
# seeded from the shipped specs (pipelines/, schemas/) or the test models (tests/data/) and
# kept between runs; a crash is written to fuzz/artifacts/TARGET/ and its path printed.
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, sanitizer coverage) to rustc.
# Only a stable toolchain is installed, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them;
# nothing else is built with it. Set FUZZ_JOBS to run that many libFuzzer processes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh spec|onnx SECONDS" >&2
    exit 2
fi
target=$1
seconds=$2
case "$target" in
spec) seeds=(pipelines/*.ron schemas/*.ron) ;;
onnx) seeds=(tests/data/*.onnx) ;;
*)
    echo "scripts/fuzz.sh: unknown target \"$target\"; the targets are spec and onnx" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/$target
mkdir -p "$corpus"
cp -n "${seeds[@]}" "$corpus"/

export RUSTC_BOOTSTRAP=1
# The fuzz crate is a workspace of its own (fuzz/Cargo.toml); its build stays in fuzz/target
# unless CARGO_TARGET_DIR says otherwise.
# -jobs makes libFuzzer write each job's output to fuzz-N.log instead of the terminal, so it
# is passed only for more than one job.
jobs=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
    jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi
cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time="$seconds" ${jobs[@]+"${jobs[@]}"} \
    -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
