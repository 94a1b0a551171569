//! The HTTP API of a real node: authentication, validation, errors, uploads, probe
//! jobs on real media, listing, idempotency, `/media`, health and metrics.

mod common;

use std::time::Duration;

use common::{Node, TOKEN, fixture};
use reqwest::StatusCode;
use serde_json::{Value, json};

const JOB_LIMIT: Duration = Duration::from_secs(60);

async fn problem(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(ctype, "application/problem+json", "status {status}");
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn every_v1_route_needs_a_valid_token() {
    let node = Node::start().await;
    let c = &node.client;
    for res in [
        c.get(node.url("/v1/jobs")).send().await.unwrap(),
        c.post(node.url("/v1/jobs"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        c.get(node.url("/v1/jobs/x"))
            .bearer_auth("wrong-token-000000")
            .send()
            .await
            .unwrap(),
        c.put(node.url("/v1/objects/a.mp4"))
            .body("x")
            .send()
            .await
            .unwrap(),
        c.get(node.url("/v1/jobs"))
            .header("authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap(),
    ] {
        assert!(res.headers().contains_key("www-authenticate"));
        let (status, body) = problem(res).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "unauthorized");
    }
    // Health, metrics and the API description need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        let res = c.get(node.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn bad_requests_get_problem_json_with_stable_codes() {
    let node = Node::start().await;
    let c = &node.client;
    let post = |body: &'static str, ctype: &'static str| {
        c.post(node.url("/v1/jobs"))
            .bearer_auth(TOKEN)
            .header("content-type", ctype)
            .body(body)
            .send()
    };

    let (status, body) = problem(post("{\"input\": ", "application/json").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_json");

    let (status, body) = problem(
        post(
            r#"{"input": {"key": "a.mp4", "bucket": "x"}, "probe": true}"#,
            "application/json",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "unknown_field");
    assert_eq!(body["errors"][0]["field"], "input.bucket");

    let (status, body) = problem(
        post(
            r#"{"input": {"key": "a.mp4"}, "probe": true, "colour": "red"}"#,
            "application/json",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "colour");

    let (status, body) = problem(
        post(
            r#"{"input": {"key": "a.mp4"}, "probe": "yes"}"#,
            "application/json",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_spec");
    assert_eq!(body["errors"][0]["field"], "probe");

    let (status, body) = problem(
        post(r#"{"input": {"key": "a.mp4"}}"#, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, body) = problem(
        post(
            r#"{"input": {"key": "../etc/passwd"}, "probe": true}"#,
            "application/json",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_key");
    assert_eq!(body["errors"][0]["field"], "input.key");

    let (status, body) = problem(
        post(
            r#"{"input": {"key": "a.mp4"}, "probe": true}"#,
            "text/plain",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "unsupported_media_type");

    let big = format!(
        r#"{{"input": {{"key": "{}"}}, "probe": true}}"#,
        "a".repeat(300_000)
    );
    let res = c
        .post(node.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");

    let (status, body) = problem(
        c.post(node.url("/v1/jobs"))
            .bearer_auth(TOKEN)
            .json(&json!({"input": {"key": "a.mp4"}, "probe": true, "callback_url": "ftp://example.com/"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "callback_url");

    let (status, body) = problem(node.get("/v1/jobs?status=done").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_query");

    let (status, body) = problem(
        node.get("/v1/jobs/01a22572-ac5e-72f5-bb6e-5b51411911d7")
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "job_not_found");

    let (status, body) = problem(c.get(node.url("/nowhere")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "route_not_found");

    let (status, body) = problem(
        c.delete(node.url("/v1/jobs"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn object_keys_that_could_escape_are_refused() {
    let node = Node::start().await;
    // (HTTP clients remove `..` and `%2E%2E` segments themselves; those are sent raw
    // below.)
    for path in [
        "/v1/objects/a/..%2F..%2Fetc",
        "/v1/objects/%2E%2E%2Fx",
        "/v1/objects/a%5Cb",
        "/v1/objects/a//b",
    ] {
        let res = node
            .client
            .put(node.url(path))
            .bearer_auth(TOKEN)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, body) = problem(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["code"], "invalid_key", "{path}");
    }
    // Raw `..` segments, as a client that does not normalise paths sends them
    // (`curl --path-as-is`).
    for (method, path) in [
        ("PUT", "/v1/objects/a/../../b"),
        ("PUT", "/v1/objects/a/%2e%2e/b"),
        ("GET", "/media/a/../b"),
        ("GET", "/media/%2E%2E/secret"),
    ] {
        let answer = raw_request(&node, method, path).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("invalid_key"), "{path}: {answer}");
    }
}

/// Keys the filesystem cannot hold answer as what they are, never 500: a
/// segment over 250 bytes is invalid (on every store), and `a` beside `a/b`
/// is a conflict.
#[tokio::test]
async fn object_keys_the_filesystem_cannot_hold_are_refused_with_a_code() {
    let node = Node::start().await;
    let put = |key: String| {
        let node = &node;
        async move {
            node.client
                .put(node.url(&format!("/v1/objects/{key}")))
                .bearer_auth(TOKEN)
                .body("x")
                .send()
                .await
                .unwrap()
        }
    };
    let (status, body) = problem(put(format!("uploads/{}", "a".repeat(251))).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_key", "{body}");
    assert_eq!(
        put("dir/clip.mp4".into()).await.status(),
        StatusCode::CREATED
    );
    for key in ["dir", "dir/clip.mp4/x"] {
        let (status, body) = problem(put(key.into()).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "{key}: {body}");
        assert_eq!(body["code"], "key_conflict", "{key}: {body}");
    }
}

async fn raw_request(node: &Node, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = node.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn probe_jobs_on_real_media() {
    let node = Node::start().await;
    node.upload_fixture("uploads/portrait.mp4", "portrait-rot90-h264-aac-2s.mp4")
        .await;
    node.upload_fixture("uploads/clip.webm", "webm-vp9-opus-320x180-5s.webm")
        .await;

    let id = node
        .submit(&json!({"input": {"key": "uploads/portrait.mp4"}, "probe": true}))
        .await;
    let job = node.wait_done(&id, JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["progress"], 100);
    assert_eq!(job["attempts"], 1);
    let probe = &job["result"]["probe"];
    assert_eq!(probe["container"], "mp4");
    assert_eq!(probe["width"], 1920);
    assert_eq!(probe["height"], 1080);
    assert_eq!(probe["rotation"], 90, "{probe}");
    assert_eq!(probe["fps"], 24.0);
    assert_eq!(probe["video_codec"], "h264");
    assert_eq!(probe["audio_codec"], "aac");
    let duration = probe["duration_s"].as_f64().unwrap();
    assert!((1.8..2.1).contains(&duration), "{duration}");
    let audio = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "audio")
        .unwrap();
    assert_eq!(audio["channels"], 6);

    let id = node
        .submit(&json!({"input": {"key": "uploads/clip.webm"}, "probe": true}))
        .await;
    let job = node.wait_done(&id, JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let probe = &job["result"]["probe"];
    assert_eq!(probe["container"], "webm");
    assert_eq!(probe["video_codec"], "vp9");
    assert_eq!(probe["audio_codec"], "opus");
    assert_eq!(probe["width"], 320);
    assert_eq!(probe["height"], 180);
    assert_eq!(probe["rotation"], 0);
}

#[tokio::test]
async fn bad_inputs_fail_their_job_with_a_clear_code_and_the_node_keeps_serving() {
    let node = Node::start().await;
    let real = std::fs::read(fixture("portrait-rot90-h264-aac-2s.mp4")).unwrap();
    node.upload(
        "bad/notes.mp4",
        b"this is a text file, not a video\n".repeat(50),
    )
    .await;
    node.upload(
        "bad/playlist.mp4",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nhttp://example.com/seg.ts\n#EXT-X-ENDLIST\n"
            .to_vec(),
    )
    .await;
    node.upload("bad/truncated.mp4", real[..real.len() / 3].to_vec())
        .await;
    // The `moov` box's size field overwritten: the index cannot be parsed.
    let mut broken = real.clone();
    let moov = real.windows(4).position(|w| w == b"moov").unwrap();
    broken[moov - 4..moov].copy_from_slice(&[0xff, 0xff, 0xff, 0x00]);
    node.upload("bad/broken-moov.mp4", broken).await;

    let cases = [
        ("bad/notes.mp4", &["not_media"][..]),
        ("bad/playlist.mp4", &["unsupported_container"][..]),
        ("bad/truncated.mp4", &["malformed_input"][..]),
        ("bad/broken-moov.mp4", &["malformed_input", "not_media"][..]),
        ("bad/missing.mp4", &["input_not_found"][..]),
    ];
    for (key, codes) in cases {
        let id = node
            .submit(&json!({"input": {"key": key}, "probe": true}))
            .await;
        let job = node.wait_done(&id, JOB_LIMIT).await;
        assert_eq!(job["status"], "failed", "{key}: {job}");
        let code = job["error"]["code"].as_str().unwrap();
        assert!(codes.contains(&code), "{key}: {job}");
        assert!(!job["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(job["attempts"], 1, "bad input must not be retried: {job}");
    }
    // The probes ran in children: the node itself stayed small.
    let peak = node.peak_memory();
    assert!(peak < 200 << 20, "node peak RSS {} MiB", peak >> 20);
    let res = node.client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = node.client.get(node.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_status() {
    let node = Node::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        // Missing inputs: these jobs fail quickly.
        ids.push(
            node.submit(&json!({"input": {"key": format!("none/{i}.mp4")}, "probe": true}))
                .await,
        );
    }
    for id in &ids {
        node.wait_done(id, JOB_LIMIT).await;
    }
    let page: Value = node.get_json("/v1/jobs?limit=2").await;
    let got: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = node
        .get_json(&format!("/v1/jobs?limit=10&status=failed&cursor={cursor}"))
        .await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 3);
    assert!(rest.get("next_cursor").is_none());
    let none: Value = node.get_json("/v1/jobs?status=running").await;
    assert_eq!(none["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_create_one_job() {
    let node = Node::start().await;
    let body = json!({"input": {"key": "uploads/none.mp4"}, "probe": true});
    let mut handles = Vec::new();
    for _ in 0..20 {
        let client = node.client.clone();
        let url = node.url("/v1/jobs");
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(TOKEN)
                .header("idempotency-key", "upload-42")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            let json: Value = res.json().await.unwrap();
            json["id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let all: Value = node.get_json("/v1/jobs?limit=100").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 1);

    // Same key, same body in another key order: the same job.
    let res = node
        .client
        .post(node.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("idempotency-key", "upload-42")
        .header("content-type", "application/json")
        .body(r#"{"probe": true, "input": {"key": "uploads/none.mp4"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["id"], ids[0].as_str());

    // Same key, different body: refused.
    let res = node
        .client
        .post(node.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("idempotency-key", "upload-42")
        .json(&json!({"input": {"key": "uploads/other.mp4"}, "probe": true}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn media_serves_published_objects_only_with_ranges() {
    let node = Node::start().await;
    // An upload is private: never served, and indistinguishable from a missing key.
    node.upload("uploads/raw.mp4", b"raw upload with GPS".to_vec())
        .await;
    let res = node
        .client
        .get(node.url("/media/uploads/raw.mp4"))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "object_not_found");
    let res = node
        .client
        .get(node.url("/media/nothing/here.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.1["code"], "object_not_found");

    // What the node publishes (written by the same store code the jobs use).
    let playlist = publish_playlist(&node).await;

    let res = node
        .client
        .get(node.url("/media/out/p1/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(res.bytes().await.unwrap().as_ref(), playlist.as_slice());

    let res = node
        .client
        .get(node.url("/media/out/p1/master.m3u8"))
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 8-15/{}", playlist.len())
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), &playlist[8..16]);
}

/// Publishes a small playlist the way jobs do, for the `/media` tests.
async fn publish_playlist(node: &Node) -> Vec<u8> {
    use media_node::store::{ObjectKey, PutOptions, Store, fs::FsStore};
    let store = FsStore::open(&node.data_dir).await.unwrap();
    let key = ObjectKey::parse("out/p1/master.m3u8").unwrap();
    let playlist = b"#EXTM3U\n#EXT-X-VERSION:3\n".repeat(10);
    store
        .put_bytes(&key, playlist.clone().into(), &PutOptions::public_for(&key))
        .await
        .unwrap();
    playlist
}

fn header_list(res: &reqwest::Response, name: &str) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn media_answers_players_on_any_origin_by_default() {
    let node = Node::start().await;
    let playlist = publish_playlist(&node).await;
    let page = "https://shop.example";

    // The preflight of a cross-origin Range request.
    let res = node
        .client
        .request(
            reqwest::Method::OPTIONS,
            node.url("/media/out/p1/master.m3u8"),
        )
        .header("origin", page)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(header_list(&res, "access-control-allow-methods").contains(&"get".into()));
    assert!(header_list(&res, "access-control-allow-headers").contains(&"range".into()));
    assert!(res.headers().contains_key("access-control-max-age"));

    let res = node
        .client
        .get(node.url("/media/out/p1/master.m3u8"))
        .header("origin", page)
        .header("range", "bytes=0-6")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let exposed = header_list(&res, "access-control-expose-headers");
    for name in ["content-length", "content-range", "accept-ranges"] {
        assert!(exposed.contains(&name.to_string()), "{exposed:?}");
    }
    assert_eq!(res.bytes().await.unwrap().as_ref(), &playlist[..7]);

    // Errors too, so that a player can read why it failed.
    let res = node
        .client
        .get(node.url("/media/out/p1/missing.ts"))
        .header("origin", page)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(problem(res).await.1["code"], "object_not_found");
}

#[tokio::test]
async fn media_answers_only_the_configured_origins() {
    let node = Node::builder()
        .env(
            "MEDIA_NODE_MEDIA_CORS_ORIGINS",
            "https://shop.example, http://localhost:3000",
        )
        .start()
        .await;
    publish_playlist(&node).await;
    let get = |origin: &'static str| {
        node.client
            .get(node.url("/media/out/p1/master.m3u8"))
            .header("origin", origin)
            .send()
    };
    let res = get("https://shop.example").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    // Caches keep one answer per origin.
    assert!(header_list(&res, "vary").contains(&"origin".into()));
    let res = get("http://localhost:3000").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    // Another origin's page gets the bytes (the object is public) but no CORS
    // header, so its scripts cannot read them.
    let res = get("https://elsewhere.example").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert!(header_list(&res, "vary").contains(&"origin".into()));
}

#[tokio::test]
async fn canceling_a_finished_job_is_refused() {
    let node = Node::start().await;
    let id = node
        .submit(&json!({"input": {"key": "uploads/none.mp4"}, "probe": true}))
        .await;
    let done = node.wait_done(&id, JOB_LIMIT).await;
    assert_eq!(done["status"], "failed");
    let res = node.cancel(&id).await;
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "job_finished");
}

#[tokio::test]
async fn metrics_count_jobs_and_requests() {
    let node = Node::start().await;
    let id = node
        .submit(&json!({"input": {"key": "uploads/none.mp4"}, "probe": true}))
        .await;
    node.wait_done(&id, JOB_LIMIT).await;
    let text = node.metrics().await;
    assert!(
        text.contains("media_node_jobs{status=\"failed\"} 1"),
        "{text}"
    );
    assert!(text.contains("media_node_queue_depth 0"), "{text}");
    assert!(
        text.contains(
            "media_node_http_requests_total{route=\"/v1/jobs\",method=\"POST\",status=\"202\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("media_node_job_duration_seconds_count{outcome=\"failed\"} 1"));
}

#[tokio::test]
async fn openapi_describes_the_job_api() {
    let node = Node::start().await;
    let doc: Value = node
        .client
        .get(node.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
