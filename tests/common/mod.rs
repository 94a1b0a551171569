//! Test harness: the real `media-node` binary on port 0 with a temp data dir, a real
//! S3-compatible server (s3s-fs), and bounded polling helpers. No mocks.
#![allow(dead_code)]

pub mod live;
pub mod media;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const S3_ACCESS_KEY: &str = "media-node-test";
pub const S3_SECRET_KEY: &str = "media-node-test-secret";

/// How long a node may take to start (GStreamer's first registry scan is slow).
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pids of the direct children of process `parent` whose command line
/// holds every one of `words` (as ops would find them with ps).
pub fn children_of(parent: u32, words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the comm may hold spaces; ppid follows ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && words.iter().all(|w| cmdline.contains(w)) {
            found.push(pid);
        }
    }
    found
}

/// SIGSEGV to process `pid`, as a crashing decoder would get.
pub fn segv(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-SEGV", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -SEGV {pid}");
}

/// A running `media-node serve`.
pub struct Node {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    /// The node's database (`db.url`): its SQLite file, or with
    /// `TEST_NODE_DB=postgres` a database of its own on the test cluster.
    pub db_url: String,
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
}

pub struct NodeBuilder {
    env: Vec<(String, String)>,
    unset: Vec<String>,
    data_dir: Option<PathBuf>,
}

