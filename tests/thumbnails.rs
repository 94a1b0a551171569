//! Stills on a real node: product photos and phone videos from the fixtures, clips
//! generated with ffmpeg; outputs fetched over `/media` and checked with exiftool
//! (no metadata), ffmpeg (orientation and colours against its own decode of the
//! source) and the storyboard's WebVTT.

mod common;

use std::path::Path;
use std::time::Duration;

use common::media::{
    ffprobe, generate, luma_stats, mean_abs_diff, metadata_beyond_pixels, picture_size, rgb_samples,
};
use common::{Node, fixture, strip_ansi};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(240);

async fn run(node: &Node, body: Value) -> Value {
    let id = node.submit(&body).await;
    node.wait_done(&id, LIMIT).await
}

fn outputs<'a>(job: &'a Value, kind: &str) -> Vec<&'a Value> {
    job["result"]["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs: {job}"))
        .iter()
        .filter(|o| o["kind"] == kind)
        .collect()
}

fn size_of(entry: &Value) -> (u32, u32) {
    (
        entry["width"].as_u64().unwrap() as u32,
        entry["height"].as_u64().unwrap() as u32,
    )
}

/// Downloads a still, checks that its header matches the result entry and that
/// it carries no metadata; returns its local path.
async fn fetch_still(node: &Node, entry: &Value, dir: &Path) -> std::path::PathBuf {
    let key = entry["key"].as_str().unwrap();
    let path = node.download(key, dir).await;
    assert_eq!(picture_size(&path), size_of(entry), "{key}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        entry["bytes"].as_u64().unwrap()
    );
    let extra = metadata_beyond_pixels(&path);
    assert!(extra.is_empty(), "{key} carries metadata: {extra:?}");
    path
}

struct Photo {
    name: &'static str,
    /// Upright size (EXIF orientation applied).
    upright: (u32, u32),
    /// How far the still may stray from ffmpeg's decode of the source, in
    /// 8-bit levels: ffmpeg ignores ICC profiles, media-node converts them to
    /// sRGB, so profiled sources differ more.
    tolerance: f64,
    /// Filtergraph ffmpeg needs to see what a viewer sees (alpha over white).
    reference_filter: Option<&'static str>,
}

#[tokio::test]
async fn photos_come_out_upright_sized_clean_and_true_to_colour() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let photos = [
        Photo {
            name: "photo-1000x750-exif-orient6-xiaomi.jpg",
            upright: (750, 1000),
            tolerance: 4.0,
            reference_filter: None,
        },
        Photo {
            name: "photo-768x1020-gps-pixel8.jpg",
            upright: (768, 1020),
            tolerance: 4.0,
            reference_filter: None,
        },
        Photo {
            name: "progressive-1020x768-pixel7pro.jpg",
            upright: (1020, 768),
            tolerance: 4.0,
            reference_filter: None,
        },
        Photo {
            name: "webp-lossy-1165x859-harvesters.webp",
            upright: (1165, 859),
            tolerance: 4.0,
            reference_filter: None,
        },
        Photo {
            // Adobe YCCK with a SWOP profile: a naive decode is inverted.
            name: "cmyk-ycck-swop-icc-500x333.jpg",
            upright: (500, 333),
            tolerance: 15.0,
            reference_filter: None,
        },
        Photo {
            name: "png-rgba-overlay-logo-304x84.png",
            upright: (304, 84),
            tolerance: 15.0,
            reference_filter: Some("color=white:s=304x84[bg];[bg][0]overlay=shortest=1"),
        },
    ];
    for photo in &photos {
        let key = format!("uploads/{}", photo.name);
        node.upload_fixture(&key, photo.name).await;
        let job = run(
            &node,
            json!({
                "input": {"key": key},
                "output_prefix": format!("photos/{}", photo.name),
                "thumbnails": {
                    "widths": [320, 640],
                    "boxes": [{"width": 200, "height": 200, "fit": "cover"}],
                    "formats": ["jpeg", "webp"]
                }
            }),
        )
        .await;
        assert_eq!(job["status"], "succeeded", "{}: {job}", photo.name);
        assert!(job["result"].get("poster_time_s").is_none());
        let stills = outputs(&job, "thumbnail");
        assert_eq!(stills.len(), 6, "{job}");
        let (uw, uh) = photo.upright;
        let reference = &rgb_samples(&fixture(photo.name), &[], photo.reference_filter)[0];
        for still in stills {
            assert!(still.get("time_s").is_none(), "{still}");
            let (w, h) = size_of(still);
            let key = still["key"].as_str().unwrap();
            if key.contains("200x200") {
                // Cover: the box, filled (never upscaled past the source).
                assert_eq!((w, h), (200.min(uw).min(uh), 200.min(uw).min(uh)), "{key}");
            } else {
                // Widths keep the upright aspect and never upscale.
                let want_w = if key.contains("w320") { 320 } else { 640 }.min(uw);
                let want_h = (f64::from(want_w) * f64::from(uh) / f64::from(uw)).round() as i64;
                assert_eq!(w, want_w, "{key}");
                assert!((i64::from(h) - want_h).abs() <= 1, "{key}: {h} vs {want_h}");
                let path = fetch_still(&node, still, tmp.path()).await;
                let ours = &rgb_samples(&path, &[], photo.reference_filter)[0];
                let diff = mean_abs_diff(ours, reference);
                assert!(
                    diff < photo.tolerance,
                    "{key}: {diff:.1} levels from ffmpeg's decode of the source"
                );
                continue;
            }
            fetch_still(&node, still, tmp.path()).await;
        }
    }
}

