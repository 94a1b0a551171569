#!/usr/bin/env bash
# Transcode benchmark: media-node against ffmpeg with equivalent settings (x264
# veryfast, same bit rate and VBV, same 2 s GOP without scene-cut keyframes, 30 fps,
# AAC 128 kb/s stereo), on the same real 1080p50 footage.
#
#   (a) one 1080p input -> one 720p MP4
#   (b) the full default ladder (1080p, 720p, 480p, 360p) -> HLS, against ffmpeg's
#       single command with a split filter
#
# Prints the median wall time of each tool over RUNS runs, the ratio
# media-node / ffmpeg, and the quality of each output as SSIM against the source,
# measured the same way for both: ffmpeg's ssim filter against the source scaled to
# the output size (bicubic), at the output's frame times. The tools pick different
# source frames when going from 50 to 30 fps (GStreamer's videorate takes the
# nearest frame, ffmpeg's fps filter the last one that rounds to the slot), so each
# output is compared with the source frames its own tool picked; comparing both
# with one tool's picks would measure frame choice, not encoding.
#
# Usage: benches/transcode.sh [SECONDS] [RUNS]    (defaults: 10 s of footage, 5 runs)
# Needs: a release build (built if missing), ffmpeg, ../shared/media (the corpus).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_OF_VIDEO="${1:-10}"
RUNS="${2:-5}"
CORPUS="${MEDIA_CORPUS:-$ROOT/../shared/media}"
CLIP="$CORPUS/videos/mov-h264-pcm-sowt-1080p50-2s.mov"
BIN="$ROOT/target/release/media-node"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

[ -f "$CLIP" ] || { echo "bench: $CLIP not found (set MEDIA_CORPUS)"; exit 1; }
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin media-node)
fi
export MEDIA_NODE_LOG_FILTER=error

# Real footage (low-light concert, 1080p50 H.264 + PCM) looped to the length wanted,
# re-encoded near-losslessly so the loop is one clean stream.
SRC="$WORK/src.mov"
ffmpeg -hide_banner -loglevel error -y -stream_loop -1 -i "$CLIP" -t "$SECONDS_OF_VIDEO" \
  -c:v libx264 -preset medium -crf 14 -pix_fmt yuv420p -c:a pcm_s16le "$SRC"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err"; exit 1; }; echo "$(now) - $t0" | bc -l; }

# The source at 30 fps as each tool samples it (lossless).
REF_FF="$WORK/ref-ffmpeg.mkv"; REF_GST="$WORK/ref-gst.mkv"
ffmpeg -hide_banner -loglevel error -y -i "$SRC" -an -vf fps=30 -c:v ffv1 "$REF_FF"
gst-launch-1.0 -q filesrc location="$SRC" ! qtdemux name=d d.video_0 ! decodebin ! videorate \
  ! video/x-raw,framerate=30/1 ! x264enc pass=quant quantizer=0 speed-preset=ultrafast \
  ! matroskamux ! filesink location="$REF_GST"

# SSIM of $1 (one video) against reference $2 scaled to its size, frame by frame
# (both retimed by frame index: Matroska's millisecond timestamps would otherwise
# pair frames one slot apart).
ssim() {
  local size
  size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=s=x:p=0 "$1" | grep x | head -1)
  ffmpeg -hide_banner -nostats -i "$1" -i "$2" -lavfi \
    "[1:v]setpts=N/(30*TB),scale=${size/x/:}:flags=bicubic,format=yuv420p[ref];[0:v]setpts=N/(30*TB),format=yuv420p[out];[out][ref]ssim" \
    -f null - 2>&1 | grep -o 'All:[0-9.]*' | cut -d: -f2
}

X264="-c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -bf 3 -pix_fmt yuv420p"
AAC="-c:a aac -b:a 128k -ac 2 -ar 48000"

