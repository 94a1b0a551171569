#!/usr/bin/env bash
# Live relay benchmark: how many concurrent RTMP publishers of a 720p clip at
# about 3 Mbit/s one media-node relays as HLS into a local S3-compatible server
# (s3s-fs) with no lost segment and a p99 upload lag under 1 s, and what the
# node's CPU costs per stream; against nginx + the RTMP module relaying the
# same streams into HLS on local disk.
#
# For each N: a fresh s3s-fs and a fresh node (`media-node serve`, S3 store,
# the default live profile, posters included, with a 2 s reconnect window so
# streams end soon after their publisher), N streams made through the API and N ffmpeg
# publishers (`-re -stream_loop -1 -c copy -f flv`) for D seconds. CPU is read
# from /proc over the steady window: from WARMUP s after the publishers start
# to 2 s before they stop. When the publishers are done, every stream must
# end with its replay written, no segment dropped, a replay playlist in the
# store that lists contiguous segments (no discontinuity, each object
# present) lasting D s (+-2 s). Upload lag and PUT time come from /metrics
# (histograms: "<= X" is the bucket bound, "~Y" interpolated in the bucket).
# Then the same N publishers go to a private nginx (rtmp module, `hls on`,
# 2 s fragments, one worker) and its master + worker CPU is read the same way.
#
# With a transcoding profile (--profile ladder: the source plus rungs encoded
# on the node), every rendition's replay is checked the same way and must have
# as many segments as the source's, and the reference is no longer nginx (it
# does not encode) but ffmpeg doing the same work per stream: the clip decoded
# once (one thread), each rung scaled and encoded with libx264 at the profile's
# preset, sizes and rates (zerolatency, one thread), audio copied, written as
# HLS to local disk.
#
# Targets (the issue): <= 1 % of one core per stream including the S3 upload,
# >= 60 streams without a lost segment and p99 upload lag < 1 s. Reference on
# the 2-core machine: nginx-rtmp ~0.5 % of a core per stream, each ffmpeg
# publisher ~0.65 %.
#
# Usage: benches/live.sh [--bin PATH] [--streams "1 10 30 60"] [--duration 60]
#                        [--warmup 10] [--work DIR] [--no-nginx] [--profile NAME]
#   (also MEDIA_NODE_BIN, LIVE_STREAMS, LIVE_DURATION, LIVE_WARMUP, LIVE_WORK,
#    LIVE_NO_NGINX=1 (no reference run), LIVE_PROFILE (a pipelines/live
#    profile, default `default`); LIVE_KEEP=1 keeps the logs, store and HLS of
#    each run)
# Needs: a media-node build (release by default: cargo build --release first), ffmpeg,
# ffprobe, curl, jq, s3s-fs ($S3S_FS, .tools/bin or ~/.cargo/bin: see
# scripts/test), ../shared/media (the corpus); nginx + libnginx-mod-rtmp unless
# --no-nginx (installed with apt-get when missing). The clip is made once and
# kept in the work dir (default target/bench-live), with one CSV per run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CORPUS="${MEDIA_CORPUS:-$ROOT/../shared/media}"
SOURCE="$CORPUS/videos/mov-h264-pcm-sowt-1080p50-2s.mov"
BIN="${MEDIA_NODE_BIN:-$ROOT/target/release/media-node}"
STREAMS="${LIVE_STREAMS:-1 10 30 60}"
DURATION="${LIVE_DURATION:-60}"
WARMUP="${LIVE_WARMUP:-10}"
WORK="${LIVE_WORK:-$ROOT/target/bench-live}"
NGINX="${LIVE_NO_NGINX:+no}"; NGINX="${NGINX:-yes}"
PROFILE="${LIVE_PROFILE:-default}"
TAIL=2        # seconds left out of the window before the publishers stop
IDLE_S=5      # the node's CPU with no stream, before publishing
TOKEN="bench-token-0123456789abcdef"
S3_ACCESS_KEY="media-node-bench"; S3_SECRET_KEY="media-node-bench-secret"; BUCKET="bench"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --streams) STREAMS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --no-nginx) NGINX=no; shift ;;
    --profile) PROFILE="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ "$DURATION" -gt $((WARMUP + TAIL + 2)) ] \
  || { echo "bench: --duration must exceed --warmup + $((TAIL + 2)) s" >&2; exit 2; }
