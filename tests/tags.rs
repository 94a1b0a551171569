//! Shoppable tags on a real node: the same real clips transcoded with and without
//! tags, decoded by ffmpeg, compared frame by frame where the sidecar says each
//! card is; the WebVTT track and the HLS date ranges read back by ffprobe.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Node;
use reqwest::StatusCode;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(600);

/// The default ladder's rungs at about eight times its bit rates. Two encodes of
/// the same frames by x264 differ by its own noise: at the default ladder's 700
/// kbit/s for 360p that noise alone is around 40 dB PSNR on a textured, moving
/// clip (a tag-less frame of the landscape clip: 41.9 dB; frames where the card
/// moved the rate control's budget: down to 36 dB). At these rates the noise is
/// far below the thresholds, so they measure what the burn-in changed.
const REFERENCE_LADDER: &str = r#"
description = "The default ladder at high bit rates, so that encoder noise stays out of pixel comparisons"
x264_preset = "veryfast"
max_fps = 30
keyframe_interval_s = 2.0
segment_s = 4.0
[audio]
bitrate_kbps = 128
sample_rate = 48000
channels = 2
[[rungs]]
name = "1080p"
short_side = 1080
video_kbps = 40000
profile = "high"
level = "4.2"
[[rungs]]
name = "720p"
short_side = 720
video_kbps = 24000
profile = "high"
level = "4.1"
[[rungs]]
name = "480p"
short_side = 480
video_kbps = 10000
profile = "high"
level = "4.0"
[[rungs]]
name = "360p"
short_side = 360
video_kbps = 6000
profile = "main"
level = "3.1"
"#;

/// A tag as the acceptance interface writes it.
fn tag(id: &str, sponsored: bool, window: (f64, f64), at: (f64, f64), title: &str) -> Value {
    json!({
        "id": id, "product_id": format!("p-{id}"), "title": title,
        "price": {"amount": "49.99", "currency": "USD"}, "sponsored": sponsored,
        "start": window.0, "end": window.1,
        "position": {"x": at.0, "y": at.1, "width": 0.4}, "style": "default"
    })
}

/// One decoded luma frame.
struct Gray {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

/// The frame of `url` at `t` seconds, as 8-bit luma (decoded by ffmpeg).
fn frame_at(url: &str, t: f64, w: usize, h: usize) -> Gray {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{t:.3}"), "-i", url])
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), w * h, "frame of {url} at {t}");
    Gray {
        w,
        h,
        px: out.stdout,
    }
}

/// A pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy)]
struct Px {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Px {
    fn of(rect: &Value, w: usize, h: usize) -> Px {
        let f = |k: &str| rect[k].as_f64().unwrap();
        Px {
            x0: (f("x") * w as f64).round() as usize,
            y0: (f("y") * h as f64).round() as usize,
            x1: ((f("x") + f("w")) * w as f64).round() as usize,
            y1: ((f("y") + f("h")) * h as f64).round() as usize,
        }
    }
    fn contains(&self, x: usize, y: usize) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }
}

/// PSNR between `a` and `b` over the pixels `keep` selects.
fn psnr(a: &Gray, b: &Gray, keep: impl Fn(usize, usize) -> bool) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for y in 0..a.h {
        for x in 0..a.w {
            if keep(x, y) {
                let d = f64::from(a.px[y * a.w + x]) - f64::from(b.px[y * a.w + x]);
                sum += d * d;
                n += 1;
            }
        }
    }
    let mse = sum / n.max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The region where `a` and `b` clearly differ: rows and columns with several
/// pixels changed by more than encoder noise.
fn changed_region(a: &Gray, b: &Gray) -> Option<Px> {
    let changed = |x: usize, y: usize| a.px[y * a.w + x].abs_diff(b.px[y * a.w + x]) > 16;
    let rows: Vec<usize> = (0..a.h)
        .filter(|&y| (0..a.w).filter(|&x| changed(x, y)).count() >= 4)
        .collect();
    let cols: Vec<usize> = (0..a.w)
        .filter(|&x| (0..a.h).filter(|&y| changed(x, y)).count() >= 4)
        .collect();
    Some(Px {
        x0: *cols.first()?,
        x1: cols.last()? + 1,
        y0: *rows.first()?,
        y1: rows.last()? + 1,
    })
}

fn sidecar_tags(sidecar: &Value) -> Vec<Value> {
    sidecar["tags"].as_array().unwrap().clone()
}

