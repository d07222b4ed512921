#!/usr/bin/env bash
# screenshots.sh: regenerates the report screenshots in docs/img/ from fresh runs.
#
# Runs pipelines/smoke.ron (a weight-sharing DARTS run on synthetic data, seconds) and
# pipelines/nb201-evolution.ron (a multi-trial run on the shipped NAS-Bench-201 table) into a
# temporary folder, checks each report with scripts/check-report.sh (console, resources and
# layout at two widths) and writes its first 1200×1800 px to docs/img/report-*.png.
# Needs a release build (cargo build --release), ONNX Runtime (scripts/ort-env.sh) and
# Chromium (CHROMIUM, default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ort-env.sh >/dev/null
bin=${NAS_PIPE:-target/release/nas-pipe}
if [ ! -x "$bin" ]; then
    echo "screenshots: no $bin; run cargo build --release first (or set NAS_PIPE)" >&2
    exit 2
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p docs/img
for pair in smoke:report-darts nb201-evolution:report-trials; do
    pipeline=${pair%%:*} shot=${pair##*:}
    "$bin" run "pipelines/$pipeline.ron" --out "$out" -q >/dev/null
    HEIGHT=1800 bash scripts/check-report.sh "$out/$pipeline/report.html" "$out/$shot.png"
    mv "$out/$shot.png" "docs/img/$shot.png"
    echo "screenshots: docs/img/$shot.png"
done
