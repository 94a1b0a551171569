//! A node on a real S3-compatible store: jobs read their inputs from it, and
//! readiness follows the store going away and coming back.

mod common;

use std::time::{Duration, Instant};

use common::{Node, S3Server, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn readyz(node: &Node) -> (StatusCode, Value) {
    let res = node.client.get(node.url("/readyz")).send().await.unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test]
async fn uploads_and_jobs_go_through_s3() {
    let s3 = S3Server::start().await;
    s3.create_bucket("jobs").await;
    let node = Node::builder().envs(s3.node_env("jobs")).start().await;
    node.upload_fixture("uploads/clip.webm", "webm-vp9-opus-320x180-5s.webm")
        .await;
    let id = node
        .submit(&json!({"input": {"key": "uploads/clip.webm"}, "probe": true}))
        .await;
    let job = node.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["probe"]["video_codec"], "vp9");

    // `/media` is the filesystem store's; with S3 a CDN serves the bucket.
    let res = node
        .client
        .get(node.url("/media/uploads/clip.webm"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "media_not_served");
}

#[tokio::test]
async fn readiness_follows_the_object_store() {
    let mut s3 = S3Server::start().await;
    s3.create_bucket("ready").await;
    let node = Node::builder().envs(s3.node_env("ready")).start().await;
    let (status, body) = readyz(&node).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    s3.stop();
    let body = eventually(Duration::from_secs(15), "readyz to fail", || async {
        let (status, body) = readyz(&node).await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failing"], json!(["object_store"]), "{body}");
    let check = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "object_store")
        .unwrap();
    assert!(!check["error"].as_str().unwrap().is_empty());
    // Liveness is unaffected.
    let res = node.client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    s3.restart().await;
    let back = Instant::now();
    eventually(Duration::from_secs(10), "readyz to recover", || async {
        (readyz(&node).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(back.elapsed() < Duration::from_secs(10));
}
