#!/usr/bin/env bash
# What the media child costs: the same job run by `media-node process` with its
# media work in a sandboxed child process (as the node runs every job) and
# in-process (`--debug-in-process`, a switch kept only for this comparison),
# alternately, RUNS times each; medians and the difference.
#
#   (a) 10 s of real 1080p50 footage -> one 720p MP4 (the 720p transcode)
#   (b) the corpus' 4000x3000 photo -> three JPEG stills (320, 640, 1280)
#   (c) the smallest job: a probe of a 2 s clip (start-up of the child alone)
#
# The issue's budget: at most +3 % on (a) and +30 ms on (b).
#
# Usage: benches/isolation.sh [RUNS]    (default 7)
# Needs: a release build (built if missing), ffmpeg, jq, bc, ../shared/media.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-7}"
CORPUS="${MEDIA_CORPUS:-$ROOT/../shared/media}"
CONCERT="$CORPUS/videos/mov-h264-pcm-sowt-1080p50-2s.mov"
PHOTO="$CORPUS/images/photo-4000x3000-exif-orient6-xiaomi.jpg"
SHORT="$CORPUS/videos/portrait-9x16-displaymatrix-rot90-h264-aac-2s.mp4"
BIN="${MEDIA_NODE_BIN:-$ROOT/target/release/media-node}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for f in "$CONCERT" "$PHOTO" "$SHORT"; do
  [ -f "$f" ] || { echo "bench: $f not found (set MEDIA_CORPUS)"; exit 1; }
done
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin media-node)
fi
export MEDIA_NODE_LOG_FILTER=error

SRC="$WORK/concert-10s.mov"
ffmpeg -hide_banner -loglevel error -y -stream_loop -1 -i "$CONCERT" -t 10 \
  -c:v libx264 -preset medium -crf 14 -pix_fmt yuv420p -c:a pcm_s16le "$SRC"

jq -n '{input: {key: "x"}, renditions: {ladder: "default", rungs: ["720p"], formats: ["mp4"]}}' >"$WORK/transcode.json"
jq -n '{input: {key: "x"}, thumbnails: {widths: [320, 640, 1280], formats: ["jpeg"]}}' >"$WORK/photo.json"
jq -n '{input: {key: "x"}, probe: true}' >"$WORK/probe.json"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# $1 name, $2 input, $3 spec
bench() {
  local name="$1" input="$2" spec="$3"
  : >"$WORK/child.times"; : >"$WORK/inproc.times"
  for _ in $(seq "$RUNS"); do
    for mode in child inproc; do
      local flag=()
      [ "$mode" = inproc ] && flag=(--debug-in-process)
      rm -rf "$WORK/out"
      local t0; t0=$(now)
      "$BIN" process "${flag[@]}" --spec "$spec" --out "$WORK/out" "$input" >"$WORK/result.json" 2>"$WORK/err" \
        || { cat "$WORK/err"; exit 1; }
      echo "$(now) - $t0" | bc -l >>"$WORK/$mode.times"
    done
  done
  local child inproc
  child=$(median <"$WORK/child.times"); inproc=$(median <"$WORK/inproc.times")
  printf '%-36s in-process %7.3f s   child %7.3f s   +%5.0f ms   ratio %.3f\n' \
    "$name" "$inproc" "$child" "$(echo "($child - $inproc) * 1000" | bc -l)" \
    "$(echo "$child / $inproc" | bc -l)"
}

echo "median of $RUNS runs each, alternating ($(nproc) cores, $(basename "$BIN") $("$BIN" --version))"
bench "(a) 1080p50 10 s -> 720p MP4" "$SRC" "$WORK/transcode.json"
bench "(b) 4000x3000 photo -> 3 JPEGs" "$PHOTO" "$WORK/photo.json"
bench "(c) probe of a 2 s clip" "$SHORT" "$WORK/probe.json"
