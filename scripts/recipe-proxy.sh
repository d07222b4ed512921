#!/usr/bin/env bash
# Retraining recipes side by side on this machine: the default job's retraining section
# (pipelines/fashion-mnist.ron) on the published DARTS_V2 genotype, once per recipe given, each
# for the same images from the same seed, one after another. A recipe changes fields of that
# section and keeps the rest. Prints and writes exports/recipe-proxy/table.md: images/s per
# epoch, the validation accuracy after the last epoch (the column to choose by) and the test
# accuracy (evaluated once). By hand only, never in CI or tests; run nothing else meanwhile.
#
#   scripts/recipe-proxy.sh [RECIPE ...]     default: 64:0.05 32:0.05 64:0.1 32:0.1
#
# A RECIPE is BATCH:LR (batch size and learning rate) or FIELD=VALUE[,FIELD=VALUE...] with
# FIELD one of batch_size, lr, weight_decay, label_smoothing, crop_padding, flip, schedule,
# ema (added after eval_every); e.g.
# `scripts/recipe-proxy.sh batch_size=32 flip=false label_smoothing=0.0,weight_decay=1e-4`
# (`batch_size=32` alone is the pipeline's own recipe).
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

number='[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?'
# The sed expression that sets FIELD to VALUE in the retraining section, and the text that
# section then holds; exit 2 on an unknown field or a value of the wrong kind.
field_sed() {
    local field="$1" value="$2" recipe="$3" kind=number from
    case "$field" in
        batch_size | crop_padding) kind=whole; from="$field: [0-9]*" ;;
        lr) from="Sgd(lr: [0-9.eE+-]*" ;;
        weight_decay | label_smoothing) from="$field: [0-9.eE+-]*" ;;
        flip) kind=bool; from="flip: [a-z]*" ;;
        schedule) kind=schedule; from='\(Sgd([^)]*\)\(, schedule: [A-Za-z]*\)\?)' ;;
        ema) from='\(eval_every: [0-9]*,\)' ;;
        *)
            echo "scripts/recipe-proxy.sh: recipe \"$recipe\": unknown field \"$field\" (known: batch_size, lr, weight_decay, label_smoothing, crop_padding, flip, schedule, ema)" >&2
            exit 2
            ;;
    esac
    local want=""
    case "$kind" in
        whole) [[ "$value" =~ ^[0-9]+$ ]] || want="a whole number" ;;
        number) [[ "$value" =~ ^$number$ ]] || want="a number like 0.05 or 1e-4" ;;
        bool) [[ "$value" =~ ^(true|false)$ ]] || want="true or false" ;;
        schedule) [[ "$value" =~ ^(Cosine|Linear)$ ]] || want="Cosine or Linear" ;;
    esac
    if [ -n "$want" ]; then
        echo "scripts/recipe-proxy.sh: recipe \"$recipe\": $field=$value; $field takes $want" >&2
        exit 2
    fi
    local to="${from%%:*}: $value" want_text
    [ "$field" = lr ] && to="Sgd(lr: $value"
    want_text="$to"
    if [ "$field" = schedule ]; then
        to="\\1, schedule: $value)"
        want_text="schedule: $value)"
    fi
    if [ "$field" = ema ]; then
        to="\\1 ema: $value,"
        want_text="ema: $value,"
    fi
    printf 's|%s|%s|\n%s\n' "$from" "$to" "$want_text"
}

# Each recipe as FIELD=VALUE pairs (BATCH:LR read as batch_size and lr); checked before any
# training starts.
declare -a pairs
for r in "${recipes[@]}"; do
    if [[ "$r" =~ ^([0-9]+):($number)$ ]]; then
        p="batch_size=${BASH_REMATCH[1]},lr=${BASH_REMATCH[2]}"
    elif [[ "$r" =~ ^[a-z_]+=[^,=]+(,[a-z_]+=[^,=]+)*$ ]]; then
        p="$r"
    else
        echo "scripts/recipe-proxy.sh: \"$r\" is neither BATCH:LR (e.g. 32:0.05) nor FIELD=VALUE[,FIELD=VALUE...] (e.g. flip=false,label_smoothing=0.0)" >&2
        exit 2
    fi
    IFS=, read -ra kv <<< "$p"
    for f in "${kv[@]}"; do field_sed "${f%%=*}" "${f#*=}" "$r" > /dev/null; done
    pairs+=("$p")
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
    echo "| recipe (fields changed) | images/s per epoch | validation accuracy | test accuracy |"
    echo "|---|---|---|---|"
} > "$table"
for i in "${!pairs[@]}"; do
    p="${pairs[$i]}"
    name="recipe-$((i + 1))-$(tr ',=' '-_' <<< "$p")"
    spec="$runs/$name.ron"
    edits="s|epochs: [0-9]*,|epochs: $epochs, images: $images,|
s|eval_every: [0-9]*,|eval_every: $epochs,|"
    wants=("epochs: $epochs, images: $images," "eval_every: $epochs,")
    IFS=, read -ra kv <<< "$p"
    for f in "${kv[@]}"; do
        { read -r e; read -r w; } < <(field_sed "${f%%=*}" "${f#*=}" "$p")
        edits+=$'\n'"$e"
        wants+=("$w")
    done
    # The retraining section's fields; the search section is unused.
    sed -e "s|name: \"fashion-mnist\"|name: \"$name\"|" \
        -e "s|space: \"../schemas/darts.ron\"|space: \"$space\"|" \
        -e "s|^    seed: [0-9]*,|    seed: $seed,|" \
        -e '/budget: Budget/d' \
        -e "/retrain: Retrain(/,/eval_every/ {
$edits
           }" pipelines/fashion-mnist.ron > "$spec"
    # A pipeline whose lines no longer match would otherwise train its own recipe unnoticed.
    block="$(sed -n '/retrain: Retrain(/,/eval_every/p' "$spec")"
    for want in "${wants[@]}"; do
        if ! grep -qF "$want" <<< "$block"; then
            echo "scripts/recipe-proxy.sh: could not set \"$want\" in the retrain section of $spec (written from pipelines/fashion-mnist.ron); update the script's sed to the pipeline's layout" >&2
            exit 2
        fi
    done
    echo "== $p"
    "$bin" train "$spec" --genotype DARTS_V2 --out "$runs"
    python3 - "$runs/$name/retrain" "$p" >> "$table" <<'EOF'
import json, sys
d, recipe = sys.argv[1:]
m = json.load(open(f"{d}/metrics.json"))
t = json.load(open(f"{d}/evaluation.json"))
rates = ", ".join(f"{e['images_per_sec']:.0f}" for e in m)
print(f"| {recipe.replace(',', ', ')} | {rates} | {100 * m[-1]['val_acc']:.2f}% | {100 * t['accuracy']:.2f}% |")
EOF
done
mv "$table" "$out/table.md"
cat "$out/table.md"
