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

/// The bucket CORS rule docs/fleet.md tells operators to set, read from the
/// docs themselves.
fn documented_cors_rule() -> aws_sdk_s3::types::CorsRule {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fleet.md")).unwrap();
    let start = docs
        .find("```json\n{\"CORSRules\"")
        .expect("the rule in docs/fleet.md")
        + 8;
    let end = start + docs[start..].find("```").unwrap();
    let doc: Value = serde_json::from_str(&docs[start..end]).unwrap();
    let rule = &doc["CORSRules"][0];
    let list = |name: &str| -> Vec<String> {
        rule[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    aws_sdk_s3::types::CorsRule::builder()
        .set_allowed_origins(Some(list("AllowedOrigins")))
        .set_allowed_methods(Some(list("AllowedMethods")))
        .set_allowed_headers(Some(list("AllowedHeaders")))
        .set_expose_headers(Some(list("ExposeHeaders")))
        .max_age_seconds(rule["MaxAgeSeconds"].as_i64().unwrap() as i32)
        .build()
        .unwrap()
}

async fn put_cors(s3: &S3Server, bucket: &str, rule: aws_sdk_s3::types::CorsRule) {
    let cors = aws_sdk_s3::types::CorsConfiguration::builder()
        .cors_rules(rule)
        .build()
        .unwrap();
    s3.client()
        .put_bucket_cors()
        .bucket(bucket)
        .cors_configuration(cors)
        .send()
        .await
        .expect("put bucket CORS");
}

/// `media-node check` on `bucket`: its exit code and its `bucket CORS` line.
async fn check_cors(s3: &S3Server, bucket: &str, origins: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_media-node"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MEDIA_NODE_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("check")
        .envs(s3.node_env(bucket))
        .env("MEDIA_NODE_DATA_DIR", dir.path())
        .env("MEDIA_NODE_MEDIA_CORS_ORIGINS", origins);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("bucket CORS"))
        .unwrap_or_else(|| panic!("no bucket CORS line: {text}"))
        .to_string();
    (out.status.code(), line)
}

/// On S3 players read the bucket, so `check` reads its CORS rules (moto's S3
/// server keeps them; s3s-fs has none) and says whether pages of the
/// configured origins can play: a warning, not a failure, as a CDN in front
/// of the bucket may answer CORS instead.
#[tokio::test]
async fn check_says_whether_the_bucket_cors_rules_let_pages_play() {
    let s3 = S3Server::start_moto().await;
    s3.create_bucket("cors").await;

    let (code, line) = check_cors(&s3, "cors", "*").await;
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("WARN") && line.contains("no CORS rules"),
        "{line}"
    );

    put_cors(&s3, "cors", documented_cors_rule()).await;
    for origins in ["*", "https://shop.example"] {
        let (code, line) = check_cors(&s3, "cors", origins).await;
        assert_eq!(code, Some(0), "{line}");
        assert!(line.starts_with("ok"), "{origins}: {line}");
    }

    // A rule for another shop, without the Range header or exposed headers.
    let narrow = aws_sdk_s3::types::CorsRule::builder()
        .allowed_origins("https://other.example")
        .allowed_methods("GET")
        .build()
        .unwrap();
    put_cors(&s3, "cors", narrow).await;
    let (code, line) = check_cors(&s3, "cors", "https://shop.example,https://other.example").await;
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains("from `https://shop.example`"), "{line}");
    assert!(
        line.contains("HEAD with a Range header from `https://other.example`"),
        "{line}"
    );
    assert!(line.contains("docs/fleet.md"), "{line}");
}
