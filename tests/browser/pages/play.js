// Plays ?src= with ?engine= (hls | shaka | native), optionally with the WebVTT
// metadata track ?vtt=, and keeps `window.report` up to date for drive.py.
"use strict";

const params = new URLSearchParams(location.search);
const engine = params.get("engine") || "native";
const src = params.get("src");
const vtt = params.get("vtt");
const video = document.getElementById("video");
const t0 = performance.now();

const report = (window.report = {
  engine,
  src,
  errors: [],
  warnings: [],
  levels: [],
  cues: [],
  dateRanges: {},
  latencies: [],
  firstFrameMs: null,
  currentTime: 0,
  // Media seconds played since the first frame (live starts far from 0).
  played: 0,
  frames: 0,
  videoWidth: 0,
  videoHeight: 0,
  ended: false,
});

function fail(what) {
  report.errors.push(String(what));
}

// Time to first frame: from page start to the first frame composited.
function watchFirstFrame() {
  const first = () => {
    if (report.firstFrameMs === null) report.firstFrameMs = performance.now() - t0;
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(first);
  else video.addEventListener("playing", first, { once: true });
}

function watchCues() {
  if (!vtt) return;
  const track = document.createElement("track");
  track.kind = "metadata";
  track.src = vtt;
  track.default = true;
  video.appendChild(track);
  track.track.mode = "hidden";
  track.addEventListener("error", () => fail("vtt track failed to load"));
  track.track.addEventListener("cuechange", () => {
    for (const cue of track.track.activeCues) {
      if (report.cues.some((c) => c.id === cue.id)) continue;
      let payload = null;
      try {
        payload = JSON.parse(cue.text);
      } catch (e) {
        fail("cue " + cue.id + " is not JSON: " + e);
      }
      report.cues.push({ id: cue.id, start: cue.startTime, at: video.currentTime, payload });
    }
  });
}

function dateRange(dr) {
  const attr = dr.attr || {};
  let start = null;
  try {
    start = Number.isFinite(dr.startTime) ? dr.startTime : null;
  } catch (e) {}
  return {
    id: dr.id,
    class: dr.class,
    startDate: dr.startDate ? dr.startDate.toISOString() : null,
    start,
    duration: dr.duration,
    productId: attr["X-PRODUCT-ID"],
    sponsored: attr["X-SPONSORED"],
    rect: ["X-RECT-X", "X-RECT-Y", "X-RECT-W", "X-RECT-H"].map((k) => Number(attr[k]) || 0),
  };
}

function playHls() {
  if (!Hls.isSupported()) return fail("hls.js: MSE not supported");
  const hls = (window.hls = new Hls({ lowLatencyMode: false, debug: params.has("debug") }));
  hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
    report.levels = data.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate }));
  });
  hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => {
    report.live = data.details.live;
    for (const [id, dr] of Object.entries(data.details.dateRanges || {})) {
      report.dateRanges[id] = dateRange(dr);
    }
  });
  hls.on(Hls.Events.ERROR, (_e, data) => {
    const why = data.type + ": " + data.details + (data.error ? " (" + data.error.message + ")" : "");
    if (data.fatal) fail("hls.js fatal " + why);
    else report.warnings.push("hls.js " + why);
  });
  hls.loadSource(src);
  hls.attachMedia(video);
}

async function playShaka() {
  shaka.polyfill.installAll();
  if (!shaka.Player.isBrowserSupported()) return fail("shaka: browser not supported");
  const player = (window.shakaPlayer = new shaka.Player());
  await player.attach(video);
  player.addEventListener("error", (e) => fail("shaka " + e.detail.code + ": " + e.detail.message));
  try {
    await player.load(src);
  } catch (e) {
    return fail("shaka load " + e.code + ": " + e.message);
  }
  report.live = player.isLive();
  report.levels = player
    .getVariantTracks()
    .map((t) => ({ width: t.width, height: t.height, bitrate: t.bandwidth }));
}

function playNative() {
  video.src = src;
}

let lastTime = null;
function sample() {
  if (lastTime !== null && !video.paused) {
    const step = video.currentTime - lastTime;
    if (step > 0 && step < 1) report.played += step;
  }
  lastTime = video.currentTime;
  report.currentTime = video.currentTime;
  report.ended = video.ended;
  report.videoWidth = video.videoWidth;
  report.videoHeight = video.videoHeight;
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  if (q) report.frames = q.totalVideoFrames;
  // Live latency: the wall clock against the program date of what plays.
  if (report.live && window.hls && hls.playingDate && !video.paused) {
    report.latencies.push(Date.now() - hls.playingDate.getTime());
  }
}

video.addEventListener("error", () => {
  const e = video.error;
  fail("video error " + (e ? e.code + " " + e.message : "?"));
});
const engines = { hls: playHls, shaka: playShaka, native: playNative };
if (engines[engine]) {
  watchFirstFrame();
  watchCues();
  setInterval(sample, 200);
  engines[engine]();
  startPlaying();
}

function startPlaying() {
  // Before media is attached play() may reject: try again once it can play.
  video.play().catch(() => {
    video.addEventListener("canplay", () => video.play().catch((e) => fail("play: " + e)), { once: true });
  });
}
