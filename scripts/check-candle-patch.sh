#!/usr/bin/env bash
# Checks that the vendored patches/candle-core/ is exactly the crates.io release of
# candle-core 0.11.1 plus patches/candle-core.diff (patches/candle-core/PATCH.md says what
# the diff changes and why).
#
# Usage:
#   bash scripts/check-candle-patch.sh          check; exit 0 if equal, 1 if not, 2 on setup errors
#   bash scripts/check-candle-patch.sh --write  regenerate patches/candle-core.diff from the
#                                               vendored tree, then check
#
# The release comes from cargo's registry cache (${CARGO_HOME:-~/.cargo}/registry/cache) when
# it is there, so the check runs offline; otherwise a throwaway project in a temp dir runs
# `cargo fetch` for it (crates.io). The .crate file is checked against crates.io's SHA-256.
# Not part of the crate, so left out of the comparison and of the diff: patches/candle-core/
# PATCH.md (the patch's own notes) and patches/candle-core/target/ (if candle's tests were
# run in place).
set -euo pipefail
cd "$(dirname "$0")/.."

CRATE=candle-core
VERSION=0.11.1
# crates.io's checksum of candle-core-0.11.1.crate (the "checksum" of a Cargo.lock entry).
SHA256=d11c8be87cfbaef9ebb62fb3f850d1fc8e00cc1d11d393fdbe55a4d5c2cdb325
VENDORED=patches/candle-core
DIFF=patches/candle-core.diff
NOT_IN_CRATE=(PATCH.md target)

usage() { sed -n '6,9s/^# \{0,1\}//p' "$0"; }

mode=check
case "$#:${1-}" in
    0:) ;;
    1:--write) mode=write ;;
    1:-h | 1:--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

say() { echo "candle patch: $*" >&2; }
hint() {
    cat >&2 <<EOF
  If the change to $VENDORED/ is intended, regenerate the diff and commit both:
      bash scripts/check-candle-patch.sh --write
  If it is not, restore the vendored tree:
      git checkout -- $VENDORED && git clean -n -- $VENDORED
EOF
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-candle-patch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- the pristine release ------------------------------------------------------------------
cargo_home=${CARGO_HOME:-$HOME/.cargo}
find_crate() {
    local f
    for f in "$cargo_home"/registry/cache/*/"$CRATE-$VERSION.crate"; do
        if [ -f "$f" ]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}
if ! crate_file=$(find_crate); then
    cargo=cargo
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        cargo=$HOME/.cargo/bin/cargo
    fi
    say "$CRATE $VERSION is not in cargo's registry cache; fetching it with cargo fetch"
    mkdir -p "$tmp/fetch/src"
    : >"$tmp/fetch/src/lib.rs"
    cat >"$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-pristine-candle-core"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
$CRATE = "=$VERSION"
EOF
    if ! (cd "$tmp/fetch" && "$cargo" fetch --quiet); then
        say "cargo fetch of $CRATE $VERSION failed (is crates.io reachable?)"
        exit 2
    fi
    if ! crate_file=$(find_crate); then
        say "cargo fetch ran, but no $CRATE-$VERSION.crate under $cargo_home/registry/cache"
        exit 2
    fi
fi
if command -v sha256sum >/dev/null 2>&1; then
    sum=$(sha256sum <"$crate_file")
else
    sum=$(shasum -a 256 <"$crate_file")
fi
if [ "${sum%% *}" != "$SHA256" ]; then
    say "$crate_file has SHA-256 ${sum%% *}, not crates.io's $SHA256"
    exit 2
fi
mkdir "$tmp/release"
tar -xzf "$crate_file" -C "$tmp/release"
release=$tmp/release/$CRATE-$VERSION
[ -f "$release/Cargo.toml" ] || { say "$crate_file did not unpack to $CRATE-$VERSION/"; exit 2; }

# A copy of the vendored tree without what is not part of the crate.
copy_vendored() {
    local dest=$1 entry name skip
    mkdir "$dest"
    shopt -s dotglob nullglob
    for entry in "$VENDORED"/*; do
        name=${entry##*/}
        skip=
        for x in "${NOT_IN_CRATE[@]}"; do [ "$name" = "$x" ] && skip=1; done
        [ -n "$skip" ] || cp -a "$entry" "$dest/"
    done
    shopt -u dotglob nullglob
}
[ -f "$VENDORED/Cargo.toml" ] || { say "$VENDORED/Cargo.toml is missing"; exit 2; }

# --- --write: regenerate the diff ------------------------------------------------------------
if [ "$mode" = write ]; then
    cp -a "$release" "$tmp/a"
    copy_vendored "$tmp/b"
    {
        echo "# candle-core $VERSION as published on crates.io -> $VENDORED/ (what nas-pipe builds)."
        echo "# Why: $VENDORED/PATCH.md. Apply inside a pristine copy with: patch -p1 < this file"
        echo "# Check / regenerate: bash scripts/check-candle-patch.sh [--write]"
        echo
    } >"$tmp/new.diff"
    # git's diff, isolated from the user's git configuration so that the output is reproducible.
    rc=0
    (cd "$tmp" && env GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$tmp" \
        XDG_CONFIG_HOME="$tmp" git diff --no-index --no-color --no-ext-diff --no-textconv \
        --no-renames --full-index --no-prefix -U3 a b) >>"$tmp/new.diff" || rc=$?
    if [ "$rc" -gt 1 ]; then
        say "git diff --no-index failed (exit $rc)"
        exit 2
    fi
    cp "$tmp/new.diff" "$DIFF"
    say "wrote $DIFF ($(grep -c '^diff --git ' "$DIFF" || true) files, $(wc -l <"$DIFF") lines)"
fi

# --- check: release + diff == vendored tree ------------------------------------------------
[ -f "$DIFF" ] || { say "$DIFF is missing"; hint; exit 1; }
cp -a "$release" "$tmp/applied"
diff_abs=$(pwd)/$DIFF
if ! (cd "$tmp/applied" && patch -p1 --quiet --force --fuzz=0 --no-backup-if-mismatch \
    -i "$diff_abs") >"$tmp/patch.log" 2>&1; then
    say "$DIFF does not apply (patch -p1, no fuzz) to $CRATE $VERSION from crates.io:"
    sed 's/^/    /' "$tmp/patch.log" >&2
    hint
    exit 1
fi
copy_vendored "$tmp/vendored"
if (cd "$tmp" && diff -r applied vendored) >"$tmp/compare.log" 2>&1; then
    echo "candle patch: $VENDORED equals $CRATE $VERSION + $DIFF"
    exit 0
fi
relabel() {
    sed -e "s# applied\([/:]\)# (release + diff)\1#g; s# vendored\([/:]\)# $VENDORED\1#g" \
        -e 's/^/    /'
}
say "$VENDORED differs from $CRATE $VERSION + $DIFF. Differing files:"
(cd "$tmp" && diff -rq applied vendored || true) | relabel >&2
say "first lines of the difference (< release + diff, > $VENDORED):"
head -n 40 "$tmp/compare.log" | relabel >&2
hint
exit 1