# (a) 720p MP4
echo '{"output_prefix": "a", "renditions": {"ladder": "default", "rungs": ["720p"], "formats": ["mp4"]}}' > "$WORK/a.json"
node_a=(); ff_a=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/na" "$WORK/fa.mp4"
  node_a+=("$(timed "$BIN" process "$SRC" --spec "$WORK/a.json" --out "$WORK/na")")
  ff_a+=("$(timed ffmpeg -hide_banner -loglevel error -y -i "$SRC" -vf "fps=30,scale=1280:720" \
    $X264 -profile:v high -b:v 3000k -maxrate 3000k -bufsize 6000k $AAC -movflags +faststart "$WORK/fa.mp4")")
done
na=$(printf '%s\n' "${node_a[@]}" | median); fa=$(printf '%s\n' "${ff_a[@]}" | median)
sa_node=$(ssim "$WORK/na/a/720p.mp4" "$REF_GST"); sa_ff=$(ssim "$WORK/fa.mp4" "$REF_FF")

# (b) full ladder to HLS
echo '{"output_prefix": "b", "renditions": {"ladder": "default", "formats": ["hls"]}}' > "$WORK/b.json"
node_b=(); ff_b=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/nb" "$WORK/fb"; mkdir -p "$WORK/fb"
  node_b+=("$(timed "$BIN" process "$SRC" --spec "$WORK/b.json" --out "$WORK/nb")")
  ff_b+=("$(timed ffmpeg -hide_banner -loglevel error -y -i "$SRC" -filter_complex \
    "[0:v]fps=30,split=4[v0][v1][v2][v3];[v0]scale=1920:1080[o0];[v1]scale=1280:720[o1];[v2]scale=854:480[o2];[v3]scale=640:360[o3]" \
    -map "[o0]" -map 0:a -map "[o1]" -map 0:a -map "[o2]" -map 0:a -map "[o3]" -map 0:a \
    $X264 \
    -b:v:0 5000k -maxrate:v:0 5000k -bufsize:v:0 10000k -profile:v:0 high \
    -b:v:1 3000k -maxrate:v:1 3000k -bufsize:v:1 6000k -profile:v:1 high \
    -b:v:2 1200k -maxrate:v:2 1200k -bufsize:v:2 2400k -profile:v:2 main \
    -b:v:3 700k -maxrate:v:3 700k -bufsize:v:3 1400k -profile:v:3 main \
    $AAC -f hls -hls_time 4 -hls_playlist_type vod -master_pl_name master.m3u8 \
    -var_stream_map "v:0,a:0 v:1,a:1 v:2,a:2 v:3,a:3" \
    -hls_segment_filename "$WORK/fb/%v/seg_%05d.ts" "$WORK/fb/%v/index.m3u8")")
done
nb=$(printf '%s\n' "${node_b[@]}" | median); fb=$(printf '%s\n' "${ff_b[@]}" | median)
sb_node=$(ssim "$WORK/nb/b/hls/720p/index.m3u8" "$REF_GST"); sb_ff=$(ssim "$WORK/fb/1/index.m3u8" "$REF_FF")

printf '\nTranscode benchmark: %s s of 1080p50 footage, %s runs, medians (%s cores)\n' "$SECONDS_OF_VIDEO" "$RUNS" "$(nproc)"
printf '%-34s %10s %10s %8s %12s %12s\n' "case" "media-node" "ffmpeg" "ratio" "SSIM node" "SSIM ffmpeg"
printf '%-34s %9.2fs %9.2fs %8.3f %12s %12s\n' "(a) 1080p -> 720p MP4" "$na" "$fa" "$(echo "$na / $fa" | bc -l)" "$sa_node" "$sa_ff"
printf '%-34s %9.2fs %9.2fs %8.3f %12s %12s\n' "(b) ladder -> HLS (SSIM of 720p)" "$nb" "$fb" "$(echo "$nb / $fb" | bc -l)" "$sb_node" "$sb_ff"
echo "all runs (s): node a: ${node_a[*]} | ffmpeg a: ${ff_a[*]} | node b: ${node_b[*]} | ffmpeg b: ${ff_b[*]}"
