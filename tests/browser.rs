//! Playback in a real browser: Debian's Chromium, driven by playwright
//! (`tests/browser/drive.py`), plays what a real node published with stock
//! hls.js and Shaka Player (with mux.js) from npm (`tests/browser/package-lock.json`)
//! and with the `<video>` element alone. The pages are served from another
//! port than the node's, so every read is cross-origin, as from a shop's page.
//!
//! `scripts/test` installs all of it: `TEST_VENV` names the Python venv with
//! playwright, and `npm ci` fills `tests/browser/node_modules`. Times to first
//! frame and live latencies are logged (to `target/tmp/browser/timings.txt`),
//! never asserted.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::live::{
    CLIP, create_stream, finished, ladder_profile, publish, publish_with_keyframes, wait_master,
    wait_replay, wait_state,
};
use common::{Node, eventually};
use serde_json::{Value, json};

const JOB_LIMIT: Duration = Duration::from_secs(600);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `drive.py` with `job`; its answer is what the browser saw.
async fn drive(job: Value) -> Value {
    let venv = std::env::var("TEST_VENV").unwrap_or_else(|_| {
        panic!(
            "TEST_VENV is not set: run scripts/test, which installs Chromium, the \
             Python venv with playwright (.tools/venv) and the players (npm ci in \
             tests/browser), or set TEST_VENV to such a venv"
        )
    });
    assert!(
        browser_dir().join("node_modules/hls.js").is_dir(),
        "no tests/browser/node_modules: run `npm ci --prefix tests/browser` (scripts/test does)"
    );
    let python = Path::new(&venv).join("bin/python");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(browser_dir().join("drive.py"))
            .arg(job.to_string())
            .output()
            .expect("run drive.py")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drive.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("drive.py answered {e}: {stdout}"))
}

/// Where the browser tests leave screenshots and timings for people to look
/// at: `target/tmp/browser/`.
fn artifact(name: &str) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).display().to_string()
}

