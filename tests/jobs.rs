//! Job lifecycle on a real node: crash recovery, graceful shutdown, retries,
//! panics, cancel and webhooks. Uses the test-only `test` job field (slow, failing or
//! panicking runs), compiled in with `--features test-support`.
#![cfg(feature = "test-support")]

mod common;

use std::time::Duration;

use common::{Node, WEBHOOK_SECRET};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn slow_probe(ms: u64) -> Value {
    json!({
        "input": {"key": "uploads/portrait.mp4"},
        "probe": true,
        "test": {"sleep_ms": ms}
    })
}

#[tokio::test]
async fn a_job_survives_a_crash_of_its_node() {
    // A short lease, so the second node takes the job over soon.
    let short_lease = || {
        vec![
            ("MEDIA_NODE_JOBS_LEASE_MS".to_string(), "2000".to_string()),
            (
                "MEDIA_NODE_JOBS_HEARTBEAT_MS".to_string(),
                "300".to_string(),
            ),
        ]
    };
    let mut first = Node::builder().envs(short_lease()).start().await;
    first
        .upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let id = first.submit(&slow_probe(4_000)).await;
    let running = first.wait_status(&id, "running", LIMIT).await;
    assert_eq!(running["attempts"], 1);
    common::eventually(LIMIT, "progress to be reported", || async {
        (first.job(&id).await["progress"].as_u64().unwrap() > 0).then_some(())
    })
    .await;

    let data_dir = first.data_dir.clone();
    first.kill(); // SIGKILL: no cleanup, the lease stays taken.

    let second = Node::builder()
        .data_dir(&data_dir)
        .envs(short_lease())
        .start()
        .await;
    let job = second.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(job["result"]["probe"]["rotation"], 90);
    drop(first);
}

#[tokio::test]
async fn graceful_shutdown_hands_running_jobs_back() {
    let mut node = Node::builder()
        .env("MEDIA_NODE_JOBS_SHUTDOWN_GRACE_MS", "300")
        .start()
        .await;
    node.upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let long = node.submit(&slow_probe(30_000)).await;
    node.wait_status(&long, "running", LIMIT).await;
    let status = node.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");

    // The job is back in the queue, its interrupted attempt not counted.
    let data_dir = node.data_dir.clone();
    let queue = media_node::jobs::queue::open(&node.db_url).await.unwrap();
    let stored = queue.get(long.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.status, media_node::jobs::model::JobStatus::Queued);
    assert_eq!(stored.attempts, 0);
    assert!(stored.lease_owner.is_none());
    drop(queue);

    // Restarted, the job runs again.
    let restarted = Node::builder().data_dir(&data_dir).start().await;
    let job = restarted.job(&long).await;
    assert_ne!(job["status"], "failed", "{job}");
    let res = restarted.cancel(&long).await;
    assert!(res.status().is_success());
    let job = restarted.wait_done(&long, LIMIT).await;
    assert_eq!(job["status"], "canceled");
    assert!(job["attempts"].as_u64().unwrap() <= 1, "{job}");
    drop(node);
}

#[tokio::test]
async fn a_short_job_finishes_during_graceful_shutdown() {
    let mut node = Node::builder()
        .env("MEDIA_NODE_JOBS_SHUTDOWN_GRACE_MS", "20000")
        .start()
        .await;
    node.upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let id = node.submit(&slow_probe(1_500)).await;
    node.wait_status(&id, "running", LIMIT).await;
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let data_dir = node.data_dir.clone();
    let restarted = Node::builder().data_dir(&data_dir).start().await;
    let job = restarted.job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    drop(node);
}

#[tokio::test]
async fn transient_failures_retry_with_backoff_then_fail() {
    let node = Node::builder()
        .env("MEDIA_NODE_JOBS_MAX_ATTEMPTS", "3")
        .start()
        .await;
    let id = node
        .submit(&json!({
            "input": {"key": "uploads/none.mp4"},
            "test": {"fail_transient": true}
        }))
        .await;
    let job = node.wait_done(&id, LIMIT).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["error"]["code"], "store_unavailable");
    assert_eq!(job["error"]["message"], "test job asked to fail");
}

#[tokio::test]
async fn a_panicking_job_fails_alone() {
    let node = Node::start().await;
    node.upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let bad = node
        .submit(&json!({"input": {"key": "uploads/portrait.mp4"}, "test": {"panic": true}}))
        .await;
    let good = node
        .submit(&json!({"input": {"key": "uploads/portrait.mp4"}, "probe": true}))
        .await;
    let job = node.wait_done(&bad, LIMIT).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "internal_panic");
    assert_eq!(job["attempts"], 1);
    let job = node.wait_done(&good, LIMIT).await;
    assert_eq!(job["status"], "succeeded");
    let res = node.client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn cancel_stops_running_and_queued_jobs() {
    let node = Node::builder()
        .env("MEDIA_NODE_JOBS_WORKERS", "1")
        .start()
        .await;
    node.upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let running = node.submit(&slow_probe(60_000)).await;
    node.wait_status(&running, "running", LIMIT).await;
    let queued = node.submit(&slow_probe(60_000)).await;

    let res = node.cancel(&queued).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "canceled");

    let res = node.cancel(&running).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job = node
        .wait_status(&running, "canceled", Duration::from_secs(10))
        .await;
    assert_eq!(job["attempts"], 1);
    assert!(job.get("error").is_none(), "{job}");
    // Canceling again is a no-op.
    let res = node.cancel(&running).await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// A one-route HTTP server that records what it receives.
async fn webhook_receiver(
    fail_first: usize,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, Vec<u8>)>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let _ = tx.send((headers, body.to_vec()));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn webhooks_are_signed_and_retried() {
    let node = Node::start().await;
    node.upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    let (url, mut rx) = webhook_receiver(1).await;
    let id = node
        .submit(&json!({
            "input": {"key": "uploads/portrait.mp4"},
            "probe": true,
            "callback_url": url
        }))
        .await;
    let (headers, body) = tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("webhook within the limit")
        .unwrap();
    let view: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["result"]["probe"]["container"], "mp4");

    let msg_id = headers["webhook-id"].to_str().unwrap();
    let timestamp: i64 = headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let signature = headers["webhook-signature"].to_str().unwrap();
    let key = media_node::config::secret::decode_webhook_secret(WEBHOOK_SECRET).unwrap();
    assert_eq!(
        signature,
        media_node::jobs::webhook::sign(&key, msg_id, timestamp, &body)
    );
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 120);
}