for n in $STREAMS; do [ "$n" -ge 1 ] 2>/dev/null || { echo "bench: bad stream count $n" >&2; exit 2; }; done
PROFILE_FILE="$ROOT/pipelines/live/$PROFILE.toml"
[ -f "$PROFILE_FILE" ] || { echo "bench: no live profile $PROFILE_FILE" >&2; exit 2; }
TRANSCODE=no; grep -q '^\[transcode\]' "$PROFILE_FILE" && TRANSCODE=yes
for tool in ffmpeg ffprobe curl jq awk; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done
[ -f "$SOURCE" ] || { echo "bench: $SOURCE not found (set MEDIA_CORPUS)" >&2; exit 1; }
if [ "$BIN" = "$ROOT/target/release/media-node" ]; then
  # A stale release build may predate live streams: cargo is a no-op when fresh.
  (cd "$ROOT" && cargo build --release --locked --bin media-node)
fi
[ -x "$BIN" ] || { echo "bench: $BIN is not executable" >&2; exit 1; }
S3S="${S3S_FS:-}"
if [ -z "$S3S" ]; then
  for c in "$ROOT/.tools/bin/s3s-fs" "$HOME/.cargo/bin/s3s-fs"; do
    [ -x "$c" ] && { S3S="$c"; break; }
  done
fi
if [ -z "$S3S" ] || [ ! -x "$S3S" ]; then
  echo "bench: s3s-fs not found (set S3S_FS, or: cargo install s3s-fs@0.14.1 --locked --features binary --root .tools)" >&2
  exit 1
fi

# nginx with the RTMP module (Debian: a dynamic module to load).
NGINX_MODULE=""
nginx_ready() {
  command -v nginx >/dev/null || return 1
  nginx -V 2>&1 | grep -q rtmp && return 0
  local m
  for m in /usr/lib/nginx/modules/ngx_rtmp_module.so /usr/lib64/nginx/modules/ngx_rtmp_module.so \
           /usr/share/nginx/modules/ngx_rtmp_module.so; do
    [ -f "$m" ] && { NGINX_MODULE="$m"; return 0; }
  done
  return 1
}
if [ "$NGINX" = yes ] && [ "$TRANSCODE" = no ] && ! nginx_ready; then
  echo "bench: installing nginx and libnginx-mod-rtmp"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    nginx libnginx-mod-rtmp >/dev/null || true
  nginx_ready || { echo "bench: nginx with the RTMP module is not available; skipping it" >&2; NGINX=no; }
fi

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
RUNS="$(mktemp -d "$WORK/run.XXXXXX")"
CSV="$WORK/live-$(date +%Y%m%d-%H%M%S).csv"
HZ="$(getconf CLK_TCK)"

