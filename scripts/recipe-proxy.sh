#!/usr/bin/env bash
# Retraining recipes side by side on this machine: the default job's retraining section
# (pipelines/fashion-mnist.ron) on the published DARTS_V2 genotype, once per batch size and
# learning rate given, each for the same images from the same seed, one after another. Prints
# and writes exports/recipe-proxy/table.md: images/s per epoch, the validation accuracy after
# the last epoch (the column to choose by) and the test accuracy (evaluated once).
# By hand only, never in CI or tests; run nothing else meanwhile.
#
#   scripts/recipe-proxy.sh [BATCH:LR ...]      default: 64:0.05 32:0.05 64:0.1 32:0.1
#
# EPOCHS (default 4) and IMAGES (per epoch, default 27000) size each training; SEED (default:
# the pipeline's) seeds the weights, the validation split and the batches; NAS_PIPE names the
# binary (default target/release/nas-pipe, built by `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."

epochs="${EPOCHS:-4}"
images="${IMAGES:-27000}"
seed="${SEED:-$(sed -n 's/^    seed: \([0-9]*\),$/\1/p' pipelines/fashion-mnist.ron)}"
bin="${NAS_PIPE:-target/release/nas-pipe}"
out=exports/recipe-proxy
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(64:0.05 32:0.05 64:0.1 32:0.1)
if ! [[ "$seed" =~ ^[0-9]+$ && "$epochs" =~ ^[1-9][0-9]*$ && "$images" =~ ^[1-9][0-9]*$ ]]; then
    echo "scripts/recipe-proxy.sh: SEED, EPOCHS and IMAGES must be whole numbers (EPOCHS and IMAGES above 0)" >&2
    exit 2
fi
for r in "${recipes[@]}"; do
    if ! [[ "$r" =~ ^[0-9]+:[0-9.eE+-]+$ ]]; then
        echo "scripts/recipe-proxy.sh: \"$r\" is not BATCH:LR (e.g. 32:0.05)" >&2
        exit 2
    fi
done
if [ ! -x "$bin" ]; then
    echo "scripts/recipe-proxy.sh: $bin is missing; run \`cargo build --release\` first" >&2
    exit 2
fi
source scripts/ort-env.sh >/dev/null

# Each call trains afresh in its own folder (a folder of an earlier call would resume).
runs="$out/runs/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$runs"
space="$(pwd)/schemas/darts.ron"
table="$out/table.md.tmp"
{
    echo "DARTS_V2, the retraining section of pipelines/fashion-mnist.ron, $epochs epochs of $images images, seed $seed, $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo "| batch | lr | images/s per epoch | validation accuracy | test accuracy |"
    echo "|---|---|---|---|---|"
} > "$table"
for r in "${recipes[@]}"; do
    batch="${r%%:*}"
    lr="${r#*:}"
    name="recipe-b${batch}-lr${lr}"
    spec="$runs/$name.ron"
    # The retraining section's batch size and learning rate; the search section is unused.
    sed -e "s|name: \"fashion-mnist\"|name: \"$name\"|" \
        -e "s|space: \"../schemas/darts.ron\"|space: \"$space\"|" \
        -e "s|^    seed: [0-9]*,|    seed: $seed,|" \
        -e '/budget: Budget/d' \
        -e "/retrain: Retrain(/,/eval_every/ {
              s|epochs: [0-9]*,|epochs: $epochs, images: $images,|
              s|batch_size: [0-9]*,|batch_size: $batch,|
              s|Sgd(lr: [0-9.eE+-]*,|Sgd(lr: $lr,|
              s|eval_every: [0-9]*,|eval_every: $epochs,|
           }" pipelines/fashion-mnist.ron > "$spec"
    # A pipeline whose lines no longer match would otherwise train its own recipe unnoticed.
    block="$(sed -n '/retrain: Retrain(/,/eval_every/p' "$spec")"
    for want in "epochs: $epochs, images: $images," "batch_size: $batch," "Sgd(lr: $lr," \
        "eval_every: $epochs,"; do
        if ! grep -qF "$want" <<< "$block"; then
            echo "scripts/recipe-proxy.sh: could not set \"$want\" in the retrain section of $spec (written from pipelines/fashion-mnist.ron); update the script's sed to the pipeline's layout" >&2
            exit 2
        fi
    done
    echo "== batch $batch, lr $lr"
    "$bin" train "$spec" --genotype DARTS_V2 --out "$runs"
    python3 - "$runs/$name/retrain" "$batch" "$lr" >> "$table" <<'EOF'
import json, sys
d, batch, lr = sys.argv[1:]
m = json.load(open(f"{d}/metrics.json"))
t = json.load(open(f"{d}/evaluation.json"))
rates = ", ".join(f"{e['images_per_sec']:.0f}" for e in m)
print(f"| {batch} | {lr} | {rates} | {100 * m[-1]['val_acc']:.2f}% | {100 * t['accuracy']:.2f}% |")
EOF
done
mv "$table" "$out/table.md"
cat "$out/table.md"
