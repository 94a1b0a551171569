#!/usr/bin/env bash
# Shoppable-tag burn-in cost: the same transcode with and without three tags
# (one sponsored with a product photo), run alternately, median wall time of
# each over RUNS runs and the ratio. The issue's budget is +10 %.
#
#   (a) the 17 s 640x360 landscape clip -> 360p MP4 + HLS (the default ladder
#       skips the rungs above the source)
#   (b) 10 s of real 1080p50 footage -> the whole default ladder (1080p, 720p,
#       480p, 360p) as MP4 + HLS: four renditions to draw and blend into
#
# Usage: benches/tags.sh [RUNS]    (default 5)
# Needs: a release build (built if missing), ffmpeg, ../shared/media (the corpus).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-5}"
CORPUS="${MEDIA_CORPUS:-$ROOT/../shared/media}"
LANDSCAPE="$CORPUS/videos/landscape-640x360-h264-aac-17s.mp4"
CONCERT="$CORPUS/videos/mov-h264-pcm-sowt-1080p50-2s.mov"
PHOTO="$CORPUS/images/webp-lossy-1165x859-harvesters.webp"
BIN="$ROOT/target/release/media-node"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for f in "$LANDSCAPE" "$CONCERT" "$PHOTO"; do
  [ -f "$f" ] || { echo "bench: $f not found (set MEDIA_CORPUS)"; exit 1; }
done
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin media-node)
fi
export MEDIA_NODE_LOG_FILTER=error

# `process` reads tag photos from the store below --out: put the photo there.
SRC_1080="$WORK/concert-10s.mov"
ffmpeg -hide_banner -loglevel error -y -stream_loop -1 -i "$CONCERT" -t 10 \
  -c:v libx264 -preset medium -crf 14 -pix_fmt yuv420p -c:a pcm_s16le "$SRC_1080"

# $1: tags or not; $2: window scale (clip length / 17 s). Three tags, two of
# them shown together, covering about 70 % of the clip.
spec() {
  local tags="[]"
  if [ "$1" = tags ]; then
    tags=$(jq -n --argjson k "$2" '[
      {id: "t1", product_id: "p-1", title: "Blender Pro 3000 — brushed steel",
       price: {amount: "49.99", currency: "USD"}, image: "photos/p1.webp", sponsored: true,
       start: (1 * $k), end: (6 * $k), position: {x: 0.05, y: 0.7, width: 0.4}},
      {id: "t2", product_id: "p-2", title: "Kettle 1.7 l",
       price: {amount: "19.99", currency: "EUR"}, sponsored: false,
       start: (4 * $k), end: (9 * $k), position: {x: 0.55, y: 0.1, width: 0.4}},
      {id: "t3", product_id: "p-3", title: "Тостер на 4 ломтика",
       price: {amount: "1999", currency: "JPY"}, sponsored: true,
       start: (10 * $k), end: (16 * $k), position: {x: 0.05, y: 0.1, width: 0.4}}]')
  fi
  jq -n --argjson tags "$tags" '{input: {key: "x"}, output_prefix: "out",
    renditions: {ladder: "default", formats: ["mp4", "hls"]}} + (if ($tags | length) > 0 then {tags: $tags} else {} end)'
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# $1 name, $2 input, $3 window scale
bench() {
  local name="$1" input="$2" k="$3"
  spec plain "$k" >"$WORK/plain.json"
  spec tags "$k" >"$WORK/tags.json"
  : >"$WORK/plain.times"; : >"$WORK/tags.times"
  for _ in $(seq "$RUNS"); do
    for kind in plain tags; do
      rm -rf "$WORK/out"; mkdir -p "$WORK/out/photos"; cp "$PHOTO" "$WORK/out/photos/p1.webp"
      local t0; t0=$(now)
      "$BIN" process --spec "$WORK/$kind.json" --out "$WORK/out" "$input" >"$WORK/result.json" 2>"$WORK/err" \
        || { cat "$WORK/err"; exit 1; }
      echo "$(now) - $t0" | bc -l >>"$WORK/$kind.times"
    done
  done
  local plain tags
  plain=$(median <"$WORK/plain.times"); tags=$(median <"$WORK/tags.times")
  printf '%-34s without tags %6.2f s   with 3 tags %6.2f s   ratio %.3f\n' \
    "$name" "$plain" "$tags" "$(echo "$tags / $plain" | bc -l)"
}

echo "median of $RUNS runs each, alternating ($(nproc) cores)"
bench "(a) 640x360 17 s -> 360p" "$LANDSCAPE" 1
bench "(b) 1080p50 10 s -> 4-rung ladder" "$SRC_1080" 0.58