# Every process started here, stopped on exit whatever happens.
PIDS=()
stop_pid() {  # $1 pid: TERM, up to 10 s, then KILL; reaps it
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  PIDS=()
  if [ -n "${LIVE_KEEP:-}" ]; then echo "bench: logs kept in $RUNS" >&2; else rm -rf "$RUNS"; fi
  # A run that produced no row leaves no CSV.
  if [ -n "${CSV:-}" ] && [ -f "$CSV" ] && [ "$(wc -l <"$CSV")" -le 1 ]; then rm -f "$CSV"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() {  # $1 port, $2 pid of the server, $3 name
  local i
  for i in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench: $3 exited" >&2; return 1; }
    sleep 0.1
  done
  echo "bench: $3 does not listen on $1" >&2; return 1
}
# CPU clock ticks (user + system) of the given processes, those still alive.
ticks() {
  local pid t=0 s
  for pid in "$@"; do
    s=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || s=0
    t=$((t + ${s:-0}))
  done
  echo "$t"
}
# Whole machine: "busy total" jiffies over all cores.
machine() { awk '/^cpu /{t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t; exit}' /proc/stat; }
pct() { awk -v a="$1" -v b="$2" -v hz="$HZ" -v w="$3" 'BEGIN {printf "%.2f", (b - a) / hz / w * 100}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0 || a == "-" || b == "-") print "-"; else printf "%.3f", a / b}'; }
sleep_until() { local s; s=$(awk -v t="$1" -v n="$(now)" 'BEGIN {d = t - n; print (d > 0 ? d : 0)}'); sleep "$s"; }

# Quantile $3 of histogram $2 in metrics file $1: "BOUND ESTIMATE" (the
# smallest bucket bound holding the quantile; linear inside that bucket).
quantile() {
  awk -v name="$2_bucket{" -v q="$3" '
    index($0, name) == 1 {
      match($0, /le="[^"]*"/); le[n] = substr($0, RSTART + 4, RLENGTH - 5); c[n] = $NF; n++
    }
    END {
      if (n == 0 || c[n - 1] == 0) { print "- -"; exit }
      target = q * c[n - 1]; pl = 0; pc = 0
      for (i = 0; i < n; i++) {
        if (c[i] >= target) {
          if (le[i] == "+Inf") { print "+Inf", pl; exit }
          est = (c[i] > pc) ? pl + (le[i] - pl) * (target - pc) / (c[i] - pc) : le[i]
          printf "%s %.3f\n", le[i], est; exit
        }
        pl = le[i]; pc = c[i]
      }
    }' "$1"
}
metric() { awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print 0}' "$1"; }

# The input: real 1080p50 footage (low-light concert, 2 s) looped to 30 s and
# encoded once as a creator's app would send it: 720p30 H.264 at 3 Mbit/s
# (VBV 2 s), a keyframe every 2 s, AAC 128 kb/s.
CLIP="$WORK/clip-720p30-3M-gop2s.mp4"
if [ ! -s "$CLIP" ]; then
  echo "bench: encoding $CLIP"
  ffmpeg -hide_banner -loglevel error -nostdin -y -stream_loop -1 -i "$SOURCE" -t 30 \
    -vf "fps=30,scale=1280:720" -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
    -b:v 3M -maxrate 3M -bufsize 6M -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 128k -ac 2 -ar 48000 -movflags +faststart "$WORK/clip.tmp.mp4"
  mv "$WORK/clip.tmp.mp4" "$CLIP"
fi
CLIP_KBPS=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$CLIP" | awk '{printf "%.0f", $1 / 1000}')

# The live profile, ending streams 2 s after their publisher leaves.
PIPELINES="$RUNS/pipelines"
mkdir -p "$PIPELINES/live"
sed -E 's/^reconnect_window_s *=.*/reconnect_window_s = 2.0/' "$PROFILE_FILE" \
  >"$PIPELINES/live/bench.toml"
grep -q '^reconnect_window_s = 2.0' "$PIPELINES/live/bench.toml" \
  || echo 'reconnect_window_s = 2.0' >>"$PIPELINES/live/bench.toml"

# $1 dir, $2... RTMP URLs: one looping ffmpeg each, for DURATION s. Sets PUB_PIDS.
publish() {
  local dir="$1" i=0 url; shift
  PUB_PIDS=()
  for url in "$@"; do
    ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$CLIP" \
      -t "$DURATION" -c copy -f flv "$url" </dev/null >/dev/null 2>"$dir/pub-$i.log" &
    PUB_PIDS+=("$!"); PIDS+=("$!"); i=$((i + 1))
  done
}
# Waits for the publishers (not in a subshell: they are this shell's
# children); sets PUB_FAILED to how many failed.
publishers_done() {
  local pid
  PUB_FAILED=0
  for pid in "${PUB_PIDS[@]}"; do wait "$pid" || PUB_FAILED=$((PUB_FAILED + 1)); done
}
# Sample CPU: "wall node-ticks other-ticks publisher-ticks machine-busy machine-total"
# $1: node pids (space separated), $2: other pids.
sample() {
  local m; m=$(machine)
  # shellcheck disable=SC2086
  echo "$(now) $(ticks $1) $(ticks $2) $(ticks "${PUB_PIDS[@]}") $m"
}
# Prints "relay% other% publisher%-per-stream machine%" between two samples; $3 = N.
window() {
  local a b w
  read -ra a <<<"$1"; read -ra b <<<"$2"
  w=$(awk -v a="${a[0]}" -v b="${b[0]}" 'BEGIN {print b - a}')
  echo "$(pct "${a[1]}" "${b[1]}" "$w") $(pct "${a[2]}" "${b[2]}" "$w") \
$(awk -v x="$(pct "${a[3]}" "${b[3]}" "$w")" -v n="$3" 'BEGIN {printf "%.2f", x / n}') \
$(awk -v b0="${a[4]}" -v t0="${a[5]}" -v b1="${b[4]}" -v t1="${b[5]}" 'BEGIN {printf "%.1f", (b1 - b0) / (t1 - t0) * 100}')"
}

api() { curl -sS --max-time 20 -H "Authorization: Bearer $TOKEN" "$@"; }

# Checks the media replay below $1 in the store: prints "segments seconds
# sequence-gaps missing-objects discontinuities".
replay_check() {
  awk -v dir="$1" '
    /^#EXTINF:/ { d = substr($0, 9); sub(/,.*/, "", d); dur += d; next }
    /^#EXT-X-DISCONTINUITY$/ { disc++; next }
    /^[^#]/ && NF {
      seq = $0; sub(/\.ts$/, "", seq); seq += 0
      if (seq != next_seq) gaps += (seq > next_seq ? seq - next_seq : 1)
      next_seq = seq + 1; count++
      if ((getline line < (dir "/" $0)) < 0) missing++; else close(dir "/" $0)
    }
    END { printf "%d %.3f %d %d %d\n", count, dur, gaps, missing, disc }' "$1/replay.m3u8"
}

# One media-node run with N streams. Sets R_* results.
run_node() {
  local n="$1" dir="$RUNS/node-$1"
  mkdir -p "$dir/s3/$BUCKET" "$dir/data"
  local s3_port; s3_port=$(free_port)
  "$S3S" --host 127.0.0.1 --port "$s3_port" --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" \
    "$dir/s3" >/dev/null 2>"$dir/s3s.log" &
  local s3_pid=$!; PIDS+=("$s3_pid")
  wait_port "$s3_port" "$s3_pid" s3s-fs

  local unset_env=() v
  for v in $(compgen -e); do
    case "$v" in MEDIA_NODE_*|AWS_*|RUST_LOG) unset_env+=(-u "$v") ;; esac
  done
  env "${unset_env[@]}" \
    MEDIA_NODE_LISTEN=127.0.0.1:0 MEDIA_NODE_RTMP_LISTEN=127.0.0.1:0 \
    MEDIA_NODE_DATA_DIR="$dir/data" MEDIA_NODE_API_TOKEN="$TOKEN" \
    MEDIA_NODE_PIPELINES_DIR="$PIPELINES" MEDIA_NODE_LOG_FILTER=warn \
    MEDIA_NODE_LIVE_MAX_TRANSCODES="$n" \
    MEDIA_NODE_STORE=s3 MEDIA_NODE_S3_BUCKET="$BUCKET" MEDIA_NODE_S3_ENDPOINT="http://127.0.0.1:$s3_port" \
    MEDIA_NODE_S3_REGION=us-east-1 MEDIA_NODE_S3_PATH_STYLE=true \
    AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
    "$BIN" serve >"$dir/node.out" 2>"$dir/node.log" &
  local node_pid=$!; PIDS+=("$node_pid")
  local base="" i
  for i in $(seq 900); do
    base=$(sed -n 's/^media-node listening on //p' "$dir/node.out" | head -1)
    [ -n "$base" ] && break
    kill -0 "$node_pid" 2>/dev/null || { echo "bench: media-node exited:" >&2; cat "$dir/node.log" >&2; return 1; }
    sleep 0.1
  done
  [ -n "$base" ] || { echo "bench: media-node did not start" >&2; return 1; }

  local ids=() urls=() created
  for i in $(seq "$n"); do
    created=$(api -H 'Content-Type: application/json' -d "{\"name\": \"bench-$i\", \"profile\": \"bench\"}" \
      "$base/v1/live/streams")
    ids+=("$(jq -er .id <<<"$created")") || { echo "bench: cannot create a stream: $created" >&2; return 1; }
    urls+=("$(jq -er .rtmp_url <<<"$created")")
  done

  local i0 i1
  i0=$(sample "$node_pid" "$s3_pid"); sleep "$IDLE_S"; i1=$(sample "$node_pid" "$s3_pid")
  R_IDLE=$(window "$i0" "$i1" 1 | cut -d' ' -f1)

  publish "$dir" "${urls[@]}"
  local t0; t0=$(now)
  sleep_until "$(awk -v t="$t0" -v w="$WARMUP" 'BEGIN {printf "%.3f", t + w}')"
  R_LIVE=$(api "$base/v1/live/streams?state=live&limit=500" | jq '.streams | length')
  [ "$R_LIVE" = "$n" ] || echo "bench: only $R_LIVE of $n streams are live ${WARMUP} s after publishing" >&2
  local a b; a=$(sample "$node_pid" "$s3_pid")
  sleep_until "$(awk -v t="$t0" -v d="$DURATION" -v e="$TAIL" 'BEGIN {printf "%.3f", t + d - e}')"
  b=$(sample "$node_pid" "$s3_pid")
  read -r R_NODE R_S3 R_PUB R_MACHINE <<<"$(window "$a" "$b" "$n")"
  publishers_done; R_PUB_FAILED=$PUB_FAILED

  # Every stream ends and writes its replay.
  local deadline s lost=0 bad=0 short=0 segs=0
  deadline=$(awk -v t="$(now)" 'BEGIN {printf "%.3f", t + 120}')
  for i in "${!ids[@]}"; do
    while :; do
      s=$(api "$base/v1/live/streams/${ids[$i]}" || true)
      [ "$(jq -r '.replay_ready' <<<"$s" 2>/dev/null)" = true ] && break
      awk -v d="$deadline" -v n="$(now)" 'BEGIN {exit !(n > d)}' && { s=""; break; }
      sleep 0.5
    done
    if [ -z "$s" ]; then
      echo "bench: stream ${ids[$i]} has no replay after 120 s" >&2
      bad=$((bad + 1)); continue
    fi
    # The replay in the store (s3s-fs keeps objects as files): contiguous
    # sequence numbers from 0, no discontinuity, every segment present.
    local prefix="$dir/s3/$BUCKET/live/${ids[$i]}" check
    if [ ! -f "$prefix/replay.m3u8" ]; then
      echo "bench: stream ${ids[$i]}: replay.m3u8 is not in the store" >&2
      bad=$((bad + 1)); continue
    fi
    local renditions=()
    if [ "$TRANSCODE" = yes ]; then
      # A master replay: the source's media replay is checked below, each
      # rung's here (same checks, and as many segments as the source).
      renditions=($(sed -n 's|/replay\.m3u8$||p' "$prefix/replay.m3u8"))
      prefix="$prefix/source"
    fi
    check=$(replay_check "$prefix")
    local rung rung_check
    for rung in "${renditions[@]}"; do
      [ "$rung" = source ] && continue
      rung_check=$(replay_check "${prefix%/source}/$rung")
      if [ "$(cut -d' ' -f1 <<<"$rung_check")" != "$(cut -d' ' -f1 <<<"$check")" ] \
         || [ "$(cut -d' ' -f3- <<<"$rung_check")" != "0 0 0" ]; then
        bad=$((bad + 1))
        echo "bench: stream ${ids[$i]}: rendition $rung: count dur gaps missing disc = $rung_check;" \
          "source: $check" >&2
      fi
    done
    if [ "$TRANSCODE" = yes ] && [ "${#renditions[@]}" -lt 2 ]; then
      echo "bench: stream ${ids[$i]}: the master replay lists only ${renditions[*]:-nothing}" >&2
    fi
    local count dur gaps missing disc dropped uploaded
    read -r count dur gaps missing disc <<<"$check"
    dropped=$(jq -r '.segments_dropped' <<<"$s"); uploaded=$(jq -r '.segments_uploaded' <<<"$s")
    segs=$((segs + count))
    lost=$((lost + dropped + gaps + missing))
    if [ "$dropped" != 0 ] || [ "$gaps" != 0 ] || [ "$missing" != 0 ] || [ "$disc" != 0 ] \
       || [ "$uploaded" != "$count" ]; then
      bad=$((bad + 1))
      echo "bench: stream ${ids[$i]}: $count segments listed, $uploaded uploaded, $dropped dropped," \
        "$gaps missing from the sequence, $missing not in the store, $disc discontinuities" >&2
    fi
    if awk -v d="$dur" -v t="$DURATION" 'BEGIN {exit !(d < t - 2 || d > t + 2)}'; then
      short=$((short + 1))
      echo "bench: stream ${ids[$i]}: the replay lasts $dur s, not $DURATION" >&2
    fi
  done
  R_LOST=$lost; R_BAD=$bad; R_SHORT=$short; R_SEGS=$segs

  curl -sS --max-time 20 "$base/metrics" >"$dir/metrics.txt"
  read -r R_LAG99 R_LAG99E <<<"$(quantile "$dir/metrics.txt" media_node_live_upload_lag_seconds 0.99)"
  read -r R_LAG50 R_LAG50E <<<"$(quantile "$dir/metrics.txt" media_node_live_upload_lag_seconds 0.5)"
  read -r R_PUT50 R_PUT50E <<<"$(quantile "$dir/metrics.txt" media_node_live_upload_seconds 0.5)"
  read -r R_PUT99 R_PUT99E <<<"$(quantile "$dir/metrics.txt" media_node_live_upload_seconds 0.99)"
  R_UPLOADED=$(metric "$dir/metrics.txt" media_node_live_segments_uploaded_total)
  R_FAILURES=$(metric "$dir/metrics.txt" media_node_live_upload_failures_total)
  R_POSTERS=$(metric "$dir/metrics.txt" media_node_live_posters_total)
  R_WARN=$(grep -cE 'WARN|ERROR' "$dir/node.log" || true)
  if [ "$R_WARN" -gt 0 ]; then
    echo "bench: the node logged $R_WARN warnings/errors with $n streams; first ones:" >&2
    grep -E 'WARN|ERROR' "$dir/node.log" | head -5 >&2
  fi

  stop_pid "$node_pid"; stop_pid "$s3_pid"
  [ -n "${LIVE_KEEP:-}" ] || rm -rf "$dir/s3" "$dir/data"
}

