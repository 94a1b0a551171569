//! A fleet: three `media-node serve` processes on one real PostgreSQL server
//! and one real S3-compatible bucket. Nodes are SIGKILLed under running jobs
//! and live streams, the database goes away and comes back, and nothing
//! accepted is lost or done twice at once.
//!
//! The cases run one at a time (each starts three nodes; two fleets at once
//! would only measure the CI machine).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::live::{create_stream, finished, media_playlist, publish, quick_profile, stream};
use common::postgres::Postgres;
use common::{Node, S3Server, TOKEN, eventually, free_port, strip_ansi};
use reqwest::StatusCode;
use serde_json::{Value, json};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const LIMIT: Duration = Duration::from_secs(180);

struct Fleet {
    nodes: Vec<Node>,
    /// Each node's RTMP port.
    rtmp: Vec<u16>,
    bucket: Bucket,
    /// Kept for its lifetime: the server stops when the fleet is dropped.
    _s3: S3Server,
    pg: Postgres,
    _tmp: tempfile::TempDir,
}

impl Fleet {
    /// Three nodes on a new database and bucket, with `env` on each.
    async fn start(name: &str, env: &[(&str, &str)]) -> Fleet {
        let pg = Postgres::start().await;
        let db = pg.database(name);
        let s3 = S3Server::start().await;
        s3.create_bucket(name).await;
        let tmp = tempfile::tempdir().unwrap();
        let pipelines = quick_profile(tmp.path(), 4.0);
        let mut nodes = Vec::new();
        let mut rtmp = Vec::new();
        for id in NODES {
            let port = free_port();
            let mut builder = Node::builder()
                .envs(s3.node_env(name))
                .env("MEDIA_NODE_DB_URL", &db)
                .env("MEDIA_NODE_NODE_ID", id)
                .env("MEDIA_NODE_PIPELINES_DIR", &pipelines)
                .env("MEDIA_NODE_RTMP_LISTEN", format!("127.0.0.1:{port}"));
            for (k, v) in env {
                builder = builder.env(k, *v);
            }
            nodes.push(builder.start().await);
            rtmp.push(port);
        }
        Fleet {
            nodes,
            rtmp,
            bucket: Bucket {
                client: s3.client(),
                name: name.to_string(),
            },
            _s3: s3,
            pg,
            _tmp: tmp,
        }
    }

    fn node(&self, id: &str) -> &Node {
        &self.nodes[NODES.iter().position(|n| *n == id).unwrap()]
    }

    fn rtmp_url(&self, id: &str, key: &str) -> String {
        let port = self.rtmp[NODES.iter().position(|n| *n == id).unwrap()];
        format!("rtmp://127.0.0.1:{port}/live/{key}")
    }

    fn kill(&mut self, id: &str) {
        let at = NODES.iter().position(|n| *n == id).unwrap();
        self.nodes[at].kill();
    }

    /// Waits until `node` relays stream `id` and has stored `segments`.
    async fn wait_relayed(&self, id: &str, node: &str, segments: u64) -> Value {
        eventually(LIMIT, "segments from the relaying node", || async {
            let s = stream(&self.nodes[0], id).await;
            (s["node"] == node && s["segments_uploaded"].as_u64()? >= segments).then_some(s)
        })
        .await
    }

