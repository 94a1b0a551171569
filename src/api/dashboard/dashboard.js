// The ops dashboard: readiness, queue, jobs with live progress, failures, a
// job's outputs (posters shown, renditions playable), live streams with a
// preview. Everything it shows comes from the node's own API; text goes into
// the page as text (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;

// h("td", {class: "x"}, "text", child, ...): an element with text and children.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const token = () => sessionStorage.getItem("media-node-token");
const media = (key) => "/media/" + key.split("/").map(encodeURIComponent).join("/");

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (res.status === 401) {
    signOut("The node refused this token.");
    throw new Error("unauthorized");
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// --- session: the token is typed once per browser session ------------------

function showSession() {
  const signedIn = Boolean(token());
  $("login").hidden = signedIn;
  $("session").hidden = !signedIn;
  $("signed-in").hidden = !signedIn;
}

function signOut(why) {
  sessionStorage.removeItem("media-node-token");
  $("auth-error").textContent = why || "";
  showSession();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("media-node-token", $("token").value.trim());
  $("token").value = "";
  $("auth-error").textContent = "";
  showSession();
  refresh();
});
$("logout").addEventListener("click", () => signOut());
$("status").addEventListener("change", () => refresh());

// --- readiness and queue (no token) ----------------------------------------

async function refreshReadiness() {
  try {
    const r = await (await fetch("/readyz")).json();
    $("ready").replaceChildren(
      ...r.checks.map((c) => h("li", { class: c.ok ? "ok" : "bad" }, c.name, c.error ? ": " + c.error : "")),
    );
  } catch (e) {
    $("ready").replaceChildren(h("li", { class: "bad" }, "node unreachable"));
  }
}

// A few gauges out of the Prometheus text.
function gauges(text) {
  const out = { jobs: {} };
  for (const line of text.split("\n")) {
    let m = line.match(/^media_node_queue_depth (\S+)/);
    if (m) out.queue = Number(m[1]);
    m = line.match(/^media_node_jobs_running (\S+)/);
    if (m) out.running = Number(m[1]);
    m = line.match(/^media_node_jobs\{status="(\w+)"\} (\S+)/);
    if (m) out.jobs[m[1]] = Number(m[2]);
  }
  return out;
}

async function refreshQueue() {
  try {
    const g = gauges(await (await fetch("/metrics")).text());
    const rows = [["queue depth", g.queue], ["running here", g.running], ...Object.entries(g.jobs)];
    $("queue").replaceChildren(
      ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { count: k } }, v ?? "?")]),
    );
  } catch (e) {
    $("queue").replaceChildren(h("dt", {}, "metrics unreachable"));
  }
}

// --- jobs --------------------------------------------------------------------

let selectedJob = null;
let shownDetail = null; // what the detail panel renders, to keep players playing

const bar = (p) => h("span", { class: "bar" }, h("span", { style: `width:${p}%` }));

function jobRow(j) {
  return h(
    "tr",
    { dataset: { jobId: j.id }, class: j.id === selectedJob ? "selected" : null, onclick: () => openJob(j.id) },
    h("td", {}, h("code", {}, j.id)),
    h("td", { class: "status " + j.status }, j.status, j.error ? ` (${j.error.code})` : ""),
    h("td", {}, bar(j.progress), ` ${j.progress}%`),
    h("td", {}, j.attempts),
    h("td", {}, new Date(j.created_at).toLocaleString()),
  );
}

async function refreshJobs() {
  const status = $("status").value;
  const list = await api("/v1/jobs?limit=20" + (status ? "&status=" + status : ""));
  $("jobs").replaceChildren(...list.jobs.map(jobRow));
  if (!list.jobs.length) $("jobs").replaceChildren(h("tr", {}, h("td", { colspan: 5 }, "no jobs")));
  const failed = await api("/v1/jobs?limit=8&status=failed");
  $("failures").replaceChildren(
    ...failed.jobs.map((j) =>
      h(
        "li",
        { dataset: { jobId: j.id } },
        h("code", { class: "bad" }, j.error ? j.error.code : "failed"),
        " ",
        j.error ? j.error.message : "",
        " ",
        h("a", { href: "#", onclick: (e) => (e.preventDefault(), openJob(j.id)) }, "open"),
      ),
    ),
  );
  if (!failed.jobs.length) $("failures").replaceChildren(h("li", { class: "ok" }, "none"));
}

function openJob(id) {
  selectedJob = id;
  shownDetail = null;
  refreshDetail();
}