# The reference for a transcoding profile: N ffmpeg processes, each decoding
# the clip once (one thread) and encoding the profile's rungs like the node
# (libx264, its preset, zerolatency, one thread, the rung's size and rate,
# audio copied) into HLS on local disk. Sets G_* results like run_nginx.
run_ffmpeg_ladder() {
  local n="$1" dir="$RUNS/ffmpeg-$1"
  mkdir -p "$dir/hls"
  local preset sides=() rates=() line
  preset=$(sed -n 's/^x264_preset *= *"\(.*\)"/\1/p' "$PROFILE_FILE" | head -1)
  while read -r line; do sides+=("$line"); done < <(sed -n 's/^short_side *= *//p' "$PROFILE_FILE")
  while read -r line; do rates+=("$line"); done < <(sed -n 's/^video_kbps *= *//p' "$PROFILE_FILE")
  local split="[0:v]split=${#sides[@]}" r filter outs=()
  for r in "${!sides[@]}"; do split+="[v$r]"; done
  filter="$split"
  for r in "${!sides[@]}"; do
    # The clip is landscape: the short side is the height.
    filter+=";[v$r]scale=-2:${sides[$r]}[o$r]"
  done
  local i
  PUB_PIDS=()
  for i in $(seq "$n"); do
    outs=()
    for r in "${!sides[@]}"; do
      outs+=(-t "$DURATION" -map "[o$r]" -map 0:a -c:v libx264 -preset "${preset:-veryfast}" -tune zerolatency
             -threads 1 -b:v "${rates[$r]}k" -maxrate "${rates[$r]}k" -bufsize "$((rates[r] * 2))k"
             -c:a copy -f hls -hls_time 2 -hls_list_size 6 "$dir/hls/s$i-r$r.m3u8")
    done
    ffmpeg -hide_banner -loglevel error -nostdin -threads 1 -re -stream_loop -1 -i "$CLIP" \
      -filter_complex "$filter" "${outs[@]}" </dev/null >/dev/null 2>"$dir/ffmpeg-$i.log" &
    PUB_PIDS+=("$!"); PIDS+=("$!")
  done
  local t0 a b; t0=$(now)
  sleep_until "$(awk -v t="$t0" -v w="$WARMUP" 'BEGIN {printf "%.3f", t + w}')"
  a=$(sample "" "")
  sleep_until "$(awk -v t="$t0" -v d="$DURATION" -v e="$TAIL" 'BEGIN {printf "%.3f", t + d - e}')"
  b=$(sample "" "")
  # The transcoders are the "publishers" here: their CPU is the reference.
  read -r _ _ G_CPU G_MACHINE <<<"$(window "$a" "$b" 1)"
  G_PUB="-"
  G_PLAYLISTS=$(find "$dir/hls" -name '*.m3u8' | wc -l)
  publishers_done; G_PUB_FAILED=$PUB_FAILED
  [ -n "${LIVE_KEEP:-}" ] || rm -rf "$dir/hls"
}