    /// Every node's log, for a failing case.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (id, node) in NODES.iter().zip(&self.nodes) {
            let log = node.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            out.push_str(&format!("--- {id} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The stream key in a created stream's RTMP URL.
fn stream_key(created: &Value) -> String {
    let url = created["rtmp_url"].as_str().unwrap();
    url.rsplit_once('/').unwrap().1.to_string()
}

/// The fleet's bucket, read with the test's own S3 client.
#[derive(Clone)]
struct Bucket {
    client: aws_sdk_s3::Client,
    name: String,
}

impl Bucket {
    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let got = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(got.body.collect().await.ok()?.into_bytes().to_vec())
    }

    async fn exists(&self, key: &str) -> bool {
        self.client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .is_ok()
    }
}

fn clip(dir: &Path) -> Vec<u8> {
    std::fs::read(common::media::test_clip(dir, "clip.mp4", "640x360", 2)).unwrap()
}

async fn post_job(node: &Node, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = node
        .client
        .post(node.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test]
async fn jobs_outlive_a_killed_node_and_idempotency_holds_across_nodes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start(
        "jobs",
        &[
            ("MEDIA_NODE_JOBS_LEASE_MS", "4000"),
            ("MEDIA_NODE_JOBS_HEARTBEAT_MS", "500"),
        ],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    fleet.nodes[0]
        .upload("uploads/clip.mp4", clip(tmp.path()))
        .await;

    // 12 concurrent submits with one key, spread over the three nodes: one job.
    let body = json!({"input": {"key": "uploads/clip.mp4"}, "probe": true});
    let mut submits = Vec::new();
    for i in 0..12 {
        let node = fleet.nodes[i % 3].client.clone();
        let url = fleet.nodes[i % 3].url("/v1/jobs");
        let body = body.clone();
        submits.push(tokio::spawn(async move {
            let res = node
                .post(url)
                .bearer_auth(TOKEN)
                .header("idempotency-key", "upload-77")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            let job: Value = res.json().await.unwrap();
            job["id"].as_str().unwrap().to_string()
        }));
    }
    let mut made = HashSet::new();
    for submit in submits {
        made.insert(submit.await.unwrap());
    }
    assert_eq!(made.len(), 1, "{made:?}");

    // 18 transcodes, round-robin over the nodes.
    let mut ids = Vec::new();
    for i in 0..18 {
        let body = json!({
            "input": {"key": "uploads/clip.mp4"},
            "output_prefix": format!("out/{i}"),
            "renditions": {"rungs": ["360p"], "formats": ["mp4", "hls"]},
        });
        let (status, job) = post_job(&fleet.nodes[i % 3], &body, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // node-b is killed while it runs some of them.
    let victim = "node-b";
    let running: Vec<String> = eventually(LIMIT, "node-b to run jobs", || async {
        let list = fleet.nodes[0]
            .get_json("/v1/jobs?status=running&limit=100")
            .await;
        let mine: Vec<String> = list["jobs"]
            .as_array()?
            .iter()
            .filter(|j| j["node"] == victim)
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        (!mine.is_empty()).then_some(mine)
    })
    .await;
    fleet.kill(victim);

    for id in &ids {
        let job = fleet.node("node-a").wait_done(id, LIMIT).await;
        assert_eq!(job["status"], "succeeded", "{job}\n{}", fleet.logs());
        if running.contains(id) {
            assert!(job["attempts"].as_u64().unwrap() >= 2, "{job}");
            assert_ne!(job["node"], victim, "{job}");
        }
        for output in job["result"]["outputs"].as_array().unwrap() {
            let key = output["key"].as_str().unwrap();
            assert!(
                fleet.bucket.exists(key).await,
                "{key} of {id} is not in the bucket"
            );
        }
    }
    // Any node lists all of them.
    for node in ["node-a", "node-c"] {
        let list = fleet.node(node).get_json("/v1/jobs?limit=100").await;
        let listed: HashSet<&str> = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap())
            .collect();
        for id in &ids {
            assert!(listed.contains(id.as_str()), "{node} does not list {id}");
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_database_and_work_goes_on_after_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start("ready", &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    fleet.nodes[0]
        .upload("uploads/clip.mp4", clip(tmp.path()))
        .await;
    let readyz = |node: &Node| {
        let req = node.client.get(node.url("/readyz"));
        async move { req.send().await.unwrap().status() }
    };
    for node in &fleet.nodes {
        assert_eq!(readyz(node).await, StatusCode::OK);
    }
    fleet.pg.stop();
    for node in &fleet.nodes {
        eventually(Duration::from_secs(30), "readyz 503", || async {
            (readyz(node).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        })
        .await;
    }
    fleet.pg.resume().await;
    for node in &fleet.nodes {
        eventually(Duration::from_secs(30), "readyz 200", || async {
            (readyz(node).await == StatusCode::OK).then_some(())
        })
        .await;
    }
    for node in &fleet.nodes {
        let (status, job) = post_job(
            node,
            &json!({"input": {"key": "uploads/clip.mp4"}, "probe": true}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        let done = node.wait_done(job["id"].as_str().unwrap(), LIMIT).await;
        assert_eq!(done["status"], "succeeded", "{done}\n{}", fleet.logs());
    }
}

#[tokio::test]
async fn no_job_runs_twice_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs.jsonl");
    let runs_file = runs.display().to_string();
    let fleet = Fleet::start(
        "runs",
        &[
            ("MEDIA_NODE_JOBS_WORKERS", "4"),
            ("TEST_MEDIA_NODE_RUNS", &runs_file),
        ],
    )
    .await;
    fleet.nodes[0]
        .upload("uploads/clip.mp4", clip(tmp.path()))
        .await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let body = json!({"input": {"key": "uploads/clip.mp4"}, "probe": true});
        let (status, job) = post_job(&fleet.nodes[i % 3], &body, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let mut attempts = HashMap::new();
    for id in &ids {
        let job = fleet.nodes[0].wait_done(id, LIMIT).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        attempts.insert(id.clone(), job["attempts"].as_u64().unwrap());
    }
    let mut by_job: HashMap<String, Vec<(i64, i64, String)>> = HashMap::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        let run: Value = serde_json::from_str(line).unwrap();
        by_job
            .entry(run["job"].as_str().unwrap().to_string())
            .or_default()
            .push((
                run["start_ms"].as_i64().unwrap(),
                run["end_ms"].as_i64().unwrap(),
                run["node"].as_str().unwrap().to_string(),
            ));
    }
    let nodes: HashSet<&str> = by_job
        .values()
        .flatten()
        .map(|(_, _, node)| node.as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "every node ran jobs: {nodes:?}");
    for id in &ids {
        let mut job_runs = by_job.remove(id).unwrap_or_default();
        assert_eq!(
            job_runs.len() as u64,
            attempts[id],
            "runs of {id}: {job_runs:?}"
        );
        job_runs.sort();
        for pair in job_runs.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "runs of {id} overlap: {job_runs:?}");
        }
    }
}

/// Watches a stream's live playlist in the bucket until `stop`: every
/// segment it ever lists must be there when it is read. Returns how many
/// versions of the playlist it read.
fn watch_playlist(
    bucket: Bucket,
    playlist_key: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let prefix = playlist_key.rsplit_once('/').unwrap().0.to_string();
        let mut seen = HashSet::new();
        while !stop.load(Ordering::Acquire) {
            if let Some(body) = bucket.object(&playlist_key).await {
                let text = String::from_utf8_lossy(&body).into_owned();
                if seen.insert(text.clone()) {
                    for seg in media_playlist(&text).segments {
                        let key = format!("{prefix}/{}", seg.uri);
                        assert!(
                            bucket.exists(&key).await,
                            "the live playlist lists {key}, which is missing:\n{text}"
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        seen.len()
    })
}

#[tokio::test]
async fn a_live_stream_goes_on_on_another_node_when_its_node_dies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start(
        "handover",
        &[
            ("MEDIA_NODE_LIVE_LEASE_MS", "3000"),
            ("MEDIA_NODE_LIVE_PLAYBACK_BASE_URL", "https://cdn.example/"),
        ],
    )
    .await;
    let created = create_stream(fleet.node("node-a"), "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let key = stream_key(&created);
    let playlist_key = created["playlist_key"].as_str().unwrap().to_string();
    let replay_key = created["replay_key"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_playlist(fleet.bucket.clone(), playlist_key.clone(), stop.clone());
    let first = publish(&fleet.rtmp_url("node-b", &key), 60);
    let before = fleet.wait_relayed(&id, "node-b", 3).await;
    fleet.kill("node-b");
    let (ok, _) = finished(first, Duration::from_secs(60)).await;
    assert!(!ok, "ffmpeg did not notice its node died");

    // The creator's app reconnects with the same key, through the balancer
    // to node-c: held until node-b's lease lapses, then on air again.
    let second_s = 10;
    let second = publish(&fleet.rtmp_url("node-c", &key), second_s);
    let (ok, err) = finished(second, Duration::from_secs(60)).await;
    assert!(ok, "the reconnect was refused: {err}\n{}", fleet.logs());
    let ended = eventually(LIMIT, "the replay", || async {
        let s = stream(fleet.node("node-a"), &id).await;
        (s["replay_ready"] == true).then_some(s)
    })
    .await;
    stop.store(true, Ordering::Release);
    let versions = watcher.await.unwrap();
    assert!(versions >= 3, "the playlist was read {versions} times");
    assert_eq!(ended["id"], id.as_str());
    assert_eq!(ended["node"], "node-c", "{ended}");
    assert_eq!(ended["end_reason"], "publisher_left", "{ended}");

    let text = String::from_utf8(fleet.bucket.object(&replay_key).await.unwrap()).unwrap();
    let replay = media_playlist(&text);
    assert!(replay.end_list);
    let prefix = replay_key.rsplit_once('/').unwrap().0;
    for seg in &replay.segments {
        assert!(
            fleet.bucket.exists(&format!("{prefix}/{}", seg.uri)).await,
            "{} is missing",
            seg.uri
        );
    }
    assert!(
        replay.segments.iter().skip(1).any(|s| s.discontinuity),
        "no discontinuity at the handover:\n{text}"
    );
    // The same live playlist went on on node-c, up to the replay's end.
    let live = String::from_utf8(fleet.bucket.object(&playlist_key).await.unwrap()).unwrap();
    let live = media_playlist(&live);
    assert!(live.end_list);
    assert_eq!(
        live.segments.last().map(|s| &s.uri),
        replay.segments.last().map(|s| &s.uri)
    );
    // Both parts: what node-b had stored before it died, and node-c's.
    let stored_before = before["segments_uploaded"].as_u64().unwrap() as usize;
    assert!(replay.segments.len() >= stored_before, "{text}");
    let total: f32 = replay.segments.iter().map(|s| s.duration).sum();
    let expected = stored_before as f32 * 2.0 + second_s as f32;
    assert!(
        total >= expected - 4.0,
        "the replay lasts {total} s, expected about {expected} s or more:\n{text}"
    );
    let metrics = fleet.node("node-c").metrics().await;
    assert!(
        metrics.contains("media_node_live_takeovers_total{reason=\"handover\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_whose_node_died_is_ended_with_its_replay_by_another() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start("orphan", &[("MEDIA_NODE_LIVE_LEASE_MS", "3000")]).await;
    let created = create_stream(fleet.node("node-a"), "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let key = stream_key(&created);
    let replay_key = created["replay_key"].as_str().unwrap().to_string();
    let publisher = publish(&fleet.rtmp_url("node-b", &key), 60);
    let before = fleet.wait_relayed(&id, "node-b", 2).await;
    fleet.kill("node-b");
    let killed = std::time::Instant::now();
    let _ = finished(publisher, Duration::from_secs(60)).await;

    // Lease (3 s) + reconnect window (4 s) + 30 s.
    let ended = eventually(Duration::from_secs(37), "the orphan's replay", || async {
        let s = stream(fleet.node("node-a"), &id).await;
        (s["replay_ready"] == true).then_some(s)
    })
    .await;
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["end_reason"], "node_lost", "{ended}");
    assert!(killed.elapsed() < Duration::from_secs(37));
    assert_ne!(ended["node"], "node-b");
    let text = String::from_utf8(fleet.bucket.object(&replay_key).await.unwrap()).unwrap();
    let replay = media_playlist(&text);
    assert!(replay.end_list);
    assert!(
        replay.segments.len() >= before["segments_uploaded"].as_u64().unwrap() as usize,
        "{text}"
    );
    let prefix = replay_key.rsplit_once('/').unwrap().0;
    for seg in &replay.segments {
        assert!(fleet.bucket.exists(&format!("{prefix}/{}", seg.uri)).await);
    }
}

/// A layer-4 balancer for one test: forwards each connection to `target`
/// from the local address `from`, first sending a PROXY v2 header that names
/// `client` as the connection's source. Returns its listening address.
async fn balancer(
    target: std::net::SocketAddr,
    from: std::net::IpAddr,
    client: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind((from, 0).into()).unwrap();
                let Ok(mut outbound) = socket.connect(target).await else {
                    return;
                };
                let header = ppp::v2::Builder::with_addresses(
                    ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                    ppp::v2::Protocol::Stream,
                    (client, target),
                )
                .build()
                .unwrap();
                use tokio::io::AsyncWriteExt;
                if outbound.write_all(&header).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn behind_a_balancer_the_proxy_header_names_the_creator() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let rtmp: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The balancer connects from 127.0.0.2; anybody else is no balancer.
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 2.0))
        .env("MEDIA_NODE_RTMP_LISTEN", rtmp.to_string())
        .env("MEDIA_NODE_LIVE_PROXY_PROTOCOL_FROM", "127.0.0.2")
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let key = stream_key(&created);
    let balancer_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let guesser = balancer(rtmp, balancer_ip, "203.0.113.7:5000".parse().unwrap()).await;
    let creator = balancer(rtmp, balancer_ip, "198.51.100.9:6000".parse().unwrap()).await;

    // Wrong keys through the balancer until the guesser's address is throttled.
    let wrong = format!("rtmp://{guesser}/live/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut tries = 0;
    while !node.log().contains("too many wrong keys from this address") {
        tries += 1;
        assert!(tries <= 30, "never throttled:\n{}", node.log());
        let (ok, _) = finished(publish(&wrong, 2), Duration::from_secs(30)).await;
        assert!(!ok, "a wrong key was accepted");
    }
    let log = strip_ansi(&node.log());
    let throttled: Vec<String> = log
        .lines()
        .filter(|l| l.contains("too many wrong keys from this address"))
        .map(str::to_string)
        .collect();
    assert!(
        throttled
            .iter()
            .all(|l| l.contains("client=203.0.113.7:5000")),
        "throttled by another address: {throttled:?}"
    );
    // The creator behind the same balancer is not slowed down.
    let (ok, err) = finished(
        publish(&format!("rtmp://{creator}/live/{key}"), 3),
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "the creator was refused: {err}\n{}", node.log());
    assert!(strip_ansi(&node.log()).contains("client=198.51.100.9:6000"));

    // A header from an address that is not a balancer is refused.
    let impostor = balancer(
        rtmp,
        "127.0.0.1".parse().unwrap(),
        "192.0.2.1:7000".parse().unwrap(),
    )
    .await;
    let (ok, _) = finished(
        publish(&format!("rtmp://{impostor}/live/{key}"), 2),
        Duration::from_secs(60),
    )
    .await;
    assert!(!ok, "a PROXY header from a non-balancer was taken");
    assert!(
        node.log().contains("which is not a configured balancer"),
        "{}",
        node.log()
    );
}