fn output<'a>(job: &'a Value, kind: &str) -> &'a Value {
    job["result"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} output in {job}"))
}

/// Transcodes `clip` with `tags` and without, then checks every rendition.
async fn check_burn_in(clip: &str, tags: Value, outside: f64, expect_rungs: usize) {
    let pipelines = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(pipelines.path().join("ladders")).unwrap();
    std::fs::write(
        pipelines.path().join("ladders/reference.toml"),
        REFERENCE_LADDER,
    )
    .unwrap();
    let node = Node::builder()
        .env(
            "MEDIA_NODE_PIPELINES_DIR",
            pipelines.path().display().to_string(),
        )
        .start()
        .await;
    node.upload_fixture("in/clip.mp4", clip).await;
    let job = |prefix: &str, tags: Option<&Value>| {
        let mut body = json!({
            "input": {"key": "in/clip.mp4"},
            "output_prefix": prefix,
            "renditions": {"ladder": "reference", "formats": ["mp4", "hls"]},
        });
        if let Some(t) = tags {
            body["tags"] = t.clone();
        }
        body
    };
    let tagged = node.submit(&job("tagged", Some(&tags))).await;
    let plain = node.submit(&job("plain", None)).await;
    let tagged = node.wait_done(&tagged, LIMIT).await;
    let plain = node.wait_done(&plain, LIMIT).await;
    assert_eq!(tagged["status"], "succeeded", "{tagged}");
    assert_eq!(plain["status"], "succeeded", "{plain}");

    let sidecar: Value = node
        .get(&format!(
            "/media/{}",
            output(&tagged, "tags_json")["key"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    let placed = sidecar_tags(&sidecar);
    assert_eq!(placed.len(), tags.as_array().unwrap().len());

    let mp4s: Vec<&Value> = tagged["result"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "mp4")
        .collect();
    assert_eq!(mp4s.len(), expect_rungs, "{tagged}");
    for mp4 in mp4s {
        let (w, h) = (
            mp4["width"].as_u64().unwrap() as usize,
            mp4["height"].as_u64().unwrap() as usize,
        );
        let rung = mp4["rung"].as_str().unwrap();
        let with = node.url(&format!("/media/{}", mp4["key"].as_str().unwrap()));
        let without = node.url(&format!("/media/plain/{rung}.mp4"));
        for t in &placed {
            let (start, end) = (t["start"].as_f64().unwrap(), t["end"].as_f64().unwrap());
            let mid = (start + end) / 2.0;
            let a = frame_at(&with, mid, w, h);
            let b = frame_at(&without, mid, w, h);
            let rect = Px::of(&t["rect"], w, h);
            // Every card on screen at `mid` is excluded from "the rest".
            let shown: Vec<Px> = placed
                .iter()
                .filter(|o| o["start"].as_f64().unwrap() <= mid && mid < o["end"].as_f64().unwrap())
                .map(|o| Px::of(&o["rect"], w, h))
                .collect();
            let inside = psnr(&a, &b, |x, y| rect.contains(x, y));
            let rest = psnr(&a, &b, |x, y| !shown.iter().any(|r| r.contains(x, y)));
            let id = &t["id"];
            assert!(inside < 25.0, "{rung} tag {id}: PSNR inside {inside:.1} dB");
            assert!(rest > 40.0, "{rung} tag {id}: PSNR outside {rest:.1} dB");
            if shown.len() == 1 {
                let found = changed_region(&a, &b).expect("a changed region");
                let tol_x = (0.02 * w as f64).ceil() as usize;
                let tol_y = (0.02 * h as f64).ceil() as usize;
                for (edge, got, want, tol) in [
                    ("left", found.x0, rect.x0, tol_x),
                    ("right", found.x1, rect.x1, tol_x),
                    ("top", found.y0, rect.y0, tol_y),
                    ("bottom", found.y1, rect.y1, tol_y),
                ] {
                    assert!(
                        got.abs_diff(want) <= tol,
                        "{rung} tag {id}: {edge} edge at {got}, sidecar says {want} ({found:?} vs {rect:?})"
                    );
                }
            }
            eprintln!("{clip} {rung} {id} at {mid:.2}s: inside {inside:.1} dB, rest {rest:.1} dB");
        }
        let a = frame_at(&with, outside, w, h);
        let b = frame_at(&without, outside, w, h);
        let all = psnr(&a, &b, |_, _| true);
        assert!(
            all > 40.0,
            "{rung} at {outside}s (no tag): PSNR {all:.1} dB"
        );
    }
    check_timed_data(&node, &tagged, &placed).await;
}

/// The WebVTT track and the HLS date ranges carry the sidecar's windows.
async fn check_timed_data(node: &Node, job: &Value, placed: &[Value]) {
    let vtt = node.url(&format!(
        "/media/{}",
        output(job, "tags_vtt")["key"].as_str().unwrap()
    ));
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-show_packets", "-show_data"])
        .arg(&vtt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {vtt}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cues = packets["packets"].as_array().unwrap();
    assert_eq!(cues.len(), placed.len());
    let mut windows: Vec<(f64, f64)> = placed
        .iter()
        .map(|t| (t["start"].as_f64().unwrap(), t["end"].as_f64().unwrap()))
        .collect();
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (cue, (start, end)) in cues.iter().zip(&windows) {
        let pts: f64 = cue["pts_time"].as_str().unwrap().parse().unwrap();
        let dur: f64 = cue["duration_time"].as_str().unwrap().parse().unwrap();
        assert!(
            (pts - start).abs() < 0.002 && (pts + dur - end).abs() < 0.002,
            "{cue}"
        );
    }

    let hls = output(job, "hls");
    for variant in hls["variants"].as_array().unwrap() {
        let url = node.url(&format!("/media/{}", variant["key"].as_str().unwrap()));
        // ffmpeg reads the playlist with its date ranges.
        let status = Command::new("ffprobe")
            .args(["-v", "error", "-show_format"])
            .arg(&url)
            .output()
            .unwrap();
        assert!(status.status.success(), "ffprobe {url}");
        let text = node
            .get(&format!("/media/{}", variant["key"].as_str().unwrap()))
            .await
            .text()
            .await
            .unwrap();
        let playlist =
            m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("a media playlist");
        assert!(playlist.segments[0].program_date_time.is_some());
        let ranges: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-DATERANGE:"))
            .collect();
        assert_eq!(ranges.len(), placed.len(), "{text}");
        for t in placed {
            let line = ranges
                .iter()
                .find(|r| r.starts_with(&format!("ID=\"{}\"", t["id"].as_str().unwrap())))
                .unwrap_or_else(|| panic!("no date range for {}", t["id"]));
            let attr = |name: &str| -> String {
                line.split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .unwrap_or_else(|| panic!("{name} in {line}"))
                    .trim_matches('"')
                    .to_string()
            };
            let start_date = attr("START-DATE");
            let start = chrono::DateTime::parse_from_rfc3339(&start_date)
                .unwrap()
                .timestamp_millis() as f64
                / 1000.0;
            let duration: f64 = attr("DURATION").parse().unwrap();
            let (s, e) = (t["start"].as_f64().unwrap(), t["end"].as_f64().unwrap());
            assert!(
                (start - s).abs() < 0.002 && (start + duration - e).abs() < 0.002,
                "{line}"
            );
            assert_eq!(attr("X-PRODUCT-ID"), t["product_id"].as_str().unwrap());
            for (k, name) in [
                ("x", "X-RECT-X"),
                ("y", "X-RECT-Y"),
                ("w", "X-RECT-W"),
                ("h", "X-RECT-H"),
            ] {
                let v: f64 = attr(name).parse().unwrap();
                assert!(
                    (v - t["rect"][k].as_f64().unwrap()).abs() < 1e-4,
                    "{name} in {line}"
                );
            }
        }
    }
}

#[tokio::test]
async fn tags_on_a_landscape_clip_are_drawn_where_the_timed_data_says() {
    let tags = json!([
        tag("t1", true, (2.0, 6.0), (0.05, 0.70), "Blender Pro 3000"),
        // Shown with t1 for a second, asked at nearly the same place: moved.
        tag(
            "t2",
            false,
            (5.0, 9.0),
            (0.05, 0.72),
            "Kettle — brushed steel, 1.7 l"
        ),
        tag("t3", true, (10.0, 14.0), (0.55, 0.10), "Тостер Ξ"),
    ]);
    check_burn_in("landscape-640x360-h264-aac-17s.mp4", tags, 16.0, 1).await;
}

#[tokio::test]
async fn tags_on_a_portrait_clip_are_drawn_where_the_timed_data_says() {
    // The clip fades in from black: light cards, which stand out on it.
    let mut tags = json!([
        tag("t1", true, (0.8, 1.2), (0.05, 0.60), "Carrot peeler"),
        tag(
            "t2",
            false,
            (1.1, 1.5),
            (0.10, 0.62),
            "Bunny slippers, size M"
        ),
        tag("t3", true, (1.5, 1.9), (0.50, 0.10), "Forest honey 250 g"),
    ]);
    for t in tags.as_array_mut().unwrap() {
        t["style"] = json!("light");
    }
    check_burn_in("portrait-rot90-h264-aac-2s.mp4", tags, 0.5, 4).await;
}

#[tokio::test]
async fn bad_tags_are_refused_with_their_field() {
    let node = Node::start().await;
    let mut bad = tag("t1", true, (2.0, 6.0), (0.05, 0.7), "Blender");
    bad["price"]["currency"] = json!("DOLLARS");
    let (status, body) = node
        .post_job(&json!({
            "input": {"key": "in/clip.mp4"}, "output_prefix": "x",
            "renditions": {}, "tags": [bad, tag("t1", false, (1.0, 0.5), (2.0, 0.0), "")]
        }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "tags[0].price.currency",
        "tags[1].id",
        "tags[1].title",
        "tags[1].end",
        "tags[1].position.x",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    // Tags without renditions have nothing to be drawn into.
    let (status, body) = node
        .post_job(&json!({
            "input": {"key": "in/clip.mp4"}, "output_prefix": "x", "probe": true,
            "tags": [tag("t1", true, (2.0, 6.0), (0.05, 0.7), "Blender")]
        }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "tags");
}

#[tokio::test]
async fn tags_that_cannot_fit_fail_the_job_with_a_reason() {
    let node = Node::start().await;
    node.upload_fixture("in/clip.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    // Eight wide cards at once in the same place of a short clip: no room.
    let tags: Vec<Value> = (0..8)
        .map(|i| {
            let mut t = tag(
                &format!("t{i}"),
                false,
                (0.2, 1.8),
                (0.05, 0.3),
                "A long product title that wraps onto two lines",
            );
            t["position"]["width"] = json!(0.9);
            t
        })
        .collect();
    let id = node
        .submit(&json!({
            "input": {"key": "in/clip.mp4"}, "output_prefix": "x",
            "renditions": {"rungs": ["360p"], "formats": ["mp4"]}, "tags": tags
        }))
        .await;
    let job = node.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "tags_overlap", "{job}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("`t"),
        "{job}"
    );
}

#[tokio::test]
async fn cjk_titles_draw_with_a_configured_font_and_fail_clearly_without() {
    let job = json!({
        "input": {"key": "in/clip.mp4"}, "output_prefix": "cjk",
        "renditions": {"rungs": ["360p"], "formats": ["mp4"]},
        "tags": [tag("t1", true, (0.5, 1.5), (0.05, 0.6), "电动搅拌机 3000")]
    });
    let node = Node::start().await;
    node.upload_fixture("in/clip.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let id = node.submit(&job).await;
    let failed = node.wait_done(&id, LIMIT).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "tag_glyphs_missing", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MEDIA_NODE_TAG_FONTS")
    );

    // scripts/test installs a CJK font (Debian's fonts-droid-fallback) and names it.
    let Ok(font) = std::env::var("TEST_CJK_FONT") else {
        eprintln!("TEST_CJK_FONT is not set: the half with a CJK font is skipped");
        return;
    };
    let node = Node::builder()
        .env("MEDIA_NODE_TAG_FONTS", font)
        .start()
        .await;
    node.upload_fixture("in/clip.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let id = node.submit(&job).await;
    let done = node.wait_done(&id, LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn an_auto_poster_is_taken_while_a_tag_is_shown() {
    let node = Node::start().await;
    node.upload_fixture("in/clip.mp4", "landscape-640x360-h264-aac-17s.mp4")
        .await;
    let id = node
        .submit(&json!({
            "input": {"key": "in/clip.mp4"}, "output_prefix": "poster",
            "renditions": {"formats": ["mp4"]},
            "thumbnails": {"times": ["auto"], "widths": [320], "formats": ["jpeg"]},
            "tags": [tag("t1", true, (11.0, 14.0), (0.05, 0.6), "Blender Pro 3000")]
        }))
        .await;
    let job = node.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let t = job["result"]["poster_time_s"].as_f64().unwrap();
    assert!(
        (11.0..14.0).contains(&t),
        "poster at {t} s, outside the tag's window"
    );
}