struct Clip {
    name: &'static str,
    /// Upright display size.
    display: (u32, u32),
    tolerance: f64,
}

#[tokio::test]
async fn video_stills_are_upright_clean_and_match_the_frame() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let clips = [
        Clip {
            name: "portrait-rot90-h264-aac-2s.mp4",
            display: (1080, 1920),
            tolerance: 6.0,
        },
        Clip {
            // HDR (HLG) comes out as its SDR-compatible signal with BT.709
            // primaries; ffmpeg 5.1 shows the raw BT.2020 values instead.
            name: "phone-hevc-hlg-rot90-vfr-2.5s.mp4",
            display: (1080, 1920),
            tolerance: 30.0,
        },
        Clip {
            name: "screenrec-vfr-noaudio-3026x1386.mp4",
            display: (3026, 1386),
            tolerance: 6.0,
        },
        Clip {
            name: "webm-vp9-opus-320x180-5s.webm",
            display: (320, 180),
            tolerance: 6.0,
        },
    ];
    for clip in &clips {
        let key = format!("uploads/{}", clip.name);
        node.upload_fixture(&key, clip.name).await;
        let job = run(
            &node,
            json!({
                "input": {"key": key},
                "output_prefix": format!("videos/{}", clip.name),
                "thumbnails": {
                    "times": ["auto", 1.0, "50%"],
                    "widths": [320, 640],
                    "formats": ["jpeg", "webp"]
                },
                "storyboard": {"interval_s": 1.0}
            }),
        )
        .await;
        assert_eq!(job["status"], "succeeded", "{}: {job}", clip.name);
        let (dw, dh) = clip.display;
        let poster_time = job["result"]["poster_time_s"]
            .as_f64()
            .expect("poster time");
        let posters = outputs(&job, "poster");
        assert_eq!(posters.len(), 4, "{job}");
        let stills = outputs(&job, "thumbnail");
        assert_eq!(stills.len(), 8, "{job}");
        for still in posters.iter().chain(&stills) {
            let (w, h) = size_of(still);
            let want_w = if still["key"].as_str().unwrap().contains("w320") {
                320
            } else {
                640
            }
            .min(dw);
            assert_eq!(w, want_w, "{still}");
            let want_h = (f64::from(w) * f64::from(dh) / f64::from(dw)).round() as i64;
            assert!((i64::from(h) - want_h).abs() <= 1, "{still}: upright?");
            let time = still["time_s"].as_f64().expect("time_s");
            if still["kind"] == "poster" {
                assert_eq!(time, poster_time);
            }
            let path = fetch_still(&node, still, tmp.path()).await;
            if still["format"] != "jpeg" || w != 320 {
                continue;
            }
            // Colours and orientation: the still matches one of ffmpeg's frames
            // around its time (demuxers disagree on edit lists by a frame or two).
            let ours = &rgb_samples(&path, &[], None)[0];
            let from = format!("{:.3}", (time - 0.15).max(0.0));
            let frames = rgb_samples(&fixture(clip.name), &["-ss", &from, "-t", "0.3"], None);
            let best = frames
                .iter()
                .map(|f| mean_abs_diff(ours, f))
                .fold(f64::MAX, f64::min);
            assert!(
                best < clip.tolerance,
                "{} at {time}: {best:.1} levels from ffmpeg's frames",
                clip.name
            );
        }
        check_storyboard(&node, &job, &fixture(clip.name), tmp.path()).await;
    }
}

