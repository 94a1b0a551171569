//! Live helpers shared by the tests that publish streams: ffmpeg as the
//! creator's app, the API calls around a stream, playlist checks.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Node, TOKEN, eventually, fixture};

pub const CLIP: &str = "landscape-640x360-h264-aac-17s.mp4";
pub const SEGMENT_S: f64 = 2.0;

/// A pipelines dir with a `quick` live profile: the default, with a short
/// reconnect window so a stream ends soon after its publisher stops.
pub fn quick_profile(dir: &Path, reconnect_window_s: f64) -> String {
    let live = dir.join("pipelines/live");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(
        live.join("quick.toml"),
        format!(
            "segment_s = {SEGMENT_S}\nmax_segment_s = 3.0\nwindow = 6\n\
             reconnect_window_s = {reconnect_window_s}\n\
             idle_timeout_s = 5.0\nposter_interval_s = 2.0\nposter_width = 320\n"
        ),
    )
    .unwrap();
    dir.join("pipelines").display().to_string()
}

pub async fn create_stream(node: &Node, profile: &str) -> Value {
    let res = node
        .client
        .post(node.url("/v1/live/streams"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "launch", "profile": profile}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

pub async fn stream(node: &Node, id: &str) -> Value {
    node.get_json(&format!("/v1/live/streams/{id}")).await
}

pub async fn wait_state(node: &Node, id: &str, state: &str, limit: Duration) -> Value {
    let what = format!("stream {id} to be {state}");
    eventually(limit, &what, || async {
        let s = stream(node, id).await;
        (s["state"] == state).then_some(s)
    })
    .await
}

/// ffmpeg publishing the test clip (looped) for `seconds`, like a creator's
/// app: FLV over RTMP, or MPEG-TS over SRT.
pub fn publish_as(url: &str, seconds: u32, format: &str) -> Child {
    let target = if format == "mpegts" {
        format!("{url}&pkt_size=1316")
    } else {
        url.to_string()
    };
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-stream_loop", "-1", "-i"])
        .arg(fixture(CLIP))
        .args(["-t", &seconds.to_string(), "-c", "copy", "-f", format])
        .arg(target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

/// ffmpeg publishing the test clip (looped) for `seconds` over RTMP,
/// re-encoded with a keyframe every `keyframe_s` seconds, as OBS sends with
/// its "Keyframe Interval" set (the clip's own keyframes are up to 8 s apart).
pub fn publish_with_keyframes(url: &str, seconds: u32, keyframe_s: u32) -> Child {
    let gop = (keyframe_s * 30).to_string();
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-stream_loop", "-1", "-i"])
        .arg(fixture(CLIP))
        .args(["-t", &seconds.to_string(), "-r", "30"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"])
        .args(["-c:a", "copy", "-f", "flv"])
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

pub fn publish(url: &str, seconds: u32) -> Child {
    publish_as(url, seconds, "flv")
}

pub fn publish_srt(url: &str, seconds: u32) -> Child {
    publish_as(url, seconds, "mpegts")
}

/// Waits until the stream's replay is written; returns the stream.
pub async fn wait_replay(node: &Node, id: &str, limit: Duration) -> Value {
    eventually(limit, "the replay", || async {
        let s = stream(node, id).await;
        (s["replay_ready"] == true).then_some(s)
    })
    .await
}

/// Waits for a publisher to exit; returns whether it succeeded and its stderr.
pub async fn finished(mut child: Child, limit: Duration) -> (bool, String) {
    let status = eventually(limit, "ffmpeg to exit", || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut err);
    }
    (status.success(), err)
}

pub fn ffprobe_duration(url: &str) -> f64 {
    let probe = super::media::ffprobe(url);
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration for {url}: {probe}"))
}

pub fn media_playlist(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist ({other:?}):\n{text}"),
    }
}

/// The replay lists every segment once, in order, without gaps.
pub fn assert_complete(replay: &m3u8_rs::MediaPlaylist) {
    assert!(replay.end_list);
    assert_eq!(replay.media_sequence, 0);
    for (i, seg) in replay.segments.iter().enumerate() {
        assert_eq!(seg.uri, format!("{i:08}.ts"), "segment {i}");
        assert!(!seg.discontinuity, "segment {i} follows a gap");
    }
}

/// The video timestamps of an HLS playlist never jump by more than a frame or two.
pub fn assert_continuous(playlist: &str) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=dts_time", "-of", "csv=p=0"])
        .arg(playlist)
        .output()
        .unwrap();
    assert!(out.status.success());
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert!(times.len() > 100);
    for pair in times.windows(2) {
        let step = pair[1] - pair[0];
        assert!(
            (0.0..0.2).contains(&step),
            "timestamps jump from {} to {}",
            pair[0],
            pair[1]
        );
    }
}

/// A `ladder` live profile next to `quick`: the same cutting, plus two rungs
/// encoded on the node.
/// A `pipelines_dir` that adds a profile (`quick`) and replaces the built-in
/// `ladder` (480p + 240p) with quicker rungs (240p + 144p): the test using it
/// checks that such a folder still adds to and overrides the built-in presets.
pub fn ladder_profile(dir: &Path) -> String {
    let pipelines = quick_profile(dir, 2.0);
    let quick = std::fs::read_to_string(dir.join("pipelines/live/quick.toml")).unwrap();
    std::fs::write(
        dir.join("pipelines/live/ladder.toml"),
        format!(
            "{quick}\n[transcode]\nx264_preset = \"ultrafast\"\n\
             [[transcode.rungs]]\nname = \"240p\"\nshort_side = 240\nvideo_kbps = 400\n\
             profile = \"main\"\nlevel = \"3.0\"\n\
             [[transcode.rungs]]\nname = \"144p\"\nshort_side = 144\nvideo_kbps = 150\n\
             profile = \"baseline\"\nlevel = \"3.0\"\n"
        ),
    )
    .unwrap();
    pipelines
}

pub fn master_playlist(text: &str) -> m3u8_rs::MasterPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a master playlist ({other:?}):\n{text}"),
    }
}

/// Waits until the master playlist at `url` lists `variants` variants (a
/// variant is listed once its playlist has segments).
pub async fn wait_master(node: &Node, url: &str, variants: usize) -> m3u8_rs::MasterPlaylist {
    let what = format!("a master with {variants} variants");
    eventually(Duration::from_secs(40), &what, || async {
        let res = node.client.get(url).send().await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let master = master_playlist(&res.text().await.ok()?);
        (master.variants.len() == variants).then_some(master)
    })
    .await
}

/// `(uri, width x height)` of each variant, highest bandwidth first.
pub fn variants(master: &m3u8_rs::MasterPlaylist) -> Vec<(String, String)> {
    master
        .variants
        .iter()
        .map(|v| {
            let size = v
                .resolution
                .map(|r| format!("{}x{}", r.width, r.height))
                .unwrap_or_default();
            (v.uri.clone(), size)
        })
        .collect()
}