/// Appends a line to the timings log (and prints it).
fn log_timing(line: &str) {
    println!("browser: {line}");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(artifact("timings.txt"))
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// A play that went well: no error, no time-out, `min` media seconds played
/// with pictures decoded. Logs its time to first frame (and live latency).
fn assert_played(play: &Value, min: f64, what: &str) {
    let engine = play["engine"].as_str().unwrap_or("?");
    assert_eq!(play["errors"], json!([]), "{engine} {what}: {play:#}");
    assert_eq!(
        play["timed_out"], false,
        "{engine} {what} timed out: {play:#}"
    );
    let played = play["played"].as_f64().unwrap();
    assert!(played >= min, "{engine} {what} played {played} s: {play:#}");
    // At 30 fps, most of the pictures of what played were decoded.
    let frames = play["frames"].as_f64().unwrap();
    assert!(
        frames >= played * 15.0,
        "{engine} {what}: {frames} frames in {played} s: {play:#}"
    );
    assert!(play["videoWidth"].as_u64().unwrap() > 0, "{play:#}");
    let ttff = play["firstFrameMs"].as_f64().unwrap_or(f64::NAN);
    let latencies: Vec<f64> = play["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let latency = median(&latencies)
        .map(|ms| format!(", live latency median {ms:.0} ms"))
        .unwrap_or_default();
    log_timing(&format!(
        "{engine} {what}: first frame after {ttff:.0} ms{latency}"
    ));
}

/// `(width, height)` of each level a player listed, sorted.
fn level_sizes(play: &Value) -> Vec<(u64, u64)> {
    let mut sizes: Vec<(u64, u64)> = play["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect();
    sizes.sort();
    sizes
}

fn outputs<'a>(job: &'a Value, kind: &str) -> Vec<&'a Value> {
    job["result"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == kind)
        .collect()
}

fn tag(id: &str, sponsored: bool, window: (f64, f64), at: (f64, f64)) -> Value {
    json!({
        "id": id, "product_id": format!("p-{id}"), "title": format!("Product {id}"),
        "price": {"amount": "19.99", "currency": "USD"}, "sponsored": sponsored,
        "start": window.0, "end": window.1,
        "position": {"x": at.0, "y": at.1, "width": 0.35}
    })
}

/// The ladder, each MP4 and the tags of one tagged job, in hls.js, Shaka
/// Player and `<video>`, from a page on another origin; a cross-origin
/// `Range` read with a preflight.
#[tokio::test]
async fn vod_outputs_and_their_tags_play_in_browsers_from_another_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = common::media::test_clip(tmp.path(), "clip.mp4", "1280x720", 8);
    let node = Node::start().await;
    node.upload("in/clip.mp4", std::fs::read(&clip).unwrap())
        .await;
    let tags = json!([
        tag("blender", true, (1.0, 3.5), (0.05, 0.6)),
        tag("mug", false, (4.0, 6.5), (0.55, 0.1)),
    ]);
    let id = node
        .submit(&json!({
            "input": {"key": "in/clip.mp4"},
            "output_prefix": "shop",
            "renditions": {"formats": ["mp4", "hls"]},
            "tags": tags,
        }))
        .await;
    let job = node.wait_done(&id, JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let media = |o: &Value| node.url(&format!("/media/{}", o["key"].as_str().unwrap()));
    let master = media(outputs(&job, "hls")[0]);
    let vtt = media(outputs(&job, "tags_vtt")[0]);
    let mp4s = outputs(&job, "mp4");
    // 720p, 480p and 360p: the default ladder, never above the source.
    assert_eq!(mp4s.len(), 3, "{job}");
    let mut rungs: Vec<(u64, u64)> = mp4s
        .iter()
        .map(|o| (o["width"].as_u64().unwrap(), o["height"].as_u64().unwrap()))
        .collect();
    rungs.sort();

    let mut plays = vec![
        // Past the second tag's start, so both cues fire.
        json!({"engine": "hls", "src": master, "vtt": vtt, "min_time": 5.0}),
        json!({"engine": "shaka", "src": master, "min_time": 3.0}),
    ];
    for mp4 in &mp4s {
        plays.push(json!({"engine": "native", "src": media(mp4), "min_time": 3.0}));
    }
    let seen = drive(json!({"plays": plays, "ranges": [media(mp4s[0])]})).await;
    assert!(
        !node.base.starts_with(seen["origin"].as_str().unwrap()),
        "the page must be on another origin: {}",
        seen["origin"]
    );
    let plays = seen["plays"].as_array().unwrap();
    assert_played(&plays[0], 5.0, "VOD master");
    assert_eq!(level_sizes(&plays[0]), rungs, "hls.js levels");
    assert_played(&plays[1], 3.0, "VOD master");
    assert_eq!(level_sizes(&plays[1]), rungs, "Shaka variants");
    for (play, mp4) in plays[2..].iter().zip(&mp4s) {
        assert_played(play, 3.0, mp4["key"].as_str().unwrap());
        assert_eq!(
            (play["videoWidth"].as_u64(), play["videoHeight"].as_u64()),
            (mp4["width"].as_u64(), mp4["height"].as_u64()),
        );
    }
    check_tags(&node, &job, &plays[0]).await;

    let range = &seen["ranges"][0];
    assert_eq!(range["status"], 206, "{range}");
    assert_eq!(range["bytes"], 100, "{range}");
    assert!(
        range["contentRange"]
            .as_str()
            .is_some_and(|r| r.starts_with("bytes 0-99/")),
        "Content-Range must be readable cross-origin: {range}"
    );
    assert_eq!(range["acceptRanges"], "bytes", "{range}");
    // The read sent a header outside the safelist: Chromium asked first.
    let metrics = node.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("media_node_http_requests_total")
                && l.contains("route=\"/media/{*key}\"")
                && l.contains("method=\"OPTIONS\"")
                && l.contains("status=\"200\"")),
        "no preflight answered:\n{metrics}"
    );
}

