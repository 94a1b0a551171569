// The reference shoppable player (see index.html for its parameters).
//
// VOD: the job burned its cards into the picture and published where and when
// each was drawn (tags.json: `start`, `end`, `rect` normalised to the frame).
// The player lays a link over each card while it is on screen.
//
// Live: nothing is burned in. Pins travel in the playlist as EXT-X-DATERANGE
// (class com.media-node.product-tag, X-TITLE, X-PRICE, X-SPONSORED,
// X-POS-X/Y/W); the player draws each card while the playing position is
// inside its dates, with a "Sponsored" label on paid placements.
"use strict";

const TAG_CLASS = "com.media-node.product-tag";
const params = new URLSearchParams(location.search);
const src = params.get("src");
const tagsUrl = params.get("tags");
const productUrl = params.get("product_url") || "https://shop.example/products/{product_id}";
const video = document.getElementById("video");
const layer = document.getElementById("layer");
const status = document.getElementById("status");

let tags = []; // VOD: from tags.json
let pins = new Map(); // live: id -> date range
let hls = null;

function link(productId) {
  return productUrl.replace("{product_id}", encodeURIComponent(productId));
}

// The picture's box inside the <video> element (object-fit: contain).
function pictureBox() {
  const vw = video.videoWidth;
  const vh = video.videoHeight;
  const ew = video.clientWidth;
  const eh = video.clientHeight;
  if (!vw || !vh) return null;
  const scale = Math.min(ew / vw, eh / vh);
  const w = vw * scale;
  const h = vh * scale;
  return { x: video.offsetLeft + (ew - w) / 2, y: video.offsetTop + (eh - h) / 2, w, h };
}

function place(el, box, x, y, w, h) {
  el.style.left = box.x + x * box.w + "px";
  el.style.top = box.y + y * box.h + "px";
  el.style.width = w * box.w + "px";
  if (h !== null) el.style.height = h * box.h + "px";
}

function hotspot(tag) {
  const a = document.createElement("a");
  a.className = "hotspot";
  a.href = link(tag.product_id);
  a.dataset.tagId = tag.id;
  const paid = tag.sponsored ? " (Sponsored)" : "";
  a.setAttribute("aria-label", `${tag.title}, ${tag.price.display}${paid}`);
  return a;
}

function card(pin) {
  const a = document.createElement("a");
  a.className = "pin";
  a.href = link(pin.productId);
  a.dataset.pinId = pin.id;
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = pin.title;
  const price = document.createElement("span");
  price.className = "price";
  price.textContent = pin.price;
  a.append(title, price);
  if (pin.sponsored) {
    const label = document.createElement("span");
    label.className = "sponsored";
    label.textContent = "Sponsored";
    a.append(label);
  }
  return a;
}

// Keeps one element per visible item in the layer, keyed by `key`.
function sync(visible, key, make, position) {
  const box = pictureBox();
  const shown = new Map([...layer.children].filter((el) => el.dataset.key).map((el) => [el.dataset.key, el]));
  for (const item of box ? visible : []) {
    const k = key(item);
    let el = shown.get(k);
    if (!el) {
      el = make(item);
      el.dataset.key = k;
      layer.append(el);
    }
    position(el, box, item);
    shown.delete(k);
  }
  for (const el of shown.values()) el.remove();
}

function render() {
  const t = video.currentTime;
  const onScreen = tags.filter((tag) => tag.start <= t && t < tag.end);
  const now = hls && hls.playingDate ? hls.playingDate.getTime() : null;
  const pinned =
    now === null ? [] : [...pins.values()].filter((p) => p.start <= now && (p.end === null || now < p.end));
  sync(
    [...onScreen.map((tag) => ({ kind: "tag", tag })), ...pinned.map((pin) => ({ kind: "pin", pin }))],
    (item) => (item.kind === "tag" ? "tag:" + item.tag.id : "pin:" + item.pin.id),
    (item) => (item.kind === "tag" ? hotspot(item.tag) : card(item.pin)),
    (el, box, item) => {
      if (item.kind === "tag") {
        const r = item.tag.rect;
        place(el, box, r.x, r.y, r.w, r.h);
      } else {
        place(el, box, item.pin.x, item.pin.y, item.pin.w, null);
      }
    },
  );
  requestAnimationFrame(render);
}

// A pin's date range as the player needs it.
function pinOf(dr) {
  const a = dr.attr;
  const end = dr.endDate ? dr.endDate.getTime() : null;
  return {
    id: dr.id,
    productId: a["X-PRODUCT-ID"],
    title: a["X-TITLE"],
    price: a["X-PRICE"],
    sponsored: a["X-SPONSORED"] === "YES",
    x: Number(a["X-POS-X"]) || 0,
    y: Number(a["X-POS-Y"]) || 0,
    w: Number(a["X-POS-W"]) || 0.4,
    start: dr.startDate.getTime(),
    end: end !== null && Number.isFinite(end) ? end : null,
  };
}

// Live pins from the playlist; a pin gone from it has ended.
function readPins(details) {
  if (!details.live) return;
  const next = new Map();
  for (const dr of Object.values(details.dateRanges || {})) {
    if (dr.class === TAG_CLASS && dr.attr["X-TITLE"] !== undefined) next.set(dr.id, pinOf(dr));
  }
  pins = next;
}

async function loadTags() {
  if (!tagsUrl) return;
  const res = await fetch(tagsUrl);
  if (!res.ok) throw new Error(`tags: HTTP ${res.status}`);
  tags = (await res.json()).tags || [];
}

function play() {
  if (!src) {
    status.textContent = "No ?src= playlist given.";
    return;
  }
  if (window.Hls && Hls.isSupported()) {
    hls = new Hls();
    hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => readPins(data.details));
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (data.fatal) status.textContent = `Playback failed: ${data.details}`;
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    // Safari plays HLS itself (live pins then need hls.js's date ranges).
    video.src = src;
  } else {
    status.textContent = "This browser cannot play HLS.";
    return;
  }
  loadTags().catch((e) => (status.textContent = String(e)));
  requestAnimationFrame(render);
}

play();
