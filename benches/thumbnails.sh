#!/usr/bin/env bash
# Stills benchmark: media-node against the tools a team would otherwise script.
#
#   (a) photo: the corpus' 4000x3000 phone JPEG (EXIF orientation 6) to 1280,
#       640 and 320 px wide JPEGs (quality 82, metadata stripped): one
#       `media-node process` job against three `vipsthumbnail` runs (libvips'
#       shrink-on-load, the engine behind imgproxy and sharp).
#   (b) video: stills at 2.5 s, 5 s and 7.5 s, each at 1280, 640 and 320 px wide
#       (9 JPEGs) from a 10 s 1080p50 clip: one `media-node process` job against
#       one ffmpeg run per time (accurate input seeking, `split` into three
#       scales).
#
# Runs alternate between the tools; prints the median wall time of each over
# RUNS runs and the ratio media-node / reference (lower is better).
#
# Usage: benches/thumbnails.sh [RUNS]    (default 7)
# Needs: a release build (built if missing), ffmpeg, vipsthumbnail (Debian
# package libvips-tools), ../shared/media (the corpus; or MEDIA_CORPUS).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-7}"
CORPUS="${MEDIA_CORPUS:-$ROOT/../shared/media}"
PHOTO="$CORPUS/images/photo-4000x3000-exif-orient6-xiaomi.jpg"
CLIP="$CORPUS/videos/mov-h264-pcm-sowt-1080p50-2s.mov"
BIN="$ROOT/target/release/media-node"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for f in "$PHOTO" "$CLIP"; do
  [ -f "$f" ] || { echo "bench: $f not found (set MEDIA_CORPUS)"; exit 1; }
done
command -v vipsthumbnail >/dev/null || { echo "bench: vipsthumbnail missing (apt-get install libvips-tools)"; exit 1; }
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin media-node)
fi
export MEDIA_NODE_LOG_FILTER=error

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err"; exit 1; }; echo "$(now) - $t0" | bc -l; }

# (a) photo
echo '{"thumbnails": {"widths": [1280, 640, 320], "formats": ["jpeg"], "quality": {"jpeg": 82}}}' > "$WORK/photo.json"
vips_three() {
  for w in 1280 640 320; do
    vipsthumbnail "$PHOTO" --size "${w}x" -o "$WORK/vips_$w.jpg[Q=82,strip]"
  done
}
node_a=(); vips_a=()
for _ in $(seq "$RUNS"); do
  rm -rf "$WORK/na"
  node_a+=("$(timed "$BIN" process "$PHOTO" --spec "$WORK/photo.json" --out "$WORK/na")")
  vips_a+=("$(timed vips_three)")
done
na=$(printf '%s\n' "${node_a[@]}" | median); va=$(printf '%s\n' "${vips_a[@]}" | median)

# (b) video: real 1080p50 footage (H.264 + PCM) looped to 10 s, re-encoded with
# x264's defaults (B-frames, a keyframe every 2 s here).
SRC="$WORK/src.mov"
ffmpeg -hide_banner -loglevel error -y -stream_loop -1 -i "$CLIP" -t 10 \
  -c:v libx264 -preset medium -crf 14 -g 100 -pix_fmt yuv420p -c:a pcm_s16le "$SRC"
echo '{"thumbnails": {"times": [2.5, 5.0, 7.5], "widths": [1280, 640, 320], "formats": ["jpeg"], "quality": {"jpeg": 82}}}' > "$WORK/video.json"
ffmpeg_nine() {
  for t in 2.5 5.0 7.5; do
    ffmpeg -hide_banner -loglevel error -y -ss "$t" -i "$SRC" -filter_complex \
      "[0:v]split=3[a][b][c];[a]scale=1280:-2[o1];[b]scale=640:-2[o2];[c]scale=320:-2[o3]" \
      -map "[o1]" -frames:v 1 -q:v 3 "$WORK/ff_1280_$t.jpg" \
      -map "[o2]" -frames:v 1 -q:v 3 "$WORK/ff_640_$t.jpg" \
      -map "[o3]" -frames:v 1 -q:v 3 "$WORK/ff_320_$t.jpg"
  done
}
node_b=(); ff_b=()
for _ in $(seq "$RUNS"); do
  rm -rf "$WORK/nb"
  node_b+=("$(timed "$BIN" process "$SRC" --spec "$WORK/video.json" --out "$WORK/nb")")
  ff_b+=("$(timed ffmpeg_nine)")
done
nb=$(printf '%s\n' "${node_b[@]}" | median); fb=$(printf '%s\n' "${ff_b[@]}" | median)

# The outputs are the same pictures: same sizes.
for w in 1280 640 320; do
  a=$(ffprobe -v error -show_entries stream=width,height -of csv=p=0 "$WORK/na/thumbs/image/w$w.jpg")
  b=$(ffprobe -v error -show_entries stream=width,height -of csv=p=0 "$WORK/vips_$w.jpg")
  [ "$a" = "$b" ] || echo "warning: photo $w: media-node $a, vipsthumbnail $b"
done

printf '\n%-40s %12s %12s %8s\n' "case (median of $RUNS runs)" "media-node" "reference" "ratio"
printf '%-40s %11.3fs %11.3fs %8.3f\n' "(a) 4000x3000 JPEG -> 3 JPEGs (vips)" "$na" "$va" "$(echo "$na / $va" | bc -l)"
printf '%-40s %11.3fs %11.3fs %8.3f\n' "(b) 1080p50 10 s -> 9 stills (ffmpeg)" "$nb" "$fb" "$(echo "$nb / $fb" | bc -l)"