impl NodeBuilder {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }
    pub fn envs(mut self, pairs: Vec<(String, String)>) -> Self {
        self.env.extend(pairs);
        self
    }
    /// Start without `key`, one of the defaults (e.g. `MEDIA_NODE_API_TOKEN`,
    /// so the node keeps its token in its data dir).
    pub fn without_env(mut self, key: &str) -> Self {
        self.unset.push(key.to_string());
        self
    }
    /// Reuse a data dir (to restart a node on the same job store).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }
    pub async fn start(self) -> Node {
        Node::spawn(self.env, self.unset, self.data_dir).await
    }
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            env: Vec::new(),
            unset: Vec::new(),
            data_dir: None,
        }
    }

    pub async fn start() -> Node {
        Node::builder().start().await
    }

    async fn spawn(
        extra_env: Vec<(String, String)>,
        unset: Vec<String>,
        data_dir: Option<PathBuf>,
    ) -> Node {
        let (tmp, data_dir) = match data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        std::fs::create_dir_all(&data_dir).unwrap();
        let log_path = data_dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_media-node"));
        cmd.arg("serve");
        // Started outside the repository, as a package or an image runs it: the
        // node must need nothing from the source tree (presets are built in).
        cmd.current_dir(data_dir.parent().unwrap_or(&data_dir));
        for (key, _) in std::env::vars() {
            if key.starts_with("MEDIA_NODE_") || key.starts_with("AWS_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        let defaults = [
            ("MEDIA_NODE_LISTEN", "127.0.0.1:0".to_string()),
            ("MEDIA_NODE_RTMP_LISTEN", "127.0.0.1:0".to_string()),
            ("MEDIA_NODE_SRT_LISTEN", "127.0.0.1:0".to_string()),
            ("MEDIA_NODE_DATA_DIR", data_dir.display().to_string()),
            ("MEDIA_NODE_API_TOKEN", TOKEN.to_string()),
            ("MEDIA_NODE_JOBS_WORKERS", "2".to_string()),
            // Generous: a loaded 2-core CI machine must not let a lease lapse
            // and run a job twice. The crash test sets a short one itself.
            ("MEDIA_NODE_JOBS_LEASE_MS", "15000".to_string()),
            ("MEDIA_NODE_JOBS_HEARTBEAT_MS", "1000".to_string()),
            ("MEDIA_NODE_JOBS_POLL_MS", "100".to_string()),
            ("MEDIA_NODE_JOBS_RETRY_BASE_MS", "100".to_string()),
            ("MEDIA_NODE_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
            ("MEDIA_NODE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
            ("MEDIA_NODE_WEBHOOK_RETRY_BASE_MS", "200".to_string()),
            ("MEDIA_NODE_LOG_FILTER", "info,media_node=debug".to_string()),
        ];
        for (k, v) in defaults {
            if !unset.iter().any(|u| u == k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &extra_env {
            cmd.env(k, v);
        }
        let db_url = match extra_env.iter().find(|(k, _)| k == "MEDIA_NODE_DB_URL") {
            Some((_, url)) => url.clone(),
            None => {
                let url = node_database(&data_dir);
                // The embedded default stays unconfigured.
                if !url.starts_with("sqlite:") {
                    cmd.env("MEDIA_NODE_DB_URL", &url);
                }
                url
            }
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("start media-node");

        // Read stdout on a thread for as long as the process lives, so the pipe never
        // fills; the first "listening on" line tells the port.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let start = Instant::now();
        let base = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("media-node listening on ") {
                        break url.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "media-node exited before listening ({status:?}):\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "media-node did not start within {START_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        Node {
            child: Some(child),
            base,
            data_dir,
            db_url,
            log_path,
            _tmp: tmp,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Downloads a published object over `/media` into `dir`; returns its path.
    pub async fn download(&self, key: &str, dir: &Path) -> PathBuf {
        let res = self
            .client
            .get(self.url(&format!("/media/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "GET /media/{key}");
        let path = dir.join(key.replace('/', "__"));
        std::fs::write(&path, res.bytes().await.unwrap()).unwrap();
        path
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.get_text(&self.url("/metrics")).await
    }

    /// `GET url` (a full URL) as text.
    pub async fn get_text(&self, url: &str) -> String {
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The node's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/PID/status");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }

    pub async fn upload(&self, key: &str, body: Vec<u8>) -> Value {
        let res = self
            .client
            .put(self.url(&format!("/v1/objects/{key}")))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "upload of {key}");
        res.json().await.unwrap()
    }

    pub async fn upload_fixture(&self, key: &str, name: &str) {
        self.upload(key, std::fs::read(fixture(name)).unwrap())
            .await;
    }

    pub async fn post_job(&self, body: &Value) -> (StatusCode, Value) {
        let res = self
            .client
            .post(self.url("/v1/jobs"))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Posts a job that must be accepted; returns its id.
    pub async fn submit(&self, body: &Value) -> String {
        let (status, job) = self.post_job(body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    /// An authenticated GET.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// An authenticated GET answering JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/jobs/{id}/cancel")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        let res = self
            .client
            .get(self.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// Waits until the job reaches `status`.
    pub async fn wait_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        eventually(limit, &format!("job {id} to be {status}"), || async {
            let job = self.job(id).await;
            (job["status"] == status).then_some(job)
        })
        .await
    }

    /// Waits until the job ends (succeeded, failed or canceled).
    pub async fn wait_done(&self, id: &str, limit: Duration) -> Value {
        eventually(limit, &format!("job {id} to end"), || async {
            let job = self.job(id).await;
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "canceled")
            )
            .then_some(job)
        })
        .await
    }

    /// SIGKILL: the node dies without any cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("node did not exit within {limit:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            // TEST_NODE_LOG_LINES=N shows more when a failure needs it.
            let lines = std::env::var("TEST_NODE_LOG_LINES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(80);
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            eprintln!("---- node log (last {lines} lines) ----");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn s3s_fs_binary() -> PathBuf {
    if let Ok(path) = std::env::var("S3S_FS") {
        return PathBuf::from(path);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/s3s-fs");
    if local.exists() {
        return local;
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cargo = PathBuf::from(home).join(".cargo/bin/s3s-fs");
        if cargo.exists() {
            return cargo;
        }
    }
    panic!(
        "s3s-fs (the S3-compatible test server) is not installed; run ./scripts/test, \
         which installs it into .tools/"
    );
}

/// The node's log without terminal colours.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The database a node started on `data_dir` runs on: its SQLite file, or
/// with `TEST_NODE_DB=postgres` (scripts/test's second pass, inside
/// `pg_virtualenv`, which sets `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`) a
/// database on that cluster named after the data dir, so a node restarted on
/// the same data dir finds its jobs and streams again.
fn node_database(data_dir: &Path) -> String {
    if std::env::var("TEST_NODE_DB").as_deref() != Ok("postgres") {
        return format!("sqlite://{}", data_dir.join("jobs.db").display());
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let name = format!("mn_{:016x}", hasher.finish());
    let out = Command::new("psql")
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE \"{name}\""))
        .output()
        .expect("psql (TEST_NODE_DB=postgres runs inside pg_virtualenv)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("already exists"),
        "create database {name}: {stderr}"
    );
    let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
    format!(
        "postgres://{}:{}@{}:{}/{name}",
        var("PGUSER", "postgres"),
        var("PGPASSWORD", ""),
        var("PGHOST", "localhost"),
        var("PGPORT", "5432"),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real S3-compatible server on a free port: s3s-fs (SigV4-checking), or
/// moto's server where a test needs what s3s-fs lacks (bucket CORS rules).
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    root: tempfile::TempDir,
    kind: S3Kind,
}

#[derive(Clone, Copy)]
enum S3Kind {
    S3sFs,
    Moto,
}

impl S3Server {
    pub async fn start() -> S3Server {
        Self::start_kind(S3Kind::S3sFs).await
    }

    /// moto's S3 server, from the test venv (`TEST_VENV`, which
    /// `scripts/test` installs from tests/browser/requirements.lock).
    pub async fn start_moto() -> S3Server {
        Self::start_kind(S3Kind::Moto).await
    }

    async fn start_kind(kind: S3Kind) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let mut server = S3Server {
            child: None,
            port: free_port(),
            root,
            kind,
        };
        server.launch().await;
        server
    }

    fn command(&self) -> Command {
        let port = self.port.to_string();
        match self.kind {
            S3Kind::S3sFs => {
                let data = self.root.path().join("data");
                std::fs::create_dir_all(&data).unwrap();
                let mut cmd = Command::new(s3s_fs_binary());
                cmd.args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                    .arg(&data);
                cmd
            }
            S3Kind::Moto => {
                let venv = std::env::var("TEST_VENV").unwrap_or_else(|_| {
                    panic!(
                        "TEST_VENV is not set: run scripts/test, which installs moto's \
                         server into .tools/venv, or set TEST_VENV to such a venv"
                    )
                });
                let mut cmd = Command::new(Path::new(&venv).join("bin/moto_server"));
                cmd.args(["-H", "127.0.0.1", "-p", &port]);
                cmd
            }
        }
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("s3s.log"))
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the S3 server");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(30),
            "the S3 server to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    pub fn config(&self, bucket: &str) -> media_node::config::S3Config {
        media_node::config::S3Config {
            bucket: Some(bucket.to_string()),
            endpoint: Some(self.endpoint()),
            path_style: true,
            access_key_id: Some(media_node::config::Secret::new(S3_ACCESS_KEY)),
            secret_access_key: Some(media_node::config::Secret::new(S3_SECRET_KEY)),
            ..Default::default()
        }
    }

    /// A client of this server, as the tests' own S3 reader.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY, None, None, "test");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket through the S3 API.
    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create bucket");
    }

    /// Environment for a node that uses this server with `bucket`.
    pub fn node_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("MEDIA_NODE_STORE", "s3".to_string()),
            ("MEDIA_NODE_S3_BUCKET", bucket.to_string()),
            ("MEDIA_NODE_S3_ENDPOINT", self.endpoint()),
            ("MEDIA_NODE_S3_REGION", "us-east-1".to_string()),
            ("MEDIA_NODE_S3_PATH_STYLE", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