# One nginx-rtmp run with N streams. Sets G_* results.
run_nginx() {
  local n="$1" dir="$RUNS/nginx-$1"
  mkdir -p "$dir/hls" "$dir/logs"
  local port; port=$(free_port)
  {
    [ -n "$NGINX_MODULE" ] && echo "load_module $NGINX_MODULE;"
    cat <<EOF
user $(id -un) $(id -gn);
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
rtmp {
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live {
            live on;
            record off;
            hls on;
            hls_path $dir/hls;
            hls_fragment 2s;
            hls_playlist_length 12s;
        }
    }
}
EOF
  } >"$dir/nginx.conf"
  nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >/dev/null 2>"$dir/nginx.err" &
  local master=$!; PIDS+=("$master")
  wait_port "$port" "$master" nginx || { cat "$dir/nginx.err" "$dir/error.log" >&2; return 1; }
  local urls=() i
  for i in $(seq "$n"); do urls+=("rtmp://127.0.0.1:$port/live/s$i"); done

  publish "$dir" "${urls[@]}"
  local t0; t0=$(now)
  sleep_until "$(awk -v t="$t0" -v w="$WARMUP" 'BEGIN {printf "%.3f", t + w}')"
  local procs a b
  procs="$master $(ps -o pid= --ppid "$master" | tr '\n' ' ')"
  a=$(sample "$procs" "")
  sleep_until "$(awk -v t="$t0" -v d="$DURATION" -v e="$TAIL" 'BEGIN {printf "%.3f", t + d - e}')"
  b=$(sample "$procs" "")
  G_PLAYLISTS=$(find "$dir/hls" -name '*.m3u8' | wc -l)
  read -r G_CPU _ G_PUB G_MACHINE <<<"$(window "$a" "$b" "$n")"
  publishers_done; G_PUB_FAILED=$PUB_FAILED
  stop_pid "$master"
  [ -n "${LIVE_KEEP:-}" ] || rm -rf "$dir/hls"
}