/// Each tag's WebVTT cue fired at its start, and hls.js read each tag's
/// `EXT-X-DATERANGE` with the sidecar's product id, rectangle and disclosure.
async fn check_tags(node: &Node, job: &Value, play: &Value) {
    let sidecar: Value = node
        .get(&format!(
            "/media/{}",
            outputs(job, "tags_json")[0]["key"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    let placed = sidecar["tags"].as_array().unwrap();
    let cues = play["cues"].as_array().unwrap();
    assert_eq!(cues.len(), placed.len(), "{play:#}");
    for tag in placed {
        let id = tag["id"].as_str().unwrap();
        let cue = cues
            .iter()
            .find(|c| c["id"] == format!("tag-{id}"))
            .unwrap_or_else(|| panic!("no cue for {id}: {play:#}"));
        let start = tag["start"].as_f64().unwrap();
        let at = cue["at"].as_f64().unwrap();
        // cuechange comes with the media clock's updates (every 250 ms at most).
        assert!(
            (start - 0.05..start + 0.5).contains(&at),
            "cue {id} fired at {at} s, tag starts at {start} s"
        );
        assert_eq!(cue["payload"]["product_id"], tag["product_id"]);
        assert_eq!(cue["payload"]["rect"], tag["rect"]);

        let range = &play["dateRanges"][id];
        assert_eq!(range["class"], "com.media-node.product-tag", "{play:#}");
        assert_eq!(range["productId"], tag["product_id"], "{range}");
        let sponsored = if tag["sponsored"] == true {
            "YES"
        } else {
            "NO"
        };
        assert_eq!(range["sponsored"], sponsored, "{range}");
        let rect = &tag["rect"];
        assert_eq!(
            range["rect"],
            json!([rect["x"], rect["y"], rect["w"], rect["h"]]),
            "{range}"
        );
        let duration = tag["end"].as_f64().unwrap() - start;
        assert!(
            (range["duration"].as_f64().unwrap() - duration).abs() < 0.01,
            "{range}"
        );
    }
}

/// A ladder stream from a publisher with 2 s keyframes: hls.js and Shaka
/// play it while live with every rendition as a level, and the replay after.
#[tokio::test]
async fn a_live_ladder_plays_while_live_and_its_replay_after() {
    let tmp = tempfile::tempdir().unwrap();
    let pipelines = ladder_profile(tmp.path());
    keyframes_only(&pipelines, "ladder");
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", pipelines)
        .start()
        .await;
    let created = create_stream(&node, "ladder").await;
    let id = created["id"].as_str().unwrap().to_string();
    let master = created["playlist_url"].as_str().unwrap().to_string();
    let publisher = publish_with_keyframes(created["rtmp_url"].as_str().unwrap(), 40, 2);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    wait_master(&node, &master, 3).await;
    wait_segments(&node, &master.replace("index.m3u8", "144p/index.m3u8"), 3).await;

    let seen = drive(json!({"plays": [
        {"engine": "hls", "src": master, "min_time": 3.0},
        {"engine": "shaka", "src": master, "min_time": 3.0},
    ]}))
    .await;
    let live = stream_state(&node, &id).await;
    assert_eq!(
        live, "live",
        "the stream ended before the players were done"
    );
    for play in seen["plays"].as_array().unwrap() {
        assert_played(play, 3.0, "live ladder");
        assert_eq!(play["live"], true, "{play:#}");
        assert_eq!(
            level_sizes(play),
            [(256, 144), (426, 240), (640, 360)],
            "{play:#}"
        );
    }

    let (ok, err) = finished(publisher, Duration::from_secs(90)).await;
    assert!(ok, "publisher failed: {err}");
    let ended = wait_replay(&node, &id, Duration::from_secs(60)).await;
    let replay = ended["replay_url"].as_str().unwrap();
    let seen = drive(json!({"plays": [{"engine": "hls", "src": replay, "min_time": 3.0}]})).await;
    let play = &seen["plays"][0];
    assert_played(play, 3.0, "live replay");
    assert_eq!(play["live"], false, "{play:#}");
    assert_eq!(level_sizes(play).len(), 3, "{play:#}");
}

/// The built-in `default` profile relays a publisher whose keyframes are 8 s
/// apart (OBS's "auto") as it comes: hls.js can join it. Segments cut between
/// keyframes made hls.js fail with `bufferAppendError` on joining.
#[tokio::test]
async fn a_publisher_with_far_apart_keyframes_plays_on_the_default_profile() {
    let node = Node::start().await;
    let created = create_stream(&node, "default").await;
    let id = created["id"].as_str().unwrap().to_string();
    let playlist = created["playlist_url"].as_str().unwrap().to_string();
    let mut publisher = publish(created["rtmp_url"].as_str().unwrap(), 60);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    wait_segments(&node, &playlist, 2).await;
    let seen = drive(json!({"plays": [{"engine": "hls", "src": playlist, "min_time": 3.0}]})).await;
    let play = &seen["plays"][0];
    assert_played(
        play,
        3.0,
        &format!("live default profile ({CLIP} as published)"),
    );
    assert_eq!(play["live"], true, "{play:#}");
    publisher.kill().unwrap();
    publisher.wait().unwrap();
}

/// A node with the `quick` profile cutting on keyframes only, and a stream on
/// it live with two segments out, from a publisher with 2 s keyframes
/// (running for up to 90 s): `(node, the created stream, the publisher)`.
async fn live_on_quick(dir: &Path) -> (Node, Value, std::process::Child) {
    let pipelines = common::live::quick_profile(dir, 2.0);
    keyframes_only(&pipelines, "quick");
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", pipelines)
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let publisher = publish_with_keyframes(created["rtmp_url"].as_str().unwrap(), 90, 2);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    wait_segments(&node, created["playlist_url"].as_str().unwrap(), 2).await;
    (node, created, publisher)
}

/// Makes profile `name` of `pipelines` cut on keyframes only.
fn keyframes_only(pipelines: &str, name: &str) {
    let path = Path::new(pipelines).join(format!("live/{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("max_segment_s = 3.0"), "{text}");
    std::fs::write(
        &path,
        text.replace("max_segment_s = 3.0", "max_segment_s = 0.0"),
    )
    .unwrap();
}

async fn stream_state(node: &Node, id: &str) -> String {
    common::live::stream(node, id).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until the media playlist at `url` lists `n` segments.
async fn wait_segments(node: &Node, url: &str, n: usize) {
    eventually(
        Duration::from_secs(60),
        &format!("{n} segments in {url}"),
        || async {
            let res = node.client.get(url).send().await.ok()?;
            let text = res.text().await.ok()?;
            (text.lines().filter(|l| l.starts_with("#EXTINF")).count() >= n).then_some(())
        },
    )
    .await
}

/// `[x, y, w, h]` of a box the page reported.
fn rect4(v: &Value) -> [f64; 4] {
    let a = v.as_array().unwrap();
    [0, 1, 2, 3].map(|i| a[i].as_f64().unwrap())
}

/// Where the reference player must lay a tag's hotspot: its normalised
/// rectangle on the picture, which `object-fit: contain` centres in the
/// `<video>` element's box.
fn expected_box(state: &Value, rect: &Value) -> [f64; 4] {
    let [vx, vy, vw, vh] = rect4(&state["video"]);
    let (w, h) = (
        state["width"].as_f64().unwrap(),
        state["height"].as_f64().unwrap(),
    );
    let scale = (vw / w).min(vh / h);
    let (pw, ph) = (w * scale, h * scale);
    let (px, py) = (vx + (vw - pw) / 2.0, vy + (vh - ph) / 2.0);
    let r = |k: &str| rect[k].as_f64().unwrap();
    [px + r("x") * pw, py + r("y") * ph, r("w") * pw, r("h") * ph]
}

/// The reference player, served by the node, lays a link over each burned-in
/// card exactly where and while the sidecar says, none outside the windows,
/// and tapping one leads to its product.
#[tokio::test]
async fn the_reference_player_links_each_card_during_its_window() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = common::media::test_clip(tmp.path(), "clip.mp4", "640x360", 8);
    let node = Node::start().await;
    node.upload("in/clip.mp4", std::fs::read(&clip).unwrap())
        .await;
    let id = node
        .submit(&json!({
            "input": {"key": "in/clip.mp4"},
            "output_prefix": "shop",
            "renditions": {"formats": ["hls"]},
            "tags": [
                tag("blender", true, (1.0, 3.5), (0.05, 0.6)),
                tag("mug", false, (4.0, 6.5), (0.55, 0.1)),
            ],
        }))
        .await;
    let job = node.wait_done(&id, JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let key = |kind: &str| outputs(&job, kind)[0]["key"].as_str().unwrap().to_string();
    let sidecar: Value = node
        .get(&format!("/media/{}", key("tags_json")))
        .await
        .json()
        .await
        .unwrap();
    let placed = sidecar["tags"].as_array().unwrap().clone();
    let url = node.url(&format!(
        "/player?src=/media/{}&tags=/media/{}",
        key("hls"),
        key("tags_json")
    ));
    let seen = drive(json!({"player_vod": {
        "url": url, "until": 7.0, "click": "blender", "click_at": 2.0,
        "screenshot": artifact("player-vod.png"),
    }}))
    .await;
    let vod = &seen["player_vod"];
    let samples = vod["samples"].as_array().unwrap();
    let (mut inside, mut outside) = (0, 0);
    for s in samples.iter().filter(|s| s["t"].as_f64().unwrap() > 0.0) {
        let t = s["t"].as_f64().unwrap();
        let spots = s["spots"].as_array().unwrap();
        for tag in &placed {
            let (start, end) = (tag["start"].as_f64().unwrap(), tag["end"].as_f64().unwrap());
            let spot = spots.iter().find(|p| p["id"] == tag["id"]);
            // 0.1 s either side of a boundary: a sample and the player's
            // last frame may straddle it.
            if (start + 0.1..end - 0.1).contains(&t) {
                let spot = spot.unwrap_or_else(|| panic!("no hotspot for {tag} at {t}: {s}"));
                let want = expected_box(s, &tag["rect"]);
                let got = rect4(&spot["box"]);
                for i in 0..4 {
                    assert!(
                        (want[i] - got[i]).abs() < 1.5,
                        "{tag} at {t}: {got:?} vs {want:?}"
                    );
                }
                inside += 1;
            } else if !(start - 0.1..end + 0.1).contains(&t) {
                assert!(
                    spot.is_none(),
                    "hotspot {} outside its window at {t}: {s}",
                    tag["id"]
                );
                outside += 1;
            }
        }
    }
    assert!(
        inside >= 20 && outside >= 20,
        "too few samples: {inside} / {outside}: {vod:#}"
    );
    let before = &vod["before_click"]["spots"][0];
    let label = before["label"].as_str().unwrap();
    assert_eq!(label, "Product blender, $19.99 (Sponsored)", "{before}");
    let product = format!(
        "{}/pages/product.html?id=p-blender",
        seen["origin"].as_str().unwrap()
    );
    assert_eq!(vod["href"], product.as_str(), "{vod:#}");
    assert_eq!(vod["landed"], product.as_str(), "{vod:#}");
}

/// On a live stream nothing is burned in: the reference player draws a pinned
/// product's card, with a visible "Sponsored" label for a paid placement, and
/// takes it away when the pin is removed.
#[tokio::test]
async fn the_reference_player_draws_live_pins_with_their_disclosure() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, created, mut publisher) = live_on_quick(tmp.path()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let res = node
        .client
        .post(node.url(&format!("/v1/live/streams/{id}/pins")))
        .bearer_auth(common::TOKEN)
        .json(&json!({
            "id": "pin-1", "product_id": "p-42", "title": "Blender Pro",
            "price": {"amount": "49.99", "currency": "USD"}, "sponsored": true,
            "position": {"x": 0.05, "y": 0.6},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let url = node.url(&format!(
        "/player?src=/media/{}",
        created["playlist_key"].as_str().unwrap()
    ));
    let seen = drive(json!({"player_live": {
        "url": url, "pin": "pin-1", "timeout_s": 60,
        "unpin": node.url(&format!("/v1/live/streams/{id}/pins/pin-1")),
        "token": common::TOKEN,
        "screenshot": artifact("player-live.png"),
    }}))
    .await;
    let live = &seen["player_live"];
    let shown = &live["shown"];
    assert_eq!(shown["sponsored_visible"], true, "{live:#}");
    assert_eq!(shown["sponsored_text"], json!(["Sponsored"]), "{live:#}");
    let card = &shown["state"]["pins"][0];
    let text = card["text"].as_str().unwrap();
    assert!(
        text.contains("Blender Pro") && text.contains("$49.99"),
        "{card}"
    );
    let product = format!(
        "{}/pages/product.html?id=p-42",
        seen["origin"].as_str().unwrap()
    );
    assert_eq!(card["href"], product.as_str(), "{card}");
    assert!(live["unpin_status"].as_u64().unwrap() < 300, "{live:#}");
    assert_eq!(live["state"]["pins"], json!([]), "{live:#}");
    log_timing(&format!(
        "reference player: live pin shown {} s after the page opened, gone {} s after its removal",
        shown["after_s"], live["gone_after_s"]
    ));
    publisher.kill().unwrap();
    publisher.wait().unwrap();
}

/// The player's vendored hls.js is the very file of the version the lockfile
/// pins (the one the browser tests play with).
#[test]
fn the_vendored_hls_js_is_the_pinned_package() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pinned = browser_dir().join("node_modules/hls.js/dist/hls.min.js");
    let pinned = std::fs::read(&pinned).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `npm ci --prefix tests/browser`)",
            pinned.display()
        )
    });
    let vendored = std::fs::read(root.join("examples/player/vendor/hls.min.js")).unwrap();
    assert!(
        pinned == vendored,
        "examples/player/vendor/hls.min.js differs from the pinned hls.js: copy \
         tests/browser/node_modules/hls.js/dist/hls.min.js there"
    );
}

/// The ops dashboard: signed in once, it shows a submitted job going to
/// `succeeded`, opens it with its poster shown and its renditions playing,
/// and previews a live stream. Leaves a screenshot in target/tmp/browser/.
#[tokio::test]
async fn the_dashboard_follows_a_job_and_previews_a_live_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, created, mut publisher) = live_on_quick(tmp.path()).await;
    let stream_id = created["id"].as_str().unwrap().to_string();

    let clip = common::media::test_clip(tmp.path(), "clip.mp4", "640x360", 6);
    node.upload("in/clip.mp4", std::fs::read(&clip).unwrap())
        .await;
    // drive.py submits the job once the dashboard shows its tables, so the
    // page sees it before it ends: the dashboard refreshes every 2 s, and the
    // job first runs 6 s doing nothing (a test-support behaviour) before its
    // real work, which alone can take under 2 s.
    let seen = drive(json!({"dashboard": {
        "url": node.url("/"), "token": common::TOKEN,
        "submit": {"url": node.url("/v1/jobs"), "body": {
            "input": {"key": "in/clip.mp4"},
            "output_prefix": "dash",
            "renditions": {"formats": ["mp4", "hls"]},
            "thumbnails": {"times": ["auto"], "widths": [320], "formats": ["jpeg"]},
            "test": {"sleep_ms": 6000},
        }},
        "stream": stream_id,
        "screenshot": artifact("dashboard.png"),
    }}))
    .await;
    let dash = &seen["dashboard"];
    let statuses: Vec<&str> = dash["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{dash:#}");
    assert!(
        statuses.len() >= 2 && ["queued", "running"].contains(&statuses[0]),
        "the page never showed the job before it ended: {dash:#}"
    );
    let job_id = dash["job"].as_str().unwrap();
    assert_eq!(node.job(job_id).await["status"], "succeeded");
    let images = dash["images"].as_array().unwrap();
    assert!(
        images.iter().any(|i| i["width"] == 320),
        "no poster shown: {dash:#}"
    );
    let played = dash["played"].as_object().unwrap();
    assert!(
        played.contains_key("dash/360p.mp4") && played.contains_key("dash/hls/master.m3u8"),
        "{dash:#}"
    );
    for (key, p) in played {
        assert!(p["width"].as_u64().unwrap() > 0, "{key}: {p}");
    }
    assert!(dash["preview"]["width"].as_u64().unwrap() > 0, "{dash:#}");
    assert_eq!(dash["secret_in_page"], false, "{dash:#}");
    assert_eq!(dash["still_signed_in"], true, "{dash:#}");
    log_timing(&format!(
        "dashboard: job statuses seen {}",
        statuses.join(" → ")
    ));
    publisher.kill().unwrap();
    publisher.wait().unwrap();
}