// One output: pictures shown, MP4s and HLS playable, the rest as links.
function outputView(o) {
  const key = o.key;
  const size = o.width ? `${o.width}×${o.height}` : "";
  const caption = h("figcaption", {}, [o.kind, o.rung, size].filter(Boolean).join(" · "), " · ", h("a", { href: media(key) }, key));
  if (["poster", "thumbnail", "storyboard"].includes(o.kind)) {
    return h("figure", {}, h("img", { src: media(key), alt: o.kind, loading: "lazy", dataset: { outputKey: key } }), caption);
  }
  if (o.kind === "mp4") {
    return h("figure", {}, h("video", { src: media(key), controls: true, muted: true, preload: "metadata", dataset: { outputKey: key } }), caption);
  }
  if (o.kind === "hls") {
    const video = h("video", { controls: true, muted: true, dataset: { outputKey: key } });
    attachHls(video, media(key), false);
    return h("figure", {}, video, caption);
  }
  return h("div", { class: "links" }, caption);
}

function attachHls(video, url, autoplay) {
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls();
    hls.loadSource(url);
    hls.attachMedia(video);
    video.hlsPlayer = hls;
  } else {
    video.src = url;
  }
  if (autoplay) video.play().catch(() => {});
}

async function refreshDetail() {
  if (!selectedJob) return;
  const j = await api("/v1/jobs/" + encodeURIComponent(selectedJob));
  const outputs = (j.result && j.result.outputs) || [];
  const panel = $("job-detail");
  const summary = JSON.stringify([j.id, j.status, j.progress, j.attempts, j.error, outputs]);
  if (summary === shownDetail) return;
  shownDetail = summary;
  for (const v of panel.querySelectorAll("video")) if (v.hlsPlayer) v.hlsPlayer.destroy();
  panel.hidden = false;
  panel.dataset.jobId = j.id;
  panel.replaceChildren(
    h("h2", {}, "Job ", h("code", {}, j.id), h("button", { type: "button", onclick: () => closeJob() }, "close")),
    h(
      "p",
      {},
      h("span", { class: "status " + j.status }, j.status),
      " ",
      bar(j.progress),
      ` ${j.progress}% · attempt ${j.attempts} of ${j.max_attempts} · input `,
      h("code", {}, j.spec.input ? j.spec.input.key : ""),
    ),
    j.error ? h("p", { class: "bad" }, h("code", {}, j.error.code), " ", j.error.message) : "",
    outputs.length ? h("div", { class: "outputs" }, outputs.map(outputView)) : h("p", {}, "no outputs yet"),
  );
}

function closeJob() {
  selectedJob = null;
  shownDetail = null;
  $("job-detail").hidden = true;
}

// --- live streams ------------------------------------------------------------

let previewing = null;

function inputText(i) {
  if (!i) return "";
  return [i.video_codec, i.audio_codec, i.width && `${i.width}×${i.height}`, i.frame_rate && `${Math.round(i.frame_rate * 100) / 100} fps`, i.bitrate_kbps && `${i.bitrate_kbps} kb/s`]
    .filter(Boolean)
    .join(" ");
}

function streamRow(s) {
  const url = s.state === "ended" ? (s.replay_ready ? s.replay_url : null) : s.state === "live" ? s.playlist_url : null;
  return h(
    "tr",
    { dataset: { streamId: s.id } },
    h("td", {}, s.name),
    h("td", { class: "status " + s.state }, s.state),
    h("td", {}, inputText(s.input)),
    h("td", {}, s.segments_uploaded),
    h("td", { class: s.segments_dropped ? "bad" : null }, s.segments_dropped),
    h("td", { class: s.upload_lag_ms > 2000 ? "bad" : null }, `${s.upload_lag_ms} ms`),
    h("td", {}, `${(s.spool_bytes / 1048576).toFixed(1)} MiB`),
    h("td", {}, url ? h("button", { type: "button", class: "preview", onclick: () => preview(s, url) }, s.state === "ended" ? "replay" : "preview") : ""),
  );
}

function preview(s, url) {
  const video = $("preview").querySelector("video");
  if (video.hlsPlayer) video.hlsPlayer.destroy();
  previewing = s.id;
  $("preview").hidden = false;
  $("preview").dataset.streamId = s.id;
  $("preview-title").textContent = `${s.name} (${s.state})`;
  attachHls(video, url, true);
}

async function refreshStreams() {
  const list = await api("/v1/live/streams?limit=20");
  $("streams").replaceChildren(...list.streams.map(streamRow));
  if (!list.streams.length) $("streams").replaceChildren(h("tr", {}, h("td", { colspan: 8 }, "no streams")));
}

// --- refresh loop ------------------------------------------------------------

async function refresh() {
  await Promise.all([refreshReadiness(), refreshQueue()]);
  if (!token()) return;
  try {
    await Promise.all([refreshJobs(), refreshStreams(), refreshDetail()]);
  } catch (e) {
    if (e.message !== "unauthorized") $("auth-error").textContent = String(e.message);
  }
}

showSession();
refresh();
setInterval(refresh, REFRESH_MS);