echo "live relay benchmark: $(nproc) cores, $DURATION s per run (CPU over ${WARMUP}-$((DURATION - TAIL)) s)," \
  "clip 720p30 ${CLIP_KBPS} kb/s, streams: $STREAMS, live profile: $PROFILE"
REF="nginx-rtmp"; [ "$TRANSCODE" = yes ] && REF="ffmpeg encoding the same rungs from the file"
[ "$NGINX" = yes ] && echo "reference (ref): $REF"
echo "media-node: $BIN ($("$BIN" --version 2>/dev/null | head -1 || echo '?'))"
echo "streams,relay_ok,node_idle_pct,node_cpu_pct,node_cpu_pct_per_stream,s3s_cpu_pct,publisher_cpu_pct_per_stream,machine_cpu_pct,live_at_warmup,publishers_failed,segments,lost_segments,bad_streams,short_replays,segments_uploaded_metric,posters,upload_failures,node_warnings,lag_p50_le,lag_p50_est,lag_p99_le,lag_p99_est,put_p50_le,put_p50_est,put_p99_le,put_p99_est,ref_cpu_pct,ref_cpu_pct_per_stream,ref_publisher_cpu_pct_per_stream,ref_machine_cpu_pct,ref_playlists,ref_publishers_failed,ratio_node_ref" >"$CSV"

