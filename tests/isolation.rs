//! Isolation on a real node: each job's media step runs in a child process
//! (`media-node work --job ID`), so a decoder that crashes ends that child only.
//! The tests find the child in /proc by its command line, as ops would with ps.
#![cfg(feature = "test-support")]

mod common;

use std::time::Duration;

use common::live::{
    assert_complete, assert_continuous, create_stream, media_playlist, publish, quick_profile,
    stream, wait_replay, wait_state,
};
use common::media::test_clip;
use common::{Node, TOKEN, WEBHOOK_SECRET, eventually, segv};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(180);
const AWS_SECRET: &str = "aws-secret-that-must-stay-in-the-node";

/// Waits for the media child of job `id` and returns its pid.
async fn media_child(node: &Node, id: &str) -> u32 {
    let pid = node.pid();
    eventually(LIMIT, &format!("the media process of job {id}"), || {
        let found = common::children_of(pid, &[" work ", id]);
        async move { found.first().copied() }
    })
    .await
}

/// Whether process `pid` has an output file of its work dir open: it is past
/// start-up and probing, transcoding.
fn writing_outputs(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.to_string_lossy().contains("/out/"))
}

/// SIGSEGV to `pid` once it is transcoding.
async fn segv_while_transcoding(pid: u32) {
    eventually(LIMIT, "the media process writing its outputs", || {
        let busy = writing_outputs(pid);
        async move { busy.then_some(()) }
    })
    .await;
    segv(pid);
}

fn transcode(prefix: &str) -> Value {
    json!({
        "input": {"key": "in/long.mp4"},
        "output_prefix": prefix,
        "renditions": {"ladder": "default", "rungs": ["360p"], "formats": ["mp4", "hls"]}
    })
}

async fn node_with_a_long_clip() -> (Node, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 2.0))
        .env("MEDIA_NODE_JOBS_RETRY_BASE_MS", "100")
        .env("MEDIA_NODE_JOBS_WORKERS", "2")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .start()
        .await;
    // Long enough that the child is still transcoding when it is found.
    let clip = test_clip(tmp.path(), "long.mp4", "1280x720", 30);
    node.upload("in/long.mp4", std::fs::read(clip).unwrap())
        .await;
    (node, tmp)
}