/// The VTT cues cover the whole duration back to back, and each `#xywh`
/// rectangle lies inside its sheet.
async fn check_storyboard(node: &Node, job: &Value, source: &Path, dir: &Path) {
    let duration: f64 = ffprobe(source.to_str().unwrap())["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sheets = outputs(job, "storyboard");
    assert!(!sheets.is_empty(), "{job}");
    let mut sizes = std::collections::HashMap::new();
    for sheet in &sheets {
        let path = fetch_still(node, sheet, dir).await;
        let name = sheet["key"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        sizes.insert(name, picture_size(&path));
    }
    let vtt_entry = outputs(job, "storyboard_vtt")[0];
    let res = node
        .client
        .get(node.url(&format!("/media/{}", vtt_entry["key"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let vtt = res.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let mut expected_start = 0.0;
    let mut cues = 0;
    let mut lines = vtt.lines();
    while let Some(line) = lines.next() {
        let Some((start, end)) = line.split_once(" --> ") else {
            continue;
        };
        let (start, end) = (seconds(start), seconds(end));
        assert!(
            (start - expected_start).abs() < 0.002,
            "gap before {line}: {vtt}"
        );
        assert!(end > start, "{line}");
        expected_start = end;
        cues += 1;
        let target = lines.next().unwrap();
        let (sheet, xywh) = target.split_once("#xywh=").unwrap();
        let v: Vec<u32> = xywh.split(',').map(|n| n.parse().unwrap()).collect();
        let (sw, sh) = sizes[sheet];
        assert!(
            v[0] + v[2] <= sw && v[1] + v[3] <= sh,
            "{target} outside {sheet} ({sw}x{sh})"
        );
    }
    // Demuxers disagree by a few frames on files whose movie header has no
    // duration (the portrait fixture: GStreamer says 1.875 s from its video
    // track, ffprobe 2.005 s from its audio track).
    assert!(
        (expected_start - duration).abs() < 0.15,
        "cues end at {expected_start}, the video at {duration}"
    );
    assert_eq!(cues, vtt_entry["tiles"].as_u64().unwrap() as usize);
}

fn seconds(stamp: &str) -> f64 {
    let parts: Vec<f64> = stamp
        .trim()
        .split(':')
        .map(|p| p.parse().unwrap())
        .collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[tokio::test]
async fn the_auto_poster_skips_black_and_fading_frames() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // 2 s of black, a 2 s fade in, then 4 s of busy picture; once with a keyframe
    // every second (poster candidates come from keyframes), once with a single
    // keyframe (candidates come from one decoding pass).
    for (name, gop) in [("fade-gop25.mp4", "25"), ("fade-onekey.mp4", "1000")] {
        let clip = generate(
            tmp.path(),
            name,
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=s=640x360:r=25:d=8",
                "-vf",
                "fade=in:st=2:d=2",
                "-c:v",
                "libx264",
                "-g",
                gop,
                "-pix_fmt",
                "yuv420p",
            ],
        );
        let key = format!("uploads/{name}");
        node.upload(&key, std::fs::read(&clip).unwrap()).await;
        let job = run(
            &node,
            json!({
                "input": {"key": key},
                "output_prefix": format!("fade/{name}"),
                "thumbnails": {"times": ["auto"], "widths": [320], "formats": ["jpeg"]}
            }),
        )
        .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let time = job["result"]["poster_time_s"].as_f64().unwrap();
        assert!(time >= 3.5, "{name}: poster at {time} s is black or fading");
        let poster = outputs(&job, "poster")[0];
        let path = fetch_still(&node, poster, tmp.path()).await;
        let (mean, variance) = luma_stats(&path);
        assert!(
            mean > 40.0 && variance > 400.0,
            "{name}: mean {mean:.0}, variance {variance:.0}"
        );
        // Deterministic: the same input gives the same poster.
        let again = run(
            &node,
            json!({
                "input": {"key": key},
                "output_prefix": format!("fade-again/{name}"),
                "thumbnails": {"times": ["auto"], "widths": [320], "formats": ["jpeg"]}
            }),
        )
        .await;
        assert_eq!(again["result"]["poster_time_s"].as_f64(), Some(time));
    }
}

#[tokio::test]
async fn storyboards_span_many_sheets_and_cover_the_duration() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // 25 s with sparse keyframes (every 10 s): tiles every 2 s need decoding.
    let clip = generate(
        tmp.path(),
        "long.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=25:d=25",
            "-c:v",
            "libx264",
            "-g",
            "250",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    node.upload("uploads/long.mp4", std::fs::read(&clip).unwrap())
        .await;
    let job = run(
        &node,
        json!({
            "input": {"key": "uploads/long.mp4"},
            "output_prefix": "boards/long",
            "storyboard": {"interval_s": 2.0, "tile_width": 120, "columns": 4, "rows": 2}
        }),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let sheets = outputs(&job, "storyboard");
    // 13 tiles of 120x90, 8 per sheet.
    assert_eq!(sheets.len(), 2, "{job}");
    assert_eq!(size_of(sheets[0]), (480, 180));
    assert_eq!(size_of(sheets[1]), (480, 180));
    assert_eq!(outputs(&job, "storyboard_vtt")[0]["tiles"], 13);
    check_storyboard(&node, &job, &clip, tmp.path()).await;
}

#[tokio::test]
async fn floods_and_oversize_images_are_refused_cheaply() {
    let node = Node::builder()
        .env("MEDIA_NODE_LIMITS_MAX_IMAGE_BYTES", "500000")
        .start()
        .await;
    let cases = [
        // Headers declaring 65536 x 65536 and 60000 x 60000 pixels.
        ("flood-65536x65536.png", "image_too_large"),
        ("oversize-60000x60000.jpg", "image_too_large"),
        // A real 714 KiB photo over the 500 kB limit set above.
        ("cmyk-ycck-swop-icc-500x333.jpg", "input_too_large"),
    ];
    for (name, code) in cases {
        let key = format!("uploads/{name}");
        node.upload_fixture(&key, name).await;
        let job = run(
            &node,
            json!({
                "input": {"key": key},
                "output_prefix": format!("refused/{name}"),
                "thumbnails": {"widths": [320]}
            }),
        )
        .await;
        assert_eq!(job["status"], "failed", "{name}: {job}");
        assert_eq!(job["error"]["code"], code, "{name}: {job}");
        assert_eq!(job["attempts"], 1, "refusals are not retried: {job}");
        assert!(job["result"].is_null() || job["result"]["outputs"].is_null());
    }
    let peak = node.peak_memory();
    assert!(
        peak < 200 * 1024 * 1024,
        "peak memory {} MiB",
        peak / 1024 / 1024
    );
    // The node is still healthy, and ops see what was refused.
    let res = node.client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_job_failures_total{code=\"image_too_large\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stills_and_renditions_come_from_one_job() {
    let node = Node::start().await;
    node.upload_fixture("uploads/clip.webm", "webm-vp9-opus-320x180-5s.webm")
        .await;
    let job = run(
        &node,
        json!({
            "input": {"key": "uploads/clip.webm"},
            "output_prefix": "both/clip",
            "renditions": {"ladder": "default", "formats": ["mp4"]},
            "thumbnails": {"preset": "search"},
            "storyboard": {"interval_s": 2.5}
        }),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(outputs(&job, "mp4").len(), 1, "{job}");
    // The `search` preset: the auto poster as 200 and 400 px squares, WebP; the
    // 320x180 source fills neither, so both are its centre square, not upscaled.
    let posters = outputs(&job, "poster");
    let sizes: Vec<(u32, u32)> = posters.iter().map(|p| size_of(p)).collect();
    assert_eq!(sizes, [(180, 180), (180, 180)], "{job}");
    assert!(posters.iter().all(|p| p["format"] == "webp"));
    assert_eq!(outputs(&job, "storyboard").len(), 1);
    // The clip plays 5.0 s (its packets; the header says 5.02): tiles at 0
    // and 2.5 s cover it.
    assert_eq!(outputs(&job, "storyboard_vtt")[0]["tiles"], 2);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_outputs_total{kind=\"poster\"} 2"),
        "{metrics}"
    );
    // Everything is published under the prefix.
    for entry in job["result"]["outputs"].as_array().unwrap() {
        assert!(entry["key"].as_str().unwrap().starts_with("both/clip/"));
    }
    // The stills came from the transcode's decode, every one of them (12
    // poster candidates and 2 storyboard tiles).
    let log = strip_ansi(&node.log());
    assert!(
        log.contains("stills from the transcode's decode tapped=14 missed=0"),
        "{log}"
    );
}

#[tokio::test]
async fn bad_stills_specs_are_refused_with_a_field_path() {
    let node = Node::start().await;
    let cases = [
        (
            json!({"times": ["sometime"], "widths": [320]}),
            "thumbnails.times[0]",
        ),
        (json!({"widths": [0]}), "thumbnails.widths[0]"),
        (json!({"formats": ["bmp"]}), "thumbnails"),
        (json!({"preset": "nope"}), "thumbnails.preset"),
    ];
    for (thumbnails, field) in cases {
        let (status, problem) = node
            .post_job(&json!({
                "input": {"key": "uploads/x.mp4"},
                "output_prefix": "x",
                "thumbnails": thumbnails
            }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.iter().any(|f| f.starts_with(field))
                || problem["detail"].as_str().unwrap_or("").contains(field),
            "{field}: {problem}"
        );
    }
    let (status, problem) = node
        .post_job(&json!({
            "input": {"key": "uploads/x.mp4"},
            "output_prefix": "x",
            "storyboard": {"interval_s": 0}
        }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
}

#[test]
fn process_makes_stills_from_local_files() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("job.json");
    std::fs::write(
        &spec,
        r#"{"thumbnails": {"times": ["auto", "50%"], "widths": [320], "formats": ["jpeg"]},
            "storyboard": {"interval_s": 1.0}}"#,
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-node"))
        .arg("process")
        .arg(fixture("webm-vp9-opus-320x180-5s.webm"))
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["poster_time_s"].as_f64().is_some(), "{result}");
    for key in [
        "thumbs/auto/w320.jpg",
        "thumbs/p50/w320.jpg",
        "storyboard/sheet_000.jpg",
        "storyboard/storyboard.vtt",
    ] {
        assert!(out_dir.join(key).is_file(), "{key} missing: {result}");
    }
    assert_eq!(
        picture_size(&out_dir.join("thumbs/p50/w320.jpg")),
        (320, 180)
    );

    // A photo: no times, one still per size and format.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-node"))
        .arg("process")
        .arg(fixture("photo-1000x750-exif-orient6-xiaomi.jpg"))
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    // ... but a storyboard needs a video.
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_a_video"));
}
