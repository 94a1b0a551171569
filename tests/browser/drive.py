"""Drives Debian's Chromium with playwright for the browser tests (tests/browser.rs).

    drive.py '<json>'

The JSON names what to do; the answer, one JSON document on the last line of
stdout, is what the browser saw. The tests assert on it, so this file only
observes: it waits (bounded) for a condition and reports, whatever happened.

The pages of this folder (and the players from node_modules) are served from a
port of their own, so every read of the node is cross-origin, as from a shop's
page. Chromium is /usr/bin/chromium (TEST_CHROMIUM overrides); playwright never
downloads a browser here.
"""

import functools
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_pages():
    """This folder over HTTP on a free port of 127.0.0.1: the other origin."""
    handler = functools.partial(QuietHandler, directory=HERE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def page_url(origin, page, **query):
    query = {k: v for k, v in query.items() if v is not None}
    return f"{origin}/pages/{page}?{urllib.parse.urlencode(query)}"


def new_page(browser, log):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("console", lambda m: log.append(f"console.{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    page.on(
        "requestfailed",
        lambda r: log.append(f"requestfailed: {r.url} {r.failure}"),
    )
    return page


# What "played" means: enough media time, or the end, or a fatal error.
DONE = """
([min, ended]) => {
  const r = window.report;
  return r.errors.length > 0 || (ended ? r.ended : r.played >= min);
}
"""


def play(browser, origin, spec):
    """Plays one source; reports what `window.report` holds at the end."""
    log = []
    page = new_page(browser, log)
    started = time.monotonic()
    page.goto(page_url(origin, "play.html", engine=spec["engine"], src=spec["src"], vtt=spec.get("vtt"), debug=spec.get("debug")))
    timed_out = False
    try:
        page.wait_for_function(
            DONE,
            arg=[spec.get("min_time", 3.0), spec.get("until_ended", False)],
            timeout=spec.get("timeout_s", 60) * 1000,
            polling=100,
        )
    except Exception:  # playwright's TimeoutError: report what was seen
        timed_out = True
    report = page.evaluate("window.report")
    report["timed_out"] = timed_out
    report["wall_s"] = round(time.monotonic() - started, 3)
    report["log"] = log[-400:]
    page.close()
    return report


def fetch_range(browser, origin, url):
    """A cross-origin `Range` read by a page's script, as players make."""
    page = new_page(browser, [])
    page.goto(page_url(origin, "play.html", engine="none"))
    answer = page.evaluate(
        """async (url) => {
          try {
            // If-None-Match is not a safelisted header: the read needs a
            // preflight, as a player revalidating a range does.
            const res = await fetch(url, {headers: {Range: "bytes=0-99", "If-None-Match": '"stale"'}});
            const body = await res.arrayBuffer();
            return {status: res.status, bytes: body.byteLength,
                    contentRange: res.headers.get("Content-Range"),
                    acceptRanges: res.headers.get("Accept-Ranges"),
                    contentLength: res.headers.get("Content-Length")};
          } catch (e) {
            return {error: String(e)};
          }
        }""",
        url,
    )
    page.close()
    answer["url"] = url
    return answer


# The reference player's state, as a buyer sees it: the picture's box and
# every hotspot and card over it.
PLAYER_STATE = """
() => {
  const v = document.getElementById("video");
  const box = (el) => { const b = el.getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; };
  return {
    t: v.currentTime, ended: v.ended, width: v.videoWidth, height: v.videoHeight, video: box(v),
    spots: [...document.querySelectorAll("#layer a.hotspot")].map((a) => ({
      id: a.dataset.tagId, href: a.href, label: a.getAttribute("aria-label"), box: box(a)})),
    pins: [...document.querySelectorAll("#layer a.pin")].map((a) => ({
      id: a.dataset.pinId, href: a.href, text: a.innerText, box: box(a)})),
    status: document.getElementById("status").textContent,
  };
}
"""


def player_url(origin, spec):
    """The player's URL with its product links leading to this origin's
    product page."""
    product = f"{origin}/pages/product.html?id={{product_id}}"
    return spec["url"] + "&" + urllib.parse.urlencode({"product_url": product})


def player_vod(browser, origin, spec):
    """Watches a tagged job in the reference player, sampling its hotspots
    every 100 ms, then taps one card during its window."""
    log = []
    page = new_page(browser, log)
    page.goto(player_url(origin, spec))
    samples = []
    deadline = time.monotonic() + spec.get("timeout_s", 60)
    while time.monotonic() < deadline:
        state = page.evaluate(PLAYER_STATE)
        samples.append(state)
        if state["ended"] or state["t"] >= spec["until"]:
            break
        time.sleep(0.1)
    # Back into the window of the card to tap, paused there, as a buyer would.
    at = spec["click_at"]
    page.evaluate("(t) => { const v = document.getElementById('video'); v.pause(); v.currentTime = t; }", at)
    spot = page.locator(f"#layer a.hotspot[data-tag-id='{spec['click']}']")
    spot.wait_for(state="visible", timeout=10_000)
    before_click = page.evaluate(PLAYER_STATE)
    if spec.get("screenshot"):
        page.locator("#stage").screenshot(path=spec["screenshot"])
    href = spot.get_attribute("href")
    spot.click()
    page.wait_for_url(href, timeout=10_000)
    out = {"samples": samples, "before_click": before_click, "href": href, "landed": page.url, "log": log[-40:]}
    page.close()
    return out


def http_delete(url, token):
    req = urllib.request.Request(url, method="DELETE", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.status


def player_live(browser, origin, spec):
    """Watches a live stream in the reference player until the pinned card
    shows, removes the pin through the API, and waits for the card to go."""
    log = []
    page = new_page(browser, log)
    page.goto(player_url(origin, spec))
    card = page.locator(f"#layer a.pin[data-pin-id='{spec['pin']}']")
    started = time.monotonic()
    card.wait_for(state="visible", timeout=spec.get("timeout_s", 60) * 1000)
    if spec.get("screenshot"):
        page.locator("#stage").screenshot(path=spec["screenshot"])
    shown = {
        "after_s": round(time.monotonic() - started, 3),
        "state": page.evaluate(PLAYER_STATE),
        "sponsored_visible": card.locator(".sponsored").is_visible(),
        "sponsored_text": card.locator(".sponsored").all_inner_texts(),
    }
    status = http_delete(spec["unpin"], spec["token"])
    removed_at = time.monotonic()
    card.wait_for(state="detached", timeout=spec.get("timeout_s", 60) * 1000)
    out = {
        "shown": shown,
        "unpin_status": status,
        "gone_after_s": round(time.monotonic() - removed_at, 3),
        "state": page.evaluate(PLAYER_STATE),
        "log": log[-40:],
    }
    page.close()
    return out


PLAYED = """
async (video) => {
  video.muted = true;
  await video.play();
  const from = video.currentTime;
  await new Promise((done) => {
    const check = () => (video.currentTime - from >= 1 ? done() : setTimeout(check, 100));
    check();
  });
  return {from, to: video.currentTime, width: video.videoWidth};
}
"""


def submit_job(spec):
    """POSTs the job of `spec["submit"]` to the node, as the upload service
    would (the test does this, not the page), and answers its id."""
    request = urllib.request.Request(
        spec["submit"]["url"],
        data=json.dumps(spec["submit"]["body"]).encode(),
        headers={"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["id"]


def dashboard(browser, spec):
    """Signs in to the ops dashboard; once it shows its tables, has the job
    submitted and watches it to its end; opens it and plays its outputs,
    previews a live stream."""
    log = []
    page = new_page(browser, log)
    timeout = spec.get("timeout_s", 120) * 1000
    page.goto(spec["url"])
    page.fill("#token", spec["token"])
    page.click("#login button[type=submit]")
    page.locator(f"tr[data-stream-id='{spec['stream']}']").wait_for(state="visible", timeout=timeout)
    job_id = submit_job(spec)
    spec["job"] = job_id
    status = page.locator(f"tr[data-job-id='{job_id}'] td.status")
    seen = []
    deadline = time.monotonic() + timeout / 1000
    while time.monotonic() < deadline:
        text = status.all_inner_texts()
        if text and (not seen or seen[-1] != text[0]):
            seen.append(text[0])
        if text and text[0] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.1)
    page.click(f"tr[data-job-id='{spec['job']}']")
    detail = page.locator(f"#job-detail[data-job-id='{spec['job']}']")
    detail.wait_for(state="visible", timeout=timeout)
    posters = detail.locator("img[data-output-key]")
    posters.first.wait_for(state="visible", timeout=timeout)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#job-detail img')].every((i) => i.complete && i.naturalWidth > 0)",
        timeout=timeout,
    )
    images = page.evaluate(
        "() => [...document.querySelectorAll('#job-detail img')].map((i) => ({key: i.dataset.outputKey, width: i.naturalWidth}))"
    )
    played = {}
    for video in detail.locator("video[data-output-key]").element_handles():
        key = video.get_attribute("data-output-key")
        played[key] = page.evaluate(PLAYED, video)
    page.click(f"tr[data-stream-id='{spec['stream']}'] button.preview")
    preview = page.wait_for_selector("#preview video", state="visible", timeout=timeout)
    previewed = page.evaluate(PLAYED, preview)
    if spec.get("screenshot"):
        page.screenshot(path=spec["screenshot"], full_page=True)
    secret_in_page = page.evaluate("(t) => document.documentElement.outerHTML.includes(t)", spec["token"])
    # The token is typed once per browser session: a reload stays signed in.
    page.reload()
    page.locator("#session").wait_for(state="visible", timeout=10_000)
    still_signed_in = page.locator("#login").is_hidden()
    out = {
        "job": job_id,
        "statuses": seen,
        "images": images,
        "played": played,
        "preview": previewed,
        "secret_in_page": secret_in_page,
        "still_signed_in": still_signed_in,
        "log": log[-40:],
    }
    page.close()
    return out


def main():
    job = json.loads(sys.argv[1])
    server, origin = serve_pages()
    out = {"origin": origin, "plays": [], "ranges": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--autoplay-policy=no-user-gesture-required"],
        )
        out["browser"] = browser.version
        for spec in job.get("plays", []):
            out["plays"].append(play(browser, origin, spec))
        for url in job.get("ranges", []):
            out["ranges"].append(fetch_range(browser, origin, url))
        if "player_vod" in job:
            out["player_vod"] = player_vod(browser, origin, job["player_vod"])
        if "dashboard" in job:
            out["dashboard"] = dashboard(browser, job["dashboard"])
        if "player_live" in job:
            out["player_live"] = player_live(browser, origin, job["player_live"])
        browser.close()
    server.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