#[tokio::test]
async fn a_crashed_media_process_fails_its_run_alone() {
    let (node, _tmp) = node_with_a_long_clip().await;
    let crashing = node.submit(&transcode("crash")).await;
    let neighbour = node.submit(&transcode("neighbour")).await;
    // A creator is live on the same node all along.
    let created = create_stream(&node, "quick").await;
    let stream_id = created["id"].as_str().unwrap().to_string();
    let mut publisher = publish(created["rtmp_url"].as_str().unwrap(), 300);
    wait_state(&node, &stream_id, "live", LIMIT).await;

    let child = media_child(&node, &crashing).await;
    // The child runs without privileges to gain and without the node's secrets.
    // It confines itself as soon as it starts, before it reads its input.
    let status = eventually(LIMIT, "the media process under its seccomp filter", || {
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
        async move { status.contains("Seccomp:\t2").then_some(status) }
    })
    .await;
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{child}/environ")).unwrap())
            .replace('\0', "\n");
    for secret in [TOKEN, WEBHOOK_SECRET, AWS_SECRET] {
        assert!(
            !environ.contains(secret),
            "a secret in the child's environment:\n{environ}"
        );
    }
    assert!(!environ.contains("MEDIA_NODE_"), "{environ}");

    segv_while_transcoding(child).await;
    let job = node.wait_done(&crashing, LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let other = node.wait_done(&neighbour, LIMIT).await;
    assert_eq!(other["status"], "succeeded", "{other}");
    assert_eq!(other["attempts"], 1, "{other}");
    let health = node.get("/healthz").await;
    assert!(health.status().is_success());
    // The stream was relayed all along: its replay lists every segment, in
    // order, and plays without a jump.
    let live = stream(&node, &stream_id).await;
    assert_eq!(live["state"], "live", "{live}");
    publisher.kill().unwrap();
    let _ = publisher.wait();
    let ended = wait_replay(&node, &stream_id, LIMIT).await;
    let replay_url = ended["replay_url"].as_str().unwrap();
    let replay = media_playlist(&node.get_text(replay_url).await);
    assert_complete(&replay);
    assert!(replay.segments.len() >= 3, "{replay:?}");
    assert_continuous(replay_url);
    assert!(
        node.log().contains("the media process crashed"),
        "{}",
        node.log()
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_child_crashes_total{kind=\"job\",signal=\"SIGSEGV\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("media_node_live_segments_dropped_total{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_job_whose_media_process_crashes_every_time_fails_media_crashed() {
    let (node, _tmp) = node_with_a_long_clip().await;
    let id = node.submit(&transcode("always")).await;
    let first = media_child(&node, &id).await;
    segv_while_transcoding(first).await;
    // The retry gets a child of its own.
    let second = eventually(LIMIT, "the second attempt's media process", || {
        let found: Vec<u32> = common::children_of(node.pid(), &[" work ", &id])
            .into_iter()
            .filter(|p| *p != first)
            .collect();
        async move { found.first().copied() }
    })
    .await;
    segv_while_transcoding(second).await;
    let job = node.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(job["error"]["code"], "media_crashed", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIGSEGV"),
        "{job}"
    );
    // Nothing of the crashed runs was published.
    for key in ["always/360p.mp4", "always/hls/master.m3u8"] {
        let status = node.get(&format!("/media/{key}")).await.status();
        assert_eq!(status, 404, "{key}");
    }
}

/// The sandbox tried from the inside: a test job whose media process tries
/// to read the node's token, write outside its work dir, connect over TCP,
/// run a program, write into its input (a hard link to the stored upload),
/// read the node's environment and signal the node.
#[tokio::test]
async fn the_media_process_cannot_get_out_of_its_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The node keeps its token in its data dir, as a node without one
    // configured does.
    let token_file = data.join("api_token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let node = Node::builder()
        .data_dir(&data)
        .without_env("MEDIA_NODE_API_TOKEN")
        .start()
        .await;
    node.upload_fixture("in/clip.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let outside = data.join("escaped.txt");
    let id = node
        .submit(&json!({
            "input": {"key": "in/clip.mp4"},
            "test": {"escape": {
                "read": token_file,
                "write": outside,
                "connect": listener.local_addr().unwrap().to_string(),
                "exec": "/bin/true",
            }}
        }))
        .await;
    let job = node.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let tries = job["result"]["escape"].as_object().expect("result.escape");
    for name in [
        "read",
        "write",
        "connect",
        "exec",
        "write_input",
        "read_node_environ",
        "signal_node",
    ] {
        let said = tries[name].as_str().unwrap_or_default();
        println!("{name}: {said}");
        assert!(
            said.starts_with("denied:")
                && (said.contains("Permission denied") || said.contains("not permitted")),
            "{name}: {said}"
        );
    }
    assert!(!outside.exists(), "the media process wrote {outside:?}");
    assert!(
        listener.accept().is_err(),
        "the media process connected over TCP"
    );
    // The stored upload, which the work dir's input is a hard link to, is as
    // it was.
    let stored = std::fs::read(data.join("objects/in/clip.mp4")).unwrap();
    let fixture = std::fs::read(common::fixture("portrait-rot90-h264-aac-2s.mp4")).unwrap();
    assert!(stored == fixture, "the stored upload changed");
}

/// A 1080p ladder in a media process limited to 48 MiB fails
/// `memory_limit`, on its first attempt; the node itself stays small.
#[tokio::test]
async fn a_media_process_at_its_memory_limit_fails_memory_limit() {
    let node = Node::builder()
        .env("MEDIA_NODE_JOBS_CHILD_MEMORY_LIMIT_MB", "48")
        .start()
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let clip = test_clip(tmp.path(), "1080p.mp4", "1920x1080", 2);
    node.upload("in/1080p.mp4", std::fs::read(clip).unwrap())
        .await;
    let before = node.peak_memory();
    let id = node
        .submit(&json!({
            "input": {"key": "in/1080p.mp4"},
            "output_prefix": "big",
            "renditions": {"ladder": "default"}
        }))
        .await;
    let job = node.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "memory_limit", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let after = node.peak_memory();
    println!(
        "node peak RSS: {} MiB before the job, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (30 << 20),
        "node peak RSS grew from {before} to {after}"
    );
    assert!(node.get("/healthz").await.status().is_success());
}