ROWS=()
for n in $STREAMS; do
  echo "-- $n stream(s): media-node"
  run_node "$n"
  node_per=$(div "$R_NODE" "$n")
  G_CPU="-"; G_PUB="-"; G_MACHINE="-"; G_PLAYLISTS="-"; G_PUB_FAILED="-"; nginx_per="-"; ratio="-"
  if [ "$NGINX" = yes ] && [ "$TRANSCODE" = yes ]; then
    echo "-- $n stream(s): ffmpeg encoding the same rungs"
    run_ffmpeg_ladder "$n"
    nginx_per=$(div "$G_CPU" "$n")
    ratio=$(div "$node_per" "$nginx_per")
  elif [ "$NGINX" = yes ]; then
    echo "-- $n stream(s): nginx-rtmp"
    run_nginx "$n"
    nginx_per=$(div "$G_CPU" "$n")
    ratio=$(div "$node_per" "$nginx_per")
    [ "$G_PLAYLISTS" = "$n" ] || echo "bench: nginx wrote $G_PLAYLISTS playlists for $n streams" >&2
  fi
  # The relay target: nothing lost, every stream whole, p99 lag under 1 s.
  ok=no
  if [ "$R_LOST" = 0 ] && [ "$((R_BAD + R_SHORT + R_PUB_FAILED))" = 0 ] && [ "$R_LAG99" != "-" ] \
     && [ "$R_LAG99" != "+Inf" ] && awk -v e="$R_LAG99E" 'BEGIN {exit !(e < 1)}'; then ok=yes; fi
  echo "$n,$ok,$R_IDLE,$R_NODE,$node_per,$R_S3,$R_PUB,$R_MACHINE,$R_LIVE,$R_PUB_FAILED,$R_SEGS,$R_LOST,$R_BAD,$R_SHORT,$R_UPLOADED,$R_POSTERS,$R_FAILURES,$R_WARN,$R_LAG50,$R_LAG50E,$R_LAG99,$R_LAG99E,$R_PUT50,$R_PUT50E,$R_PUT99,$R_PUT99E,$G_CPU,$nginx_per,$G_PUB,$G_MACHINE,$G_PLAYLISTS,$G_PUB_FAILED,$ratio" >>"$CSV"
  ROWS+=("$(printf '%7s %6s %8s %8s %7s %8s %7s %5s %4s %13s %13s %13s %8s %8s %6s %3s' \
    "$n" "$R_IDLE" "$R_NODE" "$node_per" "$R_S3" "$R_PUB" "$R_MACHINE" "$R_LOST" "$((R_BAD + R_SHORT + R_PUB_FAILED))" \
    "<=$R_LAG99 ~$R_LAG99E" "<=$R_PUT50 ~$R_PUT50E" "<=$R_PUT99 ~$R_PUT99E" "$G_CPU" "$nginx_per" "$ratio" "$ok")")
done

echo
echo "Live relay: CPU in % of one core over the steady window; machine % of all $(nproc) cores;"
echo "lag = segment closed -> stored (p99), put = one segment PUT (p50, p99), in s"
printf '%7s %6s %8s %8s %7s %8s %7s %5s %4s %13s %13s %13s %8s %8s %6s %3s\n' \
  streams "idle %" "node %" "/stream" "s3s %" "pub/str" "mach %" lost bad "lag p99" "put p50" "put p99" "ref %" "/stream" ratio ok
printf '%s\n' "${ROWS[@]}"
echo "(idle = the node before any stream; pub/str = one ffmpeg publisher; bad = streams with a failed"
echo " publisher, a gap, a drop or a replay off by more than 2 s; targets: <= 1 % of a core per stream,"
echo " 0 lost and lag p99 < 1 s; ok = these last two hold)"
echo "raw numbers: $CSV"
