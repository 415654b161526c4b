#!/usr/bin/env bash
# Byte-identical output across a refactor: build the demo corpus (with its annotations) and the segmented
# demo episode from two commits, each installed into its own folder, and compare every shard, table and
# failures.parquet by sha256.   Usage: bench/same_bytes.sh BEFORE [AFTER]   (AFTER defaults to HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd) PY=${PY:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d /tmp/emer-same-bytes-XXXX)
trap 'for t in "$WORK"/*/tree; do git -C "$ROOT" worktree remove --force "$t" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
hashes() {  # REV NAME -> $WORK/NAME/hashes.txt
  local dest=$WORK/$2
  mkdir -p "$dest"
  git -C "$ROOT" worktree add -f "$dest/tree" "$1" >/dev/null 2>&1
  (cd "$dest/tree" && "$PY" -m pip install -q --no-deps --target "$dest/site" . >/dev/null 2>&1)
  local videos episode
  videos=$("$PY" -m bench.demo_corpus) episode=$("$PY" -m bench.demo_corpus --episode)
  (cd "$dest/tree" && export PYTHONPATH=$dest/site EMER_CLIP_CACHE=$dest/cache &&
    "$PY" -m emer_builder.cli.main build "$videos" --out "$dest/demo" --quiet $(for t in bench/demo_annotations/*.csv; do echo --annotations "$t"; done) >/dev/null &&
    "$PY" -m emer_builder.cli.main build "$episode" --out "$dest/long" --segment subtitles --quiet >/dev/null)
  for d in demo long; do (cd "$dest/$d" && find data media failures.parquet -type f | sort | xargs sha256sum | sed "s#^#$d #"); done > "$dest/hashes.txt"
}
hashes "$1" before
hashes "${2:-HEAD}" after
if diff "$WORK/before/hashes.txt" "$WORK/after/hashes.txt"; then
  echo "same bytes: $(wc -l < "$WORK/after/hashes.txt") files of the demo and the segmented demo ($1 vs ${2:-HEAD})"
else
  echo "the output differs (lines above: < $1, > ${2:-HEAD})"; exit 1
fi
