//! Transcoding on a real node: real media (fixtures and clips generated with
//! ffmpeg) in, MP4 and HLS out, checked with ffprobe, ffmpeg and exiftool reading
//! the outputs over the node's own `/media` route.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::media::{ffprobe, generate, stream, test_clip};
use common::{Node, fixture};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(240);

/// Names of the top-level boxes of an MP4, in order.
fn top_level_boxes(data: &[u8]) -> Vec<String> {
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&data[at + 4..at + 8]).to_string());
        if size < 8 {
            break;
        }
        at += size;
    }
    boxes
}

async fn run_job(node: &Node, key: &str, prefix: &str, extra: Value) -> Value {
    let mut body = json!({
        "input": {"key": key},
        "output_prefix": prefix,
        "renditions": {"ladder": "default", "formats": ["mp4", "hls"]}
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    let id = node.submit(&body).await;
    node.wait_done(&id, LIMIT).await
}

struct Expect {
    /// (rung, width, height) of every rendition.
    sizes: &'static [(&'static str, u32, u32)],
    audio: bool,
    skipped: &'static [&'static str],
}

/// Checks every output of a succeeded transcode job against `expect`.
async fn check_outputs(node: &Node, job: &Value, expect: &Expect) {
    assert_eq!(job["status"], "succeeded", "{job}");
    let outputs = job["result"]["outputs"].as_array().unwrap();
    let skipped: Vec<&str> = job["result"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rung"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, expect.skipped, "{job}");

    let mp4s: Vec<&Value> = outputs.iter().filter(|o| o["kind"] == "mp4").collect();
    assert_eq!(mp4s.len(), expect.sizes.len(), "{job}");
    for (mp4, (rung, width, height)) in mp4s.iter().zip(expect.sizes) {
        assert_eq!(mp4["rung"], *rung);
        assert_eq!(
            (
                mp4["width"].as_u64().unwrap(),
                mp4["height"].as_u64().unwrap()
            ),
            (u64::from(*width), u64::from(*height))
        );
        let url = node.url(&format!("/media/{}", mp4["key"].as_str().unwrap()));
        let probe = ffprobe(&url);
        let video = stream(&probe, "video").expect("a video stream");
        assert_eq!(video["codec_name"], "h264");
        assert_eq!(video["pix_fmt"], "yuv420p", "{video}");
        assert!(
            ["High", "Main", "Constrained Baseline"].contains(&video["profile"].as_str().unwrap()),
            "{video}"
        );
        assert_eq!(video["width"].as_u64().unwrap(), u64::from(*width));
        assert_eq!(video["height"].as_u64().unwrap(), u64::from(*height));
        // Upright: no rotation left for the player to apply.
        assert!(
            video.get("side_data_list").is_none(),
            "display matrix left: {video}"
        );
        assert!(video["tags"].get("rotate").is_none(), "{video}");
        let (n, d) = video["r_frame_rate"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap();
        let fps = n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap();
        assert!(fps <= 30.0 + 1e-6, "frame rate capped: {fps}");
        match stream(&probe, "audio") {
            Some(audio) => {
                assert!(expect.audio, "audio appeared from nowhere");
                assert_eq!(audio["codec_name"], "aac");
                assert_eq!(audio["channels"], 2);
            }
            None => assert!(!expect.audio, "audio lost"),
        }
        let bytes = node
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, mp4["bytes"].as_u64().unwrap());
        let boxes = top_level_boxes(&bytes);
        let moov = boxes.iter().position(|b| b == "moov").unwrap();
        let mdat = boxes.iter().position(|b| b == "mdat").unwrap();
        assert!(moov < mdat, "not fast-start: {boxes:?}");
    }

    let hls = outputs
        .iter()
        .find(|o| o["kind"] == "hls")
        .expect("an HLS output");
    let master_url = node.url(&format!("/media/{}", hls["key"].as_str().unwrap()));
    let master = node.client.get(&master_url).send().await.unwrap();
    assert_eq!(
        master.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let master = master.text().await.unwrap();
    let variants = hls["variants"].as_array().unwrap();
    assert_eq!(variants.len(), expect.sizes.len());
    let mut segment_lists = Vec::new();
    for (variant, (rung, width, height)) in variants.iter().zip(expect.sizes) {
        assert_eq!(variant["rung"], *rung);
        let codecs = variant["codecs"].as_str().unwrap();
        assert!(codecs.starts_with("avc1."), "{codecs}");
        assert_eq!(codecs.contains("mp4a.40.2"), expect.audio, "{codecs}");
        let line = format!(
            "BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\",RESOLUTION={width}x{height}",
            variant["bandwidth"], variant["average_bandwidth"]
        );
        assert!(master.contains(&line), "{line} not in\n{master}");
        let media_url = node.url(&format!("/media/{}", variant["key"].as_str().unwrap()));
        let media = node
            .client
            .get(&media_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(media.contains("#EXT-X-ENDLIST"), "{media}");
        let durations: Vec<f64> = media
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|l| l.trim_end_matches(',').parse().unwrap())
            .collect();
        for d in &durations[..durations.len() - 1] {
            assert!((3.9..=6.1).contains(d), "segment of {d} s in {media}");
        }
        segment_lists.push(durations);
    }
    // Keyframes align across rungs: every rung is cut at the same times.
    for list in &segment_lists[1..] {
        assert_eq!(list, &segment_lists[0], "segments differ between rungs");
    }
    // ffmpeg reads the whole ladder from the node.
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &master_url,
            "-map",
            "0",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg cannot play {master_url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn real_and_generated_videos_transcode_to_mp4_and_hls() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 1080p50 MOV with PCM audio, 6 s: four rungs, frame rate capped at 30.
    let mov = generate(
        dir,
        "pcm.mov",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=50:duration=6",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "pcm_s16le",
        ],
    );
    // Tiny 160x120 WebM with Vorbis: every rung above it, one rendition at source size.
    let tiny = generate(
        dir,
        "tiny.webm",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=3",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-c:a",
            "libvorbis",
        ],
    );
    for (key, path) in [
        ("in/portrait.mp4", fixture("portrait-rot90-h264-aac-2s.mp4")),
        ("in/clip.webm", fixture("webm-vp9-opus-320x180-5s.webm")),
        ("in/phone.mp4", fixture("phone-hevc-hlg-rot90-vfr-2.5s.mp4")),
        (
            "in/screen.mp4",
            fixture("screenrec-vfr-noaudio-3026x1386.mp4"),
        ),
        ("in/pcm.mov", mov),
        ("in/tiny.webm", tiny),
    ] {
        node.upload(key, std::fs::read(path).unwrap()).await;
    }
    const LADDER: &[&str] = &[];
    let cases: [(&str, Expect); 6] = [
        // Display matrix -90 on a 1920x1080 picture: portrait 9:16, 5.1 audio to stereo.
        (
            "in/portrait.mp4",
            Expect {
                sizes: &[
                    ("1080p", 1080, 1920),
                    ("720p", 720, 1280),
                    ("480p", 480, 854),
                    ("360p", 360, 640),
                ],
                audio: true,
                skipped: LADDER,
            },
        ),
        // VP9 + Opus, 320x180: no upscaling, one rendition at the source size.
        (
            "in/clip.webm",
            Expect {
                sizes: &[("180p", 320, 180)],
                audio: true,
                skipped: &["1080p", "720p", "480p", "360p"],
            },
        ),
        // HEVC Main 10 HLG, rotated, VFR, metadata tracks.
        (
            "in/phone.mp4",
            Expect {
                sizes: &[
                    ("1080p", 1080, 1920),
                    ("720p", 720, 1280),
                    ("480p", 480, 854),
                    ("360p", 360, 640),
                ],
                audio: true,
                skipped: LADDER,
            },
        ),
        // Odd 3026x1386 screen recording without audio.
        (
            "in/screen.mp4",
            Expect {
                sizes: &[
                    ("1080p", 2358, 1080),
                    ("720p", 1572, 720),
                    ("480p", 1048, 480),
                    ("360p", 786, 360),
                ],
                audio: false,
                skipped: LADDER,
            },
        ),
        (
            "in/pcm.mov",
            Expect {
                sizes: &[
                    ("1080p", 1920, 1080),
                    ("720p", 1280, 720),
                    ("480p", 854, 480),
                    ("360p", 640, 360),
                ],
                audio: true,
                skipped: LADDER,
            },
        ),
        (
            "in/tiny.webm",
            Expect {
                sizes: &[("120p", 160, 120)],
                audio: true,
                skipped: &["1080p", "720p", "480p", "360p"],
            },
        ),
    ];
    for (i, (key, expect)) in cases.iter().enumerate() {
        let job = run_job(&node, key, &format!("out/{i}"), json!({})).await;
        check_outputs(&node, &job, expect).await;
    }
}

#[tokio::test]
async fn no_location_device_or_date_from_the_input_reaches_an_output() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // A clip carrying what a phone writes: GPS position, make, model, capture date.
    let tagged = generate(
        tmp.path(),
        "tagged.mov",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-metadata",
            "location=+51.5331-000.1261/",
            "-metadata",
            "com.apple.quicktime.location.ISO6709=+51.5331-000.1261/",
            "-metadata",
            "make=Google",
            "-metadata",
            "model=Pixel 8",
            "-metadata",
            "com.apple.quicktime.make=Google",
            "-metadata",
            "com.apple.quicktime.model=Pixel 8",
            "-metadata",
            "creation_time=2019-05-04T10:11:12Z",
            "-movflags",
            "use_metadata_tags",
        ],
    );
    let exif = Command::new("exiftool")
        .args(["-a", "-G1"])
        .arg(&tagged)
        .output()
        .unwrap();
    let before = String::from_utf8_lossy(&exif.stdout).to_string();
    assert!(
        before.contains("Pixel 8") && before.contains("51"),
        "the input must carry the tags: {before}"
    );
    node.upload("in/tagged.mov", std::fs::read(&tagged).unwrap())
        .await;
    node.upload_fixture("in/phone.mp4", "phone-hevc-hlg-rot90-vfr-2.5s.mp4")
        .await;

    for (key, prefix, input_date) in [
        ("in/tagged.mov", "priv/tagged", "2019:05:04"),
        ("in/phone.mp4", "priv/phone", "2024:01:24"),
    ] {
        let job = run_job(
            &node,
            key,
            prefix,
            json!({"renditions": {"rungs": ["360p"], "formats": ["mp4", "hls"]}}),
        )
        .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let objects = node.data_dir.join("objects").join(prefix);
        let mut files = Vec::new();
        for entry in walk(&objects) {
            if entry.extension().is_some_and(|e| e == "mp4" || e == "ts") {
                files.push(entry);
            }
        }
        assert!(files.len() >= 2, "{files:?}");
        for file in files {
            let out = Command::new("exiftool")
                .args(["-a", "-G1", "-ee"])
                .arg(&file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
            for needle in [
                "gps", "location", "pixel 8", "google", "make", "model", "serial", input_date,
            ] {
                assert!(
                    !text.contains(needle),
                    "{needle} in {}:\n{text}",
                    file.display()
                );
            }
            let probe = ffprobe(file.to_str().unwrap());
            let tags = probe["format"]["tags"].to_string().to_lowercase();
            for needle in ["location", "make", "model", "2019-05-04", "2024-01-24"] {
                assert!(!tags.contains(needle), "{needle} in {tags}");
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn broken_inputs_fail_their_transcode_and_the_node_keeps_serving() {
    let node = Node::start().await;
    let real = std::fs::read(fixture("portrait-rot90-h264-aac-2s.mp4")).unwrap();
    let mut broken_moov = real.clone();
    let moov = real.windows(4).position(|w| w == b"moov").unwrap();
    broken_moov[moov + 4..moov + 64].fill(0xAB);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("bad/truncated.mp4", real[..real.len() / 2].to_vec(), &["malformed_input"]),
        ("bad/broken-moov.mp4", broken_moov, &["malformed_input"]),
        ("bad/text.mp4", b"definitely not a video\n".repeat(40), &["not_media"]),
        (
            "bad/list.mp4",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttps://cdn.example.com/a.ts\n#EXT-X-ENDLIST\n".to_vec(),
            &["unsupported_container"],
        ),
    ];
    for (key, body, _) in &cases {
        node.upload(key, body.clone()).await;
    }
    for (key, _, codes) in &cases {
        let job = run_job(&node, key, &format!("out/{key}"), json!({})).await;
        assert_eq!(job["status"], "failed", "{key}: {job}");
        let code = job["error"]["code"].as_str().unwrap();
        assert!(codes.contains(&code), "{key}: {job}");
        assert_eq!(job["attempts"], 1, "bad input is not retried: {job}");
        // Nothing half-made is published.
        assert!(walk(&node.data_dir.join("objects").join("out").join(key)).is_empty());
    }
    // The media work ran in children: the node itself stayed small.
    let peak = node.peak_memory();
    assert!(peak < 200 << 20, "node peak RSS {} MiB", peak >> 20);
    let res = node.client.get(node.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // And it still transcodes.
    node.upload_fixture("in/ok.webm", "webm-vp9-opus-320x180-5s.webm")
        .await;
    let job = run_job(&node, "in/ok.webm", "out/ok", json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

#[tokio::test]
async fn limits_are_checked_before_decoding() {
    let node = Node::builder()
        .env("MEDIA_NODE_LIMITS_MAX_DURATION_S", "4")
        .env("MEDIA_NODE_LIMITS_MAX_PIXELS", "2000000")
        .start()
        .await;
    node.upload_fixture("in/long.webm", "webm-vp9-opus-320x180-5s.webm")
        .await;
    node.upload_fixture("in/big.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let job = run_job(&node, "in/long.webm", "out/long", json!({})).await;
    assert_eq!(job["error"]["code"], "input_too_long", "{job}");
    let job = run_job(&node, "in/big.mp4", "out/big", json!({})).await;
    assert_eq!(job["error"]["code"], "resolution_too_large", "{job}");
}

#[tokio::test]
async fn bad_rendition_specs_are_refused_with_a_field_path() {
    let node = Node::start().await;
    for (renditions, prefix, field) in [
        (json!({"ladder": "nope"}), Some("o"), "renditions.ladder"),
        (
            json!({"rungs": ["720p", "4k"]}),
            Some("o"),
            "renditions.rungs[1]",
        ),
        (json!({"formats": []}), Some("o"), "renditions.formats"),
        (json!({}), None, "output_prefix"),
    ] {
        let mut body = json!({"input": {"key": "a.mp4"}, "renditions": renditions});
        if let Some(p) = prefix {
            body["output_prefix"] = json!(p);
        }
        let (status, problem) = node.post_job(&body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, problem) = node
        .post_job(&json!({"input": {"key": "a.mp4"}, "output_prefix": "o", "renditions": {"formats": ["avi"]}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["errors"][0]["field"], "renditions.formats[0]",
        "{problem}"
    );
}

#[tokio::test]
async fn a_rerun_overwrites_the_same_keys() {
    let node = Node::start().await;
    node.upload_fixture("in/clip.webm", "webm-vp9-opus-320x180-5s.webm")
        .await;
    let first = run_job(&node, "in/clip.webm", "out/same", json!({})).await;
    let files_first: Vec<PathBuf> = walk(&node.data_dir.join("objects/out/same"));
    let second = run_job(&node, "in/clip.webm", "out/same", json!({})).await;
    let files_second: Vec<PathBuf> = walk(&node.data_dir.join("objects/out/same"));
    assert_eq!(first["status"], "succeeded");
    assert_eq!(second["status"], "succeeded");
    let keys = |j: &Value| -> Vec<String> {
        j["result"]["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys(&first), keys(&second));
    let (mut a, mut b) = (files_first, files_second);
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[tokio::test]
async fn cancel_stops_the_pipeline_and_publishes_nothing() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let long = test_clip(tmp.path(), "long.mp4", "1280x720", 60);
    node.upload("in/long.mp4", std::fs::read(&long).unwrap())
        .await;
    let id = node
        .submit(&json!({
            "input": {"key": "in/long.mp4"}, "output_prefix": "out/canceled",
            "renditions": {"ladder": "default"},
            // Stills tapped from the transcode's decode stop with it.
            "thumbnails": {"times": ["auto", "90%"], "widths": [320]},
            "storyboard": {"interval_s": 5.0}
        }))
        .await;
    common::eventually(LIMIT, "the transcode to make progress", || async {
        let job = node.job(&id).await;
        (job["status"] == "running" && job["progress"].as_u64().unwrap() > 6).then_some(())
    })
    .await;
    let res = node.cancel(&id).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let started = std::time::Instant::now();
    let job = node
        .wait_status(&id, "canceled", Duration::from_secs(30))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        started.elapsed()
    );
    assert!(job.get("result").is_none());
    assert!(walk(&node.data_dir.join("objects/out/canceled")).is_empty());
    assert!(
        walk(&node.data_dir.join("work")).is_empty(),
        "work files left behind"
    );
}

#[tokio::test]
async fn process_runs_a_job_on_local_files() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("job.json");
    std::fs::write(
        &spec,
        r#"{"output_prefix": "clip", "renditions": {"ladder": "default", "rungs": ["360p"], "formats": ["mp4", "hls"]}}"#,
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_media-node"))
        .arg("process")
        .arg(fixture("portrait-rot90-h264-aac-2s.mp4"))
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&out_dir)
        .env_remove("MEDIA_NODE_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["outputs"][0]["key"], "clip/360p.mp4");
    let probe = ffprobe(out_dir.join("clip/360p.mp4").to_str().unwrap());
    assert_eq!(stream(&probe, "video").unwrap()["height"], 640);
    assert!(out_dir.join("clip/hls/master.m3u8").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(leftovers, ["clip"], "scratch files left behind");

    // Failure: non-zero exit with the error code.
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "not a video\n".repeat(30)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_media-node"))
        .arg("process")
        .arg(&text)
        .args([
            "--spec",
            spec.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_media"));
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

fn ratio(text: &str) -> f64 {
    let (n, d) = text.split_once('/').unwrap();
    n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap()
}

/// A handheld camera's H.264 clip: 90 kHz timescale, irregular sample
/// durations, full-range 4:2:0 (androidx/media's trim_optimization_failure.mp4,
/// ffprobe: r_frame_rate 359/12, 29.88 fps on average). GStreamer's caps
/// declare 90000 fps; the node measures the frames and runs it at 29.97.
#[tokio::test]
async fn a_90_khz_camera_clip_runs_at_its_measured_rate() {
    let node = Node::start().await;
    let clip = std::fs::read(corpus("androidx-trim_optimization_failure.mp4")).unwrap();
    node.upload("in/camera.mp4", clip).await;
    let job = run_job(&node, "in/camera.mp4", "out/camera", json!({"probe": true})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let probe = &job["result"]["probe"];
    assert_eq!(probe["fps"], 29.97, "{probe}");
    assert!(probe["declared_fps"].as_f64().unwrap() > 1000.0, "{probe}");
    assert_eq!(
        (probe["width"].as_u64(), probe["height"].as_u64()),
        (Some(518), Some(488))
    );
    let tmp = tempfile::tempdir().unwrap();
    for (rung, w, h) in [("480p", 510, 480), ("360p", 382, 360)] {
        let mp4 = node
            .download(&format!("out/camera/{rung}.mp4"), tmp.path())
            .await;
        let out = ffprobe(mp4.to_str().unwrap());
        let video = stream(&out, "video").unwrap();
        assert_eq!(video["r_frame_rate"], "30000/1001", "{rung}: {video}");
        let fps = ratio(video["avg_frame_rate"].as_str().unwrap());
        assert!((fps - 29.97).abs() < 0.1, "{rung}: {fps} fps");
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(w), Some(h)),
            "{rung}"
        );
    }
}

/// The shape of a Samsung super-slow-motion clip: square pixels in the stream,
/// a track header whose presentation size has another shape (68x120 for
/// 160x120 pictures), and a vendor trailer after the boxes. qtdemux makes a
/// 17:40 pixel aspect up from the track header; FFmpeg and Chromium show
/// 160x120, and so must the outputs.
#[tokio::test]
async fn a_track_header_of_another_shape_is_not_a_pixel_aspect() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let clip = generate(
        tmp.path(),
        "slowmo.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=30:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
    let mut data = std::fs::read(&clip).unwrap();
    // The first tkhd is the video's (ffmpeg writes the video track first):
    // its 16.16 width sits 76 bytes into a version-0 box body.
    let tkhd = data.windows(4).position(|w| w == b"tkhd").unwrap();
    assert_eq!(data[tkhd + 4], 0, "a version-0 tkhd");
    let width_at = tkhd + 4 + 76;
    assert_eq!(data[width_at..width_at + 4], (160u32 << 16).to_be_bytes());
    data[width_at..width_at + 4].copy_from_slice(&(68u32 << 16).to_be_bytes());
    data.extend_from_slice(b"\x00\x00\x01\x00SEFHvendor slow-motion data, no box\x00\x01\x02");
    node.upload("in/slowmo.mp4", data).await;
    let job = run_job(
        &node,
        "in/slowmo.mp4",
        "out/slowmo",
        json!({"probe": true, "thumbnails": {"times": ["auto"], "widths": [160], "formats": ["jpeg"]}}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let probe = &job["result"]["probe"];
    assert_eq!(
        (
            probe["display_width"].as_u64(),
            probe["display_height"].as_u64()
        ),
        (Some(160), Some(120)),
        "{probe}"
    );
    assert_eq!(
        (
            probe["presentation_width"].as_u64(),
            probe["presentation_height"].as_u64()
        ),
        (Some(68), Some(120)),
        "{probe}"
    );
    assert_eq!(probe["streams"][0]["pixel_aspect"], "1:1", "{probe}");
    let mp4 = node.download("out/slowmo/120p.mp4", tmp.path()).await;
    let out = ffprobe(mp4.to_str().unwrap());
    let video = stream(&out, "video").unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(160), Some(120)),
        "{video}"
    );
    assert_eq!(video["sample_aspect_ratio"], "1:1", "{video}");
    // The picture itself, not squeezed into a pillarbox: frame for frame
    // like the clip as ffmpeg made it, before its track header was changed.
    let poster = job["result"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "poster")
        .unwrap();
    assert_eq!(
        (poster["width"].as_u64(), poster["height"].as_u64()),
        (Some(160), Some(120))
    );
    let want = common::media::rgb_samples(&clip, &[], None);
    let got = common::media::rgb_samples(&mp4, &[], None);
    let diff = common::media::mean_abs_diff(&want[0], &got[0]);
    assert!(
        diff < 8.0,
        "the first frame differs by {diff} levels: squeezed?"
    );
}

/// First packet time of the first stream of `kind`, edit lists applied.
fn start_time(probe: &Value, kind: &str) -> f64 {
    stream(probe, kind).unwrap()["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every audio layout becomes stereo AAC-LC at 48 kHz, in sync: mono, 7.1 PCM
/// at 96 kHz and 24 bits, 5.1 Opus, audio that starts half a second after the
/// picture and audio that ends early.
#[tokio::test]
async fn audio_of_every_layout_becomes_stereo_aac_in_sync() {
    let node = Node::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let video = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=3",
    ];
    let h264 = [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ];
    // (name, audio input args, audio codec args, audio starts after video by)
    let cases: Vec<(&str, Vec<&str>, Vec<&str>, f64)> = vec![
        (
            "mono.mp4",
            vec![
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=500:sample_rate=44100:duration=3",
            ],
            vec!["-c:a", "aac", "-ac", "1"],
            0.0,
        ),
        (
            "pcm71.mov",
            vec![
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=300:sample_rate=96000:duration=3",
            ],
            vec!["-c:a", "pcm_s24le", "-ac", "8"],
            0.0,
        ),
        (
            "opus51.mkv",
            vec![
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=700:sample_rate=48000:duration=3",
            ],
            vec!["-c:a", "libopus", "-ac", "6", "-mapping_family", "1"],
            0.0,
        ),
        (
            "late.mp4",
            vec![
                "-itsoffset",
                "0.5",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=2.5",
            ],
            vec!["-c:a", "aac"],
            0.5,
        ),
        (
            "short.mp4",
            vec!["-f", "lavfi", "-i", "sine=duration=1.5"],
            vec!["-c:a", "aac"],
            0.0,
        ),
    ];
    for (name, audio_in, audio_codec, offset) in &cases {
        let mut args: Vec<&str> = video.to_vec();
        args.extend(audio_in);
        args.extend(h264);
        args.extend(audio_codec);
        let clip = generate(tmp.path(), name, &args);
        let key = format!("in/{name}");
        node.upload(&key, std::fs::read(&clip).unwrap()).await;
        let job = run_job(&node, &key, &format!("out/{name}"), json!({})).await;
        assert_eq!(job["status"], "succeeded", "{name}: {job}");
        let mp4 = node
            .download(&format!("out/{name}/240p.mp4"), tmp.path())
            .await;
        let out = ffprobe(mp4.to_str().unwrap());
        let audio = stream(&out, "audio").unwrap_or_else(|| panic!("{name}: no audio"));
        assert_eq!(audio["codec_name"], "aac", "{name}");
        assert_eq!(audio["profile"], "LC", "{name}");
        assert_eq!(audio["channels"], 2, "{name}");
        assert_eq!(audio["sample_rate"], "48000", "{name}");
        // A/V as in the input, within a frame (40 ms at 25 fps).
        let sync = start_time(&out, "audio") - start_time(&out, "video");
        assert!(
            (sync - offset).abs() <= 0.04,
            "{name}: audio starts {sync} s after video"
        );
    }
}
