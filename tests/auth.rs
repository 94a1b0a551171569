//! Scoped tokens: each token's role decides what it may do, refused with 403
//! `forbidden` problem JSON; tokens come from `MEDIA_NODE_AUTH_TOKENS` (by
//! value or by SHA-256, as `media-node token new` prints them) beside the
//! admin tokens of `MEDIA_NODE_API_TOKEN`.

mod common;

use std::process::Command;

use common::{Node, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READ: &str = "read-token-0123456789";
const JOBS: &str = "jobs-token-0123456789";
const LIVE: &str = "live-token-0123456789";

/// `media-node token new`: the token and its JSON entry.
fn token_new(name: &str, role: &str) -> (String, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_media-node"))
        .args(["token", "new", "--name", name, "--role", role])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let token = text
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(": "))
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("{text}"));
    let entry: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(text.contains("[[auth.tokens]]"), "{text}");
    assert!(
        !text[text.find("[[auth").unwrap()..].contains(&token),
        "{text}"
    );
    (token, entry)
}

async fn call(
    node: &Node,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = node
        .client
        .request(method, node.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn each_role_may_do_only_what_it_is_for() {
    let (ops_token, ops_entry) = token_new("ops-dashboard", "read");
    let tokens = json!([
        {"name": "reader", "role": "read", "token": READ},
        {"name": "uploader", "role": "jobs", "token": JOBS},
        {"name": "studio", "role": "live", "token": LIVE},
        ops_entry,
    ]);
    let node = Node::builder()
        .env("MEDIA_NODE_AUTH_TOKENS", tokens.to_string())
        .start()
        .await;
    let job = json!({"input": {"key": "in/clip.mp4"}, "probe": true});
    let stream = json!({"name": "Spring launch"});

    // The admin token of MEDIA_NODE_API_TOKEN still does everything.
    let (status, body) = call(
        &node,
        TOKEN,
        Method::POST,
        "/v1/live/streams",
        Some(stream.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stream_id = body["id"].as_str().unwrap().to_string();

    // read: every GET, nothing else.
    for token in [READ, ops_token.as_str()] {
        for path in [
            "/v1/jobs",
            "/v1/live/streams",
            &format!("/v1/live/streams/{stream_id}"),
        ] {
            let (status, body) = call(&node, token, Method::GET, path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        for (method, path, body) in [
            (Method::POST, "/v1/jobs".to_string(), Some(job.clone())),
            (Method::PUT, "/v1/objects/in/clip.mp4".to_string(), None),
            (
                Method::POST,
                "/v1/live/streams".to_string(),
                Some(stream.clone()),
            ),
            (
                Method::DELETE,
                format!("/v1/live/streams/{stream_id}"),
                None,
            ),
        ] {
            let (status, answer) = call(&node, token, method.clone(), &path, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert_eq!(answer["code"], "forbidden", "{answer}");
            assert!(
                answer["detail"].as_str().unwrap().contains("`read`"),
                "{answer}"
            );
        }
    }

    // jobs: uploads and jobs, no streams.
    let res = node
        .client
        .put(node.url("/v1/objects/in/clip.mp4"))
        .bearer_auth(JOBS)
        .body(std::fs::read(common::fixture("webm-vp9-opus-320x180-5s.webm")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (status, body) = call(&node, JOBS, Method::POST, "/v1/jobs", Some(job.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) = call(
        &node,
        JOBS,
        Method::GET,
        &format!("/v1/jobs/{}", body["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in [
        (Method::POST, "/v1/live/streams".to_string()),
        (Method::GET, "/v1/live/streams".to_string()),
        (Method::DELETE, format!("/v1/live/streams/{stream_id}")),
    ] {
        let (status, answer) = call(&node, JOBS, method.clone(), &path, Some(stream.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["code"], "forbidden");
    }

    // live: streams and pins, no jobs or uploads.
    let (status, body) = call(
        &node,
        LIVE,
        Method::POST,
        "/v1/live/streams",
        Some(stream.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (method, path) in [
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/jobs"),
        (Method::PUT, "/v1/objects/in/x.mp4"),
    ] {
        let (status, answer) = call(&node, LIVE, method.clone(), path, Some(job.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }

    // An unknown token is still 401, whatever the route.
    let (status, body) = call(&node, "nobody-0123456789abc", Method::GET, "/v1/jobs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Refusals are counted like every answer.
    let metrics = node.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("media_node_http_requests_total") && l.contains("status=\"403\"")
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn scoped_tokens_alone_generate_no_admin_token_and_bad_entries_stop_the_node() {
    let node = Node::builder()
        .without_env("MEDIA_NODE_API_TOKEN")
        .env(
            "MEDIA_NODE_AUTH_TOKENS",
            json!([{"name": "reader", "role": "read", "token": READ}]).to_string(),
        )
        .start()
        .await;
    assert!(!node.data_dir.join("api_token").exists());
    let (status, _) = call(&node, READ, Method::GET, "/v1/jobs", None).await;
    assert_eq!(status, StatusCode::OK);

    for (tokens, why) in [
        (
            json!([{"name": "a", "role": "read", "token": "short"}]).to_string(),
            "at least 16",
        ),
        (
            json!([{"name": "a", "role": "owner", "token": READ}]).to_string(),
            "role",
        ),
        ("[{name = a}]".to_string(), "JSON"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_media-node"));
        for (key, _) in std::env::vars() {
            if key.starts_with("MEDIA_NODE_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .arg("check")
            .current_dir(dir.path())
            .env("MEDIA_NODE_DATA_DIR", dir.path())
            .env("MEDIA_NODE_AUTH_TOKENS", &tokens)
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{tokens}: {err}");
        assert!(
            err.contains("MEDIA_NODE_AUTH_TOKENS") && err.contains(why),
            "{tokens}: {err}"
        );
    }
}

/// A token bound to an owner makes things only for its owner and sees only
/// its owner's: another owner's job answers 404 (also in lists), another
/// owner's upload is refused at submit as a missing one, and cannot be
/// replaced.
#[tokio::test]
async fn owner_bound_tokens_see_and_touch_only_their_owners_jobs_and_uploads() {
    const SHOP42: &str = "shop42-token-0123456789";
    const SHOP7: &str = "shop7-token-0123456789";
    const WATCH42: &str = "watch42-token-012345678";
    let node = Node::builder()
        .env(
            "MEDIA_NODE_AUTH_TOKENS",
            json!([
                {"name": "shop-42", "role": "jobs", "owner": "shop:42", "token": SHOP42},
                {"name": "shop-7", "role": "jobs", "owner": "shop:7", "token": SHOP7},
                {"name": "watch-42", "role": "read", "owner": "shop:42", "token": WATCH42},
            ])
            .to_string(),
        )
        .start()
        .await;
    let clip = std::fs::read(common::fixture("webm-vp9-opus-320x180-5s.webm")).unwrap();
    // Each upload on a connection of its own: a refused one is answered
    // before its body is read, and the server then closes the connection,
    // which a pooled client could otherwise pick for the next request.
    let upload = |token: &'static str, key: &'static str| {
        let (node, clip) = (&node, clip.clone());
        async move {
            let res = reqwest::Client::new()
                .put(node.url(&format!("/v1/objects/{key}")))
                .bearer_auth(token)
                .body(clip)
                .send()
                .await
                .unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        upload(SHOP42, "shop42/clip.webm").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        upload(SHOP7, "shop7/clip.webm").await.0,
        StatusCode::CREATED
    );
    let probe = |key: &str| json!({"input": {"key": key}, "probe": true});

    // Its jobs get its owner; asking for another owner is refused.
    let (status, job) = call(
        &node,
        SHOP42,
        Method::POST,
        "/v1/jobs",
        Some(probe("shop42/clip.webm")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["owner"], "shop:42");
    assert_eq!(job["spec"]["owner"], "shop:42");
    let id = job["id"].as_str().unwrap().to_string();
    let mut other = probe("shop42/clip.webm");
    other["owner"] = json!("shop:7");
    let (status, body) = call(&node, SHOP42, Method::POST, "/v1/jobs", Some(other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Another owner's job is not there for shop 7, in any way.
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::POST, format!("/v1/jobs/{id}/cancel")),
    ] {
        let (status, body) = call(&node, SHOP7, method, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "job_not_found");
    }
    for path in ["/v1/jobs", "/v1/jobs?owner=shop:42"] {
        let (status, list) = call(&node, SHOP7, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            list["jobs"].as_array().unwrap().is_empty(),
            "{path}: {list}"
        );
    }
    // Nor its upload: refused at submit as a missing key is, and not replaceable.
    let (status, body) = call(
        &node,
        SHOP7,
        Method::POST,
        "/v1/jobs",
        Some(probe("shop42/clip.webm")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "object_not_found");
    let (status, missing) = call(
        &node,
        SHOP7,
        Method::POST,
        "/v1/jobs",
        Some(probe("nobody/clip.webm")),
    )
    .await;
    assert_eq!(
        (status, &missing["code"]),
        (StatusCode::NOT_FOUND, &body["code"])
    );
    let (status, body) = upload(SHOP7, "shop42/clip.webm").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "key_conflict");
    // Its own upload works.
    let (status, body) = call(
        &node,
        SHOP7,
        Method::POST,
        "/v1/jobs",
        Some(probe("shop7/clip.webm")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["owner"], "shop:7");

    // A read token bound to shop 42 sees shop 42's job and only it; the admin
    // sees both and filters by owner.
    let (_, list) = call(&node, WATCH42, Method::GET, "/v1/jobs", None).await;
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{list}");
    let (_, all) = call(&node, TOKEN, Method::GET, "/v1/jobs", None).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2, "{all}");
    let (_, theirs) = call(&node, TOKEN, Method::GET, "/v1/jobs?owner=shop:7", None).await;
    assert_eq!(theirs["jobs"].as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs["jobs"][0]["owner"], "shop:7");
    let done = node
        .wait_done(&id, std::time::Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

/// Streams too: a live token bound to a creator makes streams for that
/// creator and sees no one else's.
#[tokio::test]
async fn owner_bound_live_tokens_see_and_touch_only_their_owners_streams() {
    const ANA: &str = "ana-live-token-0123456789";
    const BO: &str = "bo-live-token-01234567890";
    let node = Node::builder()
        .env(
            "MEDIA_NODE_AUTH_TOKENS",
            json!([
                {"name": "ana", "role": "live", "owner": "creator:7", "token": ANA},
                {"name": "bo", "role": "live", "owner": "creator:8", "token": BO},
            ])
            .to_string(),
        )
        .start()
        .await;
    let (status, created) = call(
        &node,
        ANA,
        Method::POST,
        "/v1/live/streams",
        Some(json!({"name": "Ana live"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["owner"], "creator:7");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, body) = call(
        &node,
        ANA,
        Method::POST,
        "/v1/live/streams",
        Some(json!({"name": "x", "owner": "creator:8"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let pin = json!({"id": "p1", "product_id": "sku-1", "title": "Mug", "price": {"amount": "9.90", "currency": "EUR"}, "position": {"x": 0.1, "y": 0.1, "width": 0.3}});
    for (method, path, body) in [
        (Method::GET, format!("/v1/live/streams/{id}"), None),
        (Method::GET, format!("/v1/live/streams/{id}/pins"), None),
        (
            Method::POST,
            format!("/v1/live/streams/{id}/pins"),
            Some(pin.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/live/streams/{id}/pins/p1"),
            None,
        ),
        (Method::DELETE, format!("/v1/live/streams/{id}"), None),
    ] {
        let (status, answer) = call(&node, BO, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(answer["code"], "stream_not_found", "{answer}");
    }
    for path in ["/v1/live/streams", "/v1/live/streams?owner=creator:7"] {
        let (_, list) = call(&node, BO, Method::GET, path, None).await;
        assert!(
            list["streams"].as_array().unwrap().is_empty(),
            "{path}: {list}"
        );
    }
    let (status, _) = call(
        &node,
        ANA,
        Method::POST,
        &format!("/v1/live/streams/{id}/pins"),
        Some(pin),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, mine) = call(&node, ANA, Method::GET, "/v1/live/streams", None).await;
    assert_eq!(mine["streams"].as_array().unwrap().len(), 1, "{mine}");
    let (_, all) = call(
        &node,
        TOKEN,
        Method::GET,
        "/v1/live/streams?owner=creator:7",
        None,
    )
    .await;
    assert_eq!(all["streams"][0]["id"], id.as_str(), "{all}");
    let (status, ended) = call(
        &node,
        ANA,
        Method::DELETE,
        &format!("/v1/live/streams/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["state"], "ended");
}
