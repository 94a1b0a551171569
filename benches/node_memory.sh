#!/usr/bin/env bash
# Does the node give memory back? A node (`media-node serve`, embedded
# default, one worker) runs JOBS sequential jobs of the whole default ladder
# (1080p, 720p, 480p, 360p as MP4 + HLS) on 10 s of real 1080p50 footage; its
# resident memory (VmRSS, the node alone: the media work runs in children) is
# printed after the first job and after the last, with the node's peak
# (VmHWM) and the largest child's peak.
#
# The issue's goal: the RSS after JOBS jobs within 30 MB of the RSS after the
# first. (Before the media work moved to children, one 1080p ladder job left
# about 330 MB resident in the node.)
#
# Usage: benches/node_memory.sh [JOBS]    (default 20)
# Needs: a release build (built if missing), ffmpeg, curl, jq, ../shared/media.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
JOBS="${1:-20}"
CORPUS="${MEDIA_CORPUS:-$ROOT/../shared/media}"
CONCERT="$CORPUS/videos/mov-h264-pcm-sowt-1080p50-2s.mov"
BIN="${MEDIA_NODE_BIN:-$ROOT/target/release/media-node}"
WORK="$(mktemp -d)"
NODE_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -f "$CONCERT" ] || { echo "bench: $CONCERT not found (set MEDIA_CORPUS)"; exit 1; }
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin media-node)
fi

SRC="$WORK/concert-10s.mov"
ffmpeg -hide_banner -loglevel error -y -stream_loop -1 -i "$CONCERT" -t 10 \
  -c:v libx264 -preset medium -crf 14 -pix_fmt yuv420p -c:a pcm_s16le "$SRC"

TOKEN=bench-token-0123456789
MEDIA_NODE_LISTEN=127.0.0.1:0 MEDIA_NODE_RTMP_LISTEN=127.0.0.1:0 MEDIA_NODE_SRT_LISTEN=127.0.0.1:0 \
  MEDIA_NODE_DATA_DIR="$WORK/data" MEDIA_NODE_API_TOKEN=$TOKEN MEDIA_NODE_JOBS_WORKERS=1 \
  MEDIA_NODE_LOG_FILTER=warn "$BIN" serve >"$WORK/stdout" 2>"$WORK/log" &
NODE_PID=$!
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/stdout" 2>/dev/null && break
  sleep 0.1
done
BASE=$(sed -n 's/^media-node listening on //p' "$WORK/stdout" | head -1)
[ -n "$BASE" ] || { cat "$WORK/log"; exit 1; }
AUTH=(-H "Authorization: Bearer $TOKEN")

kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$NODE_PID/status"; }
curl -fsS "${AUTH[@]}" -X PUT --data-binary @"$SRC" "$BASE/v1/objects/in/concert.mov" >/dev/null
child_peak=0
for i in $(seq "$JOBS"); do
  id=$(curl -fsS "${AUTH[@]}" -H 'Content-Type: application/json' \
    -d "{\"input\": {\"key\": \"in/concert.mov\"}, \"output_prefix\": \"out/$i\", \"renditions\": {\"ladder\": \"default\"}}" \
    "$BASE/v1/jobs" | jq -r .id)
  while :; do
    for c in $(pgrep -P "$NODE_PID" || true); do
      p=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
      [ "${p:-0}" -gt "$child_peak" ] && child_peak=$p
    done
    status=$(curl -fsS "${AUTH[@]}" "$BASE/v1/jobs/$id" | jq -r .status)
    case "$status" in succeeded) break ;; failed|canceled) echo "job $i $status"; exit 1 ;; esac
    sleep 0.5
  done
  rss=$(kib VmRSS)
  [ "$i" = 1 ] && first=$rss
  printf 'job %2d: node RSS %4d MiB\n' "$i" $((rss / 1024))
done
last=$(kib VmRSS)
printf 'node RSS after job 1: %d MiB, after job %d: %d MiB (%+d MiB); node peak %d MiB; largest child peak %d MiB\n' \
  $((first / 1024)) "$JOBS" $((last / 1024)) $(((last - first) / 1024)) $(($(kib VmHWM) / 1024)) $((child_peak / 1024))
